"""200 jobs through one JobRunner: valid, invalid and faulted ones mixed, on a deterministic schedule.

Every valid job succeeds with the right pixels, every bad one fails cleanly with an error naming
the problem, and at the end the worker is as it was: ComfyUI's folders and the scratch dir, one
ComfyUI process and the same Chromium processes, and no file descriptors gained. Faults come from
the test server (an execution error, a hang that the job's timeout interrupts, ComfyUI exiting
mid-job, a dropped websocket), so this module needs it.
"""

from __future__ import annotations

import base64
import collections
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from comfy_serverless import ComfyConnector
from comfy_serverless.job import JobRunner
from tests.support.comfy import needs_test_server, set_faults
from tests.support.jobs import data_uri, first_pixel, folder_state, invert_job, png
from tests.support.ui_workflows import with_unknown_node

pytestmark = needs_test_server

JOBS = 200
EXITS = 3  # each costs a ComfyUI restart (~1-2 s)
FD_TOLERANCE = 10


@dataclass
class Planned:
    """One job of the schedule: its input, the fault armed before it, what its result must show."""

    kind: str
    job: dict[str, Any]
    faults: dict[str, Any] = field(default_factory=dict)
    color: tuple[int, int, int] | None = None  # valid: the input's colour (the output is its inverse)
    error_type: str = ""
    expected: tuple[str, ...] = ()


def color_for(index: int) -> tuple[int, int, int]:
    return index % 256, (index * 7 + 11) % 256, (index * 13 + 101) % 256


def api_invert(name: str, prefix: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix},
                  "_meta": {"title": "Result"}}}


def valid_job(index: int, rng: random.Random) -> dict[str, Any]:
    """One of three valid shapes, each inverting an inline image of the job's own colour."""
    color = png(color_for(index))
    shape = rng.choice(("ui", "api-inputs", "api-images"))
    if shape == "ui":
        return invert_job(inputs=[{"source": data_uri(color), "name": "photo.png"}])
    if shape == "api-inputs":
        return {"workflow": api_invert("in.png", f"soak{index}"),
                "inputs": [{"source": data_uri(color), "name": "in.png"}], "output": {"inline": True}}
    return {"workflow": api_invert("img.png", "soak"),
            "images": [{"name": "img.png", "image": base64.b64encode(color).decode()}]}


def invalid_job(index: int, variant: int) -> Planned:
    """Bad input of several kinds, each with the words its error must contain."""
    image = [{"source": data_uri(png((1, 1, 1))), "name": "photo.png"}]
    cases: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
        ({**invert_job(inputs=image), "timeout_s": -1}, "JobInputError", ("input.timeout_s: must be more than 0",)),
        ({**invert_job(inputs=image), "colour": "red"}, "JobInputError", ("unknown key 'colour'",)),
        (invert_job(inputs=[{"source": "data:image/png;base64,@@@@", "name": "photo.png"}]), "JobInputError",
         ("input.inputs[0].source: is not valid base64",)),
        (invert_job(inputs=[{"source": data_uri(png((1, 1, 1))), "name": "../photo.png"}]), "JobInputError",
         ("input.inputs[0].name: must not contain '..'",)),
        ({"workflow": with_unknown_node(f"SoakMissingNode{index % 3}")}, "UnknownNodeTypesError",
         (f"does not know: SoakMissingNode{index % 3}",)),
        ({"workflow": {"1": {"class_type": "SoakNoSuchClass", "inputs": {}}}}, "UnknownNodeTypesError",
         ("SoakNoSuchClass",)),
        (invert_job(inputs=image, overrides={"99": {"seed": 1}}), "JobInputError", ("input.overrides.99: no node",)),
        ({"workflow": api_invert("x.png", "soak"), "images": [{"name": "x.png", "image": "AAAA"}],
          "overrides": {"Result": {"quality": 3}}}, "JobInputError",
         ("input.overrides.Result.quality: node 3 (SaveImage) has no input 'quality'",)),
        ({"workflow": api_invert("x.png", "soak") | {"2": {"class_type": "ImageInvert",
                                                          "inputs": {"image": ["7", 0]}}},
          "images": [{"name": "x.png", "image": "AAAA"}]}, "WorkflowError", ("input 'image' links to node 7",)),
        (invert_job(inputs=[{"source": "http://127.0.0.1:9/photo.png"}]), "InputFetchError",
         ("input.inputs[0] (photo.png)", "loopback")),
        ({"workflow": api_invert("missing.png", "soak")}, "PromptValidationError",
         ("node 1 (LoadImage) input 'image'", "missing.png")),
    ]
    job, error_type, expected = cases[variant % len(cases)]
    return Planned("invalid", job, error_type=error_type, expected=expected)


