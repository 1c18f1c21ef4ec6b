"""worker-comfyui's clients and deployments switch unchanged: its result form, its S3 placement, its variables.

A worker-comfyui client reads only ``output["images"][i]["data"]``: base64 bytes, or
a presigned URL it downloads. A worker-comfyui endpoint turns S3 on with the three
BUCKET_* variables alone, and its objects land where runpod's ``rp_upload.upload_image``
puts them (the bucket named after the month, keys under ``<job_id>/``, URLs valid 7 days).
Everything here runs for real: the handler in a subprocess behind the SDK's local API,
ComfyUI, Chromium, and moto's S3 server.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless.folders import describe_model_folders
from comfy_serverless.job import JobRunner, without_server_paths
from comfy_serverless.storage import S3Storage
from comfy_serverless.worker_comfyui import NO_IMAGES, with_images
from tests.support.fixtures_s3 import S3Server
from tests.support.handler import post, serve_api, stop
from tests.support.jobs import data_uri, first_pixel, invert_job, noise_png, png
from tests.support.ui_workflows import chain, invert, load_image, preview_image

WEEK_S = 604800
#: A worker-comfyui job's workflow: API format, its image from the job's ``images``.
API_WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "worker-comfyui"}},
}


@pytest.fixture
def month_bucket(s3_server: S3Server) -> str:
    """The bucket rp_upload uploads to this month (``MM-YY``); a worker-comfyui user has created it."""
    bucket = time.strftime("%m-%y")
    client = s3_server.client()
    if bucket not in {entry["Name"] for entry in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    return bucket


def worker_comfyui_images(output: dict[str, Any], s3_server: S3Server) -> list[bytes]:
    """What a worker-comfyui client does with a result: ``images[].data``, decoded or downloaded."""
    images = []
    for image in output["images"]:
        if image["type"] == "base64":
            images.append(base64.b64decode(image["data"]))
        else:
            assert image["type"] == "s3_url", image
            with s3_server.auth_disabled(), urllib.request.urlopen(image["data"], timeout=30) as response:
                images.append(response.read())
    return images


async def test_each_inline_image_goes_out_once_in_images(runner: JobRunner) -> None:
    result = with_images(await runner.run("job-wc-inline", invert_job(
        images=[{"name": "photo.png", "image": data_uri(png((10, 20, 30)))}])))
    assert "error" not in result, result
    (output,) = result["outputs"]
    (image,) = result["images"]
    assert image.keys() == {"filename", "type", "data"} and image["type"] == "base64"
    assert image["filename"] == output["filename"] and first_pixel(base64.b64decode(image["data"])) == (245, 235, 225)
    assert output["image"] == 0 and "data" not in output  # ours points at it
    assert "status" not in result and "errors" not in result


async def test_a_run_without_images_is_success_no_images(runner: JobRunner) -> None:
    workflow = chain(load_image("photo.png"), invert(), preview_image())  # a preview is temp: not delivered
    result = with_images(await runner.run("job-wc-none", {
        "workflow": workflow, "images": [{"name": "photo.png", "image": data_uri(png((1, 2, 3)))}]}))
    assert result["status"] == NO_IMAGES and result["images"] == [] and result["outputs"] == []


async def test_a_failure_keeps_error_as_one_string(runner: JobRunner) -> None:
    result = with_images(await runner.run("job-wc-fail", invert_job("gone.png")))
    assert isinstance(result["error"], str) and "gone.png" in result["error"]
    assert "images" not in result and "status" not in result


def test_non_fatal_problems_are_its_errors() -> None:
    result = with_images({"outputs": [], "warnings": ["node 3 listed output file 'x.png', which does not exist"]})
    assert result["errors"] == result["warnings"] and result["status"] == NO_IMAGES


async def test_a_3_mb_image_costs_one_base64_copy(runner: JobRunner) -> None:
    """RunPod caps a /runsync answer at about 20 MB: the JSON stays within 1.25x one base64 copy."""
    image = noise_png(1000)
    assert len(image) > 3_000_000
    result = with_images(await runner.run("job-wc-size", invert_job(
        images=[{"name": "photo.png", "image": data_uri(image)}])))
    (delivered,) = result["images"]
    assert len(base64.b64decode(delivered["data"])) > 2_900_000  # the noise does not compress
    assert len(json.dumps(result)) <= 1.25 * len(delivered["data"])


async def test_bucket_variables_alone_upload_where_rp_upload_does(connector: ComfyConnector, s3_server: S3Server,
                                                                  month_bucket: str, scratch: Path) -> None:
    config = s3_server.config(scratch_dir=str(scratch))  # BUCKET_* only, no OUTPUT_S3_URI
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    result = with_images(await runner.run("job-wc-month", invert_job(
        images=[{"name": "photo.png", "image": data_uri(png((10, 20, 30)))}])))
    assert "error" not in result, result
    (output,) = result["outputs"]
    key = output["s3_uri"].removeprefix(f"s3://{month_bucket}/")
    assert key.startswith("job-wc-month/") and key.endswith(".png"), output["s3_uri"]
    (image,) = result["images"]
    assert image == {"filename": output["filename"], "type": "s3_url", "data": output["url"]}
    assert parse_qs(urlsplit(image["data"]).query)["X-Amz-Expires"] == [str(WEEK_S)]  # rp_upload's ExpiresIn
    (downloaded,) = worker_comfyui_images(result, s3_server)
    stored = s3_server.client().get_object(Bucket=month_bucket, Key=key)["Body"].read()
    assert downloaded == stored and first_pixel(stored) == (245, 235, 225)


async def test_the_explicit_destinations_still_win(connector: ComfyConnector, s3_server: S3Server,
                                                   month_bucket: str, scratch: Path) -> None:
    image = [{"name": "photo.png", "image": data_uri(png((1, 2, 3)))}]
    configured = s3_server.config(scratch_dir=str(scratch), output_s3_uri=f"s3://{s3_server.bucket}/configured")
    runner = JobRunner(connector, configured, S3Storage.from_config(configured))
    (by_setting,) = (await runner.run("job-wc-setting", invert_job(images=image)))["outputs"]
    assert by_setting["s3_uri"].startswith(f"s3://{s3_server.bucket}/configured/job-wc-setting/")
    assert parse_qs(urlsplit(by_setting["url"]).query)["X-Amz-Expires"] == ["3600"]
    month_config = s3_server.config(scratch_dir=str(scratch))
    runner = JobRunner(connector, month_config, S3Storage.from_config(month_config))
    (by_job,) = (await runner.run("job-wc-job", invert_job(
        images=image, output={"s3_uri": f"s3://{s3_server.bucket}/mine"})))["outputs"]
    assert by_job["s3_uri"].startswith(f"s3://{s3_server.bucket}/mine/job-wc-job/")
    assert parse_qs(urlsplit(by_job["url"]).query)["X-Amz-Expires"] == ["3600"]
    inline = await runner.run("job-wc-inline-wins", invert_job(images=image, output={"inline": True}))
    assert inline["outputs"][0]["data"]


async def test_a_missing_month_bucket_or_one_outside_the_allowlist_says_why(connector: ComfyConnector,
                                                                           s3_server: S3Server, month_bucket: str,
                                                                           scratch: Path) -> None:
    client = s3_server.client()
    for entry in client.list_objects_v2(Bucket=month_bucket).get("Contents", []):
        client.delete_object(Bucket=month_bucket, Key=entry["Key"])
    client.delete_bucket(Bucket=month_bucket)
    image = [{"name": "photo.png", "image": data_uri(png((1, 2, 3)))}]
    config = s3_server.config(scratch_dir=str(scratch))
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    missing = await runner.run("job-wc-missing", invert_job(images=image))
    assert missing["error_type"] == "StorageError", missing
    assert f"bucket '{month_bucket}' does not exist" in missing["error"]
    assert "named after the month" in missing["error"] and "OUTPUT_S3_URI" in missing["error"]
    allowed = s3_server.config(scratch_dir=str(scratch), s3_bucket_allowlist=s3_server.bucket)
    runner = JobRunner(connector, allowed, S3Storage.from_config(allowed))
    refused = await runner.run("job-wc-refused", invert_job(images=image))
    assert refused["error_type"] == "JobInputError" and "input.output: " in refused["error"], refused
    assert f"'{month_bucket}' is not in S3_BUCKET_ALLOWLIST" in refused["error"]


def test_network_volume_debug_says_where_each_model_folder_resolves(tmp_path: Path) -> None:
    volume, image = tmp_path / "runpod-volume", tmp_path / "comfyui" / "models"
    (volume / "models" / "loras").mkdir(parents=True)
    (volume / "models" / "loras" / "style.safetensors").write_bytes(b"x")
    (image / "checkpoints").mkdir(parents=True)
    folders = {"loras": [str(image / "loras"), str(volume / "models" / "loras")],
               "checkpoints": [str(image / "checkpoints")]}
    assert describe_model_folders(folders, volume) == [
        f"network volume: {volume} is mounted; {volume / 'models'} holds: loras",
        f"model folder checkpoints: {image / 'checkpoints'} (image, 0 entries)",
        f"model folder loras: {image / 'loras'} (image, missing); {volume / 'models' / 'loras'} (network volume, "
        "1 entries)"]
    assert describe_model_folders({}, tmp_path / "none")[0] == (f"network volume: {tmp_path / 'none'} is not "
                                                                "mounted; models come from the image only")


def test_history_carries_no_server_paths() -> None:
    """VideoHelperSuite's VHS_VideoCombine lists where it wrote the file; the client gets the rest."""
    outputs = {"9": {"gifs": [{"filename": "anim_00001.mp4", "subfolder": "", "type": "output",
                               "format": "video/h264-mp4", "frame_rate": 8.0, "workflow": "anim_00001.png",
                               "fullpath": "/comfyui/output/anim_00001.mp4"}]},
               "10": {"text": ["/a text that starts with a slash stays"]}}
    assert without_server_paths(outputs) == {
        "9": {"gifs": [{"filename": "anim_00001.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4",
                        "frame_rate": 8.0, "workflow": "anim_00001.png"}]},
        "10": {"text": ["/a text that starts with a slash stays"]}}


