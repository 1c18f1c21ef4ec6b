"""``hf://`` inputs against a stand-in Hub: a loopback aiohttp server is HF_ENDPOINT, another one, under
another host name (``localhost``), is the CDN the Hub redirects large files to."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.errors import ConfigError, InputFetchError, JobInputError
from comfy_serverless.inputs import fetch_to_file
from comfy_serverless.job import JobRunner
from comfy_serverless.jobspec import parse_input_list, parse_job_input
from comfy_serverless.model_cache import ModelCache
from comfy_serverless.sources.hf import parse_hf_uri
from tests.support.jobs import API_WORKFLOW, first_pixel, invert_job, png
from tests.support.loopback import loopback_server

TOKEN = "hf_Tk7Qx2Lp9Vm4Hd8Zn1Jf83Kd02Lq9Wx"
LABEL = "input.inputs[0] (photo.png)"
PHOTO = png((50, 60, 70))
PHOTO_V1 = png((1, 2, 3))
ETAG = '"photo-at-main"'
SIGNED_CDN_PATH = "/xet/photo.png?X-Amz-Signature=s1gn3d"


@dataclass
class Hub:
    """The stand-in Hub; ``requests`` lists what it and its CDN received: (server, raw path, Authorization)."""

    url: str = ""
    cdn_url: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def config(self, **overrides: Any) -> Config:
        """HF_ENDPOINT is the stand-in; both loopback servers may be reached, as URL inputs may."""
        return Config(**({"hf_endpoint": self.url, "url_allowlist": "127.0.0.1, localhost",
                          "download_timeout_s": 10.0} | overrides))

    def record(self, server: str, request: web.Request) -> None:
        self.requests.append((server, request.raw_path, request.headers.get("Authorization", "")))


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub()

    async def cdn(request: web.Request) -> web.Response:
        hub.record("cdn", request)
        return web.Response(body=PHOTO, content_type="image/png")

    async def main_photo(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304)
        return web.Response(body=PHOTO, content_type="image/png", headers={"ETag": ETAG})

    async def private_photo(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized
        return web.Response(body=PHOTO, content_type="image/png")

    async def old_photo(request: web.Request) -> web.Response:
        return web.Response(body=PHOTO_V1, content_type="image/png")

    async def renamed_repository(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/owner/lfs/resolve/main/photo.png")  # same origin: the token follows

    async def large_file(request: web.Request) -> web.Response:
        raise web.HTTPFound(hub.cdn_url + SIGNED_CDN_PATH)  # another host: the token must not follow

    files = {"/owner/repo/resolve/main/photo.png": main_photo, "/owner/repo/resolve/v1.0/photo.png": old_photo,
             "/owner/private/resolve/main/photo.png": private_photo,
             "/owner/moved/resolve/main/photo.png": renamed_repository,
             "/owner/lfs/resolve/main/photo.png": large_file}

    async def resolve(request: web.Request) -> web.Response:
        hub.record("hub", request)
        if request.raw_path not in files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"})
        return await files[request.raw_path](request)

    hub_app, cdn_app = web.Application(), web.Application()
    hub_app.router.add_get("/{path:.*}", resolve)
    cdn_app.router.add_get("/{path:.*}", cdn)
    async with loopback_server(hub_app) as hub.url, loopback_server(cdn_app) as cdn_url:
        hub.cdn_url = cdn_url.replace("127.0.0.1", "localhost")
        yield hub


async def fetched(source: str, tmp_path: Path, config: Config) -> bytes:
    destination = tmp_path / "photo.png"
    await fetch_to_file(source, destination, storage=None, config=config, label=LABEL)
    return destination.read_bytes()


async def refused(source: str, tmp_path: Path, config: Config) -> str:
    with pytest.raises(InputFetchError) as caught:
        await fetched(source, tmp_path, config)
    message = str(caught.value)
    assert message.startswith(f"{LABEL}: ")
    return message


# --- the value ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "url"), [
    ("hf://owner/repo/photo.png", "https://hub.example/owner/repo/resolve/main/photo.png"),
    ("hf://owner/repo@v1.0/loras/a b.safetensors", "https://hub.example/owner/repo/resolve/v1.0/loras/a%20b.safetensors"),
    ("hf://datasets/owner/data@refs/pr/3/x.png", "https://hub.example/datasets/owner/data/resolve/refs%2Fpr%2F3/x.png"),
    ("hf://spaces/owner/app/img.png", "https://hub.example/spaces/owner/app/resolve/main/img.png"),
    ("hf://models/owner/repo/photo.png", "https://hub.example/owner/repo/resolve/main/photo.png"),
])
def test_resolve_url(value: str, url: str) -> None:
    assert parse_hf_uri(value).url("https://hub.example/") == url


@pytest.mark.parametrize(("value", "problem"), [
    ("hf://owner", "must name a repository and a file in it: hf://owner/repo[@revision]/path/in/repo"),
    ("hf://owner/repo", "must name a repository and a file in it"),
    ("hf://owner/repo/", "names no file in the repository"),
    ("hf:owner/repo/photo.png", "must be of the form hf://owner/repo[@revision]/path/in/repo"),
    ("hf://owner/repo@/photo.png", "has an invalid revision ''"),
    ("hf://owner/repo@main;rm/photo.png", "has an invalid revision 'main;rm'"),
    ("hf://owner/repo@refs/heads/main/photo.png", "has an invalid revision 'refs/heads/main'"),
    ("hf://owner/re po/photo.png", "has an invalid repository name 're po'"),
    ("hf://own..er/repo/photo.png", "has an invalid owner name 'own..er'"),
    ("hf://owner/repo/../other/photo.png", "has an empty, '.' or '..' segment in its path"),
])
def test_a_bad_value_is_a_job_error_naming_the_field(value: str, problem: str) -> None:
    with pytest.raises(JobInputError) as caught:
        parse_job_input({"workflow": API_WORKFLOW, "inputs": [{"source": value}]}, Config())
    (only,) = caught.value.problems
    assert only.startswith(f"input.inputs[0].source: {problem}")


def test_the_file_name_is_the_path_s_last_segment() -> None:
    (spec,) = parse_input_list([{"source": "hf://owner/repo@v2/loras/detail.safetensors", "folder_type": "models",
                                 "subfolder": "loras"}], "list")
    assert (spec.kind, spec.name, spec.source) == ("hf", "detail.safetensors",
                                                   "hf://owner/repo@v2/loras/detail.safetensors")


# --- fetching -------------------------------------------------------------------------------------

async def test_a_file_at_a_revision(hub: Hub, tmp_path: Path) -> None:
    assert await fetched("hf://owner/repo@v1.0/photo.png", tmp_path, hub.config()) == PHOTO_V1
    assert hub.requests == [("hub", "/owner/repo/resolve/v1.0/photo.png", "")]


async def test_the_default_revision_is_main(hub: Hub, tmp_path: Path) -> None:
    assert await fetched("hf://owner/repo/photo.png", tmp_path, hub.config()) == PHOTO
    assert hub.requests == [("hub", "/owner/repo/resolve/main/photo.png", "")]


async def test_the_token_is_sent_to_the_hub(hub: Hub, tmp_path: Path) -> None:
    assert await fetched("hf://owner/private/photo.png", tmp_path, hub.config(hf_token=TOKEN)) == PHOTO
    assert hub.requests == [("hub", "/owner/private/resolve/main/photo.png", f"Bearer {TOKEN}")]
    message = await refused("hf://owner/private/photo.png", tmp_path, hub.config())
    assert "answered HTTP 401 Unauthorized" in message and "set HF_TOKEN" in message


async def test_the_token_does_not_follow_a_redirect_to_another_host(hub: Hub, tmp_path: Path) -> None:
    assert await fetched("hf://owner/moved/photo.png", tmp_path, hub.config(hf_token=TOKEN)) == PHOTO
    assert hub.requests == [("hub", "/owner/moved/resolve/main/photo.png", f"Bearer {TOKEN}"),
                            ("hub", "/owner/lfs/resolve/main/photo.png", f"Bearer {TOKEN}"),
                            ("cdn", SIGNED_CDN_PATH, "")]


async def test_a_missing_file_names_the_input(hub: Hub, tmp_path: Path) -> None:
    message = await refused("hf://owner/repo/missing.png", tmp_path, hub.config())
    assert f"GET {hub.url}/owner/repo/resolve/main/missing.png answered HTTP 404 Not Found" in message
    assert "check the repository, the revision and the path of the hf:// source" in message


async def test_the_hub_is_guarded_like_any_url(hub: Hub, tmp_path: Path) -> None:
    message = await refused("hf://owner/repo/photo.png", tmp_path, hub.config(url_allowlist=""))
    assert "127.0.0.1 is not a public address (loopback)" in message and hub.requests == []


def test_a_bad_endpoint_stops_the_worker_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "ftp://mirror.example")
    with pytest.raises(ConfigError, match=r"HF_ENDPOINT.*must be an http:// or https:// URL \(got scheme 'ftp'\)"):
        Config.load()


async def test_a_cached_model_is_revalidated_not_downloaded_again(hub: Hub, tmp_path: Path) -> None:
    (spec,) = parse_input_list([{"source": "hf://owner/repo/photo.png", "folder_type": "models",
                                 "subfolder": "loras"}], "list")
    cache = ModelCache(tmp_path / "cache", 10**9)
    for downloads in (True, False):
        entry, downloaded = await cache.obtain(spec, storage=None, config=hub.config(), budget=None)
        cache.release([entry])
        assert downloaded is downloads and entry.path.read_bytes() == PHOTO
    assert len(hub.requests) == 2


# --- a job ----------------------------------------------------------------------------------------

async def test_a_job_with_an_image_from_the_hub(connector: ComfyConnector, scratch: Path, hub: Hub,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    runner = JobRunner(connector, hub.config(scratch_dir=str(scratch), hf_token=TOKEN), None)
    result = await runner.run("job-hf", invert_job(inputs=[{"source": "hf://owner/private/photo.png"}]))
    assert "error" not in result, result
    assert first_pixel(base64.b64decode(result["outputs"][0]["data"])) == (205, 195, 185)  # inverted
    assert hub.requests == [("hub", "/owner/private/resolve/main/photo.png", f"Bearer {TOKEN}")]
    assert TOKEN not in json.dumps(result) and TOKEN not in caplog.text
