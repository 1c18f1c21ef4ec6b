"""The model cache (issue 10), against real components: ComfyUI (test server or real), moto's S3 server, a
loopback HTTP server that counts the requests it answers, and worker processes sharing one cache directory.

The real-tier test loads a tiny upscale model it builds itself and checks that ComfyUI keeps it loaded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import random
import shutil
import signal
import struct
import sys
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from comfy_serverless import ComfyConnector
from comfy_serverless.client import ComfyClient
from comfy_serverless.config import Config
from comfy_serverless.files import CACHE_FOLDER_RE
from comfy_serverless.job import JobRunner
from comfy_serverless.model_cache import ModelCache
from comfy_serverless.storage import S3Storage
from comfy_serverless.workflow import check_file_inputs
from tests.support.comfy import needs_real_comfy
from tests.support.fixtures_s3 import S3Server
from tests.support.loopback import loopback_server

SRC_DIR = Path(__file__).resolve().parent.parent / "src"


# --- a tiny upscale model ComfyUI's loader (spandrel) recognises: RealESRGAN "Compact" --------------

def compact_upscaler(seed: int) -> bytes:
    """A safetensors file of a SRVGGNetCompact state dict (3 -> 4 features, no inner convs, 2x), written by hand
    so that the worker's environment needs no torch; ``seed`` makes the weights (and so the file) differ."""
    rng = random.Random(seed)
    shapes = {"body.0.weight": [4, 3, 3, 3], "body.0.bias": [4], "body.1.weight": [4],
              "body.2.weight": [12, 4, 3, 3], "body.2.bias": [12]}
    header: dict[str, Any] = {}
    data = b""
    for name, shape in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        raw = array("f", (rng.uniform(-0.1, 0.1) for _ in range(count))).tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


IMAGE_URI = "data:image/png;base64," + base64.b64encode(png((10, 20, 30))).decode()
MODEL_A = compact_upscaler(1)
MODEL_B = compact_upscaler(2)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- a loopback model server that counts body GETs and conditional answers ------------------------

@dataclass
class ModelServer:
    """Serves ``files`` with an ETag per content; counts full (body) GETs and 304 answers per path.

    ``hold`` makes body GETs wait until that many are waiting at once (at most 20 s), proving they overlap.
    ``stall`` paths send half the body, then nothing more.
    """

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    bodies: Counter[str] = field(default_factory=Counter)
    not_modified: Counter[str] = field(default_factory=Counter)
    hold: int = 0
    waiting: int = 0
    most_waiting: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    half_sent: asyncio.Event = field(default_factory=asyncio.Event)
    stall: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.path)
        if data is None:
            raise web.HTTPNotFound
        etag = f'"{sha(data)[:16]}"'
        if request.headers.get("If-None-Match") == etag:
            self.not_modified[request.path] += 1
            return web.Response(status=304, headers={"ETag": etag})
        self.bodies[request.path] += 1
        if self.hold:
            await self._wait_for_others()
        response = web.StreamResponse(headers={"ETag": etag, "Content-Length": str(len(data))})
        await response.prepare(request)
        if request.path in self.stall:
            await response.write(data[:len(data) // 2])
            self.half_sent.set()
            await asyncio.sleep(60)
        await response.write(data)
        return response

    async def _wait_for_others(self) -> None:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        if self.waiting >= self.hold:
            self.released.set()
        try:
            await asyncio.wait_for(self.released.wait(), 20)
        except TimeoutError:
            pass


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    server = ModelServer()
    app = web.Application()
    app.add_routes([web.get("/{tail:.*}", server.handle)])
    async with loopback_server(app) as url:
        server.port = int(url.rpartition(":")[2])
        yield server


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "model-cache"


@pytest.fixture
def settings(tmp_path: Path, cache_dir: Path) -> dict[str, Any]:
    return {"scratch_dir": str(tmp_path / "scratch"), "model_cache_dir": str(cache_dir),
            "url_allowlist": "127.0.0.1", "download_timeout_s": 30.0, "inline_outputs": True}


@pytest.fixture
def cache_folders(connector: ComfyConnector) -> Iterator[None]:
    """The cache folders the test places in ComfyUI's folders are removed afterwards (a real ComfyUI's
    models/ must be left as it was); those that were there before stay."""
    files = connector.files
    roots = [files.folders.input, *(files.model_folder(name) for name in ("upscale_models", "loras"))]
    before = {path for root in roots if root.is_dir() for path in root.iterdir()}
    yield
    for root in roots:
        for path in root.iterdir() if root.is_dir() else []:
            if path not in before and CACHE_FOLDER_RE.fullmatch(path.name):
                shutil.rmtree(path)


@pytest.fixture
def runner(connector: ComfyConnector, settings: dict[str, Any], cache_folders: None) -> JobRunner:
    return JobRunner(connector, Config(**settings), None)


@pytest.fixture
def s3_storage(s3_server: S3Server, settings: dict[str, Any]) -> S3Storage:
    return S3Storage.from_config(s3_server.config(**settings))


@pytest.fixture
def s3_runner(connector: ComfyConnector, s3_server: S3Server, s3_storage: S3Storage, settings: dict[str, Any],
              cache_folders: None) -> JobRunner:
    return JobRunner(connector, s3_server.config(**settings), s3_storage)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every prompt the worker queues on ComfyUI, as it was sent (the real call still happens)."""
    queued: list[dict[str, Any]] = []
    queue_prompt = ComfyClient.queue_prompt

    async def record(self: ComfyClient, prompt: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        queued.append(json.loads(json.dumps(prompt)))
        return await queue_prompt(self, prompt, *args, **kwargs)

    monkeypatch.setattr(ComfyClient, "queue_prompt", record)
    return queued


def s3_calls(storage: S3Storage) -> Counter[str]:
    """The S3 operations the storage's client sends, counted as botocore emits them."""
    calls: Counter[str] = Counter()
    storage.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    return calls


def model_job(source: str, *, name: str = "tiny.safetensors", **entry: Any) -> dict[str, Any]:
    """LoadImage → SaveImage, plus an UpscaleModelLoader of the model input that no output needs: the test
    server cannot run it, and ComfyUI neither validates nor runs what no output needs, but the worker still
    rewrites its value, which is what these tests look at."""
    return {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cache"}},
        "3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": name}}},
        "inputs": [{"source": IMAGE_URI, "name": "photo.png"},
                   {"source": source, "name": name, "folder_type": "models", "subfolder": "upscale_models",
                    **entry}]}


