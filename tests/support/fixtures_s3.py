"""A real S3 endpoint for the tests: moto's server mode, in a subprocess, with authentication on.

moto accepts any credentials unless asked not to. Here the server starts open,
an IAM user with an access key and an allow-all policy is created through the
IAM API, then ``/moto-api/reset-auth`` sets INITIAL_NO_AUTH_ACTION_COUNT to 0:
from then on every request must be signed with that user's key, so wrong
credentials are refused as they would be by AWS.

A pytest plugin (``pytest_plugins`` in tests/conftest.py): every test module gets the session's
``s3_server``. The benchmarks start their own with :func:`moto_server`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from comfy_serverless.config import Config
from tests.support.loopback import free_port

BUCKET = "test-bucket"
REGION = "us-east-1"
_ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass(frozen=True)
class S3Server:
    """Where the moto server listens, its bucket, and the one key it accepts."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def config(self, **overrides: Any) -> Config:
        """A worker configuration pointing at this server with valid credentials; ``overrides`` win."""
        settings: dict[str, Any] = {"bucket_endpoint_url": self.endpoint_url,
                                    "bucket_access_key_id": self.access_key_id,
                                    "bucket_secret_access_key": self.secret_access_key}
        return Config(**(settings | overrides))

    @contextmanager
    def auth_disabled(self) -> Iterator[None]:
        """Requests need no signature inside this block: moto cannot check presigned (query-string) auth."""
        _set_no_auth_count(self.endpoint_url, "inf")
        try:
            yield
        finally:
            _set_no_auth_count(self.endpoint_url, "0")

    def client(self) -> Any:
        """A plain boto3 client with valid credentials, for arranging and checking objects."""
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer at {endpoint} within {timeout_s} s")


def _create_user_and_bucket(endpoint: str) -> tuple[str, str]:
    """The access key of a new IAM user allowed everything, and the test bucket (auth still off)."""
    bootstrap = {"endpoint_url": endpoint, "region_name": REGION,
                 "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    iam = boto3.client("iam", **bootstrap)
    iam.create_user(UserName="worker")
    iam.put_user_policy(UserName="worker", PolicyName="allow-all", PolicyDocument=_ALLOW_ALL)
    key = iam.create_access_key(UserName="worker")["AccessKey"]
    boto3.client("s3", **bootstrap).create_bucket(Bucket=BUCKET)
    return key["AccessKeyId"], key["SecretAccessKey"]


def _set_no_auth_count(endpoint: str, count: str) -> None:
    """INITIAL_NO_AUTH_ACTION_COUNT, changed at run time: "0" enforces signatures, "inf" turns them off."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """moto's S3 (server mode) on a free loopback port, with a bucket and enforced credentials."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_up(endpoint, process)
        key_id, secret = _create_user_and_bucket(endpoint)
        _set_no_auth_count(endpoint, "0")
        yield S3Server(endpoint_url=endpoint, bucket=BUCKET, access_key_id=key_id, secret_access_key=secret)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server (see :func:`moto_server`)."""
    with moto_server() as server:
        yield server
