"""handler.py end to end, as RunPod's SDK runs it: real subprocesses, real ComfyUI (test server) and Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tests.support.comfy import REAL_COMFY, needs_test_server
from tests.support.handler import REPO, handler_env, output_files, post, run_handler, serve_api, stop


def test_input_file_runs_prints_a_summary_and_writes_the_outputs(comfy_root: Path, tmp_path: Path) -> None:
    before = output_files(comfy_root)
    result = run_handler(["--output_dir", str(tmp_path / "out")], handler_env(comfy_root))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    (written,) = (tmp_path / "out").iterdir()
    assert written.read_bytes().startswith(b"\x89PNG")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("job local_test COMPLETED in ")
    assert lines[1] == f"  node 3 images: {written} ({written.stat().st_size / 1024:.1f} KB, image/png)"
    assert lines[2].startswith("timings: convert ") and lines[-1] == "(the full result: --json)"
    assert len(result.stdout) < 1000  # no base64, no history, no workflow, printed once
    assert "Unclosed" not in output and "graceful stop failed" not in output  # stopped in order at exit
    assert output_files(comfy_root) == before  # cleaned up


def test_an_unwritable_output_dir_falls_back_to_the_system_temp(comfy_root: Path, tmp_path: Path) -> None:
    """A read-only container (``docker run --read-only``) cannot write ./local_outputs: one line says where
    the files went instead, and which option chooses the folder; no traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    result = run_handler(["--output_dir", str(blocker / "out")], handler_env(comfy_root))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output[-3000:]
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert note.startswith(f"note: {blocker / 'out'} is not writable (Not a directory); outputs written to ")
    assert note.endswith(" instead (choose with --output_dir)")
    fallback = Path(note.split("outputs written to ")[1].split(" instead")[0])
    (written,) = fallback.iterdir()
    assert written.read_bytes().startswith(b"\x89PNG")
    shutil.rmtree(fallback)


def test_json_flag_prints_the_full_result_once(comfy_root: Path) -> None:
    result = run_handler(["--json"], handler_env(comfy_root))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    printed = json.loads(result.stdout)
    (output,) = printed["outputs"]
    (image,) = printed["images"]  # worker-comfyui's form; the bytes go out once, there
    assert output["image"] == 0 and "data" not in output and output["content_type"] == "image/png"
    assert image["type"] == "base64" and image["filename"] == output["filename"]
    assert set(printed["history"][printed["prompt_id"]]) == {"outputs", "status"}  # not the workflow again
    assert result.stderr.count(image["data"][:40]) == 0  # the data is not also logged
    assert "refresh_worker" not in printed


