"""Faults injected into a real ComfyUI-compatible process: the worker fails the job clearly and keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from comfy_serverless import (
    ComfyConnector,
    ComfyStartError,
    ComfyUnavailableError,
    ConnectorState,
    RunTimeoutError,
)
from tests.support.comfy import (
    api_prompt,
    comfy_processes,
    needs_test_server,
    output_paths,
    set_faults,
    shared_connector,
    write_config,
)

pytestmark = needs_test_server


@pytest.fixture
async def fault_connector(comfy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ComfyConnector]:
    """A connector with short grace periods, so that stuck-ComfyUI paths run in seconds."""
    path = write_config(tmp_path_factory.getbasetemp() / "faults.json", comfy_root, INTERRUPT_GRACE_S=1.5,
                        KILL_GRACE_S=2.0, INITIAL_PORT=18400)
    connector = await shared_connector(path)
    yield connector
    await set_faults_if_alive(connector)


async def set_faults_if_alive(connector: ComfyConnector) -> None:
    if connector.state is ConnectorState.READY and connector.comfy.is_alive():
        await set_faults(connector, reset=True)


async def run_ok(connector: ComfyConnector, prefix: str) -> None:
    history = await connector.run_workflow(api_prompt(prefix=prefix))
    assert all(p.is_file() for p in output_paths(connector, history))
    connector.files.delete_outputs(history)


async def test_comfy_killed_mid_job_fails_fast_and_next_job_runs(fault_connector: ComfyConnector) -> None:
    old_pid = fault_connector.comfy.pid
    await set_faults(fault_connector, exit_during_next_prompt=True, node_delay_s=0.5)
    started = time.monotonic()
    with pytest.raises(ComfyUnavailableError, match="exit code 137"):
        await fault_connector.run_workflow(api_prompt(prefix="killed"))
    assert time.monotonic() - started < 5
    await run_ok(fault_connector, "after-kill")  # waits for the restart begun when the job failed
    assert fault_connector.comfy.pid != old_pid
    assert [p.pid for p in comfy_processes()] == [fault_connector.comfy.pid]


async def test_a_comfy_that_cannot_come_back_says_so_until_it_does(fault_connector: ComfyConnector,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``restart_failed`` is a typed fact of the error and of the server (the RunPod adapter asks for a fresh
    worker on it); a later successful restart clears it."""
    monkeypatch.setenv("COMFY_TEST_BOOT_EXIT_CODE", "3")  # every ComfyUI started from now on exits at boot
    psutil.Process(fault_connector.comfy.pid).kill()
    with pytest.raises(ComfyUnavailableError, match="could not be restarted") as caught:
        await fault_connector.run_workflow(api_prompt(prefix="gone"))
    assert caught.value.restart_failed is True and caught.value.to_dict()["restart_failed"] is True
    assert fault_connector.comfy.restart_failed is True
    monkeypatch.delenv("COMFY_TEST_BOOT_EXIT_CODE")
    assert await fault_connector._validate_resources() is True
    assert fault_connector.comfy.restart_failed is False
    await run_ok(fault_connector, "back")


async def test_hang_times_out_interrupts_and_next_job_runs(fault_connector: ComfyConnector) -> None:
    pid = fault_connector.comfy.pid
    await set_faults(fault_connector, hang_next_prompt=True)
    started = time.monotonic()
    with pytest.raises(RunTimeoutError) as caught:
        await fault_connector.run_workflow(api_prompt(prefix="hang"), timeout_s=1.0)
    assert caught.value.stuck is False and time.monotonic() - started < 5
    assert fault_connector.comfy.pid == pid  # the interrupt sufficed: no restart
    await run_ok(fault_connector, "after-hang")


async def test_hang_ignoring_interrupt_restarts_comfy(fault_connector: ComfyConnector) -> None:
    pid = fault_connector.comfy.pid
    await set_faults(fault_connector, hang_ignoring_interrupt=True)
    with pytest.raises(RunTimeoutError, match="restarted") as caught:
        await fault_connector.run_workflow(api_prompt(prefix="stuck"), timeout_s=1.0)
    assert caught.value.stuck is True
    assert fault_connector.comfy.pid != pid and not psutil.pid_exists(pid or -1)
    await run_ok(fault_connector, "after-stuck")
    assert len(comfy_processes()) == 1


async def test_execution_failure_midway_leaves_no_output_files(fault_connector: ComfyConnector) -> None:
    prompt = api_prompt(prefix="half-done")
    prompt["4"] = {"class_type": "EmptyImage",
                   "inputs": {"width": 16384, "height": 16384, "batch_size": 4096, "color": 1}}
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    before = sorted(fault_connector.files.folders.output.rglob("*"))
    with pytest.raises(Exception, match="allocate"):
        await fault_connector.run_workflow(prompt)
    assert sorted(fault_connector.files.folders.output.rglob("*")) == before


async def test_cancelled_run_interrupts_comfy(fault_connector: ComfyConnector) -> None:
    await set_faults(fault_connector, hang_next_prompt=True)
    task = asyncio.create_task(fault_connector.run_workflow(api_prompt(prefix="cancelled")))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    queue = await fault_connector.client.get_json("/queue")
    assert queue == {"queue_running": [], "queue_pending": []}
    await run_ok(fault_connector, "after-cancel")


# --- boot faults: each boots its own connector ---------------------------------------------------
async def boot(comfy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
               **settings: object) -> ComfyConnector:
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = write_config(tmp_path / "boot.json", comfy_root, INITIAL_PORT=18500, **settings)
    return await ComfyConnector.create(str(path))


async def test_boot_exit_reports_code_and_log_tail_at_once(comfy_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with pytest.raises(ComfyStartError) as caught:
        await boot(comfy_root, tmp_path, monkeypatch, {"COMFY_TEST_BOOT_EXIT_CODE": "3"})
    assert time.monotonic() - started < 15  # not the 120 s budget
    message = str(caught.value)
    assert "exited with code 3 during startup" in message and "Traceback" in message
    assert caught.value.details["exit_code"] == 3
    assert ComfyConnector.current() is not None and ComfyConnector.current().state is ConnectorState.ERROR
    await ComfyConnector.current().kill_api()
    assert comfy_processes() == []


async def test_boot_slower_than_budget_is_a_clear_error(comfy_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ComfyStartError, match=r"did not answer .* within 1 s") as caught:
        await boot(comfy_root, tmp_path, monkeypatch, {"COMFY_TEST_BOOT_DELAY_S": "30"},
                   MAX_COMFY_START_ATTEMPTS=20, COMFY_START_ATTEMPTS_SLEEP=0.05)
    assert "last lines" in str(caught.value)
    assert ComfyConnector.current() is not None
    await ComfyConnector.current().kill_api()
    assert comfy_processes() == []


async def test_failing_self_test_leaves_state_error(comfy_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad_self_test.json"
    prompt = api_prompt(width=0)
    bad.write_text(json.dumps(prompt))
    with pytest.raises(ComfyStartError, match="self-test") as caught:
        await boot(comfy_root, tmp_path, monkeypatch, {}, TEST_PAYLOAD_FILE=str(bad))
    assert "width" in str(caught.value)
    instance = ComfyConnector.current()
    assert instance is not None and instance.state is ConnectorState.ERROR
    await instance.kill_api()
    assert instance.state is ConnectorState.KILLED and comfy_processes() == []
