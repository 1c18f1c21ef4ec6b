"""The per-job path end to end: real ComfyUI (test server or real), real Chromium, real S3 (moto server mode)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.request
from pathlib import Path

import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage
from tests.support.comfy import needs_test_server, set_faults
from tests.support.fixtures_s3 import S3Server
from tests.support.jobs import data_uri, first_pixel, folder_state, invert_job, noise_png, png
from tests.support.ui_workflows import chain, load_image, save_image


@pytest.fixture
def s3_runner(connector: ComfyConnector, s3_server: S3Server, scratch: Path) -> JobRunner:
    config = s3_server.config(scratch_dir=str(scratch), output_s3_uri=f"s3://{s3_server.bucket}/results")
    return JobRunner(connector, config, S3Storage.from_config(config))


async def test_base64_input_ui_workflow_inline_output(runner: JobRunner) -> None:
    result = await runner.run("job-inline", invert_job(inputs=[{"source": data_uri(png((10, 20, 30))),
                                                                "name": "photo.png"}]))
    assert "error" not in result, result
    assert set(result) == {"prompt_id", "history", "outputs", "inputs", "timings", "warnings"}
    (report,) = result["inputs"]
    assert report["name"] == "photo.png" and report["bytes"] == len(png((10, 20, 30))) and report["cached"] is False
    assert 0 <= report["fetch_s"] <= result["timings"]["fetch"]
    assert set(result["timings"]) == {"fetch", "convert", "queue", "execute", "upload", "cleanup", "total"}
    (output,) = result["outputs"]
    assert output["node_id"] == "3" and output["kind"] == "images" and output["content_type"] == "image/png"
    data = base64.b64decode(output["data"])
    assert output["bytes"] == len(data) and first_pixel(data) == (245, 235, 225)  # inverted
    entry = result["history"][result["prompt_id"]]
    assert set(entry) == {"outputs", "status"} and entry["status"]["status_str"] == "success"
    assert "extra_pnginfo" not in json.dumps(result)  # the caller's own workflow is not sent back


async def test_worker_comfyui_images_form(runner: JobRunner) -> None:
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "compat"}}}
    raw = base64.b64encode(png((1, 2, 3))).decode()
    result = await runner.run("job-compat", {"workflow": api, "images": [{"name": "a.png", "image": raw}]})
    assert "error" not in result, result
    assert first_pixel(base64.b64decode(result["outputs"][0]["data"])) == (1, 2, 3)


async def test_the_same_job_dict_runs_twice(runner: JobRunner) -> None:
    """The worker edits a copy of the prompt (input references, overrides), never the caller's job."""
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "again.png"}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "again"}}}
    job = {"workflow": api, "inputs": [{"source": data_uri(png((7, 7, 7))), "name": "again.png"}],
           "overrides": {"2": {"filename_prefix": "again2"}}}
    snapshot = json.dumps(job)
    for _ in range(2):
        result = await runner.run("job-again", job)
        assert "error" not in result, result
    assert json.dumps(job) == snapshot


async def test_job_input_as_json_string(runner: JobRunner) -> None:
    job = invert_job(inputs=[{"source": data_uri(png((0, 0, 0))), "name": "photo.png"}])
    result = await runner.run("job-string", json.dumps(job))
    assert "error" not in result, result


async def test_overrides_by_id_and_title(runner: JobRunner) -> None:
    job = invert_job(inputs=[{"source": data_uri(png((0, 0, 0))), "name": "photo.png"}],
                     overrides={"Result": {"filename_prefix": "renamed"}})
    result = await runner.run("job-override", job)
    assert result["outputs"][0]["filename"].startswith("renamed_")
    bad = await runner.run("job-override-bad", invert_job(
        inputs=[{"source": data_uri(png((0, 0, 0))), "name": "photo.png"}],
        overrides={"77": {"x": 1}, "3": {"no_such_input": 1}}))
    assert "input.overrides.77: no node" in bad["error"] and "input.overrides.3.no_such_input" in bad["error"]