def test_a_worker_comfyui_client_works_unchanged_inline_and_with_s3(comfy_root: Path, s3_server: S3Server,
                                                                    month_bucket: str) -> None:
    """Its deployment's variables (SERVE_API_LOCALLY instead of --rp_serve_api, COMFY_LOG_LEVEL,
    NETWORK_VOLUME_DEBUG), its job (an API workflow, ``images``), its client: inline, then with BUCKET_* set."""
    job = {"input": {"workflow": API_WORKFLOW, "images": [{"name": "example.png", "image": data_uri(png((7, 8, 9)))}]}}
    process, port = serve_api(comfy_root, flag=False, SERVE_API_LOCALLY="true", COMFY_LOG_LEVEL="DEBUG",
                              NETWORK_VOLUME_DEBUG="true")
    try:
        comfy = [child for child in psutil.Process(process.pid).children(recursive=True)
                 if "main.py" in " ".join(child.cmdline())]
        assert comfy and "--verbose DEBUG" in " ".join(comfy[0].cmdline())
        answer = post(f"http://127.0.0.1:{port}/runsync", job)
        (inline,) = worker_comfyui_images(answer["output"], s3_server)
    finally:
        stop(process)
    log = process.stdout.read() if process.stdout else ""
    assert first_pixel(inline) == (248, 247, 246), answer
    assert "network volume: /runpod-volume is not mounted" in log and "model folder checkpoints: " in log

    process, port = serve_api(comfy_root, BUCKET_ENDPOINT_URL=s3_server.endpoint_url,
                              BUCKET_ACCESS_KEY_ID=s3_server.access_key_id,
                              BUCKET_SECRET_ACCESS_KEY=s3_server.secret_access_key)
    try:
        answer = post(f"http://127.0.0.1:{port}/runsync", job)
        (uploaded,) = worker_comfyui_images(answer["output"], s3_server)
    finally:
        stop(process)
    assert first_pixel(uploaded) == (248, 247, 246), answer
    listed = s3_server.client().list_objects_v2(Bucket=month_bucket, Prefix=f"{answer['id']}/")
    assert [entry["Size"] for entry in listed["Contents"]] == [len(uploaded)]
