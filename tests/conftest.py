"""Shared fixtures: which ComfyUI the contract tests run against, and a connector booted on it.

By default the tests start the ComfyUI-compatible test server in tests/comfy_test_server
(real frontend, real protocol). With ``COMFYUI_PATH`` set they run against that real
ComfyUI instead (``API_COMMAND_LINE`` says how to start it, e.g.
``"/opt/comfy-venv/bin/python main.py --cpu"``). Tests that need the test server's fault
injection are skipped on a real ComfyUI, saying so.

The conversion tests run twice, through ``frontend_connector``: on a ComfyUI serving the
pinned frontend package and on one serving the newest release (``--front-end-root``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless import ComfyConnector

TESTS_DIR = Path(__file__).resolve().parent
TEST_SERVER_MAIN = TESTS_DIR / "comfy_test_server" / "main.py"
WORKFLOWS_DIR = TESTS_DIR / "workflows"
REQUIREMENTS_DEV = TESTS_DIR.parent / "builder" / "requirements-dev.txt"
NEWEST_FRONTEND_DIR = TESTS_DIR.parent / ".frontend-latest"
FRONTEND_PACKAGE = "comfyui-frontend-package"
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


async def shared_connector(config_path: Path) -> ComfyConnector:
    """The process's ready connector on this config (booted again if a test killed it).

    It is a singleton, so one on another config is killed first.
    """
    instance = ComfyConnector.current()
    if instance is not None and instance.config_path != str(config_path):
        await instance.kill_api()
    return await ComfyConnector.create(str(config_path))


@pytest.fixture
async def connector(config_path: Path) -> AsyncIterator[ComfyConnector]:
    """The shared ready connector on the default config."""
    yield await shared_connector(config_path)


@dataclass(frozen=True)
class Frontend:
    """A frontend build the conversion tests run against, and how ComfyUI is told to serve it."""

    name: str
    version: str
    comfy_args: tuple[str, ...]


def newest_frontend_version() -> str:
    """The version on requirements-dev.txt's ``# newest-frontend:`` line (local_setup.sh installs that)."""
    prefix = f"# newest-frontend: {FRONTEND_PACKAGE}=="
    for line in REQUIREMENTS_DEV.read_text().splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    raise AssertionError(f"{REQUIREMENTS_DEV} has no {prefix!r} line")


def newest_frontend() -> Frontend:
    """The newest frontend release, installed beside the venv; a failure (not a skip) if it is missing,
    since a silently skipped tier would test nothing."""
    version = newest_frontend_version()
    installed = [dist.version for dist in
                 importlib.metadata.distributions(name=FRONTEND_PACKAGE, path=[str(NEWEST_FRONTEND_DIR)])]
    if installed != [version]:
        pytest.fail(f"{FRONTEND_PACKAGE}=={version} is not installed in {NEWEST_FRONTEND_DIR} (found {installed}); "
                    "`make test` or `bash builder/local_setup.sh newest-frontend` installs it")
    static = NEWEST_FRONTEND_DIR / "comfyui_frontend_package" / "static"
    return Frontend("newest", version, ("--front-end-root", str(static)))


def pinned_frontend() -> Frontend:
    """The frontend package installed in the venv: the one ComfyUI serves by default, and the worker preloads."""
    return Frontend("pinned", importlib.metadata.version(FRONTEND_PACKAGE), ())


@pytest.fixture(scope="module", params=["pinned", pytest.param("newest", marks=needs_test_server)])
def frontend(request: pytest.FixtureRequest) -> Frontend:
    """Each frontend in turn; module scope groups a module's tests by frontend, so the connector
    switches (a ComfyUI restart) once per frontend, not once per test."""
    return pinned_frontend() if request.param == "pinned" else newest_frontend()


@pytest.fixture(scope="module")
def frontend_config_path(frontend: Frontend, config_path: Path, comfy_root: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A connector config whose ComfyUI serves ``frontend``; the default config for the pinned one."""
    if not frontend.comfy_args:
        return config_path
    return write_config(tmp_path_factory.mktemp("config") / f"{frontend.name}-frontend.json", comfy_root,
                        COMFY_EXTRA_ARGS=shlex.join(frontend.comfy_args))


@pytest.fixture
async def frontend_connector(frontend_config_path: Path) -> AsyncIterator[ComfyConnector]:
    """The shared ready connector on a ComfyUI that serves the ``frontend`` under test."""
    yield await shared_connector(frontend_config_path)


@pytest.fixture(scope="session", autouse=True)
async def _kill_connector_at_end() -> AsyncIterator[None]:
    yield
    if ComfyConnector.current() is not None:
        await ComfyConnector.current().kill_api()


def load_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS_DIR / name).read_text())
