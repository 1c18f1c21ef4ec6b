"""Real custom node packs (tests/custom_nodes.txt): their JavaScript in the conversion, their nodes in jobs.

The custom-nodes tier (``make test``) runs these on the pinned ComfyUI with KJNodes, rgthree-comfy and
VideoHelperSuite installed. The oracle for every conversion is what a user's browser does: a new
browser context on the same ComfyUI, ``app.loadGraphData`` and ``app.graphToPrompt``, with nothing of
the worker's (no record, no load options, no cache). The workflows in tests/workflows/custom_nodes/
were saved by that frontend with the packs loaded (author.js there), plus VideoHelperSuite's own
tests/*.json from the installed pack.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from comfy_serverless import ComfyConnector, UnknownNodeTypesError
from comfy_serverless.browser import APP_READY_JS
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage
from tests.support.comfy import chromium_executable, needs_custom_nodes, write_config
from tests.support.fixtures_s3 import S3Server
from tests.support.jobs import data_uri, first_pixel
from tests.support.spies import Spies

WORKFLOWS_DIR = Path(__file__).parent / "workflows" / "custom_nodes"
OURS = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
VHS_TESTS = ("audio", "batch4x4", "converted-format-input", "converted-input", "loop", "old-prores",
             "old-vae-conversion", "simple")
#: Types that exist only in the packs' JavaScript: the frontend must resolve them away.
VIRTUAL_TYPES = {"SetNode", "GetNode", "Reroute (rgthree)", "Fast Groups Muter (rgthree)",
                 "Fast Groups Bypasser (rgthree)", "Reroute"}

Oracle = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def workflow(name: str) -> dict[str, Any]:
    if name.startswith("vhs/"):
        path = Path(os.environ["COMFYUI_PATH"]) / "custom_nodes" / "ComfyUI-VideoHelperSuite" / "tests"
        return json.loads((path / f"{name.removeprefix('vhs/')}.json").read_text())
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


@pytest.fixture
async def oracle(connector: ComfyConnector) -> AsyncIterator[Oracle]:
    """Converts as a user's browser does: each call a new context and page on the connector's ComfyUI."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable() or None)

        async def convert(graph: dict[str, Any]) -> dict[str, Any]:
            context = await browser.new_context()
            try:
                page = await context.new_page()
                await page.goto(connector.server_address)
                await page.wait_for_function(APP_READY_JS, timeout=60_000)
                result: dict[str, Any] = await page.evaluate(  # the workflow parsed from its text, as a file is
                    "async (text) => { await window.app.loadGraphData(JSON.parse(text)); "
                    "return (await window.app.graphToPrompt()).output; }", json.dumps(graph))
                return result
            finally:
                await context.close()

        yield convert
        await browser.close()


@needs_custom_nodes
@pytest.mark.parametrize("name", OURS + [f"vhs/{name}" for name in VHS_TESTS])
async def test_the_worker_converts_as_a_fresh_page_with_the_packs_does(
        name: str, connector: ComfyConnector, oracle: Oracle) -> None:
    graph = workflow(name)
    expected = await oracle(graph)
    assert await connector.get_prompt_from_workflow(graph) == expected
    assert not VIRTUAL_TYPES & {node["class_type"] for node in expected.values()}, expected