def blobs(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "blobs").iterdir()) if (cache_dir / "blobs").exists() else []


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" not in result, result
    return result


# --- behaviour ------------------------------------------------------------------------------------

async def test_second_job_sends_no_body_get_and_the_same_prompt_value(
        s3_runner: JobRunner, s3_storage: S3Storage, s3_server: S3Server, connector: ComfyConnector,
        sent: list[dict[str, Any]], cache_dir: Path) -> None:
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="models/tiny.safetensors", Body=MODEL_A)
    calls = s3_calls(s3_storage)
    job = model_job(f"s3://{s3_server.bucket}/models/tiny.safetensors")
    first = ok(await s3_runner.run("job-1", job))
    assert calls["GetObject"] == 1
    second = ok(await s3_runner.run("job-2", job))
    assert calls["GetObject"] == 1, "the second job must not download the model again"
    assert calls["HeadObject"] == 2
    stable = f"cache-{sha(MODEL_A)[:16]}/tiny.safetensors"
    assert sent[0]["3"]["inputs"]["model_name"] == sent[1]["3"]["inputs"]["model_name"] == stable
    assert sent[0]["1"]["inputs"]["image"] != sent[1]["1"]["inputs"]["image"], "uncached inputs stay private"
    assert [i["cached"] for i in first["inputs"]] == [False, False]
    assert [i["cached"] for i in second["inputs"]] == [False, True]
    assert second["inputs"][1]["name"] == "tiny.safetensors" and second["inputs"][1]["bytes"] == len(MODEL_A)
    placed = connector.files.model_folder("upscale_models") / stable
    assert placed.is_symlink() and placed.read_bytes() == MODEL_A, "a cached model survives the job"
    assert blobs(cache_dir) == [sha(MODEL_A)]
    assert list((cache_dir / "leases").iterdir()) == [], "a finished job holds no lease"


