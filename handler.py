"""RunPod serverless entry point.

    python handler.py                          # runs ./test_input.json once, prints a summary
    python handler.py --test_input '{"input": {...}}' [--json] [--output_dir DIR]
    python handler.py --rp_serve_api           # local HTTP API on :8000
    (in a RunPod endpoint)                     # takes jobs from the queue

The cold start (ComfyUI, Chromium, frontend, self-test) happens here, once per
container, before the SDK takes the first job, so no job pays for it.

This is the RunPod adapter: what is RunPod's (the SDK's entry, its progress
updates, ``refresh_worker``) stays in this file, and so do the process-wide
concerns, signals and the exit hook, which stop the worker cleanly. Another
platform's adapter would be a file like this one beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import runpod

from comfy_serverless import ComfyServerlessError, Config, local_run
from comfy_serverless.worker import Worker
from comfy_serverless.worker_comfyui import with_images

logger = logging.getLogger("comfy_serverless.handler")

WORKER: Worker | None = None
#: What runpod.serverless.start gets; the SDK reads "refresh_worker" from it after every job.
SDK_CONFIG: dict[str, Any] = {}


def _progress_sink(job: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """RunPod progress updates in production; a log line locally, where the SDK has nowhere to send them."""
    if os.environ.get("RUNPOD_WEBHOOK_GET_JOB"):
        return lambda progress: runpod.serverless.progress_update(job, progress)
    return lambda progress: logger.info("progress: %s", progress)


def _for_runpod(result: dict[str, Any]) -> dict[str, Any]:
    """Ask RunPod for a fresh worker after this job when REFRESH_WORKER says so, or when ComfyUI is gone
    for good here (it died and could not be restarted): the next job would fail the same way."""
    assert WORKER is not None
    if WORKER.config.refresh_worker or not WORKER.can_run_jobs:
        result["refresh_worker"] = True
    return result


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """One RunPod job, its result in our form and in worker-comfyui's (``images``), so that its clients work
    unchanged. Cancellation (RunPod's per-job stop) propagates: its prompt, and only it, is stopped."""
    assert WORKER is not None, "the worker is started before the SDK takes jobs"
    return _for_runpod(with_images(await WORKER.handle(job, _progress_sink(job))))


async def stream_handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """One RunPod job, streamed (STREAM_OUTPUTS): each output as it is delivered, then a final item.

    The SDK ignores ``refresh_worker`` in a generator's items, so a final item
    that asks for it sets it in the SDK's configuration, which it reads after the job.
    """
    assert WORKER is not None, "the worker is started before the SDK takes jobs"
    async for item in WORKER.stream(job, _progress_sink(job)):
        if item.get("done") and _for_runpod(item).get("refresh_worker"):
            SDK_CONFIG["refresh_worker"] = True
        yield item


def main() -> None:
    global WORKER
    logging.getLogger("comfy_serverless").setLevel(os.environ.get("COMFY_SERVERLESS_LOG_LEVEL", "INFO"))
    try:
        config = Config.load()
    except ComfyServerlessError as exc:
        logger.error("worker failed to start: %s", exc)
        sys.exit(1)
    if config.serve_api_locally:
        _serve_api_locally()
    local_args: argparse.Namespace | None = None
    local_job: dict[str, Any] | None = None
    if _is_local_one_shot():  # a bad job file fails before the cold start, not after it
        local_args = local_run.parse_args(sys.argv[1:])
        try:
            local_job = local_run.load_job(local_args.test_input)
        except ValueError as exc:
            logger.error("%s", exc)
            sys.exit(1)
    WORKER = Worker(config)
    atexit.register(WORKER.stop)
    signals = SignalStop(WORKER)
    signals.install()
    try:
        _serve(WORKER, local_job, local_args)
    finally:
        signals.wait()
        WORKER.stop()  # now, while the interpreter still runs threads; the exit hook is the backstop


def _serve(worker: Worker, local_job: dict[str, Any] | None, local_args: argparse.Namespace | None) -> None:
    """Start the worker, then run the local job (``python handler.py``), or hand the worker to the SDK."""
    try:
        worker.start()
    except ComfyServerlessError as exc:
        logger.error("worker failed to start: %s", exc)
        sys.exit(1)
    streaming = worker.config.stream_outputs
    if local_job is not None and local_args is not None:  # the SDK would not iterate a generator here
        handle = local_run.collected(stream_handler) if streaming else handler
        sys.exit(asyncio.run(local_run.run_local(handle, local_job, local_args)))
    concurrency = worker.config.max_concurrent_jobs
    SDK_CONFIG.update(handler=stream_handler if streaming else handler, return_aggregate_stream=True,
                      concurrency_modifier=lambda _current: concurrency)
    runpod.serverless.start(SDK_CONFIG)


class SignalStop:
    """On SIGTERM or SIGINT, stop the worker cleanly, then let the signal do what it did before.

    The handler only starts the stop, in a thread: the worker stops ComfyUI and
    Chromium on its own loop (never from under a thread using them), then the
    signal is sent again with its earlier disposition restored (the default
    ends the process). A second signal meanwhile acts at once. The RunPod SDK
    sets handlers of its own once it runs: then its shutdown returns from
    ``runpod.serverless.start`` and the exit hook stops the worker.
    """

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._previous: dict[int, Any] = {}
        self._stopping: threading.Thread | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            before = signal.getsignal(sig)
            if before == signal.SIG_IGN:  # ignored by whoever started us (nohup, a background job): so be it
                continue
            self._previous[sig] = signal.SIG_DFL if before is None else before
            signal.signal(sig, self._on_signal)

    def wait(self) -> None:
        """Let a stop that a signal started finish before the main thread exits (an exiting interpreter
        refuses the threads the stop needs); the signal sent again then usually ends the process."""
        if self._stopping is not None:
            self._stopping.join()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, self._previous[signum])

        def stop_then_resend() -> None:
            self._worker.stop()
            os.kill(os.getpid(), signum)

        self._stopping = threading.Thread(target=stop_then_resend, name="comfy-serverless-stop")
        self._stopping.start()


def _serve_api_locally() -> None:
    """SERVE_API_LOCALLY: the SDK's local API, as ``--rp_serve_api`` gives it, on every interface (as
    worker-comfyui serves it, so that ``docker run -p 8000:8000`` reaches it) unless ``--rp_api_host`` says
    otherwise. The SDK reads these flags from ``sys.argv`` when it starts."""
    flags = sys.argv[1:]
    if "--rp_serve_api" not in flags:
        sys.argv.append("--rp_serve_api")
    if not any(flag.startswith("--rp_api_host") for flag in flags):
        sys.argv.append("--rp_api_host=0.0.0.0")


def _is_local_one_shot() -> bool:
    """RunPod's SDK would run one local job (its own rule: ``--test_input``, or no job queue to poll)."""
    if "--rp_serve_api" in sys.argv[1:] or os.environ.get("RUNPOD_REALTIME_PORT", "0") != "0":
        return False
    return "--test_input" in sys.argv[1:] or not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")


if __name__ == "__main__":
    main()