def schedule(rng: random.Random) -> list[Planned]:
    """~70% valid, 20% invalid, 10% faulted; every ComfyUI exit is followed at once by a valid job."""
    units: list[list[str]] = ([["valid"]] * 137 + [["invalid"]] * 40 + [["fail"]] * 6 + [["hang"]] * 5
                              + [["drop"]] * 6 + [["exit", "valid"]] * EXITS)
    rng.shuffle(units)
    kinds = [kind for unit in units for kind in unit]
    assert len(kinds) == JOBS
    plan: list[Planned] = []
    for index, kind in enumerate(kinds):
        if kind == "invalid":
            plan.append(invalid_job(index, rng.randrange(1000)))
            continue
        job = valid_job(index, rng)
        if kind in ("valid", "drop"):
            faults = {"drop_websocket_during_next_prompt": True} if kind == "drop" else {}
            plan.append(Planned(kind, job, faults, color=color_for(index)))
        elif kind == "fail":
            plan.append(Planned(kind, job, {"fail_next_prompt_with": f"soak boom {index}"},
                                error_type="ExecutionError", expected=(f"soak boom {index}", "raised")))
        elif kind == "hang":
            plan.append(Planned(kind, {**job, "timeout_s": 0.5}, {"hang_next_prompt": True},
                                error_type="RunTimeoutError",
                                expected=("did not finish within 0.5 s and was interrupted",)))
        else:
            plan.append(Planned(kind, job, {"exit_during_next_prompt": True}, error_type="ComfyUnavailableError",
                                expected=("ComfyUI is not running", "exit code 137")))
    return plan


def check(planned: Planned, result: dict[str, Any], index: int) -> None:
    where = f"job {index} ({planned.kind})"
    if planned.color is not None:
        assert "error" not in result, f"{where}: {result}"
        (output,) = result["outputs"]
        expected = tuple(255 - channel for channel in planned.color)
        assert first_pixel(base64.b64decode(output["data"])) == expected, where
        return
    assert isinstance(result.get("error"), str) and result["error_type"] == planned.error_type, f"{where}: {result}"
    for text in planned.expected:
        assert text in result["error"], f"{where}: {text!r} not in {result['error']!r}"
    assert "outputs" not in result and "refresh_worker" not in result, where


def processes(connector: ComfyConnector) -> dict[str, Any]:
    """This process's children: the ComfyUI tree, and Chromium's processes by their --type."""
    comfy, chromium, other = [], collections.Counter(), []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = child.cmdline()
        except psutil.Error:
            continue
        text = " ".join(command)
        if "main.py" in text:
            comfy.append(child.pid)
        elif "chrom" in text.lower() or "headless_shell" in text:
            kind = next((arg.split("=", 1)[1] for arg in command if arg.startswith("--type=")), "browser")
            chromium[kind] += 1
        else:
            other.append(text)
    return {"comfy": comfy, "chromium": chromium, "other": sorted(other)}


async def test_soak_two_hundred_mixed_jobs(runner: JobRunner, connector: ComfyConnector, scratch: Path) -> None:
    rng = random.Random(1234)
    plan = schedule(rng)
    await set_faults(connector, reset=True)
    # Warm-up: one job of each shape, so caches, pools and the conversion cache are filled.
    for index in range(3):
        warm = valid_job(1000 + index, random.Random(index))
        assert "error" not in await runner.run(f"warm-{index}", warm)
    before = folder_state(connector, scratch)
    procs_before = processes(connector)
    fds_before = psutil.Process().num_fds()
    history_before = await connector.client.get_json("/history")
    assert procs_before["comfy"] == [connector.comfy.pid] and procs_before["chromium"], procs_before

    started = time.monotonic()
    counts: collections.Counter[str] = collections.Counter()
    pids = {connector.comfy.pid}
    try:
        for index, planned in enumerate(plan):
            if planned.faults:
                await set_faults(connector, **planned.faults)
            result = await runner.run(f"soak-{index}", planned.job)
            check(planned, result, index)
            counts[planned.kind] += 1
            pids.add(connector.comfy.pid)  # None while a restart is under way
    finally:
        if connector.comfy.pid is not None:
            await set_faults(connector, reset=True)
    elapsed = time.monotonic() - started

    assert counts == {"valid": 140, "invalid": 40, "fail": 6, "hang": 5, "drop": 6, "exit": EXITS}
    assert len(pids - {None}) == EXITS + 1  # ComfyUI was restarted once per exit, and only then
    assert folder_state(connector, scratch) == before
    procs_after = processes(connector)
    assert procs_after["comfy"] == [connector.comfy.pid], procs_after
    assert procs_after["chromium"] == procs_before["chromium"], (procs_before, procs_after)
    assert procs_after["other"] == procs_before["other"], (procs_before, procs_after)
    fds_after = psutil.Process().num_fds()
    assert fds_after <= fds_before + FD_TOLERANCE, (fds_before, fds_after)
    history = await connector.client.get_json("/history")
    left = set(history) - set(history_before)  # a restarted ComfyUI starts with an empty history
    assert not left, f"{len(left)} prompts left in ComfyUI's history"
    assert await connector.client.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    print(f"soak: {JOBS} jobs in {elapsed:.1f} s; fds {fds_before} -> {fds_after}; {dict(counts)}; "
          f"processes {procs_after}")