async def test_changed_object_is_fetched_again_and_neither_version_is_overwritten(
        runner: JobRunner, s3_runner: JobRunner, s3_storage: S3Storage, s3_server: S3Server,
        model_server: ModelServer, connector: ComfyConnector, sent: list[dict[str, Any]]) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    url_job = model_job(model_server.url("/m/tiny.safetensors"))
    ok(await runner.run("job-1", url_job))
    second = ok(await runner.run("job-2", url_job))
    assert model_server.bodies["/m/tiny.safetensors"] == 1 and model_server.not_modified["/m/tiny.safetensors"] == 1
    assert second["inputs"][1]["cached"] is True
    model_server.files["/m/tiny.safetensors"] = MODEL_B  # a new ETag
    third = ok(await runner.run("job-3", url_job))
    assert model_server.bodies["/m/tiny.safetensors"] == 2 and third["inputs"][1]["cached"] is False
    folder = connector.files.model_folder("upscale_models")
    old, new = (f"cache-{sha(model)[:16]}/tiny.safetensors" for model in (MODEL_A, MODEL_B))
    assert [p["3"]["inputs"]["model_name"] for p in sent] == [old, old, new]
    assert (folder / old).read_bytes() == MODEL_A and (folder / new).read_bytes() == MODEL_B

    key = "models/changing.safetensors"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=MODEL_A)
    calls = s3_calls(s3_storage)
    s3_job = model_job(f"s3://{s3_server.bucket}/{key}")
    ok(await s3_runner.run("job-4", s3_job))
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=key, Body=MODEL_B)  # a new ETag
    changed = ok(await s3_runner.run("job-5", s3_job))
    assert calls["GetObject"] == 2 and changed["inputs"][1]["cached"] is False
    assert sent[-1]["3"]["inputs"]["model_name"] == new


async def test_sha256_mismatch_is_a_clear_error_and_nothing_is_placed(
        runner: JobRunner, model_server: ModelServer, connector: ComfyConnector, cache_dir: Path) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    folder = connector.files.model_folder("upscale_models")
    before = sorted(folder.rglob("*")) if folder.exists() else []
    wrong = sha(b"something else")
    result = await runner.run("job-bad", model_job(model_server.url("/m/tiny.safetensors"), sha256=wrong.upper()))
    assert result["error_type"] == "InputFetchError"
    assert result["error"].startswith(f"input.inputs[1] (tiny.safetensors): sha256 mismatch: expected {wrong}, "
                                      f"the download has {sha(MODEL_A)}; nothing was placed or cached"), result
    assert blobs(cache_dir) == [] and list((cache_dir / "tmp").iterdir()) == []
    assert (sorted(folder.rglob("*")) if folder.exists() else []) == before


async def test_a_file_already_in_the_model_folder_is_never_touched(runner: JobRunner, model_server: ModelServer,
                                                                   connector: ComfyConnector,
                                                                   sent: list[dict[str, Any]]) -> None:
    """A baked-in file of the same name stays as it is; so does any file found at the cache's own path."""
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    folder = connector.files.model_folder("upscale_models")
    baked = folder / "tiny.safetensors"
    blocked = folder / f"cache-{sha(MODEL_B)[:16]}" / "tiny.safetensors"
    blocked.parent.mkdir(parents=True)
    try:
        baked.write_bytes(b"baked into the image")
        blocked.write_bytes(b"someone else's file")
        ok(await runner.run("job-1", model_job(model_server.url("/m/tiny.safetensors"))))
        assert sent[0]["3"]["inputs"]["model_name"] == f"cache-{sha(MODEL_A)[:16]}/tiny.safetensors"
        assert baked.read_bytes() == b"baked into the image"
        model_server.files["/m/tiny.safetensors"] = MODEL_B
        result = await runner.run("job-2", model_job(model_server.url("/m/tiny.safetensors")))
        assert result["error"] == ("input.inputs[1] (tiny.safetensors): could not place the file in ComfyUI's "
                                   "models folder: another file of that name is in the way (left untouched)")
        assert blocked.read_bytes() == b"someone else's file" and not blocked.is_symlink()
    finally:
        baked.unlink(missing_ok=True)
        shutil.rmtree(blocked.parent)


async def test_known_sha256_is_used_without_any_request(runner: JobRunner, model_server: ModelServer) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    job = model_job(model_server.url("/m/tiny.safetensors"), sha256=sha(MODEL_A))
    ok(await runner.run("job-1", job))
    second = ok(await runner.run("job-2", job))
    assert model_server.bodies["/m/tiny.safetensors"] == 1 and model_server.not_modified["/m/tiny.safetensors"] == 0
    assert second["inputs"][1]["cached"] is True


async def test_four_concurrent_jobs_download_a_new_model_once(runner: JobRunner, model_server: ModelServer,
                                                              sent: list[dict[str, Any]]) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    job = model_job(model_server.url("/m/tiny.safetensors"))
    results = await asyncio.gather(*(runner.run(f"job-{i}", job) for i in range(4)))
    for result in results:
        ok(result)
    assert model_server.bodies["/m/tiny.safetensors"] == 1
    assert sorted(r["inputs"][1]["cached"] for r in results) == [False, True, True, True]
    assert len({p["3"]["inputs"]["model_name"] for p in sent}) == 1


