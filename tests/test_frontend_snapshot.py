"""The frontend record (FRONTEND_SNAPSHOT): made by the CLI, replayed while ComfyUI boots, checked afterwards."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_serverless import ComfyConnector, ConfigError
from comfy_serverless.frontend_record import FrontendRecord, structure_hash
from tests.support.comfy import write_config
from tests.support.ui_workflows import chain, empty_image, invert, save_image

WORKFLOW = chain(empty_image(21, 13, 5), invert(), save_image("snapshot"), titles={2: "Flip"})


@pytest.fixture(scope="module")
def record_path(comfy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A record made by the CLI exactly as the Dockerfile runs it (configuration from the environment)."""
    folder = tmp_path_factory.mktemp("snapshot")
    config = write_config(folder / "snapshot-config.json", comfy_root, INITIAL_PORT=18700)
    path = folder / "frontend-snapshot.json"
    env = {**os.environ, "COMFY_SERVERLESS_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-m", "comfy_serverless.snapshot_frontend", str(path)], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recorded" in result.stderr
    return path


@pytest.fixture(autouse=True)
def slow_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server boots in a moment; a real ComfyUI takes seconds, in which the page sets up from the record."""
    monkeypatch.setenv("COMFY_TEST_BOOT_DELAY_S", "8")


async def boot_with(comfy_root: Path, tmp_path: Path, record: Path | None) -> ComfyConnector:
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()
    settings = {"FRONTEND_SNAPSHOT": str(record)} if record else {}
    config = write_config(tmp_path / f"with-{record.stem if record else 'none'}.json", comfy_root,
                          INITIAL_PORT=18720, **settings)
    return await ComfyConnector.create(str(config))


def edited_record(record_path: Path, tmp_path: Path, **changes: str) -> Path:
    data = json.loads(record_path.read_text())
    data.update(changes)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def test_the_record_holds_what_the_frontend_reads(record_path: Path) -> None:
    record = FrontendRecord.load(record_path)
    for path in ("/api/object_info", "/api/extensions", "/api/settings", "/api/users"):
        assert record.responses[path].status == 200, path
    settings = json.loads(record.responses["/api/settings"].body)
    assert settings["Comfy.Workflow.Persist"] is False  # the worker's own settings, not a fresh user's
    assert not any(key.startswith("/assets/") for key in record.responses)  # not the frontend's static files
    assert "/user.css" in record.responses  # ComfyUI's own stylesheet route: held, it would hold the page


async def test_a_cold_start_replays_the_record_and_converts_the_same(
        record_path: Path, comfy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    plain = await boot_with(comfy_root, tmp_path, None)
    expected = await plain.get_prompt_from_workflow(WORKFLOW)
    connector = await boot_with(comfy_root, tmp_path, record_path)
    assert "answers replayed" in caplog.text and "stale" not in caplog.text
    assert await connector.get_prompt_from_workflow(WORKFLOW) == expected
    history = await connector.run_workflow(WORKFLOW)
    connector.files.delete_outputs(history)
    await connector.kill_api()


async def test_a_record_of_other_nodes_reloads_the_page_from_comfyui(
        record_path: Path, comfy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stale = edited_record(record_path, tmp_path, object_info_hash="0" * 64, structure_hash="0" * 64)
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    connector = await boot_with(comfy_root, tmp_path, stale)
    assert "is stale (the node definitions differ); reloading the page from ComfyUI" in caplog.text
    prompt = await connector.get_prompt_from_workflow(WORKFLOW)
    assert prompt["2"]["_meta"]["title"] == "Flip" and prompt["1"]["inputs"]["width"] == 21
    await connector.kill_api()


async def test_a_record_of_other_files_only_refreshes_the_lists(
        record_path: Path, comfy_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other_files = edited_record(record_path, tmp_path, object_info_hash="0" * 64)
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    connector = await boot_with(comfy_root, tmp_path, other_files)
    assert "file lists changed since FRONTEND_SNAPSHOT was made; refreshing them" in caplog.text
    assert "reloading" not in caplog.text
    assert (await connector.get_prompt_from_workflow(WORKFLOW))["1"]["inputs"]["height"] == 13
    await connector.kill_api()


@pytest.mark.parametrize("content", ["not json", json.dumps({"version": 99}), json.dumps({"version": 1})])
async def test_an_unusable_record_stops_the_start_with_its_key(comfy_root: Path, tmp_path: Path,
                                                               content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match="FRONTEND_SNAPSHOT .*bad.json cannot be used"):
        await boot_with(comfy_root, tmp_path, bad)
    failed = ComfyConnector.current()
    if failed is not None:
        await failed.kill_api()


def test_structure_hash_ignores_file_lists_only() -> None:
    object_info = json.loads((Path(__file__).parent / "comfy_test_server" / "object_info.json").read_text())
    files_changed = copy.deepcopy(object_info)
    files_changed["LoadImage"]["input"]["required"]["image"][0] = ["another.png"]
    assert structure_hash(files_changed) == structure_hash(object_info)
    renamed = copy.deepcopy(object_info)
    renamed["LoadImage"]["input"]["required"]["picture"] = renamed["LoadImage"]["input"]["required"].pop("image")
    assert structure_hash(renamed) != structure_hash(object_info)
