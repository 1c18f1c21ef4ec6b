"""``python -m bench.custom_nodes``: what the three node packs cost the frontend, beside core ComfyUI.

One ComfyUI with the packs of tests/custom_nodes.txt (``.comfyui-nodes/`` from ``make test``), booted
alternately as it is and with ``--disable-all-custom-nodes``: the same tree, the same frontend, so the
difference is the packs alone. Per boot, interleaved:

- the frontend's load time: a new page of the worker's browser, from ``goto`` to the app ready
  (what the warm page costs each cold start without a record), median of a few;
- conversion p50/p95 on the warm page of the core default text-to-image workflow (in both), and of
  the packs' workflows in tests/workflows/custom_nodes/ (with the packs only);
- PSS after boot: the worker's Chromium, and ComfyUI's process (the packs' Python imports).

    COMFYUI_PATH=.comfyui-nodes API_COMMAND_LINE=".comfyui-venv/bin/python main.py --cpu" \\
        .venv/bin/python -m bench.custom_nodes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from comfy_serverless import ComfyConnector
from comfy_serverless.browser import APP_READY_JS
from comfy_serverless.config import Config
from tests.support.ui_workflows import load_workflow

from .common import REPO, Figure, Report, comfy_root, median, percentile, write_config
from .conversion import warm_samples
from .memory import MB, chromium_pss, process_tree, rss_and_pss

PACK_WORKFLOWS = REPO / "tests" / "workflows" / "custom_nodes"
MODES = {"core only": "--disable-all-custom-nodes", "with the three packs": ""}


async def page_load_s(connector: ComfyConnector) -> float:
    browser = connector.frontend.browser
    assert browser is not None
    context = await browser.new_context()
    try:
        started = time.perf_counter()
        page = await context.new_page()
        await page.goto(connector.server_address)
        await page.wait_for_function(APP_READY_JS, timeout=120_000)
        return time.perf_counter() - started
    finally:
        await context.close()


async def measure(config_path: Path, with_packs: bool, conversions: int, samples: dict[str, list[float]]) -> None:
    """One boot's figures, appended to ``samples`` by name."""
    def add(name: str, *values: float) -> None:
        samples.setdefault(name, []).extend(values)

    async with ComfyConnector(Config.load(config_path)) as connector:
        await asyncio.sleep(2.0)  # let the boot's work settle before memory is read
        add("chromium_pss_mb", chromium_pss(connector) / MB)
        add("comfyui_pss_mb", rss_and_pss(process_tree(connector.comfy.pid))[1] / MB)
        for _ in range(3):
            add("page_load_s", await page_load_s(connector))
        workflows = {"default text-to-image": load_workflow("default_t2i.json")}
        if with_packs:
            workflows |= {path.stem: json.loads(path.read_text()) for path in sorted(PACK_WORKFLOWS.glob("*.json"))}
        for name, workflow in workflows.items():
            add(f"conversion {name}", *await warm_samples(connector, workflow, conversions, f"packs-{time.time()}"))


async def run(report: Report, repeat: int, conversions: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    root = comfy_root()
    results: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    for _ in range(repeat):
        for mode, args in MODES.items():
            path = write_config(workdir, root, COMFY_EXTRA_ARGS=args)
            await measure(path, not args, conversions, results[mode])
    core, packs = results["core only"], results["with the three packs"]
    report.add(Figure(f"frontend load with the packs (median of {3 * repeat})", median(packs["page_load_s"]), "s",
                      median(core["page_load_s"]), "core only"))
    for name, samples in packs.items():
        if name.startswith("conversion "):
            label = name.removeprefix("conversion ")
            baseline = core.get(name)
            report.add(Figure(f"conversion p50 with the packs, {label}", median(samples) * 1000, "ms",
                              median(baseline) * 1000 if baseline else None, "core only" if baseline else "",
                              extra={"p95_ms": percentile(samples, 0.95) * 1000}))
            report.add(Figure(f"conversion p95 with the packs, {label}", percentile(samples, 0.95) * 1000, "ms",
                              percentile(baseline, 0.95) * 1000 if baseline else None,
                              "core only" if baseline else ""))
    for key, what in (("chromium_pss_mb", "Chromium"), ("comfyui_pss_mb", "ComfyUI")):
        report.add(Figure(f"{what} PSS after boot with the packs", median(packs[key]), "MB", median(core[key]),
                          "core only"))


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.custom_nodes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="boots per mode, interleaved")
    parser.add_argument("--conversions", type=int, default=40, help="conversions per workflow and boot")
    args = parser.parse_args()
    report = Report()
    asyncio.run(run(report, args.repeat, args.conversions))
    print(report.table())
    (REPO / ".bench-results").mkdir(exist_ok=True)
    (REPO / ".bench-results" / "custom_nodes.json").write_text(json.dumps(report.as_json(), indent=1))


if __name__ == "__main__":
    cli()
