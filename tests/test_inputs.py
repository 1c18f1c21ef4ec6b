"""Fetching job inputs: real HTTP (a local aiohttp server), real S3 (moto's server), real files.

Addresses the SSRF guard must refuse are never contacted: they are IP literals
(refused before any connection) or ``localhost`` (resolved from /etc/hosts).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from comfy_serverless.config import Config
from comfy_serverless.errors import InputFetchError
from comfy_serverless.inputs import fetch_all, fetch_to_file
from comfy_serverless.jobspec import InputSpec
from comfy_serverless.sources.data import decode_base64_to_file
from comfy_serverless.sources.guarded_http import PinnedResolver, non_public_reason
from comfy_serverless.sources.url import url_problem
from comfy_serverless.storage import S3Storage
from tests.support.fixtures_s3 import S3Server
from tests.support.loopback import loopback_server

LABEL = "input.inputs[0] (photo.png)"
PAYLOAD = os.urandom(300 * 1024)


@dataclass
class HttpServer:
    """A local file server; ``hits`` counts the requests it received, by path."""

    port: int
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def _file(request: web.Request) -> web.Response:
    return web.Response(body=PAYLOAD, content_type="image/png")


async def _stream(request: web.Request) -> web.StreamResponse:
    """``size`` bytes, chunked: no Content-Length to check in advance."""
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    remaining = int(request.query["size"])
    while remaining > 0:
        await response.write(b"s" * min(remaining, 64 * 1024))
        remaining -= 64 * 1024
    await response.write_eof()
    return response


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query["to"])


async def _chain(request: web.Request) -> web.Response:
    """``/chain/N`` redirects (relatively) to ``/chain/N-1``; ``/chain/0`` is the file."""
    hops = int(request.match_info["hops"])
    if hops == 0:
        return await _file(request)
    raise web.HTTPFound(f"{hops - 1}")


async def _host(request: web.Request) -> web.Response:
    return web.Response(text=request.headers["Host"])


async def _late_404(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    raise web.HTTPNotFound


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


@pytest.fixture(scope="session")
async def http_server() -> AsyncIterator[HttpServer]:
    """An aiohttp server on a free 127.0.0.1 port."""
    server = HttpServer(port=0)

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        server.hits[request.path] = server.hits.get(request.path, 0) + 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.add_routes([web.get("/file.png", _file), web.get("/stream", _stream), web.get("/redirect", _redirect),
                    web.get("/chain/{hops}", _chain), web.get("/host", _host), web.get("/slow", _slow),
                    web.get("/late-404", _late_404)])
    async with loopback_server(app) as url:
        server.port = int(url.rpartition(":")[2])
        yield server


def local_config(**overrides: Any) -> Config:
    """URL inputs may reach the loopback test server; a short timeout so a broken guard fails fast."""
    return Config(**({"url_allowlist": "127.0.0.1", "download_timeout_s": 10.0} | overrides))


async def fetch(source: str, destination: Path, config: Config | None = None,
                storage: S3Storage | None = None) -> int:
    return await fetch_to_file(source, destination, storage=storage, config=config or local_config(), label=LABEL)


async def refused(source: str, tmp_path: Path, config: Config | None = None,
                  storage: S3Storage | None = None) -> str:
    """The message of the InputFetchError the fetch raises; checks it left no file behind."""
    with pytest.raises(InputFetchError) as caught:
        await fetch(source, tmp_path / "out", config, storage)
    message = str(caught.value)
    assert message.startswith(f"{LABEL}: ")
    assert list(tmp_path.iterdir()) == [], "a failed fetch must leave nothing"
    return message


# --- http(s) URLs ------------------------------------------------------------------------------

async def test_url_from_allowlisted_server(http_server: HttpServer, tmp_path: Path) -> None:
    assert await fetch(http_server.url("/file.png"), tmp_path / "photo.png") == len(PAYLOAD)
    assert (tmp_path / "photo.png").read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]


async def test_loopback_refused_without_allowlist(http_server: HttpServer, tmp_path: Path) -> None:
    before = http_server.hits.get("/file.png", 0)
    message = await refused(http_server.url("/file.png"), tmp_path, local_config(url_allowlist=""))
    assert "127.0.0.1 is not a public address (loopback)" in message and "URL_ALLOWLIST" in message
    assert http_server.hits.get("/file.png", 0) == before, "the guard must refuse before connecting"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
    ("http://10.0.0.1/x.png", "private"),
    ("https://192.168.1.20:8443/x.png", "private"),
    ("http://100.64.0.1/x.png", "carrier-grade NAT"),
    ("http://0.0.0.0:8188/view", "unspecified"),
    ("http://[::1]:8188/view", "loopback"),
    ("http://[::ffff:169.254.169.254]/latest", "link-local"),
    ("http://[fd00::1]/x", "private"),
    ("http://224.0.0.1/x", "multicast"),
    ("http://localhost:8188/view", "loopback"),
])
async def test_non_public_destinations_are_refused(url: str, reason: str, tmp_path: Path) -> None:
    message = await refused(url, tmp_path, local_config(url_allowlist=""))
    assert "refused to fetch" in message and f"is not a public address ({reason}" in message


async def test_allowlisted_cidr(http_server: HttpServer, tmp_path: Path) -> None:
    await fetch(http_server.url("/file.png"), tmp_path / "a", local_config(url_allowlist="10.0.0.0/8, 127.0.0.0/8"))
    assert (tmp_path / "a").read_bytes() == PAYLOAD


async def test_allowlisted_host_name_keeps_the_host_header(http_server: HttpServer, tmp_path: Path) -> None:
    await fetch(http_server.url("/host", host="localhost"), tmp_path / "h", local_config(url_allowlist="LOCALHOST"))
    assert (tmp_path / "h").read_text() == f"localhost:{http_server.port}"


@pytest.mark.parametrize("source", ["file:///etc/passwd", "ftp://example.com/x.png", "gopher://example.com/_x",
                                    "FILE:///etc/hostname"])
async def test_other_schemes_are_refused(source: str, tmp_path: Path) -> None:
    message = await refused(source, tmp_path)
    assert "unsupported source scheme" in message and "/etc" not in message


async def test_credentials_in_url_are_refused(tmp_path: Path) -> None:
    message = await refused("https://user:hunter2@example.com/x.png", tmp_path)
    assert "must not contain credentials" in message and "hunter2" not in message


async def test_redirect_to_refused_address_is_refused(http_server: HttpServer, tmp_path: Path) -> None:
    url = http_server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    message = await refused(url, tmp_path)
    assert "redirect 1: refused to fetch http://169.254.169.254/latest/meta-data/" in message


async def test_redirect_to_another_scheme_is_refused(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/redirect?to=file:///etc/passwd"), tmp_path)
    assert "HTTP 302 redirect to a URL that must be an http:// or https:// URL (got scheme 'file')" in message


async def test_relative_redirects_are_followed(http_server: HttpServer, tmp_path: Path) -> None:
    assert await fetch(http_server.url("/chain/5"), tmp_path / "c") == len(PAYLOAD)


async def test_too_many_redirects(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/chain/6"), tmp_path)
    assert "more than 5 redirects" in message


async def test_http_error_status(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/nothing-here.png?X-Amz-Signature=s3cr3t"), tmp_path)
    assert "answered HTTP 404 Not Found" in message
    assert "s3cr3t" not in message, "query strings (signatures) are never echoed"


async def test_content_length_over_the_cap(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/file.png"), tmp_path, local_config(input_max_bytes=1000))
    assert "larger than the limit of 1000 bytes (INPUT_MAX_BYTES)" in message
    assert f"Content-Length: {len(PAYLOAD)}" in message


async def test_streamed_body_over_the_cap(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/stream?size=500000"), tmp_path, local_config(input_max_bytes=200_000))
    assert "larger than the limit of 200000 bytes" in message


async def test_chunked_body_within_the_cap(http_server: HttpServer, tmp_path: Path) -> None:
    assert await fetch(http_server.url("/stream?size=200000"), tmp_path / "s") == 200_000


async def test_download_timeout(http_server: HttpServer, tmp_path: Path) -> None:
    message = await refused(http_server.url("/slow"), tmp_path, local_config(download_timeout_s=0.3))
    assert "took longer than 0.3 s (DOWNLOAD_TIMEOUT_S)" in message


async def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = await refused(f"http://127.0.0.1:{port}/x", tmp_path)
    assert f"could not connect to 127.0.0.1 port {port}" in message


@pytest.mark.parametrize(("url", "problem"), [
    ("https://example.com/a.png?sig=1", None),
    ("http://example.com:8080/a", None),
    ("ftp://example.com/a", "must be an http:// or https:// URL (got scheme 'ftp')"),
    ("https:///a.png", "names no host"),
    ("https://u:p@example.com/a", "must not contain credentials"),
    ("https://example.com/a b", "must not contain whitespace"),
    ("https://example.com:99999/a", "is not a valid URL"),
    ("https://example.com/" + "a" * 9000, "is longer than 8192 characters"),
])
def test_url_problem(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert found == problem if problem is None else problem in (found or "")


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("::ffff:8.8.8.8", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("255.255.255.255", False), ("192.0.2.1", False),
    ("::", False), ("::1", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("fec0::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("64:ff9b::a9fe:a9fe", False), ("2002:7f00:1::", False),
])
def test_non_public_reason(address: str, public: bool) -> None:
    assert (non_public_reason(ipaddress.ip_address(address)) is None) is public


async def test_pinned_resolver_answers_only_for_validated_hosts() -> None:
    resolver = PinnedResolver()
    resolver.pin("Files.Example.com.", [{"hostname": "files.example.com", "host": "93.184.215.14", "port": 0,
                                         "family": socket.AF_INET, "proto": 6, "flags": socket.AI_NUMERICHOST}])
    answer = await resolver.resolve("files.example.com", 443, socket.AF_UNSPEC)
    assert [(r["host"], r["port"]) for r in answer] == [("93.184.215.14", 443)]
    with pytest.raises(OSError):
        await resolver.resolve("other.example.com", 443)
    with pytest.raises(OSError):
        await resolver.resolve("files.example.com", 443, socket.AF_INET6)


# --- base64 and data: URIs --------------------------------------------------------------------

async def test_bare_base64(tmp_path: Path) -> None:
    encoded = base64.b64encode(PAYLOAD).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    assert await fetch(wrapped, tmp_path / "b") == len(PAYLOAD)
    assert (tmp_path / "b").read_bytes() == PAYLOAD


async def test_unwritable_destination(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(InputFetchError,
                       match=rf"^{re.escape(LABEL)}: could not write the (data|download) to the worker.s disk"):
        await fetch("QUJD", tmp_path / "a-file" / "out")


async def test_data_uri(tmp_path: Path) -> None:
    source = "data:image/png;name=x.png;base64," + base64.b64encode(b"\x89PNG data").decode()
    assert await fetch(source, tmp_path / "d") == 9
    assert (tmp_path / "d").read_bytes() == b"\x89PNG data"


@pytest.mark.parametrize("source", ["not base64 at all!", "QUJD$", "QUJDRA=", "QQ==QUJD", "QUJD===="])
async def test_garbage_base64(source: str, tmp_path: Path) -> None:
    assert "is not valid base64" in await refused(source, tmp_path)


async def test_non_base64_data_uri(tmp_path: Path) -> None:
    assert "only base64 data URIs are supported" in await refused("data:text/plain,hello", tmp_path)


async def test_oversized_base64_is_refused_before_decoding(tmp_path: Path) -> None:
    message = await refused(base64.b64encode(b"x" * 1001).decode(), tmp_path, local_config(input_max_bytes=1000))
    assert "decodes to 1001 bytes, over the limit of 1000 bytes (INPUT_MAX_BYTES)" in message


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_base64_round_trip(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    destination = tmp_path_factory.mktemp("b64") / "out"
    encoded = base64.b64encode(data).decode()
    if not data:
        with pytest.raises(InputFetchError, match="empty"):
            decode_base64_to_file(encoded, destination, max_bytes=len(data), label=LABEL)
        return
    assert decode_base64_to_file(encoded, destination, max_bytes=len(data), label=LABEL) == len(data)
    assert destination.read_bytes() == data


# --- S3 ----------------------------------------------------------------------------------------

@pytest.fixture
def storage(s3_server: S3Server) -> S3Storage:
    created = S3Storage.from_config(s3_server.config())
    assert created is not None
    return created


async def test_s3_input(storage: S3Storage, s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="in/photo.png", Body=PAYLOAD)
    size = await fetch(f"s3://{s3_server.bucket}/in/photo.png", tmp_path / "p", storage=storage)
    assert size == len(PAYLOAD) and (tmp_path / "p").read_bytes() == PAYLOAD


async def test_s3_input_without_s3_configured(tmp_path: Path) -> None:
    message = await refused("s3://bucket/in/photo.png", tmp_path)
    assert "no S3 configured" in message and "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY" in message


async def test_s3_input_missing_or_too_large(storage: S3Storage, s3_server: S3Server,
                                             tmp_path: Path) -> None:
    message = await refused(f"s3://{s3_server.bucket}/in/nope.png", tmp_path, storage=storage)
    assert message == f"{LABEL}: s3://{s3_server.bucket}/in/nope.png does not exist"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="in/big.bin", Body=b"b" * 2000)
    message = await refused(f"s3://{s3_server.bucket}/in/big.bin", tmp_path, local_config(input_max_bytes=1000),
                            storage)
    assert "over the limit of 1000 bytes; raise INPUT_MAX_BYTES" in message


# --- fetch_all -----------------------------------------------------------------------------------

def spec(index: int, source: str) -> InputSpec:
    return InputSpec(source=source, name=f"f{index}.png", folder_type="input", subfolder="",
                     field=f"input.inputs[{index}]", kind="url")


async def test_fetch_all(http_server: HttpServer, tmp_path: Path) -> None:
    items = [(spec(i, http_server.url("/file.png")), tmp_path / f"{i}.png") for i in range(12)]
    assert [fetch.size for fetch in await fetch_all(items, storage=None, config=local_config())] == [len(PAYLOAD)] * 12
    assert all(path.read_bytes() == PAYLOAD for _, path in items)


async def test_fetch_all_is_all_or_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    """The files fetched before the failure are deleted, and the fetch still running is cancelled."""
    good = [(spec(i, http_server.url("/file.png")), tmp_path / f"{i}.png") for i in range(3)]
    slow = (spec(3, http_server.url("/slow")), tmp_path / "3.png")
    bad = (spec(4, http_server.url("/late-404")), tmp_path / "4.png")
    with pytest.raises(InputFetchError, match=r"^input\.inputs\[4\] \(f4\.png\): GET .* answered HTTP 404"):
        await fetch_all([*good, slow, bad], storage=None, config=local_config())
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_fetch_leaves_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    task = asyncio.create_task(fetch(http_server.url("/slow"), tmp_path / "x"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(tmp_path.iterdir()) == []
