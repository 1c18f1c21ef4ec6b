"""S3Storage against a real S3 endpoint (moto's server, with credentials enforced): no patched boto3."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import tracemalloc
from pathlib import Path

import aiohttp
import pytest

from comfy_serverless.config import Config
from comfy_serverless.errors import ConfigError, StorageError
from comfy_serverless.files import describe_size
from comfy_serverless.storage import S3Storage, endpoint_region
from tests.support.fixtures_s3 import S3Server
from tests.support.loopback import free_port

#: Distinctive credentials that must never surface in a message or a log line.
SECRET = "sEcReT-4f9d1c7e-DoNotLeak"
KEY_ID = "AKIAKEYIDTHATMUSTNOTLEAK"


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS credentials, region or profile from this machine: the chain starts empty."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def storage(s3_server: S3Server, clean_aws_env: pytest.MonkeyPatch) -> S3Storage:
    created = S3Storage.from_config(s3_server.config())
    assert created is not None
    return created


def put(server: S3Server, key: str, data: bytes) -> None:
    server.client().put_object(Bucket=server.bucket, Key=key, Body=data)


# --- configuration ---------------------------------------------------------------------------

def test_nothing_configured_means_no_storage(clean_aws_env: pytest.MonkeyPatch) -> None:
    assert S3Storage.from_config(Config()) is None


@pytest.mark.parametrize(("environ", "key", "expected"), [
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com"}, "BUCKET_ACCESS_KEY_ID",
     "BUCKET_ENDPOINT_URL is set but BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY are not"),
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com", "BUCKET_ACCESS_KEY_ID": KEY_ID}, "BUCKET_SECRET_ACCESS_KEY",
     "BUCKET_SECRET_ACCESS_KEY is not set but BUCKET_ACCESS_KEY_ID is"),
    ({"BUCKET_SECRET_ACCESS_KEY": SECRET}, "BUCKET_ACCESS_KEY_ID",
     "BUCKET_ACCESS_KEY_ID is not set but BUCKET_SECRET_ACCESS_KEY is"),
    ({"OUTPUT_S3_URI": "https://bucket/prefix"}, "OUTPUT_S3_URI", "OUTPUT_S3_URI must start with s3://"),
    ({"OUTPUT_S3_URI": "s3://Not_A_Bucket/x", "BUCKET_ACCESS_KEY_ID": KEY_ID, "BUCKET_SECRET_ACCESS_KEY": SECRET},
     "OUTPUT_S3_URI", "OUTPUT_S3_URI has an invalid bucket name"),
    ({"OUTPUT_S3_URI": "s3://elsewhere/out", "S3_BUCKET_ALLOWLIST": "allowed-bucket"}, "OUTPUT_S3_URI",
     "OUTPUT_S3_URI: bucket 'elsewhere' is not in S3_BUCKET_ALLOWLIST (allowed-bucket)"),
    ({"BUCKET_ENDPOINT_URL": "ftp://s3.example.com", "BUCKET_ACCESS_KEY_ID": KEY_ID,
      "BUCKET_SECRET_ACCESS_KEY": SECRET}, "BUCKET_ENDPOINT_URL", "BUCKET_ENDPOINT_URL must be an http:// or https://"),
    ({"BUCKET_ENDPOINT_URL": "https://s3.example.com:port", "BUCKET_ACCESS_KEY_ID": KEY_ID,
      "BUCKET_SECRET_ACCESS_KEY": SECRET}, "BUCKET_ENDPOINT_URL", "BUCKET_ENDPOINT_URL is not a valid URL"),
    ({"BUCKET_ENDPOINT_URL": f"https://user:{SECRET}@s3.example.com", "BUCKET_ACCESS_KEY_ID": KEY_ID,
      "BUCKET_SECRET_ACCESS_KEY": SECRET}, "BUCKET_ENDPOINT_URL", "must not contain credentials"),
])
def test_partial_configuration_stops_the_load_naming_the_variable(environ: dict[str, str], key: str,
                                                                  expected: str) -> None:
    """Checked by Config.load, so the worker stops before ComfyUI boots."""
    with pytest.raises(ConfigError) as caught:
        Config.load(environ=environ)
    assert expected in str(caught.value)
    assert caught.value.details["key"] == key
    assert SECRET not in str(caught.value) and KEY_ID not in str(caught.value)


def test_shape_is_checked_on_trimmed_values(clean_aws_env: pytest.MonkeyPatch) -> None:
    """Blanks a pasted value brings along are not part of it, for the check and for the client alike."""
    config = Config.load(environ={"BUCKET_ACCESS_KEY_ID": f" {KEY_ID}\n", "BUCKET_SECRET_ACCESS_KEY": f"{SECRET}\n",
                                  "BUCKET_ENDPOINT_URL": " https://s3.example.com "})
    storage = S3Storage.from_config(config)
    assert storage is not None and storage.endpoint_url == "https://s3.example.com"
    with pytest.raises(ConfigError, match="BUCKET_SECRET_ACCESS_KEY is not set"):
        Config.load(environ={"BUCKET_ACCESS_KEY_ID": KEY_ID, "BUCKET_SECRET_ACCESS_KEY": " \n"})


def test_output_uri_without_any_credentials_fails_at_startup(clean_aws_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError) as caught:
        S3Storage.from_config(Config(output_s3_uri="s3://bucket/outputs"))
    message = str(caught.value)
    assert "no credentials were found" in message
    assert "BUCKET_ACCESS_KEY_ID" in message and "AWS_ACCESS_KEY_ID" in message


async def test_output_uri_alone_uses_the_aws_credential_chain(s3_server: S3Server,
                                                              clean_aws_env: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    clean_aws_env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    clean_aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    clean_aws_env.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    put(s3_server, "chain.txt", b"from the chain")
    storage = S3Storage.from_config(Config(output_s3_uri=f"s3://{s3_server.bucket}/out"))
    assert storage is not None
    assert await storage.download(s3_server.bucket, "chain.txt", tmp_path / "c", max_bytes=100) == 14
    assert (tmp_path / "c").read_bytes() == b"from the chain"


def test_custom_endpoint_is_path_style_sigv4_and_defaults_to_us_east_1(storage: S3Storage,
                                                                       s3_server: S3Server) -> None:
    url = storage.presign(s3_server.bucket, "some/key.png", 60)
    assert url.startswith(f"{s3_server.endpoint_url}/{s3_server.bucket}/some/key.png?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "%2Fus-east-1%2Fs3%2F" in url


def test_s3_region_setting_wins_over_the_environment(s3_server: S3Server,
                                                     clean_aws_env: pytest.MonkeyPatch) -> None:
    clean_aws_env.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    from_env = S3Storage.from_config(s3_server.config())
    from_setting = S3Storage.from_config(s3_server.config(s3_region="eu-central-1"))
    assert from_env is not None and from_setting is not None
    assert "%2Fap-south-1%2F" in from_env.presign(s3_server.bucket, "k", 60)
    assert "%2Feu-central-1%2F" in from_setting.presign(s3_server.bucket, "k", 60)


@pytest.mark.parametrize("endpoint,region", [
    ("https://my-bucket.s3.us-east-2.amazonaws.com", "us-east-2"),  # worker-comfyui's documented form
    ("https://s3.us-west-004.backblazeb2.com", "us-west-004"),
    ("https://fra1.digitaloceanspaces.com", "fra1"),
    ("https://my-space.nyc3.digitaloceanspaces.com", "nyc3"),
    ("https://my-bucket.s3.amazonaws.com", None),
    ("https://account.r2.cloudflarestorage.com", None),
])
def test_the_endpoint_names_the_region_as_rp_upload_reads_it(endpoint: str, region: str | None) -> None:
    assert endpoint_region(endpoint) == region


def test_the_endpoints_region_wins_over_the_environment(s3_server: S3Server, clean_aws_env: pytest.MonkeyPatch) -> None:
    """A worker-comfyui endpoint signs for the region its URL names, as rp_upload's client does."""
    clean_aws_env.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    storage = S3Storage.from_config(s3_server.config(bucket_endpoint_url="https://b.s3.eu-west-3.amazonaws.com"))
    assert storage is not None and storage.client.meta.region_name == "eu-west-3"


