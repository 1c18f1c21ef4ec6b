"""Fetching a job's inputs into local files: all or nothing, within the job's budgets of bytes and time.

What each kind of input is (an S3 object, a URL behind the SSRF guard, base64
data) and how it is downloaded is its :mod:`~comfy_serverless.sources` entry;
this module runs the fetches: at most FETCH_CONCURRENCY at once, each within
DOWNLOAD_TIMEOUT_S and all within FETCH_TIMEOUT_S, every byte charged to the
job's MAX_JOB_INPUT_BYTES, inputs marked ``cache`` through the model cache.
A fetch writes to a temporary name that only replaces the destination once
complete, so a failed fetch leaves no file behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputFetchError
from .files import describe_size
from .sources import Fetched, FetchRequest, prefixes_text, scheme_of, source_of, uncharged

if TYPE_CHECKING:
    from .config import Config
    from .jobspec import InputSpec
    from .model_cache import CacheEntry, ModelCache
    from .storage import S3Storage

logger = logging.getLogger(__name__)

#: Inputs fetched at the same time by :func:`fetch_all`.
FETCH_CONCURRENCY = 8


class ByteBudget:
    """The bytes all of one job's inputs may take together (MAX_JOB_INPUT_BYTES), shared by concurrent fetches.

    Charged chunk by chunk (from S3's worker threads too, hence the lock), so
    a job of many inputs stops as soon as the total passes the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, size: int, label: str) -> None:
        with self._lock:
            self._used += size
            used = self._used
        if used > self.limit:
            raise InputFetchError(f"{label}: the job's inputs together are larger than {describe_size(self.limit)} "
                                  "(MAX_JOB_INPUT_BYTES); send fewer or smaller inputs", input=label,
                                  limit_bytes=self.limit)


async def fetch_to_file(source: str, destination: Path, *, storage: S3Storage | None, config: Config,
                        label: str, budget: ByteBudget | None = None) -> int:
    """Fetch ``source`` (``s3://``, ``http(s)://``, ``data:`` or bare base64) to ``destination``; bytes written.

    ``label`` names the input in every :class:`InputFetchError` ("input.inputs[2] (photo.png): ...").
    The whole fetch, redirects included, must finish within DOWNLOAD_TIMEOUT_S; ``budget``, if
    given, is charged with every byte.
    """
    fetched = await fetch_version(source, destination, storage=storage, config=config, label=label, budget=budget)
    return fetched.size


async def fetch_version(source: str, destination: Path, *, storage: S3Storage | None, config: Config,
                        label: str, budget: ByteBudget | None = None,
                        conditions: Mapping[str, str] | None = None) -> Fetched:
    """:func:`fetch_to_file`, telling the version fetched; ``conditions`` are HTTP validators.

    For a URL, ``If-None-Match``/``If-Modified-Since`` make it a conditional request (a 304 is
    ``not_modified``, nothing written); for S3, ``If-Match`` refuses an object that changed.
    """
    started = time.monotonic()
    # Next to the destination, so os.replace is atomic; shortened so the name stays within NAME_MAX.
    partial = destination.with_name(f".{destination.name[:200]}.{secrets.token_hex(4)}.partial")
    limit = config.download_timeout_s or None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        async with asyncio.timeout(limit) as deadline:
            charge = functools.partial(budget.take, label=label) if budget else uncharged
            fetched = await _fetch(source, FetchRequest(partial, config, storage, label, charge, conditions or {}))
        if not fetched.not_modified:
            os.replace(partial, destination)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise InputFetchError(f"{label}: the download took longer than {limit:g} s (DOWNLOAD_TIMEOUT_S); use a "
                              "faster source or raise DOWNLOAD_TIMEOUT_S", input=label) from None
    except OSError as exc:  # the local disk: full, read-only, ...
        raise InputFetchError(f"{label}: could not write the download to the worker's disk: "
                              f"{exc.strerror or type(exc).__name__}", input=label) from exc
    finally:
        with contextlib.suppress(OSError):  # a failed cleanup must not hide the error that caused it
            partial.unlink(missing_ok=True)
    outcome = "not modified" if fetched.not_modified else describe_size(fetched.size)
    logger.info("fetched %s: %s in %.2f s", label, outcome, time.monotonic() - started)
    return fetched


@dataclass(frozen=True)
class InputFetch:
    """How one input was fetched: its size, the seconds it took, and, for a cached input, its cache entry
    (``cached``: found in the cache, nothing downloaded)."""

    size: int
    seconds: float
    entry: CacheEntry | None = None
    cached: bool = False


async def fetch_all(items: Sequence[tuple[InputSpec, Path]], *, storage: S3Storage | None,
                    config: Config, cache: ModelCache | None = None) -> list[InputFetch]:
    """Fetch every ``(input, destination)`` pair, 8 at a time; what each fetch did, in order.

    Inputs marked ``cache`` go through ``cache`` (if given) instead of to their destination.
    All or nothing: on the first failure the other fetches are cancelled and
    awaited, every file already fetched is deleted (cache entries are released, not
    deleted), and that first error is raised.
    Together the inputs may take MAX_JOB_INPUT_BYTES and FETCH_TIMEOUT_S.
    """
    semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)
    budget = ByteBudget(config.max_job_input_bytes)
    fetched: list[Path] = []
    entries: list[CacheEntry] = []

    async def fetch_one(spec: InputSpec, destination: Path) -> InputFetch:
        async with semaphore:
            started = time.monotonic()
            if spec.cache and cache is not None:
                entry, downloaded = await cache.obtain(spec, storage=storage, config=config, budget=budget)
                entries.append(entry)
                return InputFetch(entry.size, time.monotonic() - started, entry, cached=not downloaded)
            size = await fetch_to_file(spec.source, destination, storage=storage, config=config,
                                       label=f"{spec.field} ({spec.name})", budget=budget)
        fetched.append(destination)
        return InputFetch(size, time.monotonic() - started)

    tasks = [asyncio.create_task(fetch_one(spec, destination)) for spec, destination in items]
    deadline = asyncio.timeout(config.fetch_timeout_s or None)
    try:
        async with deadline:
            return list(await asyncio.gather(*tasks))
    except BaseException as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for path in fetched:
            path.unlink(missing_ok=True)
        if cache is not None:
            cache.release(entries)
        if isinstance(exc, TimeoutError) and deadline.expired():
            raise InputFetchError(f"fetching the job's {len(items)} inputs took longer than "
                                  f"{config.fetch_timeout_s:g} s (FETCH_TIMEOUT_S); use faster sources or fewer "
                                  "inputs") from None
        raise


async def _fetch(source: str, request: FetchRequest) -> Fetched:
    handler = source_of(source)
    if handler is None:
        # Only the scheme is echoed: the rest may hold credentials.
        raise InputFetchError(f"{request.label}: unsupported source scheme {scheme_of(source)[:20]!r}; use "
                              f"{prefixes_text()}", input=request.label)
    return await handler.fetch(source, request)
