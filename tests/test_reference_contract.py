"""The ComfyConnector API reference's own promises, called exactly as its examples call them.

Users code against that reference (shared/reference/comfyconnector-api-reference.md), so these
tests copy its calls: ``upload_data`` without ``await``, ``if not await
connector._validate_resources()``, ``except RuntimeError`` around ``create()``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from comfy_serverless import ComfyConnector, ConnectorState
from tests.support.comfy import api_prompt, needs_test_server, our_processes, write_config


# --- upload_data: synchronous, returns the full path as str -------------------------------------
async def test_upload_data_is_called_without_await_as_in_the_reference(connector: ComfyConnector,
                                                                       tmp_path: Path) -> None:
    photo = tmp_path / "my_photo.jpg"
    photo.write_bytes(b"jpeg bytes")
    image_path = connector.upload_data(source_path=str(photo), folder_type="input", is_ephemeral=True)
    assert isinstance(image_path, str)
    assert Path(image_path) == (connector.files.folders.input / "my_photo.jpg").resolve()
    assert Path(image_path).read_bytes() == b"jpeg bytes"

    model = tmp_path / "my_model.safetensors"
    model.write_bytes(b"\0" * 32)
    model_path = connector.upload_data(source_path=str(model), folder_type="models", subfolder="checkpoints",
                                       overwrite=True)
    assert isinstance(model_path, str) and Path(model_path).read_bytes() == b"\0" * 32
    assert Path(model_path).parent == connector.files.model_folder("checkpoints").resolve()

    data = tmp_path / "data.json"
    data.write_text("{}")
    temp_path = connector.upload_data(source_path=str(data), folder_type="temp", subfolder="processing",
                                      is_ephemeral=True)
    assert Path(temp_path) == (connector.files.folders.temp / "processing" / "data.json").resolve()

    assert connector.files.delete_ephemeral() == []
    assert not Path(image_path).exists() and not Path(temp_path).exists()
    Path(model_path).unlink()


async def test_upload_data_in_a_batch_loop_as_in_the_complete_example(connector: ComfyConnector,
                                                                      tmp_path: Path) -> None:
    input_dir = tmp_path / "input_images"
    input_dir.mkdir()
    for index in range(5):
        (input_dir / f"img{index}.jpg").write_bytes(bytes([index]) * 10)
    image_paths = []
    for image_file in sorted(input_dir.glob("*.jpg")):
        uploaded_path = connector.upload_data(source_path=str(image_file), folder_type="input",
                                              subfolder="batch", is_ephemeral=True)
        image_paths.append(uploaded_path)
    assert [Path(p).name for p in image_paths] == [f"img{i}.jpg" for i in range(5)]
    assert all(Path(p).parent == (connector.files.folders.input / "batch").resolve() for p in image_paths)
    assert connector.files.delete_ephemeral() == []
    assert not (connector.files.folders.input / "batch").exists()


async def test_upload_data_of_a_missing_file_raises_file_not_found(connector: ComfyConnector) -> None:
    with pytest.raises(FileNotFoundError):
        connector.upload_data("missing_file.jpg")


# --- _validate_resources: a bool ----------------------------------------------------------------
async def test_validate_resources_is_true_when_everything_works(connector: ComfyConnector) -> None:
    assert await connector._validate_resources() is True


async def test_validate_resources_restarts_what_died_and_answers_true(connector: ComfyConnector) -> None:
    old_comfy = connector.comfy.pid
    assert old_comfy is not None
    os.killpg(old_comfy, signal.SIGKILL)
    for process in our_processes():
        if "chrom" in process.name().lower():
            process.kill()
    await asyncio.sleep(0.5)
    assert await connector._validate_resources() is True
    assert connector.comfy.pid != old_comfy
    history = await connector.run_workflow(api_prompt(prefix="validated"))
    connector.files.delete_outputs(history)


@needs_test_server
async def test_validate_resources_is_false_when_comfy_cannot_come_back(connector: ComfyConnector,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_TEST_BOOT_EXIT_CODE", "3")  # every restart of ComfyUI now crashes at boot
    pid = connector.comfy.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    assert await connector._validate_resources() is False
    await connector.kill_api()


async def test_validate_resources_is_false_after_kill_api_and_create_works_again(
        connector: ComfyConnector, config_path: Path) -> None:
    await connector.kill_api()
    assert await connector._validate_resources() is False
    again = await ComfyConnector.create(str(config_path))
    assert again is not connector and again.state is ConnectorState.READY
    assert await again._validate_resources() is True


# --- failed starts are RuntimeErrors ------------------------------------------------------------
async def _create_expecting_runtime_error(path: Path) -> RuntimeError:
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()
    try:
        await ComfyConnector.create(str(path))
    except RuntimeError as e:  # the reference's own handler
        error = e
    else:
        pytest.fail("create() succeeded")
    failed = ComfyConnector.current()
    if failed is not None:
        await failed.kill_api()
    assert [p for p in our_processes() if "main.py" in " ".join(p.cmdline())] == []
    return error


@needs_test_server
async def test_comfy_exiting_at_boot_is_a_runtime_error(comfy_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFY_TEST_BOOT_EXIT_CODE", "3")
    error = await _create_expecting_runtime_error(write_config(tmp_path / "c.json", comfy_root, INITIAL_PORT=18600))
    assert "exited with code 3" in str(error)


async def test_missing_chromium_is_a_runtime_error(comfy_root: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json", comfy_root, INITIAL_PORT=18600,
                        CHROMIUM_EXECUTABLE=str(tmp_path / "no-such-chromium"))
    error = await _create_expecting_runtime_error(path)
    assert "no-such-chromium" in str(error)


async def test_missing_config_file_is_a_runtime_error(tmp_path: Path) -> None:
    error = await _create_expecting_runtime_error(tmp_path / "absent.json")
    assert "absent.json" in str(error)


async def test_unreadable_self_test_is_a_runtime_error(comfy_root: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.json", comfy_root, INITIAL_PORT=18600,
                        TEST_PAYLOAD_FILE=str(tmp_path / "no-such-test.json"))
    error = await _create_expecting_runtime_error(path)
    assert "no-such-test.json" in str(error)
