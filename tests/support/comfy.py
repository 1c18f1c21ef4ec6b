"""The ComfyUI the tests run against, connectors on it, and what they leave running.

By default the tests start the ComfyUI-compatible test server in tests/comfy_test_server
(real frontend, real protocol). With ``COMFYUI_PATH`` set they run against that real
ComfyUI instead (``API_COMMAND_LINE`` says how to start it). ``make test`` runs both tiers:
the real ComfyUI for everything it can run, the test server only for the tests marked
:data:`needs_test_server` (``TEST_SERVER_TESTS_ONLY=1``), so nothing runs twice. Each marker
skips its tests on the other tier, saying so (tests/conftest.py). The custom-nodes tier
(``CUSTOM_NODES_TIER=1``, a real ComfyUI with node packs) runs only the tests marked
:data:`needs_custom_nodes`, which the other tiers deselect.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless.outputs import collect_outputs

TESTS_DIR = Path(__file__).resolve().parent.parent
TEST_SERVER_MAIN = TESTS_DIR / "comfy_test_server" / "main.py"
REAL_COMFY = bool(os.environ.get("COMFYUI_PATH"))

#: Set by ``make test`` for the test-server tier when the real tier runs the rest.
TEST_SERVER_TESTS_ONLY = os.environ.get("TEST_SERVER_TESTS_ONLY") == "1"

#: Set by ``make test`` for the custom-nodes tier: a real ComfyUI with the packs of tests/custom_nodes.txt.
CUSTOM_NODES_TIER = os.environ.get("CUSTOM_NODES_TIER") == "1"

#: Uses the test server's fault injection (:func:`set_faults`, its ``COMFY_TEST_*`` variables),
#: which a real ComfyUI does not have.
needs_test_server = pytest.mark.needs_test_server

#: Meaningful only on a real ComfyUI: real models, real sources, the real node definitions.
needs_real_comfy = pytest.mark.needs_real_comfy

#: Needs the custom node packs: runs in the custom-nodes tier only, and that tier runs nothing else.
needs_custom_nodes = pytest.mark.needs_custom_nodes


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


async def shared_connector(config_path: Path) -> ComfyConnector:
    """The process's ready connector on this config (booted again if a test killed it).

    It is a singleton, so one on another config is killed first.
    """
    instance = ComfyConnector.current()
    if instance is not None and instance.config_path != str(config_path):
        await instance.kill_api()
    return await ComfyConnector.create(str(config_path))


async def set_faults(connector: ComfyConnector, **faults: Any) -> None:
    """Arm the test server's fault injection (``reset=True`` disarms all)."""
    status, _ = await connector.client.request("POST", "/_test/faults", faults)
    assert status == 200


def api_prompt(width: int = 32, prefix: str = "contract") -> dict[str, Any]:
    """EmptyImage → ImageInvert → SaveImage(prefix), in API format: instant on any ComfyUI."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 24, "batch_size": 1, "color": 255}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def output_paths(connector: ComfyConnector, history: dict[str, Any]) -> list[Path]:
    return [f.path for entry in history.values()
            for f in collect_outputs(entry, connector.files.folders, include_temp=True)[0]]


def our_processes() -> list[psutil.Process]:
    """Live ComfyUI and Chromium processes below this one (session fixtures such as the S3 server excluded)."""
    def started_by_connector(process: psutil.Process) -> bool:
        try:
            command = " ".join(process.cmdline())
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
            return alive and ("main.py" in command or "chrom" in process.name().lower() or "playwright" in command)
        except psutil.NoSuchProcess:  # ended since it was listed (Chromium's helpers come and go)
            return False
    return [p for p in psutil.Process().children(recursive=True) if started_by_connector(p)]


def comfy_processes() -> list[psutil.Process]:
    """Live ComfyUI processes below this one."""
    def is_comfyui(process: psutil.Process) -> bool:
        try:
            return "main.py" in " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            return False
    return [p for p in our_processes() if is_comfyui(p)]