async def test_invalid_schema_lists_every_problem_and_runs_nothing(runner: JobRunner,
                                                                 connector: ComfyConnector) -> None:
    before = await connector.client.get_json("/history")
    result = await runner.run("job-invalid", {"workflow": "{", "inputs": [{"source": "file:///etc/passwd"}],
                                              "timeout_s": -1, "colour": "red"})
    assert result["error_type"] == "JobInputError"
    problems = result["problems"]
    assert any(p.startswith("input.workflow") for p in problems)
    assert any(p.startswith("input.inputs[0].source") for p in problems)
    assert any(p.startswith("input.timeout_s") for p in problems)
    assert any("colour" in p for p in problems)
    assert await connector.client.get_json("/history") == before


async def test_inline_cap_error_tells_how_to_configure_s3(connector: ComfyConnector, scratch: Path) -> None:
    runner = JobRunner(connector, Config(scratch_dir=str(scratch), inline_output_max_bytes=100), None)
    result = await runner.run("job-cap", invert_job(inputs=[{"source": data_uri(png((9, 9, 9), 64)),
                                                             "name": "photo.png"}]))
    assert "INLINE_OUTPUT_MAX_BYTES" in result["error"] and "OUTPUT_S3_URI" in result["error"]


async def test_same_input_name_in_two_jobs_never_mixes(runner: JobRunner) -> None:
    jobs = [invert_job(inputs=[{"source": data_uri(png(color)), "name": "same.png"}], overrides={}) | {
        "workflow": chain(load_image("same.png"), save_image("same"))} for color in ((200, 0, 0), (0, 0, 200))]
    first, second = await asyncio.gather(runner.run("job-a", jobs[0]), runner.run("job-b", jobs[1]))
    assert first_pixel(base64.b64decode(first["outputs"][0]["data"])) == (200, 0, 0)
    assert first_pixel(base64.b64decode(second["outputs"][0]["data"])) == (0, 0, 200)


async def test_fifty_jobs_leave_folders_as_they_were(runner: JobRunner, connector: ComfyConnector,
                                                    scratch: Path) -> None:
    job = invert_job(inputs=[{"source": data_uri(png((5, 5, 5))), "name": "photo.png"}])
    await runner.run("warm-up", job)
    before = folder_state(connector, scratch)
    for index in range(50):
        failing = index % 10 == 9  # failures clean up too
        result = await runner.run(f"job-{index}", {**job, "overrides": {"1": {"image": "gone.png"}}}
                                  if failing else job)
        assert ("error" in result) == failing, result
    assert folder_state(connector, scratch) == before


@needs_test_server
async def test_cancelled_job_interrupts_cleans_up_and_reraises(runner: JobRunner, connector: ComfyConnector,
                                                              scratch: Path) -> None:
    before = folder_state(connector, scratch)
    await set_faults(connector, hang_next_prompt=True)
    task = asyncio.create_task(runner.run("job-cancel", invert_job(
        inputs=[{"source": data_uri(png((1, 1, 1))), "name": "photo.png"}])))
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert folder_state(connector, scratch) == before
    assert await connector.client.get_json("/queue") == {"queue_running": [], "queue_pending": []}


# --- URL inputs -------------------------------------------------------------------------------
async def test_url_input_allowlisted(connector: ComfyConnector, scratch: Path, image_server: str) -> None:
    allowed = JobRunner(connector, Config(scratch_dir=str(scratch), url_allowlist="127.0.0.1"), None)
    result = await allowed.run("job-url", invert_job(inputs=[{"source": f"{image_server}/img/photo.png"}]))
    assert "error" not in result, result
    assert first_pixel(base64.b64decode(result["outputs"][0]["data"])) == (205, 195, 185)
    refused = JobRunner(connector, Config(scratch_dir=str(scratch)), None)
    result = await refused.run("job-url-refused", invert_job(inputs=[{"source": f"{image_server}/img/photo.png"}]))
    assert "input.inputs[0]" in result["error"] and "not a public address" in result["error"]


# --- S3 -----------------------------------------------------------------------------------------
async def test_s3_input_and_output_with_presigned_url(s3_runner: JobRunner, s3_server: S3Server,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key="uploads/photo.png", Body=png((100, 100, 100)))
    result = await s3_runner.run("job-s3", invert_job(inputs=[{"source": f"s3://{s3_server.bucket}/uploads/photo.png"}]))
    assert "error" not in result, result
    (output,) = result["outputs"]
    key = f"results/job-s3/{output['filename']}"
    assert output["s3_uri"] == f"s3://{s3_server.bucket}/{key}"
    head = client.head_object(Bucket=s3_server.bucket, Key=key)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == output["bytes"]
    with s3_server.auth_disabled():
        fetched = await asyncio.to_thread(lambda: urllib.request.urlopen(output["url"], timeout=10).read())
    assert first_pixel(fetched) == (155, 155, 155)
    secret = s3_server.secret_access_key
    assert secret not in json.dumps(result) and secret not in caplog.text


