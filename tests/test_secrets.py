"""Credentials never appear in logs, errors or results.

Jobs run through the real pipeline against a real S3 endpoint (moto's server mode, with
authentication enforced) while every log record of every logger is captured at DEBUG (botocore,
boto3, s3transfer, urllib3 and aiohttp included) together with this process's stdout and stderr
at the file-descriptor level. After each scenario the secret key, a wrong secret key that was
tried, and the job's ``comfy_org_api_key`` must appear in none of: the JSON of every result, the
log text (tracebacks included), captured output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage
from tests.support.comfy import needs_test_server, set_faults
from tests.support.fixtures_s3 import S3Server
from tests.support.jobs import data_uri, invert_job, png

WRONG_SECRET = "wr0ng-S3cret-Qx7Zp2Lk9Vm4Hd8Tn1"
API_KEY = "comfyui-apikey-Jf83Kd02Lq9Zx7Wv5Pm1"
PROMPT_KEY = "uploads/secret-test.png"
LOGGERS = (None, "botocore", "boto3", "s3transfer", "urllib3", "aiohttp", "asyncio", "comfy_serverless")


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at DEBUG, whatever level a library set on its own logger."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


@pytest.fixture
def uploaded(s3_server: S3Server) -> str:
    """An input image in the bucket; its s3:// URI."""
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=PROMPT_KEY, Body=png((40, 50, 60)))
    return f"s3://{s3_server.bucket}/{PROMPT_KEY}"


