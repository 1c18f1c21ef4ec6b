"""RunPod serverless entry point.

    python handler.py                          # runs ./test_input.json once
    python handler.py --test_input '{"input": {...}}'
    python handler.py --rp_serve_api           # local HTTP API on :8000
    (in a RunPod endpoint)                     # takes jobs from the queue

The cold start (ComfyUI, Chromium, frontend, self-test) happens here, once per
container, before the SDK takes the first job, so no job pays for it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import runpod

from comfy_serverless import ComfyServerlessError
from comfy_serverless.worker import Worker

logger = logging.getLogger("comfy_serverless.handler")

WORKER: Worker | None = None


def _progress_sink(job: dict[str, Any]):
    """RunPod progress updates in production; a log line locally, where the SDK has nowhere to send them."""
    if os.environ.get("RUNPOD_WEBHOOK_GET_JOB"):
        return lambda progress: runpod.serverless.progress_update(job, progress)
    return lambda progress: logger.info("progress: %s", progress)


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """One RunPod job. Cancellation (RunPod's per-job stop) propagates: ComfyUI is interrupted."""
    assert WORKER is not None, "the worker is started before the SDK takes jobs"
    return await WORKER.handle(job, _progress_sink(job))


def main() -> None:
    global WORKER
    logging.getLogger("comfy_serverless").setLevel(os.environ.get("COMFY_SERVERLESS_LOG_LEVEL", "INFO"))
    try:
        WORKER = Worker()
        WORKER.start()
    except ComfyServerlessError as exc:
        logger.error("worker failed to start: %s", exc)
        sys.exit(1)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
