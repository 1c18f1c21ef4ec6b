"""Tests for the ComfyUI-compatible test server (tests/comfy_test_server).

The server runs as a real subprocess; expected sequences and bodies come from the traces
recorded on real ComfyUI 0.3.64 (shared/fixtures/comfyui-0.3.64).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from comfy_serverless import ComfyConnector
from comfy_serverless.frontend_record import structure_hash
from tests.comfy_test_server.launcher import MAIN, ServerProcess, start_server
from tests.comfy_test_server.nodes import OBJECT_INFO_PATH
from tests.support.comfy import needs_real_comfy

TRACE_PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 643235}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trace"}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(str(tmp_path_factory.mktemp("comfy"))) as srv:
        yield srv


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


def fresh(prompt: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(prompt))


async def run_prompt(srv: ServerProcess, session: aiohttp.ClientSession, prompt: dict[str, Any],
                     extra_data: dict[str, Any] | None = None, on_queued: Any = None,
                     message_timeout_s: float = 10) -> tuple[int, dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Connect a socket, queue the prompt, collect messages until ``executing {node: null}``."""
    cid = uuid.uuid4().hex
    messages: list[dict[str, Any]] = []
    async with session.ws_connect(f"{srv.ws_url}?clientId={cid}") as ws:
        body: dict[str, Any] = {"prompt": prompt, "client_id": cid}
        if extra_data is not None:
            body["extra_data"] = extra_data
        async with session.post(srv.url + "/prompt", json=body) as r:
            status, resp = r.status, await r.json()
        if status != 200:
            return status, resp, messages, {}
        pid = resp["prompt_id"]
        while True:
            m = await asyncio.wait_for(ws.receive_json(), message_timeout_s)
            messages.append(m)
            if on_queued is not None and m["type"] == "executing" and m["data"]["node"] is not None:
                await on_queued(pid)
                on_queued = None
            if m["type"] == "executing" and m["data"]["node"] is None and m["data"].get("prompt_id") == pid:
                break
    async with session.get(f"{srv.url}/history/{pid}") as r:
        history = await r.json()
    return status, resp, messages, history[pid]


def seq(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["type"], m["data"].get("node")) for m in messages]


async def test_status_on_connect_and_feature_flags(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(server.ws_url + "?clientId=abc") as ws:
        assert await ws.receive_json() == {"type": "status",
                                           "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert await ws.receive_json() == {"type": "feature_flags", "data": {"supports_preview_metadata": True,
                                                                             "max_upload_size": 104857600}}
    async with session.ws_connect(server.ws_url) as ws:
        sid = (await ws.receive_json())["data"]["sid"]
        assert len(sid) == 32