async def test_cached_input_file_in_the_input_folder(runner: JobRunner, connector: ComfyConnector,
                                                     sent: list[dict[str, Any]]) -> None:
    """Any input may ask to be cached: it is then shared at a stable path, and survives the job."""
    job = {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
                        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}}},
           "inputs": [{"source": IMAGE_URI, "name": "photo.png", "cache": True}]}
    ok(await runner.run("job-1", job))
    ok(await runner.run("job-2", job))
    stable = f"cache-{sha(png((10, 20, 30)))[:16]}/photo.png"
    assert sent[0]["1"]["inputs"]["image"] == sent[1]["1"]["inputs"]["image"] == stable
    assert (connector.files.folders.input / stable).is_symlink()


def test_file_inputs_may_name_a_cached_placement(runner: JobRunner) -> None:
    """A cache folder's path is a stable, shared model path: a prompt may name it directly."""
    prompt = {"3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "cache-0123456789abcdef/x.pth"}}}
    check_file_inputs(prompt, runner.file_inputs(), set())


async def test_eviction_keeps_the_most_recent_entry_and_never_one_in_use(cache_dir: Path, tmp_path: Path) -> None:
    in_use_data = b"in use by a running job" * 100
    cache = ModelCache(cache_dir, max_bytes=len(in_use_data) + len(MODEL_B))  # room for two of the three
    for folder in ("blobs", "index", "tmp", "leases"):
        (cache_dir / folder).mkdir(parents=True)

    def store(data: bytes) -> Any:
        download = cache.new_download_path()
        download.write_bytes(data)
        return cache.insert(download, sha256="", size=len(data), label="x")

    in_use = store(in_use_data)  # the oldest, but leased
    old = store(MODEL_A)
    cache.release([old])
    recent = store(MODEL_B)
    cache.release([recent])
    os.utime(cache_dir / "blobs" / in_use.sha256, (1, 1))
    os.utime(cache_dir / "blobs" / old.sha256, (2, 2))
    assert cache.evict() == [old.sha256]
    assert blobs(cache_dir) == sorted([in_use.sha256, recent.sha256])
    cache.max_bytes = 0
    assert cache.evict() == [recent.sha256]
    assert blobs(cache_dir) == [in_use.sha256], "an entry in use stays, even over the limit"
    cache.release([in_use])
    assert cache.evict() == [in_use.sha256]


async def test_eviction_in_a_job_removes_the_least_recent_model_and_its_placement(
        model_server: ModelServer, connector: ComfyConnector, settings: dict[str, Any], cache_dir: Path,
        cache_folders: None) -> None:
    runner = JobRunner(connector, Config(**(settings | {"model_cache_max_bytes": len(MODEL_A) + 1})), None)
    model_server.files |= {"/a/tiny.safetensors": MODEL_A, "/b/tiny.safetensors": MODEL_B}
    ok(await runner.run("job-a", model_job(model_server.url("/a/tiny.safetensors"))))
    ok(await runner.run("job-b", model_job(model_server.url("/b/tiny.safetensors"))))
    assert blobs(cache_dir) == [sha(MODEL_B)]
    folder = connector.files.model_folder("upscale_models")
    assert not (folder / f"cache-{sha(MODEL_A)[:16]}").exists()
    assert (folder / f"cache-{sha(MODEL_B)[:16]}/tiny.safetensors").read_bytes() == MODEL_B


# --- many workers on one cache directory ----------------------------------------------------------

async def prewarm_process(cache_dir: Path) -> asyncio.subprocess.Process:
    """A separate worker process filling the shared cache (the documented pre-warming command)."""
    env = {**os.environ, "MODEL_CACHE_DIR": str(cache_dir), "URL_ALLOWLIST": "127.0.0.1",
           "PYTHONPATH": str(SRC_DIR)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfy_serverless.model_cache", "-", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_two_worker_processes_fetch_the_same_model_at_once(model_server: ModelServer, cache_dir: Path,
                                                                  runner: JobRunner) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    model_server.hold = 2
    entries = json.dumps([{"source": model_server.url("/m/tiny.safetensors"), "folder_type": "models",
                           "subfolder": "upscale_models"}]).encode()
    processes = [await prewarm_process(cache_dir) for _ in range(2)]
    outcomes = await asyncio.wait_for(asyncio.gather(*(p.communicate(entries) for p in processes)), 60)
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, err.decode()
        assert f"sha256 {sha(MODEL_A)}, downloaded" in out.decode()
    assert model_server.most_waiting == 2, "the two downloads must have overlapped"
    assert blobs(cache_dir) == [sha(MODEL_A)]
    assert (cache_dir / "blobs" / sha(MODEL_A)).read_bytes() == MODEL_A
    assert list((cache_dir / "tmp").iterdir()) == []
    model_server.hold = 0
    result = ok(await runner.run("job-after", model_job(model_server.url("/m/tiny.safetensors"))))
    assert result["inputs"][1]["cached"] is True and model_server.bodies["/m/tiny.safetensors"] == 2


async def test_worker_killed_mid_download_leaves_nothing_a_job_uses(model_server: ModelServer, cache_dir: Path,
                                                                     runner: JobRunner, connector: ComfyConnector,
                                                                     sent: list[dict[str, Any]]) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    model_server.stall = {"/m/tiny.safetensors"}
    entries = json.dumps([{"source": model_server.url("/m/tiny.safetensors")}]).encode()
    process = await prewarm_process(cache_dir)
    assert process.stdin is not None
    process.stdin.write(entries)
    process.stdin.close()
    await asyncio.wait_for(model_server.half_sent.wait(), 30)
    await asyncio.sleep(0.3)  # the half has reached the worker's disk
    process.send_signal(signal.SIGKILL)
    await process.wait()
    partial = list((cache_dir / "tmp").iterdir())
    assert partial and blobs(cache_dir) == [], "the killed download is in tmp/ only"

    model_server.stall = set()
    result = ok(await runner.run("job-after-kill", model_job(model_server.url("/m/tiny.safetensors"))))
    assert result["inputs"][1]["cached"] is False
    placed = connector.files.model_folder("upscale_models") / sent[0]["3"]["inputs"]["model_name"]
    assert placed.read_bytes() == MODEL_A
    for path in partial:
        os.utime(path, (0, 0))  # as old as a dead worker's leftovers get
    ModelCache(cache_dir, 10**12).evict()
    assert list((cache_dir / "tmp").iterdir()) == []


async def test_prewarming_fills_the_cache_for_later_jobs(model_server: ModelServer, cache_dir: Path,
                                                         runner: JobRunner, tmp_path: Path) -> None:
    model_server.files["/m/tiny.safetensors"] = MODEL_A
    listing = tmp_path / "models.json"
    listing.write_text(json.dumps([{"source": model_server.url("/m/tiny.safetensors"), "folder_type": "models",
                                    "subfolder": "upscale_models", "name": "tiny.safetensors",
                                    "sha256": sha(MODEL_A)}]))
    env = {**os.environ, "MODEL_CACHE_DIR": str(cache_dir), "URL_ALLOWLIST": "127.0.0.1",
           "PYTHONPATH": str(SRC_DIR)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "comfy_serverless.model_cache",
                                                   str(listing), env=env, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0 and "list[0] tiny.safetensors" in out.decode()
    result = ok(await runner.run("job", model_job(model_server.url("/m/tiny.safetensors"), sha256=sha(MODEL_A))))
    assert result["inputs"][1]["cached"] is True and model_server.bodies["/m/tiny.safetensors"] == 1

    listing.write_text(json.dumps([{"source": "ftp://x/y"}]))
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "comfy_serverless.model_cache",
                                                   str(listing), env=env, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and "list[0].source: must start with s3://" in err.decode()


# --- a real ComfyUI keeps the cached model loaded -------------------------------------------------

@needs_real_comfy  # the test server cannot run UpscaleModelLoader
async def test_real_comfy_keeps_a_cached_upscale_model_loaded(runner: JobRunner, model_server: ModelServer,
                                                              sent: list[dict[str, Any]]) -> None:
    model_server.files["/m/tiny-upscaler.safetensors"] = MODEL_A
    job = {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "tiny-upscaler.safetensors"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "upscaled"}}},
        "inputs": [{"source": IMAGE_URI, "name": "photo.png"},
                   {"source": model_server.url("/m/tiny-upscaler.safetensors"), "folder_type": "models",
                    "subfolder": "upscale_models"}]}
    first = ok(await runner.run("job-1", job))
    second = ok(await runner.run("job-2", job))
    for result in (first, second):
        (output,) = result["outputs"]
        assert Image.open(io.BytesIO(base64.b64decode(output["data"]))).size == (16, 16), "upscaled 2x"
    assert model_server.bodies["/m/tiny-upscaler.safetensors"] == 1
    assert sent[0]["2"]["inputs"]["model_name"] == sent[1]["2"]["inputs"]["model_name"]

    def cached_nodes(result: dict[str, Any]) -> list[str]:
        (entry,) = result["history"].values()
        return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached"
                for node in data["nodes"]]

    assert "2" not in cached_nodes(first)
    assert "2" in cached_nodes(second), "ComfyUI must keep the loaded model: the loader is cached"
    assert "3" not in cached_nodes(second), "the new image is upscaled again"
