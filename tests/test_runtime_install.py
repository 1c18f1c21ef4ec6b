"""The worker installed from builder/requirements.txt alone starts, converts, runs, and keeps its page offline.

That is the image's layout and README's ``COMFYUI_PATH`` example: no ``comfyui-frontend-package``
beside the worker, so nothing can be preloaded and the page must wait for ComfyUI to serve it.
``make test`` builds that venv (``.venv-runtime``); this test starts the worker from it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from comfy_serverless import ComfyConnector
from tests.support.comfy import TESTS_DIR, write_config
from tests.support.loopback import loopback_server

RUNTIME_PYTHON = TESTS_DIR.parent / ".venv-runtime" / "bin" / "python"
PROBE = TESTS_DIR / "support" / "runtime_probe.py"

pytestmark = pytest.mark.skipif(not RUNTIME_PYTHON.exists(),
                                reason=".venv-runtime is missing: `make test` creates it (builder/local_setup.sh)")


async def test_runtime_only_install_boots_converts_runs_and_stays_offline(comfy_root: Path, tmp_path: Path) -> None:
    instance = ComfyConnector.current()
    if instance is not None:
        await instance.kill_api()  # one ComfyUI at a time on this machine
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="reached")

    app = web.Application()
    app.add_routes([web.get("/{path:.*}", record)])
    config = write_config(tmp_path / "runtime.json", comfy_root, INITIAL_PORT=18650)
    async with loopback_server(app) as other:
        process = await asyncio.create_subprocess_exec(
            str(RUNTIME_PYTHON), str(PROBE), str(config), other,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == 0, stderr.decode()[-3000:]
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["frontend_package"] is False  # really the runtime-only install
    assert result["files"] and all(name.startswith("runtime-probe") for name in result["files"])
    assert result["page_reached_other_origin"] is False and hits == []
