"""The benchmarks' own arithmetic, where the CPU proof run of ``bench.gpu`` found it wrong or untested.

A figure a machine cannot measure (VRAM on a CPU, nvidia-smi's utilisation without nvidia-smi) is NaN
and must read "n/a", its baseline too, with no ratio; the first proof run printed "nan MB". KSampler
steps per second come from the arrival of ComfyUI's progress messages for the sampler node of the
client's own prompt only.
"""

from __future__ import annotations

import math
from typing import Any

from bench.common import Figure, Report
from bench.gpu import SAMPLER, steps_per_s
from bench.jobs import BareRun


def test_a_figure_that_cannot_be_measured_reads_n_a_with_its_baseline_and_no_ratio() -> None:
    report = Report()
    report.add(Figure("VRAM after 50 jobs", math.nan, "MB", math.nan, "after job 1"))
    report.add(Figure("loader ran", 0.0, "", 1.0, "job 1"))
    rows = report.table().splitlines()
    assert rows[2] == "| VRAM after 50 jobs | n/a | n/a (after job 1) |  |  |  |"
    assert rows[3] == "| loader ran | 0 | 1 (job 1) | 0.00x |  |  |"


def progress(prompt_id: str, node: str, value: int) -> dict[str, Any]:
    return {"type": "progress", "data": {"value": value, "max": 20, "prompt_id": prompt_id, "node": node}}


def test_steps_per_second_count_the_sampler_steps_of_this_prompt_between_its_first_and_last_progress() -> None:
    messages = [(0.5, progress("other", SAMPLER, 1)),  # another client's prompt
                (1.0, progress("mine", SAMPLER, 1)),
                (1.2, progress("mine", "8", 1)),  # another node of this prompt (a decoder's tiles)
                (1.5, progress("mine", SAMPLER, 6)),
                (3.0, progress("mine", SAMPLER, 20)),
                (3.1, {"type": "executing", "data": {"node": None, "prompt_id": "mine"}})]
    run = BareRun(3.2, "mine", {}, messages)
    assert steps_per_s(run) == 19 / 2.0
    assert math.isnan(steps_per_s(BareRun(1.0, "mine", {}, messages[:2])))  # one tick: no rate
