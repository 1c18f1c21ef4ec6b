"""The model cache: inputs kept across jobs, verified, shared safely by every worker on a network volume.

A model input downloaded per job costs its transfer on every job, and a
per-job path changes the prompt's value, so ComfyUI's node cache reloads the
weights too. Cached inputs instead live in a content-addressed store
(``blobs/<sha256>``) and appear in their ComfyUI folder as a symlink at a path
that depends only on their content (``loras/cache-<16 hex>/detail.safetensors``):
the same model gives the same prompt value in every job, and ComfyUI keeps it
loaded. A symlink, not a hard link: the cache usually sits on the network
volume while the model folder is on the image's disk (a hard link cannot cross
filesystems), and a hard link would keep an evicted file's bytes alive.

Identity: with a ``sha256`` the store is asked directly, without any request.
Without one, an S3 object is identified by bucket, key and version (a HEAD
request), a URL by its validators (a conditional GET that answers 304 when
nothing changed); ``index/`` maps those to the content's hash.

Many workers share one directory: downloads go to ``tmp/`` and are renamed into
``blobs/`` only once their size (and sha256, where given) is checked, so a blob
is never partial, and a killed worker's leftovers in ``tmp/`` are never used
(they are swept once stale). A job holds a lease file (``leases/<sha256>.*``)
on every entry it uses; eviction (least recently used first, by the blob's
mtime, which every use touches) never removes a leased entry. Inside one
worker, concurrent jobs that need the same new file download it once.

``python -m comfy_serverless.model_cache LIST.json`` fills the cache ahead of jobs (pre-warming).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ComfyServerlessError, InputFetchError, StorageError
from .files import CACHE_FOLDER_RE, describe_size
from .inputs import ByteBudget, fetch_version
from .jobspec import InputSpec, parse_input_list
from .sources import Fetched, source_of
from .sources.s3 import parse_s3_uri
from .storage import S3Storage

logger = logging.getLogger(__name__)

#: A lease older than this belongs to a worker that died with its job (a job runs at most a day).
LEASE_STALE_S = 2 * 86400.0
#: A download in ``tmp/`` untouched this long belongs to a worker that died mid-download.
TMP_STALE_S = 3600.0
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class CacheEntry:
    """One cached file in use by a job: its hash, size, the blob's path and the job's lease on it."""

    sha256: str
    size: int
    path: Path
    lease: Path

    @property
    def folder(self) -> str:
        """The folder that holds the file's stable placement: the same for the same content, in every job."""
        return f"cache-{self.sha256[:16]}"