@needs_custom_nodes
async def test_the_packs_javascript_made_the_links(connector: ComfyConnector) -> None:
    """What each pack's JavaScript does to the prompt, spelled out (the oracle only says both agree)."""
    setget = await connector.get_prompt_from_workflow(workflow("setget_across_groups"))
    by_prefix = {node["inputs"].get("filename_prefix"): node for node in setget.values()}
    invert_id = by_prefix["setget"]["inputs"]["images"][0]
    assert setget[invert_id]["inputs"]["image"] == by_prefix["setget_plain"]["inputs"]["images"]  # both Gets: one Set

    lora = await connector.get_prompt_from_workflow(workflow("setget_lora_chain"))
    loras = sorted((node for node in lora.values() if node["class_type"] == "LoraLoader"),
                   key=lambda node: node["inputs"]["lora_name"])
    checkpoint_id = next(key for key, node in lora.items() if node["class_type"] == "CheckpointLoaderSimple")
    assert loras[1]["inputs"]["model"] == [checkpoint_id, 0]  # style_a reads the Set "model" directly
    sampler = next(node for node in lora.values() if node["class_type"] == "KSampler")
    assert lora[sampler["inputs"]["model"][0]]["inputs"]["lora_name"] == "detail_b.safetensors"

    groups = await connector.get_prompt_from_workflow(workflow("groups_muted_bypassed"))
    prefixes = {node["inputs"].get("filename_prefix") for node in groups.values()}
    assert prefixes == {None, "kept", "after_bypass"}  # the muted group is gone
    after = next(node for node in groups.values() if node["inputs"].get("filename_prefix") == "after_bypass")
    assert groups[after["inputs"]["images"][0]]["class_type"] == "EmptyImage"  # the bypassed Invert passed through

    context = await connector.get_prompt_from_workflow(workflow("reroutes_through_context"))
    assert sorted(node["class_type"] for node in context.values()) == [
        "Context (rgthree)", "Context (rgthree)", "EmptyImage", "ImageInvert", "SaveImage"]

    power = await connector.get_prompt_from_workflow(workflow("power_lora_loader"))
    loader = next(node for node in power.values() if node["class_type"] == "Power Lora Loader (rgthree)")
    assert loader["inputs"]["lora_1"] == {"on": True, "lora": "job_lora.safetensors", "strength": 0.75}

    vhs = await connector.get_prompt_from_workflow(workflow("vhs_load_combine"))
    combine = next(node for node in vhs.values() if node["class_type"] == "VHS_VideoCombine")
    assert combine["inputs"]["format"] == "video/h264-mp4" and combine["inputs"]["pix_fmt"] == "yuv420p"  # VHS' widgets


