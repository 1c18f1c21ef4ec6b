"""handler.py end to end, as RunPod's SDK runs it: real subprocesses, real ComfyUI (test server) and Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from tests.support.comfy import REAL_COMFY, connector_settings, needs_test_server
from tests.support.loopback import free_port

REPO = Path(__file__).resolve().parent.parent


def handler_env(comfy_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "OUTPUT_S3"))}
    settings = connector_settings(comfy_root, INITIAL_PORT=18600)
    env.update({key: str(value) for key, value in settings.items()})
    env.update(extra)
    return env


def run_handler(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "handler.py"), *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def output_files(comfy_root: Path) -> list[Path]:
    return sorted(p for p in (comfy_root / "output").rglob("*") if p.is_file())


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


def test_json_flag_prints_the_full_result_once(comfy_root: Path) -> None:
    result = run_handler(["--json"], handler_env(comfy_root))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    printed = json.loads(result.stdout)
    (output,) = printed["outputs"]
    assert output["data"] and output["content_type"] == "image/png"
    assert set(printed["history"][printed["prompt_id"]]) == {"outputs", "status"}  # not the workflow again
    assert result.stderr.count(output["data"][:40]) == 0  # the data is not also logged
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


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def serve_api(comfy_root: Path, **env: str) -> tuple[subprocess.Popen[str], int]:
    """``handler.py --rp_serve_api`` in a subprocess, once its API answers; the process and its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "handler.py"), "--rp_serve_api", "--rp_api_port", str(port)], cwd=REPO,
        env=handler_env(comfy_root, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=2)
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the development API did not come up: "
                                     + (process.stdout.read()[-3000:] if process.stdout else "")) from None
            time.sleep(0.5)


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def test_rp_serve_api_runs_jobs_and_cleans_up_on_sigterm(comfy_root: Path) -> None:
    process, port = serve_api(comfy_root)
    try:
        job = json.loads((REPO / "test_input.json").read_text())
        answer = _post(f"http://127.0.0.1:{port}/runsync", job)
        assert answer["status"] == "COMPLETED", answer
        (image,) = answer["output"]["outputs"]
        assert image["kind"] == "images" and image["data"]
        bad = _post(f"http://127.0.0.1:{port}/runsync", {"input": {"workflow": 5}})
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
        job_id = _post(f"{api}/run", two_outputs_job())["id"]
        streamed = _post(f"{api}/stream/{job_id}", {})
        assert streamed["status"] == "COMPLETED", streamed
        *outputs, final = [item["output"] for item in streamed["stream"]]
        assert [sorted(item) for item in outputs] == [["output"], ["output"]]
        assert final["done"] is True and "error" not in final and {"prompt_id", "timings", "warnings"} <= set(final)
        listed = final["history"][final["prompt_id"]]["outputs"]
        assert sorted(o["output"]["filename"] for o in outputs) == sorted(
            image["filename"] for node in listed.values() for image in node["images"])
        assert _post(f"{api}/status/{job_id}", {}) == {"id": job_id, "status": "FAILED", "error": "Job ID not found"}

        second = _post(f"{api}/run", two_outputs_job())["id"]
        status = _post(f"{api}/status/{second}", {})
        assert status["status"] == "COMPLETED", status
        *aggregated, last = status["output"]
        assert [sorted(o["output"]) for o in aggregated] == [sorted(o["output"]) for o in outputs]
        assert sorted(last) == sorted(final) and last["prompt_id"] != final["prompt_id"]
    finally:
        stop(process)
    assert output_files(comfy_root) == before
