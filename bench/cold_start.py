"""Cold start: process start to connector ``ready``, against the bare ComfyUI process's time to answer HTTP.

Measured with and without a frontend record (FRONTEND_SNAPSHOT, made here once as the image
makes it), interleaved with bare boots so that all three see the same machine noise.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.process import ComfyProcess
from comfy_serverless.snapshot_frontend import snapshot

from .common import Figure, Report, median, write_config


async def bare_boot_s(config: Config) -> float:
    """Seconds from spawning ComfyUI to its first HTTP answer: the floor any worker stands on."""
    process = ComfyProcess(config)
    started = time.monotonic()
    process.spawn()
    try:
        async with aiohttp.ClientSession() as session:
            await process.wait_ready(session)
        return time.monotonic() - started
    finally:
        await process.stop()


async def connector_boot_s(config_path: Path) -> float:
    started = time.monotonic()
    connector = await ComfyConnector.create(str(config_path))
    elapsed = time.monotonic() - started
    await connector.kill_api()
    return elapsed


async def run(report: Report, workdir: Path, root: Path, repeat: int) -> None:
    plain_path = write_config(workdir, root)
    config = Config.load(plain_path)
    record = workdir / "frontend-snapshot.json"
    await snapshot(config, record)
    recorded_path = write_config(workdir, root, FRONTEND_SNAPSHOT=str(record))
    bare, plain, recorded = [], [], []
    for _ in range(repeat):
        bare.append(await bare_boot_s(config))
        plain.append(await connector_boot_s(plain_path))
        recorded.append(await connector_boot_s(recorded_path))
    for name, samples, target in (("without a frontend record", plain, ""),
                                  ("with a frontend record", recorded, "<= 1 s")):
        overheads = [full - floor for full, floor in zip(samples, bare, strict=True)]
        overhead = median(samples) - median(bare)
        report.add(Figure(f"cold start {name}: process start to ready", median(samples), "s", median(bare),
                          "bare ComfyUI answers HTTP", extra={"samples": samples, "baseline_samples": bare}))
        report.add(Figure(f"cold start overhead {name} (median; min {min(overheads):.2f}, max {max(overheads):.2f})",
                          overhead, "s", target=target, met=overhead <= 1.0 if target else None,
                          extra={"overheads": overheads}))
