"""The image tier: the built image (IMAGE_UNDER_TEST, from `make image-test`) run as users run it.

Every container uses the host's network (`docker run --network host`), ComfyUI on the CPU
(`COMFY_EXTRA_ARGS=--cpu`), and its own ports, so that containers never meet. S3 is moto's
server on loopback, which containers reach as the host does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import Container, docker
from tests.support.fixtures_s3 import S3Server
from tests.support.handler import REPO, post
from tests.support.loopback import free_port

IMAGE = os.environ.get("IMAGE_UNDER_TEST", "")
SLIM_IMAGE = os.environ.get("SLIM_IMAGE_UNDER_TEST", "")
#: KILL_GRACE_S's default, and the margin `docker stop` may take beyond it.
KILL_GRACE_S, STOP_MARGIN_S = 10.0, 10.0
API_JOB = {"input": {"workflow": {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 255}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "image-tier"}}}}}


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def serve(containers: list[Container], image: str = IMAGE, **kwargs: Any) -> Container:
    container = Container(image, **kwargs)
    containers.append(container)
    container.wait_for_api()
    return container


def test_test_input_runs_once_and_writes_its_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = docker("run", "--rm", "--network", "host", "-e", "COMFY_EXTRA_ARGS=--cpu",
                    "-e", f"INITIAL_PORT={free_port()}", "-v", f"{out}:/out", IMAGE,
                    "python", "-u", "handler.py", "--output_dir", "/out", timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "job local_test COMPLETED" in output
    (written,) = out.iterdir()
    assert written.read_bytes().startswith(b"\x89PNG")


def test_the_local_api_runs_api_and_ui_jobs_and_streams(containers: list[Container]) -> None:
    container = serve(containers)
    api = post(f"{container.url}/runsync", API_JOB)
    assert api["status"] == "COMPLETED" and api["output"]["images"][0]["type"] == "base64", api
    ui = post(f"{container.url}/runsync", json.loads((REPO / "test_input.json").read_text()))
    assert ui["status"] == "COMPLETED" and ui["output"]["images"], ui
    logs = container.logs()
    assert "the frontend set up from /app/frontend-snapshot.json" in logs, logs[-4000:]  # the image's record

    streaming = serve(containers, env={"STREAM_OUTPUTS": "true"})
    job = post(f"{streaming.url}/run", API_JOB)
    status = post(f"{streaming.url}/status/{job['id']}", {})  # the local API answers once the job ended
    assert status["status"] == "COMPLETED", status
    *outputs, final = status["output"]
    assert final["done"] is True and outputs and all("output" in item for item in outputs), status


def test_docker_stop_ends_the_container_gracefully(containers: list[Container]) -> None:
    container = serve(containers)
    processes = docker("top", container.name).stdout
    assert "main.py" in processes and "chrom" in processes, processes
    started = time.monotonic()
    docker("stop", "-t", str(int(KILL_GRACE_S + STOP_MARGIN_S)), container.name, timeout=90)
    took = time.monotonic() - started
    state = container.state()
    logs = container.logs()
    assert took < KILL_GRACE_S + STOP_MARGIN_S, f"docker stop took {took:.1f} s: the container was killed"
    assert state["ExitCode"] in (0, 143) and not state["OOMKilled"], state  # 143: SIGTERM, re-raised as it came
    assert "graceful stop failed" not in logs and "Traceback" not in logs, logs[-4000:]


def test_a_read_only_container_serves_jobs_with_tmpfs_on_the_writable_paths(containers: list[Container]) -> None:
    tmpfs = [word for path in ("/tmp", "/comfyui/input", "/comfyui/output", "/comfyui/temp", "/comfyui/user")
             for word in ("--tmpfs", path)]
    container = serve(containers, options=("--read-only", *tmpfs))
    api = post(f"{container.url}/runsync", API_JOB)
    assert api["status"] == "COMPLETED", (api, container.logs()[-4000:])
    ui = post(f"{container.url}/runsync", json.loads((REPO / "test_input.json").read_text()))
    assert ui["status"] == "COMPLETED", (ui, container.logs()[-4000:])


def test_a_model_from_s3_is_cached_on_the_volume_for_the_next_container(containers: list[Container],
                                                                        s3_server: S3Server, tmp_path: Path) -> None:
    volume = tmp_path / "runpod-volume"
    (volume / "models" / "checkpoints").mkdir(parents=True)
    (volume / "models" / "checkpoints" / "volume-only.safetensors").write_bytes(b"not a real model")
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="models/style.safetensors", Body=os.urandom(4096))
    env = {"BUCKET_ENDPOINT_URL": s3_server.endpoint_url, "BUCKET_ACCESS_KEY_ID": s3_server.access_key_id,
           "BUCKET_SECRET_ACCESS_KEY": s3_server.secret_access_key, "INLINE_OUTPUTS": "true"}
    model = {"source": f"s3://{s3_server.bucket}/models/style.safetensors", "folder_type": "models",
             "subfolder": "loras"}
    job = {"input": {**API_JOB["input"], "inputs": [model]}}
    seen = []
    for _ in range(2):
        container = serve(containers, env=env, options=("-v", f"{volume}:/runpod-volume"))
        answer = post(f"{container.url}/runsync", job)
        assert answer["status"] == "COMPLETED", (answer, container.logs()[-4000:])
        seen.append(answer["output"]["inputs"][0]["cached"])
        logs = container.logs()
        container.remove()
    assert seen == [False, True]  # the second container found it in the cache on the volume
    assert "file lists changed since FRONTEND_SNAPSHOT was made; refreshing them" in logs, logs[-4000:]
    assert "is stale" not in logs  # other models only refresh the page, never reload it


def test_the_slim_image_serves_api_jobs_and_refuses_ui_jobs(containers: list[Container]) -> None:
    if not SLIM_IMAGE:
        pytest.skip("no WITH_BROWSER=0 image named (SLIM_IMAGE_UNDER_TEST)")
    container = serve(containers, image=SLIM_IMAGE)
    assert "chrom" not in docker("top", container.name).stdout
    api = post(f"{container.url}/runsync", API_JOB)
    assert api["status"] == "COMPLETED", (api, container.logs()[-4000:])
    ui = post(f"{container.url}/runsync", json.loads((REPO / "test_input.json").read_text()))
    assert ui["status"] == "FAILED" and "FRONTEND_START=never" in json.dumps(ui), ui
    listed = docker("run", "--rm", "--network", "host", "--entrypoint", "sh", SLIM_IMAGE, "-c",
                    "ls /ms-playwright /usr/bin/chromium* 2>/dev/null | wc -l").stdout.strip()
    assert listed == "0", "no browser in the slim image"
