"""Cold start: process start to connector ``ready``, against the bare ComfyUI process's time to answer HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.process import ComfyProcess

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
    config_path = write_config(workdir, root)
    config = Config.load(config_path)
    bare, full = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine noise
        bare.append(await bare_boot_s(config))
        full.append(await connector_boot_s(config_path))
    overhead = median(full) - median(bare)
    report.add(Figure("cold start: process start to ready", median(full), "s", median(bare),
                      "bare ComfyUI answers HTTP", extra={"samples": full, "baseline_samples": bare}))
    report.add(Figure("cold start overhead (median)", overhead, "s", target="<= 3 s", met=overhead <= 3.0))
