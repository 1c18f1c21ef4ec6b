"""Fixtures shared by the test modules: the ComfyUI under test and a connector booted on it, job runners,
a loopback image server, the pipeline spies; the S3 server comes from the tests.support.fixtures_s3 plugin.

Which ComfyUI that is (the test server, or a real one with ``COMFYUI_PATH``) is decided in
tests/support/comfy.py. The conversion tests run twice, through ``frontend_connector``: on a
ComfyUI serving the pinned frontend package and on one serving the newest release
(``--front-end-root``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from tests.support.comfy import (
    CUSTOM_NODES_TIER,
    REAL_COMFY,
    TEST_SERVER_TESTS_ONLY,
    needs_test_server,
    shared_connector,
    write_config,
)
from tests.support.frontends import Frontend, newest_frontend, pinned_frontend
from tests.support.jobs import png
from tests.support.loopback import loopback_server
from tests.support.spies import Spies, spy_on_the_pipeline

pytest_plugins = ["tests.support.fixtures_s3"]
#: The image tier (tests/image) runs against a built image, from `make image-test`, which names it.
collect_ignore = [] if os.environ.get("IMAGE_UNDER_TEST") else ["image"]


def pytest_report_header() -> str:
    if CUSTOM_NODES_TIER:
        return f"tier: custom nodes, on the ComfyUI with node packs in {os.environ['COMFYUI_PATH']}"
    if REAL_COMFY:
        return f"tier: real ComfyUI in {os.environ['COMFYUI_PATH']}; tests that need the test server are skipped"
    if TEST_SERVER_TESTS_ONLY:
        return "tier: test server, only the tests that need it (the real tier runs the rest)"
    return "tier: test server; tests that need a real ComfyUI are skipped"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips each tier's tests on the other, saying why; ``TEST_SERVER_TESTS_ONLY`` deselects the rest.

    The custom-node tests are a tier of their own, the only one that runs them.
    """
    in_tier = [item for item in items if bool(item.get_closest_marker("needs_custom_nodes")) == CUSTOM_NODES_TIER]
    if len(in_tier) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in in_tier])
        items[:] = in_tier
    if TEST_SERVER_TESTS_ONLY and not REAL_COMFY:
        kept = [item for item in items if item.get_closest_marker("needs_test_server")]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    if REAL_COMFY:
        other_tier, skip = "needs_test_server", pytest.mark.skip(
            reason="uses the test server's fault injection, which a real ComfyUI does not have")
    else:
        other_tier, skip = "needs_real_comfy", pytest.mark.skip(
            reason="needs a real ComfyUI (make test runs the real tier; COMFYUI_PATH points at one)")
    for item in items:
        if item.get_closest_marker(other_tier):
            item.add_marker(skip)


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
    """The shared ready connector on the default config."""
    yield await shared_connector(config_path)


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


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """Where the job runner keeps each job's private files: a path inside the test's tmp_path."""
    return tmp_path / "scratch"


@pytest.fixture
def runner(connector: ComfyConnector, scratch: Path) -> JobRunner:
    """A runner without S3: outputs inline."""
    return JobRunner(connector, Config(scratch_dir=str(scratch)), None)


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    """A loopback HTTP server whose ``/img/{name}`` is an 8x8 PNG of colour (50, 60, 70); yields its base URL."""
    app = web.Application()
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png((50, 60, 70)), content_type="image/png")

    app.router.add_get("/img/{name}", image)
    async with loopback_server(app) as url:
        yield url


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Spies:
    """What the job pipeline queued, placed and connected to during the test (tests/support/spies.py)."""
    return spy_on_the_pipeline(monkeypatch)