class ModelCache:
    """The store in ``root``, kept under ``max_bytes``. One instance per process (it owns the single-flight)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._blobs, self._index, self._tmp, self._leases = (root / name for name in ("blobs", "index", "tmp",
                                                                                       "leases"))
        self._flights: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._links: dict[str, set[Path]] = {}

    @classmethod
    def from_config(cls, config: Config) -> ModelCache:
        return cls(config.model_cache_path, config.model_cache_max_bytes)

    # --- obtaining an entry -------------------------------------------------------------------
    async def obtain(self, spec: InputSpec, *, storage: S3Storage | None, config: Config,
                     budget: ByteBudget | None) -> tuple[CacheEntry, bool]:
        """The cached file for ``spec``, leased, fetched only if needed; and whether this call downloaded it."""
        label = f"{spec.field} ({spec.name})"
        try:
            await asyncio.to_thread(self._make_folders)
            return await self._obtain(_Fetch(self, spec, storage, config, budget, label))
        except OSError as exc:  # the cache's disk: full, read-only, unmounted
            raise InputFetchError(f"{label}: the model cache at {self.root} (MODEL_CACHE_DIR) cannot be used: "
                                  f"{exc.strerror or type(exc).__name__}", input=label) from exc

    async def _obtain(self, fetch: _Fetch) -> tuple[CacheEntry, bool]:
        spec, storage = fetch.spec, fetch.storage
        key = spec.sha256 or (spec.source if spec.kind != "base64" else "")
        async with self._single_flight(key):
            if spec.sha256:
                entry = await asyncio.to_thread(self.acquire, spec.sha256)
                if entry is not None:
                    return entry, False
                return await fetch.download(), True
            if spec.kind == "s3" and storage is not None:
                return await fetch.s3()
            source = source_of(spec.source)
            if source is not None and source.revalidates:
                return await fetch.url()
            return await fetch.download(), True

    @contextlib.asynccontextmanager
    async def _single_flight(self, key: str) -> AsyncIterator[None]:
        """One fetch per key at a time in this process: the jobs waiting then find the file in the store."""
        if not key:
            yield
            return
        lock, users = self._flights.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._flights[key]

    def acquire(self, sha256: str) -> CacheEntry | None:
        """The stored entry, leased and marked as just used; ``None`` if it is not (or no longer) stored.

        The lease is taken before the blob is looked at, so an eviction running meanwhile either sees the
        lease or has already removed the blob, which this then reports as absent.
        """
        lease = self._take_lease(sha256)
        blob = self._blobs / sha256
        try:
            os.utime(blob)
            size = blob.stat().st_size
        except FileNotFoundError:
            lease.unlink(missing_ok=True)
            return None
        return CacheEntry(sha256, size, blob, lease)

    def insert(self, download: Path, *, sha256: str, size: int | None, label: str) -> CacheEntry:
        """Store a complete download under its hash once its size and ``sha256`` (if given) are right.

        Whatever fails, ``download`` is gone afterwards and nothing is stored.
        """
        try:
            actual_size = download.stat().st_size
            if size is not None and actual_size != size:
                raise InputFetchError(f"{label}: the download is {describe_size(actual_size)} but its source "
                                      f"reported {describe_size(size)}; it was discarded", input=label)
            digest = _sha256_of(download)
            if sha256 and digest != sha256:
                raise InputFetchError(f"{label}: sha256 mismatch: expected {sha256}, the download has {digest}; "
                                      "nothing was placed or cached", input=label, expected=sha256, actual=digest)
            lease = self._take_lease(digest)
            try:
                os.replace(download, self._blobs / digest)  # atomic: a blob is never partial
                os.utime(self._blobs / digest)
            except OSError:
                lease.unlink(missing_ok=True)
                raise
        finally:
            download.unlink(missing_ok=True)
        logger.info("cached %s: %s, sha256 %s", label, describe_size(actual_size), digest)
        return CacheEntry(digest, actual_size, self._blobs / digest, lease)

    def release(self, entries: Iterable[CacheEntry]) -> None:
        """End the job's use of ``entries``: they may be evicted again."""
        for entry in entries:
            entry.lease.unlink(missing_ok=True)

    def _take_lease(self, sha256: str) -> Path:
        lease = self._leases / f"{sha256}.{os.getpid()}-{secrets.token_hex(6)}"
        lease.touch()
        return lease

    def _make_folders(self) -> None:
        for folder in (self._blobs, self._index, self._tmp, self._leases):
            folder.mkdir(parents=True, exist_ok=True)

    def new_download_path(self) -> Path:
        """A fresh name in ``tmp/``, on the blobs' filesystem so that storing it is a rename."""
        return self._tmp / secrets.token_hex(8)

    # --- identities of sources without a sha256 -----------------------------------------------
    def read_record(self, identity: str) -> dict[str, Any] | None:
        """What ``identity`` (a source and its version) was found to contain, or ``None``."""
        try:
            record = json.loads((self._index / _digest(identity)).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not _SHA256_RE.fullmatch(str(record.get("sha256"))):
            return None
        return record

    def write_record(self, identity: str, record: dict[str, Any]) -> None:
        target = self._index / _digest(identity)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, target)

    # --- placement ----------------------------------------------------------------------------
    def link(self, entry: CacheEntry, destination: Path) -> None:
        """Make ``destination`` (inside a ComfyUI folder, in the entry's cache folder) a symlink to the entry.

        An existing link to this content (from this or an earlier cache location) is reused or
        repointed; anything else at that path is never touched, and the job fails instead.
        """
        target = str(entry.path)
        if destination.is_symlink() and os.readlink(destination) == target:
            self._links.setdefault(entry.sha256, set()).add(destination)
            return
        if (destination.exists() or destination.is_symlink()) and not (
                destination.is_symlink() and Path(os.readlink(destination)).name == entry.sha256):
            raise FileExistsError(errno.EEXIST, "another file of that name is in the way (left untouched)",
                                  str(destination))
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name[:200]}.{secrets.token_hex(4)}.link")
        os.symlink(target, temporary)
        os.replace(temporary, destination)  # atomic: ComfyUI never sees a half-made link
        self._links.setdefault(entry.sha256, set()).add(destination)

    # --- eviction -----------------------------------------------------------------------------
    def evict(self) -> list[str]:
        """Remove least recently used entries until the store fits MODEL_CACHE_MAX_BYTES; the hashes removed.

        Leased entries stay whatever their age; stale downloads and leases of dead workers are swept.
        """
        _remove_older_than(self._tmp, TMP_STALE_S)
        _remove_older_than(self._leases, LEASE_STALE_S)
        leased = {path.name.partition(".")[0] for path in _entries(self._leases)}
        blobs = []
        for path in _entries(self._blobs):
            if not _SHA256_RE.fullmatch(path.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                blobs.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in blobs)
        removed = []
        for _, size, path in sorted(blobs):
            if total <= self.max_bytes:
                break
            if path.name in leased:
                continue
            path.unlink(missing_ok=True)
            self._unlink_links(path)
            total -= size
            removed.append(path.name)
        if removed:
            logger.info("model cache: evicted %d entries, %s left", len(removed), describe_size(total))
        return removed

    def _unlink_links(self, blob: Path) -> None:
        """Remove this process's placements of an evicted blob, and their cache folders once empty."""
        for link in self._links.pop(blob.name, set()):
            if not (link.is_symlink() and os.readlink(link) == str(blob)):
                continue
            link.unlink(missing_ok=True)
            for parent in link.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                if CACHE_FOLDER_RE.fullmatch(parent.name):
                    break


