"""Contract tests of ComfyConnector against a ComfyUI (the test server, or a real one with COMFYUI_PATH)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web

from comfy_serverless import (
    ComfyConnector,
    ComfyServerlessError,
    ComfyStartError,
    ComfyUnavailableError,
    ConnectorState,
    ConnectorStateError,
    ExecutionError,
    ExecutionInterruptedError,
    PromptValidationError,
    RunTimeoutError,
    UnknownNodeTypesError,
    WorkflowError,
)
from comfy_serverless.browser import FrontendConverter
from comfy_serverless.client import ComfyClient
from comfy_serverless.config import Config
from tests.comfy_test_server.launcher import start_server
from tests.support.comfy import (
    REAL_COMFY,
    api_prompt,
    comfy_processes,
    needs_test_server,
    our_processes,
    output_paths,
    set_faults,
    write_config,
)
from tests.support.frontends import Frontend, newest_frontend, pinned_frontend
from tests.support.loopback import loopback_server
from tests.support.ui_workflows import (
    add_node,
    chain,
    empty_image,
    invert,
    large_chain,
    load_image,
    load_workflow,
    preview_image,
    save_image,
    scale,
    with_unknown_node,
)


def slow_prompt() -> dict[str, Any]:
    """Seconds of work on any ComfyUI: two wide blurs of a 1024x1024 batch (the interrupt trace's graph)."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 2, "color": 240}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 31, "sigma": 10.0}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


async def slow_down(connector: ComfyConnector) -> None:
    """Make the slow prompt slow on the test server too (its nodes are otherwise instant)."""
    if not REAL_COMFY:
        await set_faults(connector, node_delay_s=1.5)


# --- lifecycle ---------------------------------------------------------------------------------
async def test_create_boots_to_ready_with_addresses(connector: ComfyConnector) -> None:
    assert connector.state is ConnectorState.READY
    assert connector.server_address.startswith("http://127.0.0.1:")
    assert connector.ws_address == connector.server_address.replace("http", "ws") + \
        f"/ws?clientId={connector.client_id}"
    assert len(connector.client_id) == 32


async def test_create_returns_the_singleton(connector: ComfyConnector, config_path: Path) -> None:
    assert await ComfyConnector.create(str(config_path)) is connector


async def test_create_with_another_config_while_alive_raises(connector: ComfyConnector, tmp_path: Path,
                                                            comfy_root: Path) -> None:
    other = write_config(tmp_path / "other.json", comfy_root, INITIAL_PORT=18900)
    with pytest.raises(ConnectorStateError, match="kill_api"):
        await ComfyConnector.create(str(other))


async def test_concurrent_creates_share_one_boot(connector: ComfyConnector, config_path: Path) -> None:
    await connector.kill_api()
    first, second = await asyncio.gather(ComfyConnector.create(str(config_path)),
                                         ComfyConnector.create(str(config_path)))
    assert first is second and first.state is ConnectorState.READY
    assert len(comfy_processes()) == 1


async def test_the_connector_is_an_async_context_manager(connector: ComfyConnector, config_path: Path) -> None:
    """``async with ComfyConnector(config)``: booted on entry, everything stopped on exit; not the singleton."""
    await connector.kill_api()  # one ComfyUI at a time on this machine
    async with ComfyConnector(Config.load(config_path)) as scoped:
        assert scoped.state is ConnectorState.READY and ComfyConnector.current() is None
        history = await scoped.run_workflow(api_prompt(prefix="scoped"))
        written = output_paths(scoped, history)
        assert written and all(path.is_file() for path in written)
        scoped.files.delete_outputs(history)
        assert our_processes()
    assert scoped.state is ConnectorState.KILLED and our_processes() == []


async def test_a_script_that_ends_without_kill_api_leaves_no_comfyui(connector: ComfyConnector,
                                                                    config_path: Path) -> None:
    """The library installs no exit hook; the kernel stops ComfyUI when the process that started it ends."""
    await connector.kill_api()
    script = ("import asyncio, sys\n"
              "from comfy_serverless import ComfyConnector\n"
              "async def main():\n"
              "    connector = await ComfyConnector.create(sys.argv[1])\n"
              "    print(connector.comfy.pid, flush=True)\n"
              "asyncio.run(main())\n")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(config_path),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    stdout, _ = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == 0
    comfy_pid = int(stdout.split()[-1])  # an orphan now, were it not stopped
    for _ in range(100):
        if not _is_running(comfy_pid):
            break
        await asyncio.sleep(0.1)
    assert not _is_running(comfy_pid)


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_a_failed_async_with_leaves_nothing_running(connector: ComfyConnector, config_path: Path,
                                                          tmp_path: Path) -> None:
    """``__aexit__`` does not run when ``__aenter__`` fails, and the caller holds no handle: the connector
    stops what its failed start began."""
    await connector.kill_api()
    bad_self_test = tmp_path / "bad.json"
    bad_self_test.write_text("{not json")
    config = dataclasses.replace(Config.load(config_path), test_payload_file=str(bad_self_test))
    with pytest.raises(ComfyStartError, match="failed to start"):
        async with ComfyConnector(config):
            pytest.fail("the start succeeded")
    assert our_processes() == []


async def test_kill_api_during_a_run_starts_no_new_comfyui(connector: ComfyConnector) -> None:
    """The run that fails on the stopped ComfyUI must not restart it behind a killed connector."""
    await slow_down(connector)
    run = asyncio.ensure_future(connector.run_workflow(slow_prompt()))
    await asyncio.sleep(0.5)
    await connector.kill_api()
    with pytest.raises(ComfyServerlessError):  # whichever way the stopped ComfyUI shows
        await run
    await asyncio.sleep(3)  # a restart would have spawned a ComfyUI by now
    assert our_processes() == []
    with pytest.raises(ConnectorStateError, match="killed"):
        await connector.start()


async def test_kill_api_during_the_boot_stops_it(connector: ComfyConnector, config_path: Path) -> None:
    await connector.kill_api()
    booting = ComfyConnector(Config.load(config_path))
    start = asyncio.ensure_future(booting.start())
    for _ in range(200):
        if booting.comfy.pid is not None:
            break
        await asyncio.sleep(0.05)
    assert booting.state is ConnectorState.INITIALIZING
    await booting.kill_api()
    with pytest.raises(ConnectorStateError, match="kill_api\\(\\) stopped the connector while it started"):
        await start
    assert booting.state is ConnectorState.KILLED and our_processes() == []


async def test_kill_api_is_idempotent_and_leaves_no_process(connector: ComfyConnector) -> None:
    assert our_processes()
    await connector.kill_api()
    await connector.kill_api()
    assert connector.state is ConnectorState.KILLED
    assert our_processes() == []
    with pytest.raises(ConnectorStateError, match="killed"):
        await connector.run_workflow(api_prompt())
    with pytest.raises(ConnectorStateError):
        await connector.get_prompt_from_workflow(chain(empty_image(), preview_image()))


async def test_comfy_dead_between_runs_is_restarted(connector: ComfyConnector) -> None:
    old_pid, old_address = connector.comfy.pid, connector.server_address
    assert old_pid is not None
    os.killpg(old_pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    history = await connector.run_workflow(api_prompt(prefix="after-restart"))
    assert connector.comfy.pid != old_pid
    assert all(p.exists() for p in output_paths(connector, history))
    assert [p.pid for p in comfy_processes()] == [connector.comfy.pid]
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    # a restart picks a free port afresh; the old one may be reused since it was released
    assert connector.server_address.startswith("http://127.0.0.1:") and old_address
    connector.files.delete_outputs(history)


# --- conversion --------------------------------------------------------------------------------
# Through ``frontend_connector``, these run once per frontend: the pinned package and the newest release.
FRONTEND_VERSION_JS = "() => window.__COMFYUI_FRONTEND_VERSION__"


def conversion_suite() -> list[dict[str, Any]]:
    """The UI workflows converted below: titles, muted and bypassed nodes, combo and number widgets,
    a real text-to-image graph, a long chain, and one repeated so page state could leak into it."""
    muted = chain(empty_image(), invert(), save_image())
    add_node(muted, invert(), mode=2)
    add_node(muted, invert(), mode=4)
    return [large_chain(20), chain(empty_image(10, 10), save_image("b")), load_workflow("default_t2i.json"),
            chain(empty_image(), scale(20, 30), invert(), preview_image(), titles={2: "Resize"}),
            chain(empty_image(5, 5, 1), save_image("b")), muted]


@contextlib.asynccontextmanager
async def fresh_converter(config: Config, server_address: str) -> AsyncIterator[FrontendConverter]:
    """A converter with a browser of its own (not the connector's), its page loaded from ``server_address``."""
    converter = FrontendConverter(config)
    await converter.launch()
    try:
        await converter.load(server_address)
        yield converter
    finally:
        await converter.close()


@needs_test_server
async def test_the_page_runs_the_frontend_under_test(frontend_connector: ComfyConnector, frontend: Frontend) -> None:
    """The worker preloads the pinned frontend from disk while ComfyUI boots; a ComfyUI serving
    another build must get its own loaded instead, or the newest-frontend tier tests nothing."""
    assert frontend_connector.frontend.page is not None
    assert await frontend_connector.frontend.page.evaluate(FRONTEND_VERSION_JS) == frontend.version


async def test_converts_ui_workflow_with_the_real_frontend(frontend_connector: ComfyConnector) -> None:
    workflow = chain(empty_image(48, 40, 7), invert(), save_image("conv"), titles={3: "Final save"})
    prompt = await frontend_connector.get_prompt_from_workflow(workflow)
    assert prompt == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 7},
              "_meta": {"title": "EmptyImage"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert Image"}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "conv", "images": ["2", 0]},
              "_meta": {"title": "Final save"}},
    }


