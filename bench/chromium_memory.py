"""Chromium's memory over many distinct conversions, full Chromium against the headless shell.

A client that sends its UI workflow with a new seed each job makes every conversion
distinct, so a long-lived worker's page must not grow with them. Each browser converts
varied workflows (the default text-to-image graph with a new seed and prompt each time, and
image chains of varied length) and its PSS is read after boot, after 100 and after 1,000.
"""

from __future__ import annotations

import copy
import random
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from comfy_serverless import ComfyConnector
from tests.support.ui_workflows import chain, empty_image, invert, load_workflow, save_image, scale

from .common import Figure, Report, median, write_config
from .memory import MB, chromium_pss, rss_and_pss

CHECKPOINTS = (100, 1000)
DEFAULT_T2I = load_workflow("default_t2i.json")


def varied_workflow(index: int, rng: random.Random) -> dict[str, Any]:
    if index % 2:
        middle = [invert() if i % 2 else scale(32 + rng.randrange(64), 32) for i in range(rng.randrange(1, 12))]
        return chain(empty_image(rng.randrange(8, 128), 16, index % 255), *middle, save_image(f"m{index}"))
    workflow = copy.deepcopy(DEFAULT_T2I)
    for node in workflow["nodes"]:
        if node["type"] == "KSampler":
            node["widgets_values"][0] = rng.randrange(2**48)
        if node["type"] == "CLIPTextEncode":
            node["widgets_values"][0] = f"a photo, variant {index} " + "detail " * rng.randrange(40)
    return workflow


async def measure(report: Report, workdir: Path, root: Path, label: str, executable: str, count: int) -> None:
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()
    connector = await ComfyConnector.create(str(write_config(workdir, root, CHROMIUM_EXECUTABLE=executable)))
    try:
        rng = random.Random(7)
        after_boot = chromium_pss(connector)
        worker = rss_and_pss([psutil.Process()])[1]
        report.add(Figure(f"Chromium PSS after boot, {label}", after_boot / MB, "MB"))
        report.add(Figure(f"worker + Chromium PSS after boot, {label}", (worker + after_boot) / MB, "MB",
                          target="<= 500 MB", met=worker + after_boot <= 500 * MB))
        samples: list[float] = []
        for index in range(1, count + 1):
            started = time.perf_counter()
            await connector.get_prompt_from_workflow(varied_workflow(index, rng))
            samples.append(time.perf_counter() - started)
            if index in CHECKPOINTS:
                pss = chromium_pss(connector)
                target = "<= 1.2x after boot" if index == 1000 else ""
                report.add(Figure(f"Chromium PSS after {index} conversions, {label}", pss / MB, "MB",
                                  after_boot / MB, "after boot", target=target,
                                  met=pss <= 1.2 * after_boot if target else None))
        report.add(Figure(f"conversion p50 over {count} varied workflows, {label}", median(samples) * 1000, "ms"))
    finally:
        await connector.kill_api()


async def run(report: Report, workdir: Path, root: Path, count: int) -> None:
    for label, name in (("full Chromium", "chromium"), ("headless shell", "chromium-headless-shell")):
        executable = shutil.which(name)
        if executable:
            await measure(report, workdir, root, label, executable, count)
        else:
            print(f"  ({label}: not installed, skipped)")
