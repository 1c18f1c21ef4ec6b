"""RunPod serverless entry point.

    python handler.py                          # runs ./test_input.json once, prints a summary
    python handler.py --test_input '{"input": {...}}' [--json] [--output_dir DIR]
    python handler.py --rp_serve_api           # local HTTP API on :8000
    (in a RunPod endpoint)                     # takes jobs from the queue

The cold start (ComfyUI, Chromium, frontend, self-test) happens here, once per
container, before the SDK takes the first job, so no job pays for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import runpod

from comfy_serverless import ComfyServerlessError, local_run
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
    local = _is_local_one_shot()
    if local:  # a bad job file fails before the cold start, not after it
        args = local_run.parse_args(sys.argv[1:])
        try:
            job = local_run.load_job(args.test_input)
        except ValueError as exc:
            logger.error("%s", exc)
            sys.exit(1)
    try:
        WORKER = Worker()
        WORKER.start()
    except ComfyServerlessError as exc:
        logger.error("worker failed to start: %s", exc)
        sys.exit(1)
    if local:
        sys.exit(asyncio.run(local_run.run_local(handler, job, args)))
    runpod.serverless.start({"handler": handler})


def _is_local_one_shot() -> bool:
    """RunPod's SDK would run one local job (its own rule: ``--test_input``, or no job queue to poll)."""
    if "--rp_serve_api" in sys.argv[1:] or os.environ.get("RUNPOD_REALTIME_PORT", "0") != "0":
        return False
    return "--test_input" in sys.argv[1:] or not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")


if __name__ == "__main__":
    main()
