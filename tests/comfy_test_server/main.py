"""Entry point: ``python tests/comfy_test_server/main.py --port 8190 --listen 127.0.0.1 --cpu``.

Boots like ComfyUI's main.py (log lines, temp dir wiped, executor thread, then listen), so
a supervisor that waits for the port or greps the log behaves the same as with the real
thing. Fault injection at boot: ``COMFY_TEST_BOOT_DELAY_S``, ``COMFY_TEST_BOOT_EXIT_CODE``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "comfy_test_server"  # noqa: A001 - enables the relative imports below

from .app import COMFYUI_VERSION, FRONTEND_VERSION, PYTORCH_VERSION, PromptServer, _memory  # noqa: E402
from .cli import parse_args  # noqa: E402
from .faults import apply_boot_faults  # noqa: E402
from .logs import setup_logging  # noqa: E402
from .paths import Paths  # noqa: E402


def _prepare_directories(paths: Paths) -> None:
    """ComfyUI wipes the temp dir at start and creates input/output/user on demand."""
    if os.path.exists(paths.temp):
        shutil.rmtree(paths.temp, ignore_errors=True)
    for d in (paths.input, paths.output, paths.temp, paths.user):
        os.makedirs(d, exist_ok=True)


async def _serve(server: PromptServer, addresses: list[tuple[str, int]], verbose: bool) -> None:
    publisher = asyncio.ensure_future(server.publish_loop())
    await server.start(addresses, verbose=verbose)
    await publisher


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, args.log_stdout)
    paths = Paths.from_args(args)
    ram_mb = _memory()[0] // (1024 * 1024)
    logging.info("Checkpoint files will always be loaded safely.")
    logging.info(f"Total VRAM {ram_mb} MB, total RAM {ram_mb} MB")
    logging.info(f"pytorch version: {PYTORCH_VERSION}")
    logging.info("Set vram state to: DISABLED")
    logging.info("Device: cpu")
    logging.info(f"Python version: {sys.version}")
    logging.info(f"ComfyUI version: {COMFYUI_VERSION} (comfy_test_server)")
    logging.info(f"ComfyUI frontend version: {FRONTEND_VERSION}")
    if args.temp_directory:
        logging.info(f"Setting temp directory to: {paths.temp}")
    apply_boot_faults()
    _prepare_directories(paths)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = PromptServer(args, paths, loop)
    logging.info(f"[Prompt Server] web root: {server.web_root}")
    server.start_worker()
    if args.quick_test_for_ci:
        return 0
    addresses = [(addr, args.port) for addr in args.listen.split(",")]
    try:
        loop.run_until_complete(_serve(server, addresses, verbose=not args.dont_print_server))
    except KeyboardInterrupt:
        logging.info("\nStopped server")
    shutil.rmtree(paths.temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