async def test_success_cached_repeat_and_free(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    extra = {"extra_pnginfo": {"workflow": {"note": "UI workflow goes here"}}}
    status, resp, msgs, hist = await run_prompt(server, session, fresh(TRACE_PROMPT), extra)
    assert status == 200 and resp["node_errors"] == {}
    assert seq(msgs) == [  # trace-success.jsonl
        ("status", None), ("status", None), ("status", None), ("execution_start", None),
        ("execution_cached", None), ("progress_state", None), ("executing", "1"), ("progress_state", None),
        ("progress_state", None), ("executing", "4"), ("executed", "4"), ("progress_state", None),
        ("progress_state", None), ("executing", "2"), ("progress_state", None), ("progress_state", None),
        ("executing", "3"), ("executed", "3"), ("progress_state", None), ("execution_success", None),
        ("status", None), ("executing", None)]
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in msgs if m["type"] == "status"] == [0, 1, 1, 0]
    saved = {"filename": "trace_00001_.png", "subfolder": "", "type": "output"}
    assert msgs[17]["data"] == {"node": "3", "display_node": "3", "output": {"images": [saved]},
                                "prompt_id": resp["prompt_id"]}
    assert set(msgs[-4]["data"]["nodes"]) == {"1", "2", "3", "4"}
    assert hist["outputs"]["3"] == {"images": [saved]}
    assert hist["outputs"]["4"]["images"][0]["type"] == "temp"
    assert hist["outputs"]["4"]["images"][0]["filename"].startswith("ComfyUI_temp_")
    assert hist["status"]["status_str"] == "success" and hist["status"]["completed"] is True
    assert [m[0] for m in hist["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert hist["prompt"][1] == resp["prompt_id"] and hist["prompt"][4] == ["3", "4"]
    assert hist["meta"]["3"] == {"node_id": "3", "display_node": "3", "parent_node": None, "real_node_id": "3"}
    with Image.open(os.path.join(server.base_dir, "output", "trace_00001_.png")) as img:
        assert img.size == (64, 48) and img.getpixel((0, 0)) == (255 - 0x09, 255 - 0xD0, 255 - 0xA3)
        assert json.loads(img.text["workflow"]) == extra["extra_pnginfo"]["workflow"]
        assert json.loads(img.text["prompt"])["3"]["class_type"] == "SaveImage"

    # Identical prompt (plus an unknown extra input key elsewhere is *not* added): all cached.
    status, resp2, msgs, hist = await run_prompt(server, session, fresh(TRACE_PROMPT))
    assert seq(msgs) == [("status", None), ("status", None), ("status", None), ("execution_start", None),
                         ("execution_cached", None), ("executed", "3"), ("progress_state", None),
                         ("executed", "4"), ("progress_state", None), ("execution_success", None),
                         ("status", None), ("executing", None)]
    assert msgs[4]["data"]["nodes"] == ["1", "2", "3", "4"]
    assert msgs[5]["data"]["output"] == {"images": [saved]}  # the previous file name
    assert msgs[6]["data"]["nodes"]["3"]["value"] == 1
    assert hist["outputs"]["3"] == {"images": [saved]}

    # An unknown extra input changes the signature: node 1 and everything after it re-run.
    changed = fresh(TRACE_PROMPT)
    changed["1"]["inputs"]["not_an_input"] = 1
    _, _, msgs, hist = await run_prompt(server, session, changed)
    assert [m["data"]["node"] for m in msgs if m["type"] == "executing"][:-1] == ["1", "4", "2", "3"]
    assert hist["outputs"]["3"]["images"][0]["filename"] == "trace_00002_.png"

    # /free {"free_memory": true} resets the cache.
    async with session.post(server.url + "/free", json={"free_memory": True}) as r:
        assert r.status == 200
    async with session.post(server.url + "/free") as r:
        assert r.status == 500  # a body is required, like ComfyUI
    _, _, msgs, hist = await run_prompt(server, session, changed)
    assert msgs[4]["data"]["nodes"] == []
    assert hist["outputs"]["3"]["images"][0]["filename"] == "trace_00003_.png"


async def test_validation_errors(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    status, body, _, _ = await run_prompt(server, session, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert (status, body) == (400, {"error": {"type": "invalid_prompt",
                                              "message": "Cannot execute because node NoSuchNode does not exist.",
                                              "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}})
    status, body, _, _ = await run_prompt(server, session, {
        "1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert (status, body) == (400, {  # trace-validation_bad_input.jsonl
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                  "details": "", "extra_info": {}},
        "node_errors": {"1": {"errors": [{"type": "custom_validation_failed",
                                          "message": "Custom validation failed for node",
                                          "details": "image - Invalid image file: missing.png",
                                          "extra_info": {"input_name": "image"}}],
                              "dependent_outputs": ["2"], "class_type": "LoadImage"}}})
    status, body, _, _ = await run_prompt(server, session, {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 99999, "batch_size": "x"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nope", "width": 8,
                                                     "height": 8, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    types = {nid: sorted(e["type"] for e in v["errors"]) for nid, v in body["node_errors"].items()}
    assert types == {"1": ["invalid_input_type", "required_input_missing", "value_bigger_than_max",
                           "value_smaller_than_min"],
                     "2": ["value_not_in_list"], "3": ["required_input_missing", "return_type_mismatch"]}
    assert body["node_errors"]["1"]["dependent_outputs"] == ["5"]
    status, body, _, _ = await run_prompt(server, session, {"1": {"class_type": "EmptyImage", "inputs": {}}})
    assert body["error"]["type"] == "prompt_no_outputs"
    async with session.post(server.url + "/prompt", json={"nope": 1}) as r:
        assert r.status == 400 and (await r.json())["error"]["type"] == "no_prompt"
    ui_format = {"last_node_id": 2, "last_link_id": 1, "nodes": [], "links": []}
    async with session.post(server.url + "/prompt", json={"prompt": ui_format}) as r:
        assert r.status == 500
        assert (await r.text()).startswith("500 Internal Server Error\n\nServer got itself in trouble")


async def test_partial_validation_runs_valid_outputs(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    prompt = fresh(TRACE_PROMPT)
    prompt["3"]["inputs"]["filename_prefix"] = "partial"
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "y"}}
    status, resp, msgs, hist = await run_prompt(server, session, prompt)
    assert status == 200
    err = resp["node_errors"]["9"]
    assert err["dependent_outputs"] == ["9"] and err["class_type"] == "SaveImage"
    assert err["errors"][0]["type"] == "exception_during_validation"
    assert err["errors"][0]["details"] == "'8'"
    assert err["errors"][0]["extra_info"]["exception_type"] == "KeyError"
    assert sorted(hist["prompt"][4]) == ["3", "4"] and "9" not in hist["outputs"]
    assert msgs[-3]["type"] == "execution_success"


async def test_execution_error(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    status, _, msgs, hist = await run_prompt(server, session, {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16384, "height": 16384, "batch_size": 4096, "color": 1}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert seq(msgs)[3:] == [("execution_start", None), ("execution_cached", None), ("progress_state", None),
                             ("executing", "1"), ("execution_error", None), ("status", None), ("executing", None)]
    data = msgs[7]["data"]
    assert list(data) == ["prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                          "traceback", "current_inputs", "current_outputs", "timestamp"]
    assert data["exception_type"] == "RuntimeError" and data["node_type"] == "EmptyImage"
    assert "can't allocate memory: you tried to allocate 4398046511104 bytes" in data["exception_message"]
    assert data["exception_message"].endswith("\n")
    assert data["current_inputs"] == {"width": [16384], "height": [16384], "batch_size": [4096], "color": [1]}
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False
    assert hist["outputs"] == {} and hist["meta"] == {}

    # Known but not executable here -> NotImplementedError at execution time.
    _, _, msgs, hist = await run_prompt(server, session, {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageSharpen", "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0,
                                                       "alpha": 1.0}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert err["exception_type"] == "NotImplementedError" and err["node_id"] == "2" and err["executed"] == ["1"]


async def test_interrupt_and_faults(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    async with session.post(server.url + "/_test/faults", json={"node_delay_s": 5}) as r:
        assert await r.json() == {"node_delay_s": 5}

    async def interrupt(pid: str) -> None:
        async with session.post(server.url + "/interrupt", json={"prompt_id": "someone-else"}):
            pass
        async with session.post(server.url + "/interrupt", json={"prompt_id": pid}) as r:
            assert r.status == 200

    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 7}},
              "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    _, _, msgs, hist = await run_prompt(server, session, prompt, on_queued=interrupt)
    assert seq(msgs)[-3:] == [("execution_interrupted", None), ("status", None), ("executing", None)]
    assert set(msgs[-3]["data"]) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert msgs[-3]["data"]["node_id"] == "1"
    assert hist["status"]["status_str"] == "error"
    assert hist["status"]["messages"][-1][0] == "execution_interrupted"

    async with session.post(server.url + "/_test/faults", json={"reset": True, "fail_next_prompt_with": "boom"}) as r:
        assert await r.json() == {"fail_next_prompt_with": "boom"}
    _, _, msgs, hist = await run_prompt(server, session, prompt)
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert (err["exception_type"], err["exception_message"]) == ("RuntimeError", "boom\n")
    async with session.get(server.url + "/_test/faults") as r:
        assert await r.json() == {}  # consumed
    _, _, msgs, hist = await run_prompt(server, session, prompt)
    assert hist["status"]["status_str"] == "success"


async def test_drop_websocket_fault(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    async with session.post(server.url + "/_test/faults",
                            json={"drop_websocket_during_next_prompt": True, "node_delay_s": 0.2}):
        pass
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    cid = uuid.uuid4().hex
    async with session.ws_connect(f"{server.ws_url}?clientId={cid}") as ws:
        async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": cid}) as r:
            pid = (await r.json())["prompt_id"]
        types = []
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                types.append(json.loads(msg.data)["type"])
        assert types[-1] == "execution_start" and ws.closed
    for _ in range(100):  # execution continues with nobody connected
        async with session.get(f"{server.url}/history/{pid}") as r:
            h = await r.json()
        if h:
            break
        await asyncio.sleep(0.05)
    assert h[pid]["status"]["status_str"] == "success"
    async with session.post(server.url + "/_test/faults", json={"reset": True}):
        pass


async def test_no_client_id_and_reconnect_gotcha(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    async with session.ws_connect(server.ws_url) as ws:
        await ws.receive_json()
        async with session.post(server.url + "/prompt", json={"prompt": prompt}) as r:
            pid = (await r.json())["prompt_id"]
        got = []
        while len(got) < 7:
            got.append((await asyncio.wait_for(ws.receive_json(), 5))["type"])
        # Only broadcasts: status x2, progress_state x4, status.
        assert got == ["status", "status", "progress_state", "progress_state", "progress_state", "progress_state",
                       "status"]
    async with session.get(f"{server.url}/history/{pid}") as r:
        assert (await r.json())[pid]["status"]["completed"] is True

    # Second socket with the same clientId, then the first closes: the second goes deaf.
    first = await session.ws_connect(server.ws_url + "?clientId=dup")
    await first.receive_json()
    second = await session.ws_connect(server.ws_url + "?clientId=dup")
    await second.receive_json()
    await first.close()
    await asyncio.sleep(0.1)
    async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": "dup"}) as r:
        assert r.status == 200
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(second.receive_json(), 0.5)
    await second.close()


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


async def upload(session: aiohttp.ClientSession, url: str, name: str, data: bytes, **fields: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for k, v in fields.items():
        form.add_field(k, v)
    async with session.post(url + "/upload/image", data=form) as r:
        return r.status, (await r.json() if r.status == 200 else await r.text())


async def test_upload_view_and_load_image(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    red, blue = png_bytes((255, 0, 0)), png_bytes((0, 0, 255))
    assert await upload(session, server.url, "a.png", red) == (200, {"name": "a.png", "subfolder": "", "type": "input"})
    assert await upload(session, server.url, "a.png", red) == (200, {"name": "a.png", "subfolder": "", "type": "input"})
    assert (await upload(session, server.url, "a.png", blue))[1]["name"] == "a (1).png"
    assert (await upload(session, server.url, "a.png", png_bytes((0, 9, 0))))[1]["name"] == "a (2).png"
    assert (await upload(session, server.url, "a.png", blue, overwrite="true"))[1]["name"] == "a.png"
    assert await upload(session, server.url, "b.png", red, subfolder="sub/x") == (
        200, {"name": "b.png", "subfolder": "sub/x", "type": "input"})
    assert (await upload(session, server.url, "c.png", red, subfolder="../..", type="input"))[0] == 400
    assert (await upload(session, server.url, "c.png", red, type="bogus"))[0] == 500

    async with session.get(server.url + "/api/object_info/LoadImage") as r:
        choices = (await r.json())["LoadImage"]["input"]["required"]["image"][0]
    assert choices == ["a (1).png", "a (2).png", "a.png"]  # top-level image files only, like ComfyUI 0.3.64
    async with session.get(server.url + "/object_info/Nope") as r:
        assert await r.json() == {}

    async with session.get(server.url + "/view", params={"filename": "a.png", "type": "input"}) as r:
        assert r.status == 200 and await r.read() == blue
        assert r.headers["Content-Disposition"] == 'filename="a.png"'
    async with session.get(server.url + "/api/view", params={"filename": "b.png", "subfolder": "sub/x",
                                                            "type": "input"}) as r:
        assert r.status == 200
    async with session.get(server.url + "/view", params={"filename": "a.png [input]", "preview": "webp;50"}) as r:
        assert r.status == 200 and r.content_type == "image/webp"
    async with session.get(server.url + "/view", params={"filename": "../x.png"}) as r:
        assert r.status == 400
    async with session.get(server.url + "/view", params={"filename": "a.png", "subfolder": "../../.."}) as r:
        assert r.status == 403
    async with session.get(server.url + "/view", params={"filename": "a.png"}) as r:
        assert r.status == 404  # default type is output
    async with session.get(server.url + "/view", params={"filename": "a.png", "type": "nope"}) as r:
        assert r.status == 400

    _, _, msgs, hist = await run_prompt(server, session, {
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/x/b.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 8,
                                                     "height": 0, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dir/up"}}})
    assert hist["outputs"]["3"]["images"] == [{"filename": "up_00001_.png", "subfolder": "dir", "type": "output"}]
    async with session.get(server.url + "/view", params={"filename": "up_00001_.png", "subfolder": "dir"}) as r:
        assert r.status == 200
        assert Image.open(io.BytesIO(await r.read())).size == (8, 8)


async def test_misc_routes(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    async with session.get(server.url + "/api/system_stats") as r:
        stats = await r.json()
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert stats["system"]["required_frontend_version"] == "1.27.10"
    assert stats["devices"][0]["type"] == "cpu"
    async with session.get(server.url + "/history/unknown") as r:
        assert r.status == 200 and await r.json() == {}
    async with session.get(server.url + "/queue") as r:
        assert await r.json() == {"queue_running": [], "queue_pending": []}
    async with session.get(server.url + "/prompt") as r:
        assert await r.json() == {"exec_info": {"queue_remaining": 0}}
    async with session.get(server.url + "/internal/folder_paths") as r:
        folders = await r.json()
    assert folders["checkpoints"][0] == os.path.join(server.base_dir, "models", "checkpoints")
    async with session.get(server.url + "/api/internal/folder_paths") as r:
        assert r.status == 404
    async with session.get(server.url + "/userdata", params={"dir": "workflows"}) as r:
        assert r.status == 404
    async with session.post(server.url + "/settings/Comfy.X", json=5) as r:
        assert r.status == 200
    async with session.get(server.url + "/api/settings/Comfy.X") as r:
        assert await r.json() == 5
    async with session.post(server.url + "/userdata/workflows%2Fa.json", data=b"{}") as r:
        assert await r.json() == "workflows/a.json"
    async with session.get(server.url + "/userdata", params={"dir": "workflows"}) as r:
        assert await r.json() == ["a.json"]
    async with session.get(server.url + "/", headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with session.get(server.url + "/") as r:
        assert r.status == 200 and "<html" in (await r.text()).lower()


def test_cli_is_strict_and_boot_faults(tmp_path: Any) -> None:
    r = subprocess.run([sys.executable, MAIN, "--no-such-flag"], capture_output=True, timeout=30)
    assert r.returncode == 2
    r = subprocess.run([sys.executable, MAIN, "--base-directory", str(tmp_path), "--port", "1"],
                       env={**os.environ, "COMFY_TEST_BOOT_EXIT_CODE": "3"}, capture_output=True, timeout=30)
    assert r.returncode == 3 and b"Traceback" in r.stderr


async def test_exit_during_prompt(tmp_path: Any, session: aiohttp.ClientSession) -> None:
    srv = start_server(str(tmp_path), args=["--temp-directory", str(tmp_path / "t")])
    try:
        assert os.path.isdir(tmp_path / "t" / "temp")
        async with session.post(srv.url + "/_test/faults", json={"exit_during_next_prompt": True}):
            pass
        cid = "x"
        async with session.ws_connect(f"{srv.ws_url}?clientId={cid}") as ws:
            prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                   "color": 0}},
                      "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
            async with session.post(srv.url + "/prompt", json={"prompt": prompt, "client_id": cid}):
                pass
            types = [json.loads(m.data)["type"] async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        assert types[-1] == "executing"
        assert srv.proc.wait(10) == 137
    finally:
        srv.stop()


@needs_real_comfy
async def test_the_recorded_node_definitions_are_the_pinned_comfyuis(connector: ComfyConnector) -> None:
    """The test server serves object_info.json, recorded from the pinned ComfyUI with the image's lock: the
    fault-injection tier converts and validates against it, so it must stay what that ComfyUI serves (the
    files its combos list aside). Fails on a ComfyUI other than the pinned one, or with other packages."""
    live = await connector.client.get_json("/object_info")
    recorded = json.loads(Path(OBJECT_INFO_PATH).read_text())
    assert sorted(set(live) - set(recorded)) == [] and sorted(set(recorded) - set(live)) == []
    changed = [name for name in live if structure_hash({name: live[name]}) != structure_hash({name: recorded[name]})]
    assert changed == []
