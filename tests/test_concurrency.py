"""Several jobs per worker (issue 11): they overlap, ComfyUI executes one prompt at a time, and every
guarantee holds: private inputs and outputs, cleanup of only the job's own files and history, a cancel that
stops only its own prompt, timeout_s from the start of execution, a dead ComfyUI failing every job in flight.
Also streaming: outputs as they are delivered. Both tiers: the test server and a real ComfyUI.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import signal
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from tests.support.comfy import REAL_COMFY, comfy_processes, set_faults
from tests.support.jobs import data_uri, first_pixel, folder_state, png
from tests.support.ui_workflows import chain, invert, load_image, save_image

#: Seconds each blur takes on the test server; a real ComfyUI on CPU takes about as long for the batch below.
BLUR_S = 1.5


@pytest.fixture
async def runner(connector: ComfyConnector, scratch: Path) -> AsyncIterator[JobRunner]:
    """A runner whose blurs take BLUR_S on the test server too; the delay is lifted afterwards."""
    if not REAL_COMFY:
        await set_faults(connector, class_delay_s={"ImageBlur": BLUR_S})
    yield JobRunner(connector, Config(scratch_dir=str(scratch)), None)
    if not REAL_COMFY and connector.state.value == "ready":
        await set_faults(connector, reset=True)


def slow_job(prefix: str, blurs: int = 2, **extra: Any) -> dict[str, Any]:
    """An API prompt with seconds of work on any ComfyUI, a small saved image at the end. Its color comes from
    ``prefix``, so ComfyUI's cache of the previous prompt's nodes does not skip the work."""
    color = zlib.crc32(prefix.encode()) & 0xFFFFFF
    prompt: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 2, "color": color}}}
    for blur in range(blurs):
        prompt[str(2 + blur)] = {"class_type": "ImageBlur",
                                 "inputs": {"image": [str(1 + blur), 0], "blur_radius": 31, "sigma": 10.0}}
    last = str(1 + blurs)
    prompt["20"] = {"class_type": "ImageScale", "inputs": {"image": [last, 0], "upscale_method": "nearest-exact",
                                                           "width": 16, "height": 16, "crop": "disabled"}}
    prompt["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": prefix}}
    return {"workflow": prompt, **extra}


def quick_job(prefix: str, **extra: Any) -> dict[str, Any]:
    return {"workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}, **extra}


async def comfy_history(connector: ComfyConnector) -> set[str]:
    return set(await connector.client.get_json("/history"))


async def queue_of(connector: ComfyConnector) -> tuple[list[str], list[str]]:
    """The filename prefixes of the prompts ComfyUI runs and of those it holds pending."""
    queue = await connector.client.get_json("/queue")

    def prefixes(items: list[Any]) -> list[str]:
        return [node["inputs"]["filename_prefix"] for item in items for node in item[2].values()
                if node["class_type"] == "SaveImage"]
    return prefixes(queue["queue_running"]), prefixes(queue["queue_pending"])


async def until(condition: Any, timeout_s: float = 30.0) -> None:
    """Poll ``await condition()`` until true; a failure, not a hang, when it never is."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - ComfyUI's queue is polled, it notifies nothing
            await asyncio.sleep(0.05)


async def running_and_pending(connector: ComfyConnector, running: str, pending: str) -> None:
    async def seen() -> bool:
        return await queue_of(connector) == ([running], [pending])
    await until(seen)


# --- several jobs, one ComfyUI ------------------------------------------------------------------
async def test_twenty_jobs_in_pairs_get_exactly_their_own_inputs_and_outputs(
        runner: JobRunner, connector: ComfyConnector, scratch: Path) -> None:
    """10 pairs: both jobs of a pair upload photo.png and save with the same prefix (UI workflows, so the
    conversions are concurrent too). Each gets the inverse of its own color, and nothing is left."""
    before, history_before = folder_state(connector, scratch), await comfy_history(connector)
    colors = [(10 * job, 255 - 10 * job, 7 * job) for job in range(20)]
    jobs = [{"workflow": chain(load_image("photo.png"), invert(), save_image(f"pair-{job // 2}")),
             "images": [{"name": "photo.png", "image": data_uri(png(color))}]} for job, color in enumerate(colors)]
    results = await asyncio.gather(*(runner.run(f"job-{n}", job) for n, job in enumerate(jobs)))
    for color, result in zip(colors, results, strict=True):
        assert "error" not in result, result
        (output,) = result["outputs"]
        pixel = first_pixel(base64.b64decode(output["data"]))  # ComfyUI's float round trip may be 1 off
        assert all(abs(got - (255 - sent)) <= 1 for got, sent in zip(pixel, color, strict=True)), (pixel, color)
    assert len({r["outputs"][0]["filename"] for r in results}) >= 2  # pairs shared a prefix, not a file
    assert folder_state(connector, scratch) == before
    assert await comfy_history(connector) == history_before


async def test_cancelling_a_queued_job_leaves_the_executing_one_alone(runner: JobRunner,
                                                                      connector: ComfyConnector) -> None:
    executing = asyncio.create_task(runner.run("job-a", slow_job("cancel-q-a", blurs=4)))
    await until(lambda: _running_is(connector, "cancel-q-a"))
    queued = asyncio.create_task(runner.run("job-b", slow_job("cancel-q-b")))
    await running_and_pending(connector, "cancel-q-a", "cancel-q-b")
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await queue_of(connector) == (["cancel-q-a"], [])  # taken off the queue; the other still runs
    result = await executing
    assert "error" not in result, result
    assert result["history"][result["prompt_id"]]["status"]["status_str"] == "success"


