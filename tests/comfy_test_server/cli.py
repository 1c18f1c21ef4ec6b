"""Command line flags, mirroring ``comfy/cli_args.py`` of ComfyUI 0.3.64.

The parser is strict (``parse_args``), like ComfyUI: an unknown flag exits with status 2, so a
worker that passes a flag real ComfyUI would reject fails here too. Flags that only matter
for GPUs/models are accepted and ignored, so real command lines work unchanged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

PREVIEW_METHODS = ["none", "auto", "latent2rgb", "taesd"]


def _is_valid_directory(path: str) -> str:
    """Same check as ComfyUI's ``is_valid_directory`` (used by --user-directory)."""
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"The path '{path}' does not exist.")
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"'{path}' is not a directory.")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"You do not have read permissions for '{path}'.")
    return path


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (same names, defaults and nargs as ComfyUI)."""
    p = argparse.ArgumentParser(prog="comfy_test_server")
    p.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--tls-keyfile", type=str)
    p.add_argument("--tls-certfile", type=str)
    p.add_argument("--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*")
    p.add_argument("--max-upload-size", type=float, default=100)
    p.add_argument("--base-directory", type=str, default=None)
    p.add_argument("--extra-model-paths-config", type=str, default=None, metavar="PATH", nargs="+",
                   action="append")
    p.add_argument("--output-directory", type=str, default=None)
    p.add_argument("--temp-directory", type=str, default=None)
    p.add_argument("--input-directory", type=str, default=None)
    p.add_argument("--user-directory", type=_is_valid_directory, default=None)
    p.add_argument("--auto-launch", action="store_true")
    p.add_argument("--disable-auto-launch", action="store_true")
    p.add_argument("--cuda-device", type=int, default=None)
    p.add_argument("--default-device", type=int, default=None)
    vram = p.add_mutually_exclusive_group()
    for flag in ("--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"):
        vram.add_argument(flag, action="store_true")
    for flag in ("--cuda-malloc", "--disable-cuda-malloc", "--force-fp32", "--force-fp16", "--cpu-vae",
                 "--fp16-vae", "--fp32-vae", "--bf16-vae", "--force-channels-last", "--disable-xformers",
                 "--use-split-cross-attention", "--use-quad-cross-attention",
                 "--use-pytorch-cross-attention", "--use-sage-attention", "--use-flash-attention",
                 "--disable-smart-memory", "--deterministic", "--async-offload", "--disable-mmap",
                 "--mmap-torch-files", "--quick-test-for-ci", "--windows-standalone-build",
                 "--disable-api-nodes", "--multi-user", "--enable-compress-response-body",
                 "--dont-upcast-attention", "--force-upcast-attention"):
        p.add_argument(flag, action="store_true")
    p.add_argument("--reserve-vram", type=float, default=None)
    p.add_argument("--fast", nargs="*", default=None)
    p.add_argument("--preview-method", type=str, default="none", choices=PREVIEW_METHODS)
    p.add_argument("--preview-size", type=int, default=512)
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true")
    cache.add_argument("--cache-lru", type=int, default=0)
    cache.add_argument("--cache-none", action="store_true")
    p.add_argument("--default-hashing-function", type=str, choices=["md5", "sha1", "sha256", "sha512"],
                   default="sha256")
    p.add_argument("--dont-print-server", action="store_true")
    p.add_argument("--disable-metadata", action="store_true")
    p.add_argument("--disable-all-custom-nodes", action="store_true")
    p.add_argument("--whitelist-custom-nodes", type=str, nargs="+", default=[])
    p.add_argument("--verbose", default="INFO", const="DEBUG", nargs="?",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    p.add_argument("--log-stdout", action="store_true")
    p.add_argument("--front-end-version", type=str, default="comfyanonymous/ComfyUI@latest")
    p.add_argument("--front-end-root", type=_is_valid_directory, default=None)
    p.add_argument("--comfy-api-base", type=str, default="https://api.comfy.org")
    p.add_argument("--database-url", type=str, default="sqlite:///:memory:")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` strictly; exits with status 2 on an unknown or malformed flag."""
    return build_parser().parse_args(argv)