def test_refresh_worker_setting_reaches_runpod(comfy_root: Path) -> None:
    result = run_handler(["--json"], handler_env(comfy_root, REFRESH_WORKER="true"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    printed = json.loads(result.stdout)
    assert printed["refresh_worker"] is True and printed["outputs"]


def test_sigterm_in_the_cold_start_stops_everything_then_ends_the_process(comfy_root: Path) -> None:
    """The signal starts a clean stop on the worker's loop (kill_api), then acts as it did before: the process
    ends by SIGTERM, and neither ComfyUI nor Chromium outlives it."""
    slow_boot = {} if REAL_COMFY else {"COMFY_TEST_BOOT_DELAY_S": "30"}
    process = subprocess.Popen([sys.executable, str(REPO / "handler.py")], cwd=REPO,
                               env=handler_env(comfy_root, **slow_boot), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while not any("main.py" in " ".join(c.cmdline()) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
    assert children, "ComfyUI did not start"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, output[-3000:]
    assert "graceful stop failed" not in output
    psutil.wait_procs(children, timeout=10)
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def test_a_streaming_worker_runs_a_local_job_as_one_result(comfy_root: Path) -> None:
    """The SDK would not iterate a generator in a local one-shot run; handler.py collects the items itself."""
    result = run_handler(["--json"], handler_env(comfy_root, STREAM_OUTPUTS="true"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    printed = json.loads(result.stdout)
    (output,) = printed["outputs"]
    assert output["data"] and printed["prompt_id"] in printed["history"] and "timings" in printed


def test_bad_job_file_fails_before_the_cold_start(comfy_root: Path) -> None:
    result = run_handler(["--test_input", "{not json"], handler_env(comfy_root), timeout=60)
    assert result.returncode == 1
    assert "--test_input is not valid JSON" in result.stderr
    assert "ComfyUI starting" not in result.stderr


def test_inline_test_input_failure_exits_one(comfy_root: Path) -> None:
    job = {"input": {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}}
    result = run_handler(["--test_input", json.dumps(job)], handler_env(comfy_root))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "NoSuchNode" in output


@needs_test_server
def test_startup_failure_is_reported_and_exits_one(comfy_root: Path, tmp_path: Path) -> None:
    env = handler_env(comfy_root, COMFY_TEST_BOOT_EXIT_CODE="3")
    result = run_handler([], env, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "exited with code 3 during startup" in output and "Traceback" in output


def test_partial_s3_configuration_fails_before_booting(comfy_root: Path) -> None:
    env = handler_env(comfy_root, BUCKET_ENDPOINT_URL="http://127.0.0.1:9")
    started = time.monotonic()
    result = run_handler([], env, timeout=60)
    assert result.returncode == 1
    assert "BUCKET_ACCESS_KEY_ID" in result.stdout + result.stderr
    assert time.monotonic() - started < 30


def test_rp_serve_api_runs_jobs_and_cleans_up_on_sigterm(comfy_root: Path) -> None:
    process, port = serve_api(comfy_root)
    try:
        job = json.loads((REPO / "test_input.json").read_text())
        answer = post(f"http://127.0.0.1:{port}/runsync", job)
        assert answer["status"] == "COMPLETED", answer
        (image,) = answer["output"]["outputs"]
        assert image["kind"] == "images" and answer["output"]["images"][image["image"]]["data"]
        bad = post(f"http://127.0.0.1:{port}/runsync", {"input": {"workflow": 5}})
        assert bad["status"] == "FAILED" and "input.workflow" in json.dumps(bad)
        children = psutil.Process(process.pid).children(recursive=True)
        assert children  # ComfyUI and Chromium
    finally:
        stop(process)
    psutil.wait_procs(children, timeout=15)
    assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def two_outputs_job() -> dict[str, Any]:
    return {"input": {"workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "streamed-a"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "streamed-b"}}}}}


def test_streaming_through_the_development_api(comfy_root: Path) -> None:
    """STREAM_OUTPUTS: /run, then /stream/{id} (the items in order: each output, then the final item), then
    /status/{id} (the development API forgets a job it streamed); a second /run's /status is the aggregate."""
    before = output_files(comfy_root)
    process, port = serve_api(comfy_root, STREAM_OUTPUTS="true")
    api = f"http://127.0.0.1:{port}"
    try:
        job_id = post(f"{api}/run", two_outputs_job())["id"]
        streamed = post(f"{api}/stream/{job_id}", {})
        assert streamed["status"] == "COMPLETED", streamed
        *outputs, final = [item["output"] for item in streamed["stream"]]
        assert [sorted(item) for item in outputs] == [["output"], ["output"]]
        assert final["done"] is True and "error" not in final and {"prompt_id", "timings", "warnings"} <= set(final)
        listed = final["history"][final["prompt_id"]]["outputs"]
        assert sorted(o["output"]["filename"] for o in outputs) == sorted(
            image["filename"] for node in listed.values() for image in node["images"])
        assert post(f"{api}/status/{job_id}", {}) == {"id": job_id, "status": "FAILED", "error": "Job ID not found"}

        second = post(f"{api}/run", two_outputs_job())["id"]
        status = post(f"{api}/status/{second}", {})
        assert status["status"] == "COMPLETED", status
        *aggregated, last = status["output"]
        assert [sorted(o["output"]) for o in aggregated] == [sorted(o["output"]) for o in outputs]
        assert sorted(last) == sorted(final) and last["prompt_id"] != final["prompt_id"]
    finally:
        stop(process)
    assert output_files(comfy_root) == before