async def test_cancelling_the_executing_job_lets_the_queued_one_run(runner: JobRunner,
                                                                    connector: ComfyConnector) -> None:
    executing = asyncio.create_task(runner.run("job-a", slow_job("cancel-x-a", blurs=4)))
    await until(lambda: _running_is(connector, "cancel-x-a"))
    queued = asyncio.create_task(runner.run("job-b", slow_job("cancel-x-b")))
    await running_and_pending(connector, "cancel-x-a", "cancel-x-b")
    executing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await executing
    result = await queued
    assert "error" not in result, result  # an interrupt of the other prompt would fail this one
    assert result["history"][result["prompt_id"]]["status"]["status_str"] == "success"


async def _running_is(connector: ComfyConnector, prefix: str) -> bool:
    return (await queue_of(connector))[0] == [prefix]


async def test_timeout_counts_from_execution_start_not_the_wait_in_the_queue(runner: JobRunner,
                                                                             connector: ComfyConnector) -> None:
    """B may execute for 2 s; it waits longer than that behind A and still succeeds."""
    first = asyncio.create_task(runner.run("job-a", slow_job("wait-a", blurs=3)))
    await until(lambda: _running_is(connector, "wait-a"))
    result = await runner.run("job-b", quick_job("wait-b", timeout_s=2))
    assert "error" not in result, result
    assert result["timings"]["queue"] > 2 > result["timings"]["execute"]
    assert "error" not in await first


async def test_the_wait_in_the_queue_has_its_own_budget(runner: JobRunner, connector: ComfyConnector,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connector, "config", dataclasses.replace(connector.config, queue_timeout_s=1.0))
    first = asyncio.create_task(runner.run("job-a", slow_job("budget-a", blurs=3)))
    await until(lambda: _running_is(connector, "budget-a"))
    result = await runner.run("job-b", quick_job("budget-b"))
    assert result["error_type"] == "RunTimeoutError" and result["phase"] == "queue", result
    assert "QUEUE_TIMEOUT_S" in result["error"]
    assert (await queue_of(connector))[1] == []  # taken off the queue
    assert "error" not in await first


async def test_comfyui_killed_with_two_jobs_in_flight(runner: JobRunner, connector: ComfyConnector,
                                                      scratch: Path) -> None:
    """Both jobs fail cleanly (no refresh_worker: ComfyUI comes back), one restart, the next job runs."""
    before = folder_state(connector, scratch)
    old_pid = connector.comfy.pid
    jobs = [asyncio.create_task(runner.run("job-a", slow_job("killed-a"))),
            asyncio.create_task(runner.run("job-b", slow_job("killed-b")))]
    await running_and_pending(connector, "killed-a", "killed-b")
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*jobs), 30)
    for result in results:
        assert result["error_type"] == "ComfyUnavailableError" and "refresh_worker" not in result, result
    after = await runner.run("job-c", quick_job("after-kill"))
    assert "error" not in after, after
    assert connector.comfy.pid != old_pid and [p.pid for p in comfy_processes()] == [connector.comfy.pid]
    assert folder_state(connector, scratch) == before


# --- streaming ----------------------------------------------------------------------------------
def four_outputs(prefix: str, **extra: Any) -> dict[str, Any]:
    """Four SaveImage nodes (of a batch of two), the first before any blur, each later one after one more."""
    job = slow_job(prefix, blurs=3, **extra)
    prompt = job["workflow"]
    for number, source in enumerate(("1", "2", "3")):
        prompt[str(30 + number)] = {"class_type": "ImageScale", "inputs": {
            "image": [source, 0], "upscale_method": "nearest-exact", "width": 8, "height": 8, "crop": "disabled"}}
        prompt[str(40 + number)] = {"class_type": "SaveImage", "inputs": {
            "images": [str(30 + number), 0], "filename_prefix": f"{prefix}-{number}"}}
    return job


async def test_streamed_outputs_arrive_while_later_nodes_still_run(runner: JobRunner, connector: ComfyConnector,
                                                                   scratch: Path) -> None:
    before = folder_state(connector, scratch)
    items, running_at_first = [], None
    async for item in runner.stream("job-stream", four_outputs("stream")):
        if running_at_first is None:
            running_at_first = (await queue_of(connector))[0]
        items.append(item)
    *outputs, final = items
    assert running_at_first and running_at_first[0] == "stream"  # the prompt was still executing
    assert all(sorted(item) == ["output"] for item in outputs)
    assert sorted(item["output"]["node_id"] for item in outputs) == ["21", "21", "40", "40", "41", "41", "42", "42"]
    assert final["done"] is True and "error" not in final and set(final) >= {"prompt_id", "timings", "warnings"}
    listed = final["history"][final["prompt_id"]]["outputs"]
    assert sorted(o["output"]["filename"] for o in outputs) == sorted(
        image["filename"] for node in listed.values() for image in node["images"])
    assert folder_state(connector, scratch) == before


async def test_an_error_after_streamed_outputs_is_a_final_item_listing_them(
        runner: JobRunner, connector: ComfyConnector, scratch: Path) -> None:
    before = folder_state(connector, scratch)
    items = [item async for item in runner.stream("job-stream-fail", four_outputs("stream-fail", timeout_s=2))]
    *outputs, final = items
    assert outputs and all("output" in item for item in outputs)
    assert final["done"] is True and final["error_type"] == "RunTimeoutError", final
    assert [d["filename"] for d in final["delivered"]] == [o["output"]["filename"] for o in outputs]
    assert all("data" not in delivered for delivered in final["delivered"])
    assert folder_state(connector, scratch) == before
