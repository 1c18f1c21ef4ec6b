"""Per-job overhead (the worker against the bare server), S3 against raw boto3, and a soak of many jobs."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from comfy_serverless import ComfyConnector
from comfy_serverless.job import JobRunner

from .common import Figure, Report, median
from .memory import MemorySampler


def png_bytes(size: int, noise: bool) -> bytes:
    """A valid PNG of about the requested size (noise does not compress)."""
    from PIL import Image
    side = max(8, int((size / 3) ** 0.5))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)) if noise else Image.new(
        "RGB", (side, side), (10, 20, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def trivial_prompt(image_name: str, prefix: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


@dataclass
class BareRun:
    """What a bare client saw of one prompt: its seconds end to end, its history entry, and every websocket
    message that arrived meanwhile, with its arrival in seconds since the POST."""

    seconds: float
    prompt_id: str
    history: dict[str, Any]
    messages: list[tuple[float, dict[str, Any]]]

    def of_prompt(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """The messages of ``kind`` about this prompt, as (arrival, data)."""
        return [(at, m["data"]) for at, m in self.messages
                if m["type"] == kind and m["data"].get("prompt_id") == self.prompt_id]


async def bare_job(connector: ComfyConnector, session: aiohttp.ClientSession, prompt: dict[str, Any]) -> BareRun:
    """What a minimal client does for the same prompt: websocket, POST /prompt, wait, GET /history."""
    client_id = uuid.uuid4().hex
    messages: list[tuple[float, dict[str, Any]]] = []
    started = time.perf_counter()
    async with session.ws_connect(f"{connector.server_address.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
        async with session.post(f"{connector.server_address}/prompt",
                                json={"prompt": prompt, "client_id": client_id}) as response:
            prompt_id = (await response.json())["prompt_id"]
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = message.json()
                messages.append((time.perf_counter() - started, data))
                if data["type"] == "executing" and data["data"].get("node") is None \
                        and data["data"].get("prompt_id") == prompt_id:
                    break
    async with session.get(f"{connector.server_address}/history/{prompt_id}") as response:
        history = (await response.json())[prompt_id]
    return BareRun(time.perf_counter() - started, prompt_id, history, messages)


async def side_by_side(connector: ComfyConnector, runner: JobRunner, count: int,
                       bare_prompt: Callable[[int], dict[str, Any]],
                       worker_job: Callable[[int], dict[str, Any]]) -> tuple[list[BareRun], list[dict[str, Any]]]:
    """``count`` bare runs and ``count`` worker jobs, interleaved so that both see the same machine noise; each
    worker result carries ``seconds``, its end-to-end time. The bare runs' outputs are deleted."""
    bare, worker = [], []
    async with aiohttp.ClientSession() as session:
        for index in range(count):
            run = await bare_job(connector, session, bare_prompt(index))
            connector.files.delete_outputs({run.prompt_id: run.history})
            bare.append(run)
            started = time.perf_counter()
            result = await runner.run(f"bench-{index}", worker_job(index))
            assert "error" not in result, result
            worker.append({**result, "seconds": time.perf_counter() - started})
    return bare, worker


def overhead_figures(report: Report, label: str, bare: list[BareRun], worker: list[dict[str, Any]]) -> None:
    """The worker's median end-to-end time beside the bare client's, and the difference (target: 10 ms)."""
    bare_s, worker_s = median([run.seconds for run in bare]), median([result["seconds"] for result in worker])
    added = (worker_s - bare_s) * 1000
    report.add(Figure(f"{label}: worker end to end (inline in/out)", worker_s * 1000, "ms", bare_s * 1000,
                      "bare POST /prompt + websocket + GET /history"))
    report.add(Figure(f"{label}: overhead added (median)", added, "ms", target="<= 10 ms", met=added <= 10))


