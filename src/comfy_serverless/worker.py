"""The long-lived worker: one event loop, in its own thread, that owns ComfyUI, Chromium and every job.

The RunPod SDK runs handlers on an event loop it creates per mode (and, for
``--rp_serve_api``, inside uvicorn). Playwright, aiohttp sessions and the
websocket reader are bound to the loop that created them, so the cold start
cannot happen on a throwaway loop before ``runpod.serverless.start`` and be
used from the SDK's loop afterwards. Instead they live on a dedicated loop for
the life of the process, and each job is handed over to it; cancelling the
SDK's task cancels the job on the worker loop, which interrupts ComfyUI.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from .config import Config
from .connector import ComfyConnector
from .job import JobRunner, ProgressSink
from .storage import S3Storage

T = TypeVar("T")


class Worker:
    """Boots once with :meth:`start`, then runs jobs with :meth:`handle` from any event loop."""

    def __init__(self, config_path: str | None = None) -> None:
        self.config = Config.load(config_path)
        self._config_path = config_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="comfy-serverless-loop", daemon=True)
        self._runner: JobRunner | None = None
        self.connector: ComfyConnector | None = None

    def start(self) -> None:
        """Validate storage settings, boot ComfyUI and Chromium and run the self-test; raises if any fails."""
        storage = S3Storage.from_config(self.config)  # a partial S3 setup fails here, before ComfyUI boots
        ComfyConnector.install_exit_hooks()  # signal handlers can only be set from the main thread
        atexit.register(self.stop)  # runs before the connector's synchronous hook: a graceful stop first
        self._thread.start()
        self.connector = self.call_blocking(ComfyConnector.create(self._config_path))
        self._runner = JobRunner(self.connector, self.config, storage)

    def call_blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the worker loop from another loop; cancelling the caller cancels it there too."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

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
        """Stop ComfyUI and Chromium on the worker loop, then the loop. Idempotent."""
        connector, self.connector = self.connector, None
        if not self._thread.is_alive():
            return
        if connector is not None:
            try:
                asyncio.run_coroutine_threadsafe(connector.kill_api(), self._loop).result(timeout_s)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass  # the synchronous exit hook of the connector still kills what is left
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