async def test_accepts_json_string_and_drops_muted_nodes(frontend_connector: ComfyConnector) -> None:
    workflow = chain(empty_image(), invert(), save_image())
    add_node(workflow, invert(), mode=2)  # muted
    add_node(workflow, invert(), mode=4)  # bypassed
    prompt = await frontend_connector.get_prompt_from_workflow(json.dumps(workflow))
    assert sorted(prompt) == ["1", "2", "3"]


async def test_default_text_to_image_graph_converts(frontend_connector: ComfyConnector) -> None:
    prompt = await frontend_connector.get_prompt_from_workflow(load_workflow("default_t2i.json"))
    assert {node["class_type"] for node in prompt.values()} == {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"}
    assert prompt["3"]["inputs"]["model"] == ["4", 0]


async def test_unknown_node_types_are_listed(frontend_connector: ComfyConnector) -> None:
    with pytest.raises(UnknownNodeTypesError) as caught:
        await frontend_connector.get_prompt_from_workflow(with_unknown_node("MyMissingNode"))
    assert caught.value.node_types == ["MyMissingNode"]
    assert "MyMissingNode" in str(caught.value)


async def test_legacy_node_types_load_as_the_frontend_loads_them(frontend_connector: ComfyConnector,
                                                                 frontend: Frontend) -> None:
    """Frontend 1.27 renames legacy types while loading (T2IAdapterLoader is a ControlNetLoader);
    1.58 no longer does, and there the type is missing, not a node without a class_type."""
    workflow = chain(empty_image(), invert(), save_image("legacy"))
    add_node(workflow, ("T2IAdapterLoader", ["adapter.pth"], [], [("CONTROL_NET", "CONTROL_NET")]))
    if frontend.name == "pinned":
        prompt = await frontend_connector.get_prompt_from_workflow(workflow)
        assert prompt["4"]["class_type"] == "ControlNetLoader"
        assert prompt["4"]["inputs"] == {"control_net_name": "adapter.pth"}
    else:
        with pytest.raises(UnknownNodeTypesError) as caught:
            await frontend_connector.get_prompt_from_workflow(workflow)
        assert caught.value.node_types == ["T2IAdapterLoader"]


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", {"foo": 1}, {}, {"1": {"inputs": {}}}])
async def test_bad_workflows_are_rejected_clearly(connector: ComfyConnector, bad: Any) -> None:
    with pytest.raises(WorkflowError, match="workflow"):
        await connector.run_workflow(bad)


async def test_api_workflow_is_not_a_ui_workflow(connector: ComfyConnector) -> None:
    with pytest.raises(WorkflowError, match="already API format"):
        await connector.get_prompt_from_workflow(api_prompt())


async def test_conversions_are_isolated_from_what_the_page_converted_before(
        frontend_connector: ComfyConnector) -> None:
    """Converting B gives the same result after A, C, … on one page as on a fresh page."""
    workflows = conversion_suite()
    async with fresh_converter(frontend_connector.config, frontend_connector.server_address) as warm:
        in_sequence = [await warm.convert(w) for w in workflows]
    for workflow, converted in zip(workflows, in_sequence, strict=True):
        async with fresh_converter(frontend_connector.config, frontend_connector.server_address) as fresh:
            assert await fresh.convert(workflow) == converted


@needs_test_server
async def test_newest_frontend_converts_the_suite_like_the_pinned_one(config_path: Path, tmp_path: Path) -> None:
    """Users on a newer ComfyUI get a newer frontend: the prompts it queues must not change."""
    config = Config.load(config_path)
    prompts = []
    for frontend in (pinned_frontend(), newest_frontend()):
        with start_server(str(tmp_path / frontend.name), frontend.comfy_args) as server:
            async with fresh_converter(config, server.url) as converter:
                assert converter.page is not None
                assert await converter.page.evaluate(FRONTEND_VERSION_JS) == frontend.version
                prompts.append([await converter.convert(workflow) for workflow in conversion_suite()])
    assert prompts[0] == prompts[1]


@pytest.mark.skipif(not shutil.which("chromium-headless-shell"),
                    reason="needs Debian's chromium-headless-shell (make test installs it with chromium)")
async def test_the_headless_shell_converts_the_suite_like_full_chromium(connector: ComfyConnector) -> None:
    """The worker prefers a headless shell (less memory): it must queue the very prompts full Chromium would."""
    prompts = []
    for executable in (shutil.which("chromium"), shutil.which("chromium-headless-shell")):
        config = dataclasses.replace(connector.config, chromium_executable=executable or "")
        async with fresh_converter(config, connector.server_address) as converter:
            prompts.append([await converter.convert(workflow) for workflow in conversion_suite()])
    assert prompts[0] == prompts[1]


async def test_conversion_cache_returns_independent_copies(frontend_connector: ComfyConnector) -> None:
    workflow = chain(empty_image(33, 33), save_image("cache"))
    first = await frontend_connector.get_prompt_from_workflow(workflow)
    first["1"]["inputs"]["width"] = 1
    second = await frontend_connector.get_prompt_from_workflow(dict(reversed(list(workflow.items()))))
    assert second["1"]["inputs"]["width"] == 33


async def test_conversion_timeout_retries_then_raises_timeout(frontend_connector: ComfyConnector) -> None:
    config = dataclasses.replace(frontend_connector.config, convert_timeout_s=0.0005, convert_attempts=2)
    async with fresh_converter(config, frontend_connector.server_address) as converter:
        with pytest.raises(TimeoutError, match="timed out 2 times"):
            await converter.convert(large_chain(60))


async def test_crashed_chromium_is_restarted_on_next_conversion(frontend_connector: ComfyConnector) -> None:
    converter = frontend_connector.frontend
    for pid in converter.chromium_pids:
        psutil.Process(pid).kill()
    await asyncio.sleep(0.5)
    prompt = await frontend_connector.get_prompt_from_workflow(chain(empty_image(71, 9), preview_image()))
    assert prompt["1"]["inputs"]["width"] == 71


async def test_the_page_is_replaced_in_the_background_after_its_conversions(
        frontend_connector: ComfyConnector, caplog: pytest.LogCaptureFixture) -> None:
    """PAGE_RECYCLE_CONVERSIONS: conversions go on while the fresh page loads, and give the same prompts after."""
    config = dataclasses.replace(frontend_connector.config, page_recycle_conversions=3)
    converter = FrontendConverter(config)
    caplog.set_level(logging.INFO, logger="comfy_serverless.browser")
    try:
        await converter.launch()
        await converter.load(frontend_connector.server_address)
        before = [await converter.convert(chain(empty_image(10 + i, 7), invert(), save_image())) for i in range(4)]
        for _ in range(600):
            if "replaced the frontend page after" in caplog.text:
                break
            await asyncio.sleep(0.1)
        assert "replaced the frontend page after 3 conversions" in caplog.text
        after = [await converter.convert(chain(empty_image(10 + i, 7), invert(), save_image(), titles={1: "x"}))
                 for i in range(4)]
        for old, new in zip(before, after, strict=True):
            assert new == {**old, "1": {**old["1"], "_meta": {"title": "x"}}}
    finally:
        await converter.close()


async def test_the_frontend_page_reaches_no_host_but_comfyui(connector: ComfyConnector) -> None:
    """Neither a workflow (a widget value, a markdown note, an image URL) nor the page itself reaches another host."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"GIF89a", content_type="image/gif")

    app = web.Application()
    app.add_routes([web.get("/{path:.*}", record)])
    async with loopback_server(app) as other:
        await _convert_while_reaching_for(connector, other, hits)


async def _convert_while_reaching_for(connector: ComfyConnector, other: str, hits: list[str]) -> None:
    converter = FrontendConverter(connector.config)
    try:
        await converter.launch()
        await converter.load(connector.server_address)
        workflow = chain(load_image(f"{other}/widget.png"), preview_image())
        add_node(workflow, ("MarkdownNote", [f"![a]({other}/markdown.png) <img src='{other}/html.png'>"], [], []))
        add_node(workflow, ("Note", [f"{other}/note.png"], [], []))
        prompt = await converter.convert(workflow)
        assert prompt["1"]["inputs"]["image"] == f"{other}/widget.png"
        page = converter.page
        assert page is not None
        await page.evaluate("""(other) => {
            fetch(other + "/fetch").catch(() => null);
            new Image().src = other + "/image.png";
            const link = document.createElement("link");
            link.rel = "stylesheet"; link.href = other + "/style.css";
            document.head.appendChild(link);
        }""", other)
        await asyncio.sleep(1.0)
        assert hits == []
        # ComfyUI's own origin still answers the page
        assert await page.evaluate("async () => (await fetch('/object_info')).ok") is True
    finally:
        await converter.close()


# --- execution ---------------------------------------------------------------------------------
async def test_run_ui_workflow_returns_history_with_outputs(connector: ComfyConnector) -> None:
    workflow = chain(empty_image(16, 16), invert(), save_image("run-ui"))
    history = await connector.run_workflow(workflow)
    (prompt_id, entry), = history.items()
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"] == workflow
    assert entry["prompt"][3]["client_id"] == connector.client_id
    (image,) = entry["outputs"]["3"]["images"]
    assert image["filename"].startswith("run-ui_") and image["type"] == "output"
    assert all(p.is_file() for p in output_paths(connector, history))
    connector.files.delete_outputs(history)


async def test_run_api_prompt_without_conversion(connector: ComfyConnector) -> None:
    history = await connector.run_workflow(api_prompt(prefix="api"), use_workflow_json=False)
    (entry,) = history.values()
    assert "extra_pnginfo" not in entry["prompt"][3]
    connector.files.delete_outputs(history)


async def test_use_workflow_json_false_rejects_ui_format(connector: ComfyConnector) -> None:
    with pytest.raises(WorkflowError, match="API prompt"):
        await connector.run_workflow(chain(empty_image(), preview_image()), use_workflow_json=False)


async def test_same_prompt_twice_gives_existing_files_both_times(connector: ComfyConnector) -> None:
    for _ in range(2):
        history = await connector.run_workflow(api_prompt(prefix="repeat"))
        paths = output_paths(connector, history)
        assert paths and all(p.is_file() for p in paths)
        connector.files.delete_outputs(history)


async def test_validation_error_names_node_class_and_input(connector: ComfyConnector) -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "missing-file.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(PromptValidationError) as caught:
        await connector.run_workflow(prompt)
    message = str(caught.value)
    assert "node 1 (LoadImage) input 'image'" in message and "missing-file.png" in message
    assert caught.value.details["node_errors"]["1"]["class_type"] == "LoadImage"


async def test_dangling_link_is_rejected_before_queueing(connector: ComfyConnector) -> None:
    prompt = api_prompt(prefix="dangling")
    prompt["3"]["inputs"]["images"] = ["9", 0]
    with pytest.raises(WorkflowError, match="node 3 .*links to node 9"):
        await connector.run_workflow(prompt)


async def test_partially_valid_prompt_fails_and_leaves_no_files(connector: ComfyConnector) -> None:
    """ComfyUI answers 200 and runs only the valid outputs; the worker fails the job instead."""
    prompt = api_prompt(prefix="partial-valid")
    prompt["4"] = {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}}
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "partial-bad"}}
    before = sorted(connector.files.folders.output.rglob("*"))
    with pytest.raises(PromptValidationError, match=r"node 4 \(EmptyImage\) input 'width'"):
        await connector.run_workflow(prompt)
    assert sorted(connector.files.folders.output.rglob("*")) == before


async def test_value_out_of_range_is_a_validation_error(connector: ComfyConnector) -> None:
    prompt = api_prompt(width=0)
    with pytest.raises(PromptValidationError, match=r"node 1 \(EmptyImage\) input 'width'"):
        await connector.run_workflow(prompt)


async def test_unknown_class_type_is_reported_before_queueing(connector: ComfyConnector) -> None:
    prompt = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(UnknownNodeTypesError, match="NoSuchNode"):
        await connector.run_workflow(prompt)


async def test_cycle_in_api_prompt_is_rejected(connector: ComfyConnector) -> None:
    prompt = {"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    with pytest.raises(WorkflowError, match="cycle"):
        await connector.run_workflow(prompt)


async def test_execution_error_carries_node_and_exception(connector: ComfyConnector) -> None:
    prompt = {"1": {"class_type": "EmptyImage",
                    "inputs": {"width": 16384, "height": 16384, "batch_size": 4096, "color": 1}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(ExecutionError) as caught:
        await connector.run_workflow(prompt)
    error = caught.value
    assert error.details["node_id"] == "1" and error.details["node_type"] == "EmptyImage"
    assert error.details["exception_type"] == "RuntimeError"
    assert error.details["traceback"] and "allocate" in error.details["exception_message"]
    assert "node 1 (EmptyImage) raised RuntimeError" in str(error)


async def test_interrupt_raises_a_distinct_error(connector: ComfyConnector) -> None:
    await slow_down(connector)

    async def interrupt_soon() -> None:
        await asyncio.sleep(1.0)
        await connector.client.request("POST", "/interrupt", {})

    interrupter = asyncio.create_task(interrupt_soon())
    with pytest.raises(ExecutionInterruptedError, match="interrupted"):
        await connector.run_workflow(slow_prompt())
    await interrupter


async def test_timeout_interrupts_and_the_next_run_works(connector: ComfyConnector) -> None:
    await slow_down(connector)
    with pytest.raises(RunTimeoutError) as caught:
        await connector.run_workflow(slow_prompt(), timeout_s=0.5)
    assert isinstance(caught.value, TimeoutError) and caught.value.stuck is False
    queue = await connector.client.get_json("/queue")
    assert queue == {"queue_running": [], "queue_pending": []}
    if not REAL_COMFY:
        await set_faults(connector, reset=True)
    history = await connector.run_workflow(api_prompt(prefix="after-timeout"))
    connector.files.delete_outputs(history)


async def test_progress_callback_receives_node_value_and_max(connector: ComfyConnector) -> None:
    events = []
    history = await connector.run_workflow(chain(empty_image(8, 8, 99), invert(), save_image("progress")),
                                           progress=events.append)
    assert {e.node for e in events} >= {"1", "2", "3"}
    assert all(e.max >= e.value >= 0 for e in events) and events[-1].nodes_total == 3
    connector.files.delete_outputs(history)


async def test_dropped_websocket_mid_run_reconnects_and_completes(connector: ComfyConnector) -> None:
    await slow_down(connector)
    client = connector.client

    async def drop_soon() -> None:
        await asyncio.sleep(0.5)
        assert client.websocket is not None
        await client.websocket.close()  # as if the network dropped it: the reader sees the close

    dropper = asyncio.create_task(drop_soon())
    history = await connector.run_workflow(slow_prompt())
    await dropper
    (entry,) = history.values()
    assert entry["status"]["status_str"] == "success"
    assert client.socket_open
    if not REAL_COMFY:
        await set_faults(connector, reset=True)
    connector.files.delete_outputs(history)


async def test_worker_comfyuis_reconnect_and_trace_variables_take_effect(connector: ComfyConnector, config_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """WEBSOCKET_RECONNECT_ATTEMPTS x WEBSOCKET_RECONNECT_DELAY_S is the budget a dropped socket is reopened in,
    WEBSOCKET_TRACE logs each frame and (re)connect; and COMFY_LOG_LEVEL is ComfyUI's --verbose."""
    await connector.kill_api()  # one ComfyUI at a time on this machine
    config = dataclasses.replace(Config.load(config_path), websocket_reconnect_attempts=3,
                                 websocket_reconnect_delay_s=0.5, websocket_trace=True, comfy_log_level="WARNING")
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    async with ComfyConnector(config) as scoped:
        assert scoped.comfy.pid is not None
        assert "--verbose WARNING" in " ".join(psutil.Process(scoped.comfy.pid).cmdline())
        await slow_down(scoped)
        client = scoped.client

        async def drop_soon() -> None:
            await asyncio.sleep(0.5)
            assert client.websocket is not None
            await client.websocket.close()

        dropper = asyncio.create_task(drop_soon())
        history = await scoped.run_workflow(slow_prompt())
        await dropper
        (entry,) = history.values()
        assert entry["status"]["status_str"] == "success"
        scoped.files.delete_outputs(history)
        if not REAL_COMFY:
            await set_faults(scoped, reset=True)
        traced = [record.getMessage() for record in caplog.records if "websocket trace" in record.getMessage()]
        assert sum("connected to" in line for line in traced) >= 2 and any("TEXT frame" in line for line in traced)

        closed = ComfyClient("http://127.0.0.1:9", http_timeout_s=1, is_alive=lambda: True, describe_exit=str,
                             reconnect=config.reconnect)
        started = time.monotonic()
        with pytest.raises(ComfyUnavailableError):
            await closed._reconnect()  # nothing listens on port 9: every attempt fails, for the whole budget
        assert time.monotonic() - started >= 1.0  # 1.5 s budget, attempts 0.5 s apart: the last one at 1.0 s
        await closed.close()


@needs_test_server
async def test_completion_sent_while_disconnected_is_recovered_from_history(connector: ComfyConnector) -> None:
    await set_faults(connector, drop_websocket_during_next_prompt=True, node_delay_s=0.3)
    history = await connector.run_workflow(api_prompt(prefix="dropped"))
    await set_faults(connector, reset=True)
    (entry,) = history.values()
    assert entry["status"]["status_str"] == "success"
    connector.files.delete_outputs(history)


# --- uploads -----------------------------------------------------------------------------------
async def test_upload_data_places_file_and_never_clobbers(connector: ComfyConnector, tmp_path: Path) -> None:
    source = tmp_path / "up.png"
    source.write_bytes(b"one")
    first = Path(connector.upload_data(source, "input", subfolder="contract", is_ephemeral=True))
    source.write_bytes(b"two")
    second = Path(connector.upload_data(source, "input", subfolder="contract", is_ephemeral=True))
    assert first == connector.files.folders.input / "contract" / "up.png"
    assert second.name == "up (1).png" and first.read_bytes() == b"one" and second.read_bytes() == b"two"
    third = Path(connector.upload_data(source, "input", subfolder="contract", overwrite=True,
                                             is_ephemeral=True))
    assert third == first and first.read_bytes() == b"two"
    assert connector.files.delete_ephemeral() == []
    assert not first.exists() and not second.exists() and not (connector.files.folders.input / "contract").exists()


async def test_upload_data_to_a_model_folder(connector: ComfyConnector, tmp_path: Path) -> None:
    source = tmp_path / "tiny.safetensors"
    source.write_bytes(b"\0" * 16)
    placed = Path(connector.upload_data(source, "models", subfolder="loras", is_ephemeral=True))
    assert placed.parent == (connector.files.folders.models / "loras").resolve()
    with pytest.raises(ValueError, match="subfolder"):
        connector.upload_data(source, "models")
    with pytest.raises(ValueError, match="model folder"):
        connector.upload_data(source, "models", subfolder="not_a_model_folder")
    connector.files.delete_ephemeral([str(placed)])
    assert not placed.exists()


@pytest.mark.parametrize("subfolder,name", [("../escape", None), ("/abs", None), ("ok", "../../x.png"),
                                            ("a\x00b", None), (None, "/etc/passwd")])
async def test_upload_data_refuses_paths_that_escape(connector: ComfyConnector, tmp_path: Path,
                                                     subfolder: str | None, name: str | None) -> None:
    source = tmp_path / "f.png"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        connector.files.upload(source, "input", subfolder=subfolder, name=name)


async def test_upload_data_refuses_symlink_escape(connector: ComfyConnector, tmp_path: Path) -> None:
    source = tmp_path / "f.png"
    source.write_bytes(b"x")
    link = connector.files.folders.input / "sneaky-link"
    link.symlink_to(tmp_path)
    try:
        with pytest.raises(ValueError, match="symlink"):
            connector.upload_data(source, "input", subfolder="sneaky-link")
    finally:
        link.unlink()


async def test_upload_data_missing_source(connector: ComfyConnector, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        connector.upload_data(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="folder_type"):
        connector.upload_data(__file__, "elsewhere")


async def test_files_upload_can_move_instead_of_copy(connector: ComfyConnector, tmp_path: Path) -> None:
    source = tmp_path / "moved.png"
    source.write_bytes(b"payload")
    placed = Path(connector.files.upload(source, "input", subfolder="contract-move", name="renamed.png",
                                         move=True, is_ephemeral=True))
    assert not source.exists() and placed.read_bytes() == b"payload" and placed.name == "renamed.png"
    connector.files.delete_ephemeral([str(placed)])
    assert not placed.exists()
