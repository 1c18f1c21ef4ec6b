"""What every benchmark shares: which ComfyUI to run against, statistics, and the results table.

Like the tests, benchmarks run against the ComfyUI-compatible test server by default and
against a real ComfyUI when ``COMFYUI_PATH`` is set (``API_COMMAND_LINE`` says how to start
it). Each figure is measured beside its baseline in the same run, because machines are noisy:
report medians and ratios, never a single sample.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

REAL_COMFY = bool(os.environ.get("COMFYUI_PATH"))


def comfy_root() -> Path:
    if REAL_COMFY:
        return Path(os.environ["COMFYUI_PATH"])
    root = Path(tempfile.mkdtemp(prefix="bench-comfy-"))
    for folder in ("input", "output", "user/default"):
        (root / folder).mkdir(parents=True)
    return root


def write_config(directory: Path, root: Path, **overrides: Any) -> Path:
    settings: dict[str, Any] = {"INITIAL_PORT": 18700,
                                "CHROMIUM_EXECUTABLE": os.environ.get("CHROMIUM_EXECUTABLE")
                                or shutil.which("chromium") or "",
                                "COMFY_START_ATTEMPTS_SLEEP": 0.02, "MAX_COMFY_START_ATTEMPTS": 15000}
    if not REAL_COMFY:
        settings |= {"API_COMMAND_LINE": f"{sys.executable} {REPO / 'tests/comfy_test_server/main.py'}",
                     "COMFYUI_PATH": str(root)}
    path = directory / f"bench-{len(list(directory.glob('bench-*.json')))}.json"
    path.write_text(json.dumps(settings | overrides))
    return path


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Figure:
    """One row of the results table: a measurement beside its baseline and the target."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline and not math.isnan(self.value) else None


def shown(value: float, unit: str) -> str:
    """A figure's value as the table shows it; NaN is a figure this machine cannot measure (no nvidia-smi)."""
    return "n/a" if math.isnan(value) else f"{value:.4g} {unit}".rstrip()


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(f"  {figure.name}: {shown(figure.value, figure.unit)}"
              + (f" (baseline {shown(figure.baseline, figure.unit)})" if figure.baseline is not None else ""),
              flush=True)

    def table(self) -> str:
        rows = ["| figure | value | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        for f in self.figures:
            baseline = f"{shown(f.baseline, f.unit)} ({f.baseline_name})" if f.baseline is not None else ""
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
            met = "" if f.met is None else ("yes" if f.met else "**no**")
            rows.append(f"| {f.name} | {shown(f.value, f.unit)} | {baseline} | {ratio} | {f.target} | {met} |")
        return "\n".join(rows)

    def as_json(self) -> dict[str, Any]:
        return {"machine": machine(), "comfyui": "real" if REAL_COMFY else "test server",
                "figures": [{**f.__dict__, "ratio": f.ratio} for f in self.figures]}


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}


def median(samples: list[float]) -> float:
    return statistics.median(samples)