@pytest.fixture
def sent(connector: ComfyConnector, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The extra data of every prompt the worker queues during the test (the real call still happens)."""
    extra_data_sent: list[dict[str, Any]] = []
    queue_prompt = connector.client.queue_prompt

    async def spy(prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any]) -> None:
        extra_data_sent.append(extra_data)
        await queue_prompt(prompt, prompt_id, extra_data)

    monkeypatch.setattr(connector.client, "queue_prompt", spy)
    return extra_data_sent


def make_runner(connector: ComfyConnector, config: Config) -> JobRunner:
    """Built inside the test, so S3Storage.from_config's own logging is captured too."""
    return JobRunner(connector, config, S3Storage.from_config(config))


def assert_never_seen(secrets: list[str], results: list[dict[str, Any]], caplog: pytest.LogCaptureFixture,
                      capfd: pytest.CaptureFixture[str], *, expect_s3_logs: bool = True) -> None:
    out, err = capfd.readouterr()
    places = {"the log": caplog.text, "stdout": out, "stderr": err,
              # messages of records, formatted with their arguments, and the exceptions they carry
              "log records": "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)}
    places |= {f"result {index}": json.dumps(result) for index, result in enumerate(results)}
    for secret in secrets:
        assert len(secret) >= 16
        for where, text in places.items():
            assert secret not in text, f"a secret ({secret[:4]}…) appears in {where}"
    if expect_s3_logs:  # the capture worked: botocore's DEBUG records (requests, signing) are in it
        assert any(r.name.startswith("botocore") and r.levelno == logging.DEBUG for r in caplog.records)


async def test_successful_s3_jobs_leak_nothing(connector: ComfyConnector, s3_server: S3Server, scratch: Path,
                                               uploaded: str, capture: pytest.LogCaptureFixture,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    runner = make_runner(connector, s3_server.config(scratch_dir=str(scratch)))
    results = []
    for presign in (True, False):
        result = await runner.run(f"job-secret-{presign}", invert_job(
            inputs=[{"source": uploaded, "name": "photo.png"}],
            output={"s3_uri": f"s3://{s3_server.bucket}/results", "presign": presign},
            comfy_org_api_key=API_KEY))
        assert "error" not in result, result
        (output,) = result["outputs"]
        assert output["s3_uri"].startswith(f"s3://{s3_server.bucket}/results/job-secret-{presign}/")
        assert (output["url"] is not None) == presign
        if presign:  # a presigned URL names the key id and carries a signature, never the secret
            assert "X-Amz-Signature=" in output["url"] and s3_server.access_key_id in output["url"]
        results.append(result)
    assert_never_seen([s3_server.secret_access_key, API_KEY], results, capture, capfd)


async def test_wrong_secret_leaks_neither_secret(connector: ComfyConnector, s3_server: S3Server, scratch: Path,
                                                 uploaded: str, capture: pytest.LogCaptureFixture,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    runner = make_runner(connector, s3_server.config(scratch_dir=str(scratch),
                                                     bucket_secret_access_key=WRONG_SECRET))
    fetch = await runner.run("job-wrong-in", invert_job(inputs=[{"source": uploaded, "name": "photo.png"}],
                                                        comfy_org_api_key=API_KEY))
    assert fetch["error_type"] == "InputFetchError" and "access denied" in fetch["error"], fetch
    upload = await runner.run("job-wrong-out", invert_job(
        inputs=[{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}],
        output={"s3_uri": f"s3://{s3_server.bucket}/results"}, comfy_org_api_key=API_KEY))
    assert upload["error_type"] == "StorageError" and "access denied" in upload["error"], upload
    assert_never_seen([WRONG_SECRET, s3_server.secret_access_key, API_KEY], [fetch, upload], capture, capfd)


async def test_failing_s3_jobs_leak_nothing(connector: ComfyConnector, s3_server: S3Server, scratch: Path,
                                            capture: pytest.LogCaptureFixture,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    runner = make_runner(connector, s3_server.config(scratch_dir=str(scratch)))
    image = [{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}]
    missing = await runner.run("job-missing", invert_job(
        inputs=[{"source": f"s3://{s3_server.bucket}/nope/photo.png"}], comfy_org_api_key=API_KEY))
    assert "does not exist" in missing["error"], missing
    no_bucket = await runner.run("job-no-bucket", invert_job(
        inputs=image, output={"s3_uri": "s3://no-such-bucket-here/out"}, comfy_org_api_key=API_KEY))
    assert no_bucket["error_type"] == "StorageError" and "no-such-bucket-here" in no_bucket["error"], no_bucket
    bad_input = await runner.run("job-bad-input", {
        "workflow": "{", "comfy_org_api_key": API_KEY, "comfy_org_api_keys": API_KEY,
        "inputs": [{"source": f"https://user:{API_KEY}@example.com/x.png"},
                   {"source": f"s3://{s3_server.bucket}/x.png?token={API_KEY}", "name": 5}],
        "output": {"s3_uri": "s3://Bad_Bucket/out"}})
    assert bad_input["error_type"] == "JobInputError" and "comfy_org_api_keys" in bad_input["error"], bad_input
    refused = await runner.run("job-refused-url", invert_job(
        inputs=[{"source": f"http://10.0.0.1/x.png?X-Amz-Signature={API_KEY}", "name": "photo.png"}]))
    assert "not a public address" in refused["error"], refused
    unreachable_runner = make_runner(connector, s3_server.config(scratch_dir=str(scratch),
                                                                 bucket_endpoint_url="http://127.0.0.1:9"))
    unreachable = await unreachable_runner.run("job-unreachable", invert_job(
        inputs=[{"source": f"s3://{s3_server.bucket}/a/photo.png"}], comfy_org_api_key=API_KEY))
    assert "unreachable" in unreachable["error"], unreachable
    unreachable_out = await unreachable_runner.run("job-unreachable-out", invert_job(
        inputs=image, output={"s3_uri": f"s3://{s3_server.bucket}/out"}, comfy_org_api_key=API_KEY))
    assert unreachable_out["error_type"] == "StorageError" and "unreachable" in unreachable_out["error"]
    assert_never_seen([s3_server.secret_access_key, API_KEY],
                      [missing, no_bucket, bad_input, refused, unreachable, unreachable_out], capture, capfd)


async def test_comfy_org_api_key_reaches_comfy_but_not_the_result(connector: ComfyConnector, scratch: Path,
                                                                  sent: list[dict[str, Any]],
                                                                  capture: pytest.LogCaptureFixture,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    runner = JobRunner(connector, Config(scratch_dir=str(scratch)), None)
    image = [{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}]
    ok = await runner.run("job-key-ok", invert_job(inputs=image, comfy_org_api_key=API_KEY))
    invalid = await runner.run("job-key-invalid", invert_job(comfy_org_api_key=API_KEY) | {
        "workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}},
                     "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "k"}}}})
    assert "error" not in ok, ok
    assert "gone.png" in invalid["error"], invalid
    assert [extra.get("api_key_comfy_org") for extra in sent] == [API_KEY, API_KEY]  # ComfyUI's API nodes get it
    assert set(ok["history"][ok["prompt_id"]]) == {"outputs", "status"}  # no prompt, so no extra data in it
    assert_never_seen([API_KEY], [ok, invalid], capture, capfd, expect_s3_logs=False)


async def test_comfy_org_api_key_setting_is_the_default_and_a_jobs_own_key_wins(
        connector: ComfyConnector, scratch: Path, sent: list[dict[str, Any]], capture: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    """COMFY_ORG_API_KEY (worker-comfyui's variable) reaches ComfyUI's API nodes, never a log or a result."""
    runner = JobRunner(connector, Config.load(environ={"SCRATCH_DIR": str(scratch), "COMFY_ORG_API_KEY": API_KEY}),
                       None)
    image = [{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}]
    job_key = "comfyui-jobkey-Pq71Zs09Lm3Xv8Wd"
    default = await runner.run("job-default-key", invert_job(inputs=image))
    own = await runner.run("job-own-key", invert_job(inputs=image, comfy_org_api_key=job_key))
    assert "error" not in default and "error" not in own, (default, own)
    assert [extra.get("api_key_comfy_org") for extra in sent] == [API_KEY, job_key]
    assert_never_seen([API_KEY, job_key], [default, own], capture, capfd, expect_s3_logs=False)


@needs_test_server
async def test_comfy_org_api_key_absent_from_execution_errors(connector: ComfyConnector, scratch: Path,
                                                              capture: pytest.LogCaptureFixture,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    runner = JobRunner(connector, Config(scratch_dir=str(scratch)), None)
    await set_faults(connector, fail_next_prompt_with="boom in a node")
    try:
        failed = await runner.run("job-key-failed", invert_job(
            inputs=[{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}], comfy_org_api_key=API_KEY))
    finally:
        await set_faults(connector, reset=True)
    assert failed["error_type"] == "ExecutionError" and "boom in a node" in failed["error"], failed
    assert_never_seen([API_KEY], [failed], capture, capfd, expect_s3_logs=False)
