"""The long-lived worker: one event loop, in its own thread, that owns ComfyUI, Chromium and every job.

The RunPod SDK runs handlers on an event loop it creates per mode (and, for
``--rp_serve_api``, inside uvicorn). Playwright, aiohttp sessions and the
websocket reader are bound to the loop that created them, so the cold start
cannot happen on a throwaway loop before ``runpod.serverless.start`` and be
used from the SDK's loop afterwards. Instead they live on a dedicated loop for
the life of the process, and each job is handed over to it; cancelling the
SDK's task cancels the job on the worker loop, which interrupts ComfyUI.

Stopping happens on that loop too (:meth:`Worker.stop`), from whichever thread
asks: the entry point's signal handler or its exit hook. Only when the loop
cannot finish the stop in time are the processes killed from outside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from .config import NETWORK_VOLUME, Config
from .connector import ComfyConnector
from .folders import describe_model_folders
from .job import JobRunner, ProgressSink
from .storage import S3Storage

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Worker:
    """Boots once with :meth:`start`, then runs jobs with :meth:`handle` from any event loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.connector = ComfyConnector(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfy-serverless-loop", daemon=True)
        self._runner: JobRunner | None = None
        self._stop_lock = threading.Lock()

    def start(self) -> None:
        """Validate storage settings, boot ComfyUI and Chromium and run the self-test; raises if any fails."""
        storage = S3Storage.from_config(self.config)  # S3 without credentials fails here, before ComfyUI boots
        self._thread.start()
        self.call_blocking(self.connector.start())
        if self.config.network_volume_debug:
            for line in describe_model_folders(self.connector.comfy.model_folders, NETWORK_VOLUME):
                logger.info("%s", line)
        self._runner = JobRunner(self.connector, self.config, storage)
        _release_boot_garbage()

    def call_blocking(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the worker loop from another loop; cancelling the caller cancels it there too."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    @property
    def can_run_jobs(self) -> bool:
        """False once ComfyUI died and could not be brought back: every further job here would fail."""
        return not self.connector.comfy.restart_failed

    def _require_runner(self) -> JobRunner:
        if self._runner is None:
            raise RuntimeError("Worker.start() has not been called")
        return self._runner

    async def handle(self, job: dict[str, Any], progress: ProgressSink | None = None) -> dict[str, Any]:
        """One job's result (a dict). Several may run at once, from one loop or several."""
        return await self.call(self._require_runner().run(str(job.get("id", "local")), job.get("input"), progress))

    async def stream(self, job: dict[str, Any], progress: ProgressSink | None = None) -> AsyncIterator[dict[str, Any]]:
        """One job's items (:meth:`JobRunner.stream`), each handed to the caller's loop as soon as it is made.

        Closing the iterator, or cancelling the caller, cancels the job on the worker loop.
        """
        runner = self._require_runner()
        caller = asyncio.get_running_loop()
        items: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def pump() -> None:
            async for item in runner.stream(str(job.get("id", "local")), job.get("input"), progress):
                caller.call_soon_threadsafe(items.put_nowait, item)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        future.add_done_callback(lambda _: caller.call_soon_threadsafe(items.put_nowait, None))
        try:
            while (item := await items.get()) is not None:
                yield item
            future.result()  # a bug in the pipeline surfaces here, as an exception the SDK reports
        finally:
            future.cancel()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop ComfyUI and Chromium on the worker loop, then the loop; from any thread but the loop's. Idempotent.

        When the graceful stop does not finish within ``timeout_s`` (a wedged
        loop), what is left is killed without it.
        """
        with self._stop_lock:  # a signal's stop and the exit hook's may overlap
            if self._thread.is_alive():
                try:
                    self.call_blocking(self.connector.kill_api(), timeout_s)
                except Exception as exc:  # a timeout, or an interpreter shutting down: its threads are refused
                    logger.warning("graceful stop failed (%s); killing ComfyUI and Chromium",
                                   exc or type(exc).__name__)
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
            self.connector.terminate()  # a no-op after a graceful stop; else what the loop did not stop


def _release_boot_garbage() -> None:
    """Give back what the cold start left behind (parsed node definitions, the record, import-time data):
    a collection, then glibc's ``malloc_trim``, which returns freed heap pages to the system (−19 MB
    measured). A worker idles between jobs, so its resident memory is what the host bills."""
    gc.collect()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
