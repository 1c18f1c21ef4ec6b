"""Shared fixtures: which ComfyUI the contract tests run against, and a connector booted on it.

By default the tests start the ComfyUI-compatible test server in tests/comfy_test_server
(real frontend, real protocol). With ``COMFYUI_PATH`` set they run against that real
ComfyUI instead (``API_COMMAND_LINE`` says how to start it, e.g.
``"/opt/comfy-venv/bin/python main.py --cpu"``). Tests that need the test server's fault
injection are skipped on a real ComfyUI, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless import ComfyConnector

TESTS_DIR = Path(__file__).resolve().parent
TEST_SERVER_MAIN = TESTS_DIR / "comfy_test_server" / "main.py"
WORKFLOWS_DIR = TESTS_DIR / "workflows"
REAL_COMFY = bool(os.environ.get("COMFYUI_PATH"))

needs_test_server = pytest.mark.skipif(
    REAL_COMFY, reason="uses the test server's fault injection, which a real ComfyUI does not have")


def chromium_executable() -> str:
    """The system Chromium where there is one (CI installs Debian's package), else Playwright's."""
    return os.environ.get("CHROMIUM_EXECUTABLE") or shutil.which("chromium") or ""


def connector_settings(comfy_root: Path, **overrides: Any) -> dict[str, Any]:
    """Config keys for a connector on this test run's ComfyUI; ``overrides`` win."""
    settings: dict[str, Any] = {"INITIAL_PORT": 18300, "CHROMIUM_EXECUTABLE": chromium_executable(),
                                "COMFY_START_ATTEMPTS_SLEEP": 0.05, "MAX_COMFY_START_ATTEMPTS": 2400,
                                "KILL_GRACE_S": 5.0, "INTERRUPT_GRACE_S": 20.0}
    if not REAL_COMFY:
        settings |= {"API_COMMAND_LINE": f"{sys.executable} {TEST_SERVER_MAIN}", "COMFYUI_PATH": str(comfy_root)}
    return settings | overrides


def write_config(path: Path, comfy_root: Path, **overrides: Any) -> Path:
    path.write_text(json.dumps(connector_settings(comfy_root, **overrides)))
    return path


@pytest.fixture(scope="session")
def comfy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComfyUI's base directory: the real one, or a fresh folder for the test server."""
    if REAL_COMFY:
        return Path(os.environ["COMFYUI_PATH"])
    root = tmp_path_factory.mktemp("comfy")
    for folder in ("input", "output", "models/checkpoints", "models/loras", "user/default"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def config_path(comfy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "connector.json", comfy_root)


@pytest.fixture
async def connector(config_path: Path) -> AsyncIterator[ComfyConnector]:
    """The shared ready connector; booted again if a test killed it."""
    instance = ComfyConnector._instance
    if instance is not None and instance._config_path != str(config_path):
        await instance.kill_api()
    yield await ComfyConnector.create(str(config_path))


@pytest.fixture(scope="session", autouse=True)
async def _kill_connector_at_end() -> AsyncIterator[None]:
    yield
    if ComfyConnector._instance is not None:
        await ComfyConnector._instance.kill_api()


def load_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS_DIR / name).read_text())
