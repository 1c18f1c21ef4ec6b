"""Several jobs per worker (MAX_CONCURRENT_JOBS) and streaming: jobs per minute at concurrency 1, 2 and 3,
and the time to the first streamed output against the time to the full result.

Each throughput job downloads a 2 MB input from a loopback server that answers after 300 ms, executes for
about a second and uploads a 2 MB output to S3 (moto on loopback): the shape of a real job, where the GPU
idles during transfers unless another job's prompt executes meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from comfy_serverless import ComfyConnector
from comfy_serverless.job import JobRunner
from tests.support.comfy import set_faults
from tests.support.loopback import loopback_server

from .common import REAL_COMFY, Figure, Report, median
from .jobs import png_bytes

#: Seconds the input server waits before it answers.
LATENCY_S = 0.3
#: Seconds the test server's blur sleeps: with loading the input and saving the 2 MB PNG, about 1 s of
#: execution (reported beside the figures; a real ComfyUI's blur takes what it takes).
BLUR_DELAY_S = 0.8
JOBS = 20


@asynccontextmanager
async def slow_input_server(body: bytes) -> AsyncIterator[str]:
    """A loopback HTTP server that serves ``body`` after LATENCY_S; yields its URL."""
    async def serve(_request: web.Request) -> web.Response:
        await asyncio.sleep(LATENCY_S)
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/input.png", serve)
    async with loopback_server(app) as url:
        yield f"{url}/input.png"


async def slow_blurs(connector: ComfyConnector, seconds: float) -> None:
    """On the test server, an ImageBlur takes ``seconds`` (0: as fast as Pillow); a real ComfyUI is left alone."""
    if not REAL_COMFY:
        await set_faults(connector, **({"class_delay_s": {"ImageBlur": seconds}} if seconds else {"reset": True}))


def blur_job(url: str, index: int, bucket: str) -> dict[str, Any]:
    """Input → one blur (about EXECUTE_S) → a 2 MB PNG saved and uploaded to S3."""
    return {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"tp{index}"}}},
        "inputs": [{"source": url, "name": "input.png"}],
        "output": {"s3_uri": f"s3://{bucket}/throughput", "presign": False}}


@dataclass
class Rate:
    """Jobs run ``concurrency`` at a time: how many a minute, and the seconds each one's prompt executed."""

    per_minute: float
    executed: list[float]
    wall_s: float

    @property
    def comfy_busy(self) -> float:
        """The fraction of the time ComfyUI was executing a prompt (it executes one at a time)."""
        return sum(self.executed) / self.wall_s


async def jobs_per_minute(runner: JobRunner, job: Callable[[int], dict[str, Any]], concurrency: int,
                          count: int = JOBS) -> Rate:
    """``count`` jobs (``job(index)``), ``concurrency`` at a time, as MAX_CONCURRENT_JOBS lets a worker take them."""
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> float:
        async with limit:
            result = await runner.run(f"tp-{concurrency}-{index}", job(index))
            assert "error" not in result, result
            return float(result["timings"]["execute"])

    started = time.perf_counter()
    executed = await asyncio.gather(*(one(index) for index in range(count)))
    wall = time.perf_counter() - started
    return Rate(count / wall * 60, list(executed), wall)


async def throughput(report: Report, connector: ComfyConnector, runner: JobRunner, bucket: str) -> None:
    """20 jobs at concurrency 1, 2 and 3, side by side; the target is 1.4x the jobs per minute at 2."""
    await slow_blurs(connector, BLUR_DELAY_S)
    try:
        async with slow_input_server(png_bytes(2 * 1024 * 1024, noise=True)) as url:
            measured = {n: await jobs_per_minute(runner, lambda index: blur_job(url, index, bucket), n)
                        for n in (1, 2, 3)}
    finally:
        await slow_blurs(connector, 0)
    base = measured[1].per_minute
    for n, rate in measured.items():
        execute_s = median(rate.executed)
        report.add(Figure(f"throughput, concurrency {n} (20 jobs: 2 MB URL in +300 ms, {execute_s:.2f} s executing, "
                          "2 MB to S3)", rate.per_minute, "jobs/min", base, "concurrency 1",
                          target=">= 1.4x" if n == 2 else "", met=rate.per_minute / base >= 1.4 if n == 2 else None,
                          extra={"median_execute_s": execute_s}))
    report.add(ceiling(measured[1], extra={"comfyui_busy_at_2": measured[2].comfy_busy}))


def ceiling(alone: Rate, **fields: Any) -> Figure:
    """ComfyUI executes one prompt at a time: no concurrency beats (job time alone) / (execution time)."""
    return Figure("throughput ceiling: job time at concurrency 1 / execution time",
                  60 / alone.per_minute / median(alone.executed), "x", **fields)


def four_output_prompt() -> dict[str, Any]:
    """Four SaveImage nodes: the first before any blur, each later one after one more blur."""
    prompt: dict[str, Any] = {"1": {"class_type": "EmptyImage", "inputs": {
        "width": 512, "height": 512, "batch_size": 1, "color": int(time.time()) & 0xFFFFFF}}}
    for step in range(4):
        source = str(1 + step)
        if step:
            prompt[source] = {"class_type": "ImageBlur",
                              "inputs": {"image": [str(step), 0], "blur_radius": 31, "sigma": 10.0}}
        prompt[str(10 + step)] = {"class_type": "SaveImage",
                                  "inputs": {"images": [source, 0], "filename_prefix": f"ttfo{step}"}}
    return prompt


async def time_to_first_output(report: Report, connector: ComfyConnector, runner: JobRunner) -> None:
    """Streaming: when the first output is in the client's hands, against when the whole result is."""
    await slow_blurs(connector, BLUR_DELAY_S)
    try:
        started = time.perf_counter()
        first = None
        async for item in runner.stream("ttfo", {"workflow": four_output_prompt()}):
            assert "error" not in item, item
            if first is None:
                first = time.perf_counter() - started
        full = time.perf_counter() - started
    finally:
        await slow_blurs(connector, 0)
    assert first is not None
    report.add(Figure("streaming: time to first output (4-output workflow)", first * 1000, "ms", full * 1000,
                      "time to the full result", target="< full result", met=first < full))
