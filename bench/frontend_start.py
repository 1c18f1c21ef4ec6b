"""FRONTEND_START: what each mode costs a cold start and memory, and what ``first_use`` costs the first UI job.

- Cold start, process start to ``ready``, per mode, interleaved with bare ComfyUI boots
  so that all see the same machine noise (as :mod:`.cold_start`).
- PSS after boot of a real worker (``handler.py --rp_serve_api`` in its own process, as
  RunPod runs it): the worker process, its Chromium processes and Playwright's driver;
  ComfyUI's own tree is not the worker's cost.
- The first UI-format job under ``first_use``: its conversion (which starts Chromium and
  loads the page, from the record or from ComfyUI) against a warm conversion of the next.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import psutil

from comfy_serverless import ComfyConnector
from comfy_serverless.config import FRONTEND_STARTS, Config
from comfy_serverless.snapshot_frontend import snapshot
from tests.support.handler import serve_api, stop
from tests.support.ui_workflows import chain, empty_image, invert, save_image

from .cold_start import bare_boot_s, connector_boot_s
from .common import Figure, Report, median, write_config
from .memory import MB, rss_and_pss

#: Seconds a freshly booted worker is left alone before its memory is read.
SETTLE_S = 3.0
#: The browser the image runs (Playwright's headless shell there; the distribution's here), as README's
#: memory figures are measured with it.
HEADLESS_SHELL = shutil.which("chromium-headless-shell") or ""


async def run(report: Report, workdir: Path, root: Path, repeat: int) -> None:
    record = workdir / "frontend-snapshot-modes.json"
    await snapshot(Config.load(write_config(workdir, root)), record)
    await cold_starts(report, workdir, root, repeat, record)
    for mode in FRONTEND_STARTS:
        await worker_memory(report, root, mode, record)
    for label, snapshot_path in (("without a frontend record", ""), ("with a frontend record", str(record))):
        await first_ui_job(report, workdir, root, label, snapshot_path, repeat)


async def cold_starts(report: Report, workdir: Path, root: Path, repeat: int, record: Path) -> None:
    bare: list[float] = []
    boots: dict[str, list[float]] = {mode: [] for mode in FRONTEND_STARTS}
    paths = {mode: write_config(workdir, root, FRONTEND_START=mode, FRONTEND_SNAPSHOT=str(record))
             for mode in FRONTEND_STARTS}
    base = Config.load(paths["boot"])
    for _ in range(repeat):
        bare.append(await bare_boot_s(base))
        for mode, path in paths.items():
            boots[mode].append(await connector_boot_s(path))
    for mode, samples in boots.items():
        overhead = median(samples) - median(bare)
        target = "" if mode == "boot" else "<= 0.3 s"
        report.add(Figure(f"FRONTEND_START={mode}: cold start overhead over bare ComfyUI (median of {repeat})",
                          overhead, "s", target=target, met=overhead <= 0.3 if target else None,
                          extra={"samples": samples, "bare_samples": bare}))


async def worker_memory(report: Report, root: Path, mode: str, record: Path) -> None:
    process, _ = await asyncio.to_thread(serve_api, root, FRONTEND_START=mode, FRONTEND_SNAPSHOT=str(record),
                                         CHROMIUM_EXECUTABLE=HEADLESS_SHELL)
    try:
        await asyncio.sleep(SETTLE_S)
        worker = psutil.Process(process.pid)
        groups: dict[str, list[psutil.Process]] = {"worker": [worker], "chromium": [], "driver": []}
        for child in worker.children(recursive=True):
            command = " ".join(child.cmdline())
            if "chrom" in child.name().lower():
                groups["chromium"].append(child)
            elif "playwright" in command or child.name() == "node":
                groups["driver"].append(child)
        pss = {name: rss_and_pss(processes)[1] / MB for name, processes in groups.items()}
    finally:
        await asyncio.to_thread(stop, process)
    if mode == "boot":
        total = pss["worker"] + pss["chromium"]
        report.add(Figure("FRONTEND_START=boot: worker + Chromium PSS after boot", total, "MB",
                          target="<= 500 MB", met=total <= 500, extra=pss))
    else:
        report.add(Figure(f"FRONTEND_START={mode}: worker PSS after boot (no browser)", pss["worker"], "MB",
                          target="<= 200 MB", met=pss["worker"] <= 200, extra=pss))
    report.add(Figure(f"FRONTEND_START={mode}: Playwright's driver PSS after boot (not in the targets)",
                      pss["driver"], "MB"))


async def first_ui_job(report: Report, workdir: Path, root: Path, label: str, snapshot_path: str,
                       repeat: int) -> None:
    firsts, warms = [], []
    for attempt in range(repeat):
        path = write_config(workdir, root, FRONTEND_START="first_use", FRONTEND_SNAPSHOT=snapshot_path)
        async with ComfyConnector(Config.load(path)) as connector:
            started = time.monotonic()
            await connector.get_prompt_from_workflow(chain(empty_image(16, 16, attempt), invert(), save_image("a")))
            firsts.append(time.monotonic() - started)
            started = time.monotonic()
            await connector.get_prompt_from_workflow(chain(empty_image(24, 24, attempt), invert(), save_image("b")))
            warms.append(time.monotonic() - started)
    extra = median(firsts) - median(warms)
    report.add(Figure(f"FRONTEND_START=first_use: the first UI job's extra latency, {label} (median of {repeat})",
                      extra, "s", median(warms), "a warm conversion", extra={"first": firsts, "warm": warms}))