# --- download ----------------------------------------------------------------------------------

async def test_download_streams_to_disk(storage: S3Storage, s3_server: S3Server, tmp_path: Path) -> None:
    data = os.urandom(12 * 1024**2 + 123)
    put(s3_server, "big/model.bin", data)
    destination = tmp_path / "model.bin"
    tracemalloc.start()
    try:
        written = await storage.download(s3_server.bucket, "big/model.bin", destination, max_bytes=len(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == len(data)
    assert destination.read_bytes() == data
    assert peak < 6 * 1024**2, f"peak {describe_size(peak)}: the object was buffered, not streamed"


async def test_missing_object(storage: S3Storage, s3_server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"^s3://{s3_server.bucket}/no/such\.png does not exist$"):
        await storage.download(s3_server.bucket, "no/such.png", tmp_path / "x", max_bytes=100)
    assert not (tmp_path / "x").exists()


async def test_object_over_the_cap_is_refused_before_transfer(storage: S3Storage, s3_server: S3Server,
                                                              tmp_path: Path) -> None:
    put(s3_server, "cap.bin", b"x" * 1000)
    with pytest.raises(StorageError, match="is 1000 bytes, over the limit of 999 bytes") as caught:
        await storage.download(s3_server.bucket, "cap.bin", tmp_path / "cap", max_bytes=999)
    assert caught.value.details["limit"] == 999
    assert not (tmp_path / "cap").exists()


async def test_cancelled_download_leaves_nothing(storage: S3Storage, s3_server: S3Server,
                                                 tmp_path: Path) -> None:
    """The transfer thread cannot be killed; it notices the cancellation at its next chunk and cleans up."""
    put(s3_server, "cancel.bin", os.urandom(12 * 1024**2))
    task = asyncio.create_task(storage.download(s3_server.bucket, "cancel.bin", tmp_path / "c", max_bytes=10**9))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not any(tmp_path.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("wrong", ["secret", "key_id"])
async def test_wrong_credentials_are_access_denied_without_leaking_them(
        s3_server: S3Server, clean_aws_env: pytest.MonkeyPatch,
        tmp_path: Path, caplog: pytest.LogCaptureFixture, wrong: str) -> None:
    caplog.set_level(logging.DEBUG)
    put(s3_server, "private.txt", b"private")
    settings = {"bucket_secret_access_key": SECRET} if wrong == "secret" else {"bucket_access_key_id": KEY_ID}
    storage = S3Storage.from_config(s3_server.config(**settings))
    assert storage is not None
    with pytest.raises(StorageError) as caught:
        await storage.download(s3_server.bucket, "private.txt", tmp_path / "p", max_bytes=100)
    message = str(caught.value)
    assert message.startswith(f"access denied to s3://{s3_server.bucket}/private.txt (check BUCKET_ACCESS_KEY_ID")
    assert SECRET not in message and KEY_ID not in message
    assert SECRET not in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("comfy_serverless"))
    assert KEY_ID not in ours
    assert not (tmp_path / "p").exists()


async def test_unreachable_endpoint(clean_aws_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    storage = S3Storage.from_config(Config(bucket_endpoint_url=endpoint, bucket_access_key_id=KEY_ID,
                                           bucket_secret_access_key=SECRET))
    assert storage is not None
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"^S3 endpoint {endpoint} is unreachable"):
        await storage.download("bucket", "key", tmp_path / "k", max_bytes=100)
    assert time.monotonic() - started < 15


async def test_secrets_are_redacted_from_messages_and_logs(clean_aws_env: pytest.MonkeyPatch, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A secret pasted into the endpoint's path must not come back in the 'unreachable' message."""
    caplog.set_level(logging.INFO)
    endpoint = f"http://127.0.0.1:{free_port()}/{SECRET}"
    storage = S3Storage.from_config(Config(bucket_endpoint_url=endpoint, bucket_access_key_id=KEY_ID,
                                           bucket_secret_access_key=SECRET))
    assert storage is not None
    with pytest.raises(StorageError) as caught:
        await storage.upload(_file(tmp_path / "a.txt", b"a"), "bucket", "key", content_type="text/plain")
    assert "is unreachable" in str(caught.value) and "/***" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text and KEY_ID not in caplog.text


# --- upload and presign ----------------------------------------------------------------------

def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_upload_sets_the_content_type(storage: S3Storage, s3_server: S3Server,
                                            tmp_path: Path) -> None:
    data = os.urandom(4096)
    await storage.upload(_file(tmp_path / "clip.mp4", data), s3_server.bucket, "job/clip.mp4", content_type="video/mp4")
    obj = s3_server.client().get_object(Bucket=s3_server.bucket, Key="job/clip.mp4")
    assert obj["ContentType"] == "video/mp4"
    assert obj["Body"].read() == data


async def test_large_upload_is_multipart(storage: S3Storage, s3_server: S3Server,
                                         tmp_path: Path) -> None:
    data = os.urandom(9 * 1024**2 + 17)
    await storage.upload(_file(tmp_path / "big.bin", data), s3_server.bucket, "job/big.bin",
                         content_type="application/octet-stream")
    obj = s3_server.client().get_object(Bucket=s3_server.bucket, Key="job/big.bin")
    assert obj["ETag"].strip('"').endswith("-2"), "a multipart object's ETag ends in -<parts>"
    assert obj["Body"].read() == data


async def test_upload_errors_name_the_destination(storage: S3Storage, s3_server: S3Server,
                                                  tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"could not upload missing\.png to s3://{s3_server.bucket}/k\.png: "
                                           "No such file"):
        await storage.upload(tmp_path / "missing.png", s3_server.bucket, "k.png", content_type="image/png")
    with pytest.raises(StorageError, match="could not upload a.png to s3://no-such-bucket/k.png: bucket "
                                           "'no-such-bucket' does not exist"):
        await storage.upload(_file(tmp_path / "a.png", b"png"), "no-such-bucket", "k.png", content_type="image/png")


async def test_upload_with_wrong_credentials(s3_server: S3Server, clean_aws_env: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    storage = S3Storage.from_config(s3_server.config(bucket_secret_access_key=SECRET))
    assert storage is not None
    with pytest.raises(StorageError) as caught:
        await storage.upload(_file(tmp_path / "a.png", b"png"), s3_server.bucket, "denied.png",
                             content_type="image/png")
    assert str(caught.value).startswith(f"could not upload a.png to s3://{s3_server.bucket}/denied.png: access denied")
    assert SECRET not in str(caught.value)


async def test_presigned_url_serves_the_object(storage: S3Storage, s3_server: S3Server,
                                               tmp_path: Path) -> None:
    data = os.urandom(2048)
    await storage.upload(_file(tmp_path / "out.png", data), s3_server.bucket, "job/out 1.png",
                         content_type="image/png")
    url = storage.presign(s3_server.bucket, "job/out 1.png", 300)
    assert "X-Amz-Expires=300" in url
    with s3_server.auth_disabled():
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "image/png"
            assert await response.read() == data