async def test_s3_output_prefix_from_job_and_large_multipart(s3_runner: JobRunner,
                                                             s3_server: S3Server) -> None:
    job = {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
                        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}}},
           "images": [{"name": "big.png", "image": base64.b64encode(noise_png(1800)).decode()}],
           "output": {"s3_uri": f"s3://{s3_server.bucket}/custom/prefix", "presign": False}}
    result = await s3_runner.run("job-big", job)
    assert "error" not in result, result
    (output,) = result["outputs"]
    assert output["bytes"] > 8 * 1024 * 1024 and output["url"] is None
    assert output["s3_uri"].startswith(f"s3://{s3_server.bucket}/custom/prefix/job-big/")


async def test_missing_s3_object_names_the_input_and_queues_nothing(
        s3_runner: JobRunner, s3_server: S3Server, connector: ComfyConnector, scratch: Path) -> None:
    before_history = await connector.client.get_json("/history")
    before = folder_state(connector, scratch)
    result = await s3_runner.run("job-missing", invert_job(inputs=[
        {"source": data_uri(png((1, 1, 1))), "name": "ok.png"},
        {"source": f"s3://{s3_server.bucket}/nope/photo.png"}]))
    assert result["error"].startswith("input.inputs[1] (photo.png)") and "does not exist" in result["error"]
    assert await connector.client.get_json("/history") == before_history
    assert folder_state(connector, scratch) == before


async def test_wrong_credentials_fail_clearly_without_leaking(connector: ComfyConnector, s3_server: S3Server,
                                                              scratch: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-secret-d0ntl3ak"
    config = s3_server.config(scratch_dir=str(scratch), bucket_secret_access_key=secret)
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="uploads/x.png", Body=png((0, 0, 0)))
    result = await runner.run("job-denied", invert_job(
        "x.png", inputs=[{"source": f"s3://{s3_server.bucket}/uploads/x.png"}]))
    assert "input.inputs[0] (x.png)" in result["error"] and "denied" in result["error"]
    assert secret not in json.dumps(result) and secret not in caplog.text


async def test_upload_failure_fails_the_job_and_reports_nothing_uploaded(
        connector: ComfyConnector, s3_server: S3Server, scratch: Path) -> None:
    before = folder_state(connector, scratch)
    config = s3_server.config(scratch_dir=str(scratch))
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    result = await runner.run("job-upload-fails", invert_job(
        inputs=[{"source": data_uri(png((1, 1, 1))), "name": "photo.png"}],
        output={"s3_uri": "s3://no-such-bucket-here/out"}))
    assert result["error_type"] == "StorageError" and "no-such-bucket-here" in result["error"]
    assert "outputs" not in result
    assert folder_state(connector, scratch) == before


async def test_endpoint_down_is_a_clear_input_error(connector: ComfyConnector, s3_server: S3Server,
                                                    scratch: Path) -> None:
    config = s3_server.config(scratch_dir=str(scratch), bucket_endpoint_url="http://127.0.0.1:9")
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    result = await runner.run("job-down", invert_job(inputs=[{"source": f"s3://{s3_server.bucket}/a/photo.png"}]))
    assert "input.inputs[0] (photo.png)" in result["error"] and "unreachable" in result["error"]


async def test_uncached_model_input_is_placed_privately_and_removed(runner: JobRunner, connector: ComfyConnector,
                                                                   scratch: Path) -> None:
    before = folder_state(connector, scratch)
    loras = connector.files.model_folder("loras")
    before_loras = sorted(loras.rglob("*")) if loras.exists() else []
    job = invert_job(inputs=[{"source": data_uri(png((3, 3, 3))), "name": "photo.png"},
                             {"source": "data:application/octet-stream;base64,AAAA", "name": "tiny.safetensors",
                              "folder_type": "models", "subfolder": "loras", "cache": False}])
    result = await runner.run("job-model", job)
    assert "error" not in result, result
    assert folder_state(connector, scratch) == before
    assert (sorted(loras.rglob("*")) if loras.exists() else []) == before_loras
