#!/usr/bin/env python3
"""Download the models listed in a manifest into ComfyUI's models folder, verifying each sha256.

    python download_models.py builder/models.json /comfyui/models

The manifest is a JSON list of ``{"url", "sha256", "folder", "filename"}`` objects; each
file lands in ``<models_dir>/<folder>/<filename>``. Downloads are streamed to a temporary
file beside the target and renamed into place only once the sha256 matches, so a failed or
tampered download never leaves a file that ComfyUI would load. Any error exits non-zero,
which fails the image build. A file already present with the right hash is kept.

Gated Hugging Face files: put a token in ``HF_TOKEN`` or in the file named by
``HF_TOKEN_FILE`` (the Dockerfile passes a BuildKit secret that way, so the token never
lands in an image layer). It is sent to huggingface.co only, and not on redirects.

Standard library only: it runs before the worker's dependencies are installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

CHUNK = 1024 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]*$")
TOKEN_HOSTS = ("huggingface.co",)
ATTEMPTS = 3


class ManifestError(ValueError):
    """The manifest is malformed."""


def validate_manifest(entries: object) -> list[dict[str, str]]:
    """The manifest's entries, checked: every field present and safe. Raises ManifestError."""
    if not isinstance(entries, list):
        raise ManifestError("the manifest must be a JSON list of {url, sha256, folder, filename} objects")
    checked: list[dict[str, str]] = []
    targets: set[tuple[str, str]] = set()
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: must be an object")
        missing = {"url", "sha256", "folder", "filename"} - entry.keys()
        if missing:
            raise ManifestError(f"{where}: missing {', '.join(sorted(missing))}")
        extra = entry.keys() - {"url", "sha256", "folder", "filename"}
        if extra:
            raise ManifestError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        if not all(isinstance(entry[key], str) for key in entry):
            raise ManifestError(f"{where}: every value must be a string")
        url, sha256, folder, filename = entry["url"], entry["sha256"], entry["folder"], entry["filename"]
        if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).netloc:
            raise ManifestError(f"{where}: url must be an http(s) URL, got {url!r}")
        if not SHA256_RE.match(sha256):
            raise ManifestError(f"{where}: sha256 must be 64 lower-case hex digits, got {sha256!r}")
        parts = PurePosixPath(folder).parts
        if not parts or folder.startswith("/") or any(not NAME_RE.match(part) for part in parts):
            raise ManifestError(f"{where}: folder must be a relative path like 'checkpoints' or "
                                f"'ultralytics/bbox', got {folder!r}")
        if not NAME_RE.match(filename):
            raise ManifestError(f"{where}: filename must be a plain file name, got {filename!r}")
        if (folder, filename) in targets:
            raise ManifestError(f"{where}: {folder}/{filename} is listed twice")
        targets.add((folder, filename))
        checked.append({"url": url, "sha256": sha256, "folder": folder, "filename": filename})
    return checked


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _token() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    token_file = os.environ.get("HF_TOKEN_FILE", "")
    if not token and token_file and os.path.isfile(token_file):
        token = Path(token_file).read_text(encoding="utf-8").strip()
    return token


def _request(url: str) -> urllib.request.Request:
    request = urllib.request.Request(url, headers={"User-Agent": "comfy-serverless-build/1"})
    host = (urlsplit(url).hostname or "").lower()
    token = _token()
    if token and any(host == h or host.endswith("." + h) for h in TOKEN_HOSTS):
        # Unredirected: the token is not forwarded to the CDN a download redirects to.
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    return request


def download(url: str, target: Path, sha256: str, *, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``target``; the file appears only if its sha256 is ``sha256``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        if file_sha256(target) == sha256:
            print(f"{target}: already present, sha256 verified", flush=True)
            return
        raise RuntimeError(f"{target} already exists with another sha256; refusing to overwrite it")
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        started = time.monotonic()
        with os.fdopen(descriptor, "wb") as out, urllib.request.urlopen(_request(url), timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise RuntimeError(f"sha256 mismatch for {url}: expected {sha256}, got {actual} ({size} bytes)")
        # mkstemp creates the file 0600; a model must be readable by a non-root runtime user.
        os.chmod(temp, 0o644)
        temp.replace(target)
        print(f"{target}: {size / 1e6:.1f} MB in {time.monotonic() - started:.0f} s, sha256 verified", flush=True)
    finally:
        temp.unlink(missing_ok=True)


def download_all(entries: list[dict[str, str]], models_dir: Path) -> None:
    for entry in entries:
        target = models_dir / entry["folder"] / entry["filename"]
        for attempt in range(1, ATTEMPTS + 1):
            try:
                download(entry["url"], target, entry["sha256"])
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (401, 403, 404):
                    raise RuntimeError(f"{entry['url']}: HTTP {exc.code} {exc.reason}"
                                       + (" (gated? set HF_TOKEN)" if exc.code in (401, 403) else "")) from None
                if attempt == ATTEMPTS:
                    raise RuntimeError(f"{entry['url']}: {exc} (after {ATTEMPTS} attempts)") from None
                print(f"{entry['url']}: {exc}; retrying ({attempt}/{ATTEMPTS})", file=sys.stderr, flush=True)
                time.sleep(2 * attempt)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: download_models.py MANIFEST.json MODELS_DIR", file=sys.stderr)
        return 2
    manifest, models_dir = Path(argv[0]), Path(argv[1])
    try:
        entries = validate_manifest(json.loads(manifest.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ManifestError) as exc:
        print(f"error: {manifest}: {exc}", file=sys.stderr)
        return 1
    if not entries:
        print(f"{manifest}: no models to download", flush=True)
        return 0
    try:
        download_all(entries, models_dir)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