@dataclass
class _Fetch:
    """Fetching one input into the cache: the ways its identity is established, and the download itself."""

    cache: ModelCache
    spec: InputSpec
    storage: S3Storage | None
    config: Config
    budget: ByteBudget | None
    label: str

    async def s3(self) -> tuple[CacheEntry, bool]:
        """Bucket, key and version (one HEAD): a known version is used as stored, a new one is downloaded."""
        assert self.storage is not None
        bucket, key = parse_s3_uri(self.spec.source, require_key=True)
        try:
            version = await self.storage.head(bucket, key)
        except StorageError as exc:
            raise InputFetchError(f"{self.label}: {exc.message}", input=self.label, **exc.details) from exc
        identity = f"s3\n{self.cache_scope()}\n{bucket}\n{key}\n{version.version}"
        record = self.cache.read_record(identity)
        entry = await self._stored(record, version.size)
        if entry is not None:
            return entry, False
        entry = await self.download({"If-Match": version.etag} if version.etag else {}, size=version.size)
        await asyncio.to_thread(self.cache.write_record, identity, {"sha256": entry.sha256, "size": entry.size})
        return entry, True

    async def url(self) -> tuple[CacheEntry, bool]:
        """A conditional GET with the stored validators: 304 means the stored file is current."""
        identity = f"url\n{self.spec.source}"
        record = self.cache.read_record(identity)
        entry = await self._stored(record, None)
        conditions = _validators(record) if entry is not None and record is not None else {}
        if entry is not None and not conditions:
            self.cache.release([entry])  # nothing to revalidate with: the content decides (same hash, same path)
            entry = None
        download = self.cache.new_download_path()
        fetched = await self._fetch(download, conditions)
        if fetched.not_modified and entry is not None:
            return entry, False
        if entry is not None:
            self.cache.release([entry])
        entry = await asyncio.to_thread(self.cache.insert, download, sha256="", size=None, label=self.label)
        await asyncio.to_thread(self.cache.write_record, identity, {
            "sha256": entry.sha256, "size": entry.size, "etag": fetched.etag, "last_modified": fetched.last_modified})
        return entry, True

    async def download(self, conditions: dict[str, str] | None = None, *, size: int | None = None) -> CacheEntry:
        """Fetch the source into ``tmp/`` and store it (sha256 and size checked)."""
        download = self.cache.new_download_path()
        await self._fetch(download, conditions or {})
        return await asyncio.to_thread(self.cache.insert, download, sha256=self.spec.sha256, size=size,
                                       label=self.label)

    async def _fetch(self, download: Path, conditions: dict[str, str]) -> Fetched:
        try:
            return await fetch_version(self.spec.source, download, storage=self.storage, config=self.config,
                                       label=self.label, budget=self.budget, conditions=conditions)
        except BaseException:
            download.unlink(missing_ok=True)
            raise

    async def _stored(self, record: dict[str, Any] | None, size: int | None) -> CacheEntry | None:
        """The entry a record points to, if it is stored and of the size recorded (and reported)."""
        if record is None:
            return None
        entry = await asyncio.to_thread(self.cache.acquire, record["sha256"])
        if entry is not None and (entry.size != record.get("size") or (size is not None and entry.size != size)):
            self.cache.release([entry])
            return None
        return entry

    def cache_scope(self) -> str:
        """The S3 endpoint: two stores may hold the same bucket and key with other content."""
        assert self.storage is not None
        return self.storage.endpoint_url