async def overhead(report: Report, connector: ComfyConnector, runner: JobRunner, count: int) -> None:
    image = png_bytes(256, noise=False)
    encoded = base64.b64encode(image).decode()
    bare_inputs = []
    for index in range(count):  # a distinct file per run, as every job has its own input
        path = connector.files.folders.input / f"bench-bare-{index}.png"
        path.write_bytes(image)
        bare_inputs.append(path)
    try:
        bare, worker = await side_by_side(
            connector, runner, count, lambda index: trivial_prompt(bare_inputs[index].name, f"bare{index}"),
            lambda _: {"workflow": trivial_prompt("in.png", "worker"), "output": {"inline": True},
                       "inputs": [{"source": f"data:image/png;base64,{encoded}", "name": "in.png"}]})
    finally:
        for path in bare_inputs:
            path.unlink()
    overhead_figures(report, "per job", bare, worker)


async def s3_transfer(report: Report, runner: JobRunner, client: Any, bucket: str, count: int) -> None:
    """The job's fetch + upload time against raw boto3 get + put of the same 1 MB objects."""
    data = png_bytes(1024 * 1024, noise=True)
    client.put_object(Bucket=bucket, Key="bench/in.png", Body=data)

    def raw_round_trip(index: int) -> None:
        body = client.get_object(Bucket=bucket, Key="bench/in.png")["Body"].read()
        client.put_object(Bucket=bucket, Key=f"bench/raw-{index}.png", Body=body, ContentType="image/png")

    raw, ours = [], []
    for index in range(count):
        started = time.perf_counter()
        await asyncio.to_thread(raw_round_trip, index)
        raw.append(time.perf_counter() - started)
        job = {"workflow": trivial_prompt("in.png", f"s3bench{index}"),
               "inputs": [{"source": f"s3://{bucket}/bench/in.png"}],
               "output": {"s3_uri": f"s3://{bucket}/bench-out", "presign": False}}
        result = await runner.run(f"s3-{index}", job)
        assert "error" not in result, result
        ours.append(result["timings"]["fetch"] + result["timings"]["upload"])
    ratio = median(ours) / median(raw)
    report.add(Figure("S3 1 MB in + 1 MB out: job fetch + upload", median(ours) * 1000, "ms", median(raw) * 1000,
                      "raw boto3 get + put", target="<= 1.2x", met=ratio <= 1.2))


def folder_snapshot(connector: ComfyConnector) -> dict[str, int]:
    snapshot = {}
    for name in ("input", "output", "temp"):
        folder = connector.files.folders.for_type(name)
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
        snapshot[f"{name}_files"] = len(files)
        snapshot[f"{name}_bytes"] = sum(p.stat().st_size for p in files)
    return snapshot


async def soak(report: Report, connector: ComfyConnector, runner: JobRunner, count: int,
               sampler: MemorySampler) -> None:
    encoded = base64.b64encode(png_bytes(256, noise=False)).decode()
    job = {"workflow": trivial_prompt("in.png", "soak"), "output": {"inline": True},
           "inputs": [{"source": f"data:image/png;base64,{encoded}", "name": "in.png"}]}
    me = psutil.Process()
    for index in range(20):  # warm-up: caches, pools and lazy imports settle first
        await runner.run(f"warm-{index}", job)
    rss_start, fds_start, disk_start = me.memory_info().rss, me.num_fds(), folder_snapshot(connector)
    started = time.perf_counter()
    for index in range(count):
        result = await runner.run(f"soak-{index}", job)
        assert "error" not in result, result
        if index % 100 == 0:
            sampler.sample()
    elapsed = time.perf_counter() - started
    rss_end, fds_end, disk_end = me.memory_info().rss, me.num_fds(), folder_snapshot(connector)
    growth = 100.0 * (rss_end - rss_start) / rss_start
    report.add(Figure(f"soak: {count} jobs, worker RSS growth", growth, "%", target="<= 5 %", met=growth <= 5,
                      extra={"rss_start": rss_start, "rss_end": rss_end, "jobs_per_s": count / elapsed}))
    report.add(Figure("soak: open file descriptors, end vs start", fds_end, "fds", fds_start, "start",
                      target="flat", met=fds_end <= fds_start))
    report.add(Figure("soak: files left in input/output/temp", disk_end["input_files"] + disk_end["output_files"]
                      + disk_end["temp_files"], "files",
                      disk_start["input_files"] + disk_start["output_files"] + disk_start["temp_files"], "start",
                      target="flat", met=disk_end == disk_start, extra={"start": disk_start, "end": disk_end}))
