"""``python handler.py`` on a developer's machine: one job, its files on disk, a short summary.

RunPod's SDK runs a local job too, but prints the whole result twice (at DEBUG and
INFO, as a Python repr): kilobytes of base64 image data and history in which the
useful lines are lost. A newcomer's first command deserves better: inline outputs
are written to a folder, the summary names each file with its size and kind, and
the full JSON stays one flag away (``--json``).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .files import unique_destination
from .worker_comfyui import inline_data

Handle = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

DEFAULT_JOB_FILE = "test_input.json"
DEFAULT_OUTPUT_DIR = "local_outputs"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The flags of a local run; RunPod's own (``--rp_*``) are left for its SDK."""
    parser = argparse.ArgumentParser(prog="handler.py", add_help=False)
    parser.add_argument("--test_input", default=None, help="the job as JSON (default: ./test_input.json)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="where inline outputs are written")
    return parser.parse_known_args(list(argv))[0]


def load_job(test_input: str | None) -> dict[str, Any]:
    """The job from ``--test_input`` or ./test_input.json, as RunPod's SDK would take it (``id`` defaults)."""
    try:
        text = test_input if test_input is not None else Path(DEFAULT_JOB_FILE).read_text(encoding="utf-8")
        job = json.loads(text)
    except OSError as exc:
        raise ValueError(f"no job: pass --test_input '<json>' or create {DEFAULT_JOB_FILE} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        source = "--test_input" if test_input is not None else DEFAULT_JOB_FILE
        raise ValueError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(job, dict):
        raise ValueError('the job must be a JSON object such as {"input": {"workflow": …}}')
    return {"id": "local_test", **job}


def save_inline_outputs(result: dict[str, Any], output_dir: Path) -> list[str]:
    """Write each inline output's bytes under ``output_dir`` and put its ``path`` in its ``outputs`` entry.

    A container may run read-only (``docker run --read-only``, the working
    directory in the image): then the files go to a fresh folder under the
    system temp. Returns a line saying so, for the summary.
    """
    try:
        _write_outputs(result, output_dir)
        return []
    except OSError as exc:
        problem = f"{output_dir} is not writable ({exc.strerror or type(exc).__name__})"
    try:
        fallback = Path(tempfile.mkdtemp(prefix="local_outputs-"))
        _write_outputs(result, fallback)
    except OSError as exc:
        return [f"outputs not written: {problem}, nor is the system temp ({exc.strerror or type(exc).__name__}); "
                "pass --output_dir with a writable folder"]
    return [f"note: {problem}; outputs written to {fallback} instead (choose with --output_dir)"]


def _write_outputs(result: dict[str, Any], output_dir: Path) -> None:
    for output in result.get("outputs", []):
        data = inline_data(result, output)
        if data is None:
            continue
        output_dir.mkdir(parents=True, exist_ok=True)
        target = unique_destination(output_dir, output["filename"])
        target.write_bytes(base64.b64decode(data))
        output["path"] = str(target)


def summary(job_id: str, result: dict[str, Any]) -> list[str]:
    """A few lines a person reads: the verdict, each output, timings and warnings."""
    if "error" in result:
        return [f"job {job_id} FAILED ({result.get('error_type', 'error')}): {result['error']}"]
    timings = result.get("timings", {})
    lines = [f"job {job_id} COMPLETED in {timings.get('total', 0):.2f} s, prompt {result.get('prompt_id')}"]
    for output in result.get("outputs", []):
        lines.append("  " + _describe_output(output))
    steps = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in timings.items() if name != "total")
    lines.append(f"timings: {steps}")
    lines.extend(f"warning: {warning}" for warning in result.get("warnings", []))
    return lines


def _describe_output(output: dict[str, Any]) -> str:
    if output.get("kind") == "text":
        return f"node {output['node_id']} text: {output['text'][:200]!r}"
    where = output.get("path") or output.get("url") or output.get("s3_uri")
    return (f"node {output['node_id']} {output['kind']}: {where} "
            f"({_size(output['bytes'])}, {output['content_type']})")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count / (1024 * 1024):.1f} MB"


def collected(stream: Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]) -> Handle:
    """A streaming handler as one that returns the plain result: outputs gathered from the items, then the
    final item's fields, so the summary and ``--json`` look the same in both modes."""
    async def handle(job: dict[str, Any]) -> dict[str, Any]:
        outputs, final = [], {}
        async for item in stream(job):
            if "output" in item:
                outputs.append(item["output"])
            else:
                final = {key: value for key, value in item.items() if key != "done"}
        return final if "error" in final else {**final, "outputs": outputs}
    return handle


async def run_local(handle: Handle, job: dict[str, Any], args: argparse.Namespace,
                    out: TextIO = sys.stdout) -> int:
    """Run one job (from :func:`load_job`) with the flags of :func:`parse_args`; the exit status."""
    result = await handle(job)
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        notes = save_inline_outputs(result, Path(args.output_dir))
        print("\n".join([*summary(str(job["id"]), result), *notes, "(the full result: --json)"]), file=out)
    return 1 if "error" in result else 0
