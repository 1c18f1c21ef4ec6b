"""Conversion: the warm page against a fresh browser context per conversion (the naive design), and a cache hit."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from comfy_serverless import ComfyConnector
from comfy_serverless.browser import APP_READY_JS, CONVERT_JS
from tests.support.ui_workflows import chain, empty_image, invert, large_chain, load_workflow, save_image

from .common import Figure, Report, median, percentile


def workflows() -> dict[str, dict[str, Any]]:
    return {
        "default text-to-image (7 nodes)": load_workflow("default_t2i.json"),
        "image chain (62 nodes)": large_chain(60),
        "small (3 nodes)": chain(empty_image(), invert(), save_image()),
    }


async def warm_samples(connector: ComfyConnector, workflow: dict[str, Any], count: int, salt: str) -> list[float]:
    """Conversions on the warm page; each workflow differs in ``extra`` so that the cache never answers."""
    samples = []
    for index in range(count):
        variant = copy.deepcopy(workflow)
        variant.setdefault("extra", {})["bench"] = f"{salt}-{index}"
        started = time.perf_counter()
        await connector.get_prompt_from_workflow(variant)
        samples.append(time.perf_counter() - started)
    return samples


async def fresh_context_samples(connector: ComfyConnector, workflow: dict[str, Any], count: int) -> list[float]:
    """The naive design: a new browser context, the frontend loaded into it, one conversion, closed."""
    browser = connector.frontend.browser
    assert browser is not None
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(connector.server_address)
        await page.wait_for_function(APP_READY_JS, timeout=120_000)
        await page.evaluate(CONVERT_JS, json.dumps(workflow))
        await context.close()
        samples.append(time.perf_counter() - started)
    return samples


async def run(report: Report, connector: ComfyConnector, count: int) -> None:
    default_name = "default text-to-image (7 nodes)"
    for name, workflow in workflows().items():
        samples = await warm_samples(connector, workflow, count, "percentiles")
        p50, p95 = median(samples) * 1000, percentile(samples, 0.95) * 1000
        is_default = name == default_name
        report.add(Figure(f"conversion p50, {name}", p50, "ms", target="<= 100 ms" if is_default else "",
                          met=p50 <= 100 if is_default else None, extra={"p95_ms": p95}))
        report.add(Figure(f"conversion p95, {name}", p95, "ms"))
    default = workflows()[default_name]
    await connector.get_prompt_from_workflow(default)
    hits = []
    for _ in range(200):
        started = time.perf_counter()
        await connector.get_prompt_from_workflow(default)
        hits.append(time.perf_counter() - started)
    hit = median(hits) * 1000
    report.add(Figure("conversion cache hit (default)", hit, "ms", target="<= 1 ms", met=hit <= 1))


async def against_fresh_context(report: Report, connector: ComfyConnector, count: int) -> None:
    """The warm page against the naive design. Run outside the memory sampling: the worker never does this."""
    default = workflows()["default text-to-image (7 nodes)"]
    warm = median(await warm_samples(connector, default, count, "versus-fresh")) * 1000
    fresh = median(await fresh_context_samples(connector, default, max(3, count // 10))) * 1000
    report.add(Figure("conversion speed-up: warm page over a fresh context per conversion (default)", fresh / warm,
                      "x", extra={"warm_ms": warm, "fresh_context_ms": fresh}, target=">= 20x",
                      met=fresh / warm >= 20))