def colors_by_prefix(result: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The first pixel of each inline output, by its SaveImage prefix."""
    return {output["filename"].split("_0")[0]: first_pixel(base64.b64decode(output["data"]))
            for output in result["outputs"]}


@needs_custom_nodes
async def test_set_get_groups_and_context_workflows_run(runner: JobRunner) -> None:
    setget = await runner.run("job-setget", {"workflow": workflow("setget_across_groups")})
    assert "error" not in setget, setget
    # 0x333333 and its inverse
    assert colors_by_prefix(setget) == {"setget": (204, 204, 204), "setget_plain": (51, 51, 51)}

    groups = await runner.run("job-groups", {"workflow": workflow("groups_muted_bypassed")})
    assert "error" not in groups, groups
    # blue inverted; green as it was
    assert colors_by_prefix(groups) == {"kept": (255, 255, 0), "after_bypass": (0, 255, 0)}

    context = await runner.run("job-context", {"workflow": workflow("reroutes_through_context")})
    assert "error" not in context, context
    (output,) = context["outputs"]
    assert first_pixel(base64.b64decode(output["data"])) == (0, 255, 255)  # red through two contexts, inverted


def small_video(path: Path) -> bytes:
    """An 8-frame 32x32 H.264 MP4 made with the ffmpeg that VideoHelperSuite uses (imageio-ffmpeg's)."""
    python = shlex.split(os.environ["API_COMMAND_LINE"])[0]
    ffmpeg = subprocess.run([python, "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
                            capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=8", "-frames:v", "8",
                    "-pix_fmt", "yuv420p", "-y", str(path)], check=True, timeout=60)
    return path.read_bytes()


@pytest.fixture
def video_input(tmp_path: Path) -> dict[str, Any]:
    """The job input VHS_LoadVideo's ``clip.mp4`` names."""
    return {"source": data_uri(small_video(tmp_path / "clip.mp4")), "name": "clip.mp4"}


@needs_custom_nodes
async def test_a_video_input_goes_through_vhs_and_comes_back_inline(runner: JobRunner, connector: ComfyConnector,
                                                                   video_input: dict[str, Any], spies: Spies) -> None:
    result = await runner.run("job-video", {"workflow": workflow("vhs_load_combine"), "inputs": [video_input]})
    assert "error" not in result, result
    (video,) = [output for output in result["outputs"] if output["filename"].endswith(".mp4")]
    assert video["content_type"] == "video/mp4" and base64.b64decode(video["data"])[4:8] == b"ftyp"
    assert "fullpath" not in json.dumps(result)  # VHS's absolute path on the worker is not returned
    (prompt,) = spies.queued
    loader = next(node for node in prompt.values() if node["class_type"] == "VHS_LoadVideo")
    assert loader["inputs"]["video"].endswith("/clip.mp4") and loader["inputs"]["video"] != "clip.mp4"  # private
    assert not list(connector.files.folders.for_type("output").rglob("vhs_job*"))  # nothing left behind


@needs_custom_nodes
async def test_a_vhs_video_is_delivered_to_s3_with_its_content_type(
        connector: ComfyConnector, scratch: Path, s3_server: S3Server, video_input: dict[str, Any]) -> None:
    config = s3_server.config(scratch_dir=str(scratch), output_s3_uri=f"s3://{s3_server.bucket}/videos")
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    result = await runner.run("job-s3-video", {"workflow": workflow("vhs_load_combine"), "inputs": [video_input]})
    assert "error" not in result, result
    (video,) = [output for output in result["outputs"] if output["filename"].endswith(".mp4")]
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"videos/job-s3-video/{video['filename']}")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == video["bytes"] > 0


@needs_custom_nodes
async def test_a_power_lora_loader_gets_the_lora_of_a_models_input(runner: JobRunner, connector: ComfyConnector,
                                                                   spies: Spies) -> None:
    """The LoRA's nested value is pointed at the job's copy, so rgthree's name matching cannot pick another."""
    lora = b"not really a lora, and not loaded: the loader has no model to apply it to"
    result = await runner.run("job-lora", {"workflow": workflow("power_lora_loader"), "inputs": [
        {"source": data_uri(lora), "name": "job_lora.safetensors", "folder_type": "models", "subfolder": "loras"}]})
    assert "error" not in result, result
    (prompt,) = spies.queued
    loader = next(node for node in prompt.values() if node["class_type"] == "Power Lora Loader (rgthree)")
    rewritten = loader["inputs"]["lora_1"]["lora"]
    assert rewritten != "job_lora.safetensors" and rewritten.endswith("/job_lora.safetensors"), rewritten
    assert (connector.files.model_folder("loras") / rewritten).read_bytes() == lora
    assert loader["inputs"]["lora_2"] == {"on": False, "lora": "unused.safetensors", "strength": 1}  # not an input


@pytest.fixture(scope="module")
def packs_record(comfy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frontend record made by the CLI, as the Dockerfile runs it, on the ComfyUI with the packs."""
    folder = tmp_path_factory.mktemp("packs-record")
    config = write_config(folder / "snapshot.json", comfy_root, INITIAL_PORT=18760)
    record = folder / "record.json"
    made = subprocess.run([sys.executable, "-m", "comfy_serverless.snapshot_frontend", str(record)],
                          env={**os.environ, "COMFY_SERVERLESS_CONFIG": str(config)},
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    return record


@needs_custom_nodes
async def test_a_record_made_with_the_packs_replays_and_converts_the_same(
        connector: ComfyConnector, packs_record: Path, comfy_root: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Current at the next boot too: VideoHelperSuite's definitions hold a set, same only with a fixed hash seed."""
    expected = await connector.get_prompt_from_workflow(workflow("setget_across_groups"))
    extensions = json.loads(packs_record.read_text())["extensions"]
    assert any("KJNodes" in path for path in extensions) and any("rgthree" in path for path in extensions)
    await connector.kill_api()
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    replayed = await ComfyConnector.create(str(write_config(tmp_path / "replay.json", comfy_root, INITIAL_PORT=18770,
                                                            FRONTEND_SNAPSHOT=str(packs_record))))
    try:
        assert "answers replayed" in caplog.text and "stale" not in caplog.text
        assert await replayed.get_prompt_from_workflow(workflow("setget_across_groups")) == expected
    finally:
        await replayed.kill_api()


@needs_custom_nodes
async def test_a_record_made_with_the_packs_on_a_comfyui_without_them_reloads_the_page(
        packs_record: Path, comfy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Never a conversion with stale extensions: the packs' JavaScript is gone with the packs."""
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    without_packs = write_config(tmp_path / "without.json", comfy_root, INITIAL_PORT=18780,
                                 FRONTEND_SNAPSHOT=str(packs_record), COMFY_EXTRA_ARGS="--disable-all-custom-nodes")
    core = await ComfyConnector.create(str(without_packs))
    try:
        assert "is stale (the extension list differs" in caplog.text and "reloading the page" in caplog.text
        with pytest.raises(UnknownNodeTypesError, match="GetNode, SetNode"):
            await core.get_prompt_from_workflow(workflow("setget_across_groups"))
    finally:
        await core.kill_api()