def _validators(record: dict[str, Any]) -> dict[str, str]:
    """The conditional request headers a stored URL record allows (the ETag wins, as HTTP says)."""
    if record.get("etag"):
        return {"If-None-Match": str(record["etag"])}
    if record.get("last_modified"):
        return {"If-Modified-Since": str(record["last_modified"])}
    return {}


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(text: str) -> str:
    """Index file names: a hash, so that no source (a URL may carry a token) is written in clear."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder)]
    except FileNotFoundError:
        return []


def _remove_older_than(folder: Path, age_s: float) -> None:
    cutoff = time.time() - age_s
    for path in _entries(folder):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


# --- pre-warming ----------------------------------------------------------------------------------

async def prewarm(specs: list[InputSpec], cache: ModelCache, *, storage: S3Storage | None,
                  config: Config) -> list[str]:
    """Fill the cache with ``specs``, one after another; a line per entry saying what was done."""
    lines = []
    for spec in specs:
        started = time.monotonic()
        entry, downloaded = await cache.obtain(spec, storage=storage, config=config, budget=None)
        cache.release([entry])
        lines.append(f"{spec.field} {spec.name}: {describe_size(entry.size)}, sha256 {entry.sha256}, "
                     f"{'downloaded' if downloaded else 'already cached'} in {time.monotonic() - started:.2f} s")
    await asyncio.to_thread(cache.evict)
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m comfy_serverless.model_cache LIST.json``: the worker's settings come from its environment."""
    parser = argparse.ArgumentParser(prog="python -m comfy_serverless.model_cache", description=(
        "Fill the model cache (MODEL_CACHE_DIR) from a JSON list of inputs "
        '[{"source", "folder_type", "subfolder", "name", "sha256"}], e.g. at endpoint setup.'))
    parser.add_argument("list", type=Path, help="JSON file holding the list ('-': standard input)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("COMFY_SERVERLESS_LOG_LEVEL", "WARNING"))
    try:
        text = sys.stdin.read() if str(args.list) == "-" else args.list.read_text()
        config = Config.load()
        specs = [dataclasses.replace(spec, cache=True) for spec in parse_input_list(json.loads(text), "list")]
        cache = ModelCache.from_config(config)
        lines = asyncio.run(prewarm(specs, cache, storage=S3Storage.from_config(config), config=config))
    except (OSError, ValueError, ComfyServerlessError) as exc:
        print(f"pre-warming failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
