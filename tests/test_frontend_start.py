"""FRONTEND_START: the browser with ComfyUI at boot, with the first UI-format job, or never.

Each mode boots its own connector (one ComfyUI at a time on this machine), on a
real ComfyUI or the test server, with real Chromium: what runs at boot is read
from the process table, never from the connector's own say-so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from comfy_serverless import ComfyConnector, ComfyStartError, ConfigError, FrontendDisabledError
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from tests.support.comfy import api_prompt, our_processes
from tests.support.jobs import data_uri, invert_job, png
from tests.support.ui_workflows import chain, empty_image, invert, save_image


def chromium_processes() -> list[psutil.Process]:
    return [process for process in our_processes() if "chrom" in process.name().lower()]


@pytest.fixture
async def scoped(request: pytest.FixtureRequest, connector: ComfyConnector,
                 config_path: Path) -> AsyncIterator[ComfyConnector]:
    """A connector of its own with FRONTEND_START set to the test's parameter."""
    await connector.kill_api()  # one ComfyUI at a time on this machine
    config = dataclasses.replace(Config.load(config_path), frontend_start=request.param)
    async with ComfyConnector(config) as started:
        yield started


def ui_workflow(prefix: str, color: int = 0) -> dict[str, object]:
    return chain(empty_image(16, 16, color), invert(), save_image(prefix))


@pytest.mark.parametrize("scoped", ["first_use"], indirect=True)
async def test_first_use_starts_one_browser_for_a_burst_of_ui_jobs(scoped: ComfyConnector, scratch: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="comfy_serverless")
    assert chromium_processes() == [] and scoped.frontend.browser is None  # nothing browser-related at boot
    assert await scoped._validate_resources() is True  # not needed yet: healthy
    runner = JobRunner(scoped, dataclasses.replace(scoped.config, scratch_dir=str(scratch)), None)
    api = await runner.run("job-api-first", {"workflow": api_prompt(prefix="first-use-api")})
    assert "error" not in api, api
    assert chromium_processes() == []  # an API-format job never starts it

    results = await asyncio.gather(*(runner.run(f"job-ui-{index}", {"workflow": ui_workflow(f"burst-{index}", index)})
                                     for index in range(4)))
    assert all("error" not in result for result in results), results
    started = [record for record in caplog.records if record.getMessage().startswith("Chromium ")
               and " started (" in record.getMessage()]
    assert len(started) == 1, [record.getMessage() for record in started]
    assert chromium_processes() and scoped.frontend.healthy and await scoped._validate_resources() is True

    for pid in scoped.frontend.chromium_pids:  # Chromium crashes: the health check brings it back, as with boot
        psutil.Process(pid).kill()
    for _ in range(100):
        if not scoped.frontend.healthy:
            break
        await asyncio.sleep(0.1)
    assert not scoped.frontend.healthy
    assert await scoped._validate_resources() is True and scoped.frontend.healthy
    again = await runner.run("job-ui-after-crash", {"workflow": ui_workflow("after-crash")})
    assert "error" not in again, again


@pytest.mark.parametrize("scoped", ["first_use"], indirect=True)
async def test_api_jobs_do_not_wait_for_a_starting_browser(scoped: ComfyConnector, scratch: Path) -> None:
    runner = JobRunner(scoped, dataclasses.replace(scoped.config, scratch_dir=str(scratch)), None)
    ui_job = asyncio.ensure_future(runner.run("job-ui-slow-start", {"workflow": ui_workflow("slow-start")}))
    await asyncio.sleep(0.05)  # the UI job is starting the browser
    api = await runner.run("job-api-meanwhile", {"workflow": api_prompt(prefix="meanwhile")})
    assert "error" not in api and not ui_job.done(), api  # done before the browser was up
    assert "error" not in await ui_job


@pytest.mark.parametrize("scoped", ["never"], indirect=True)
async def test_never_runs_no_browser_and_refuses_ui_jobs_at_once(scoped: ComfyConnector, scratch: Path) -> None:
    assert chromium_processes() == [] and await scoped._validate_resources() is True
    runner = JobRunner(scoped, dataclasses.replace(scoped.config, scratch_dir=str(scratch)), None)
    image = [{"source": data_uri(png((1, 2, 3))), "name": "photo.png"}]
    refused = await runner.run("job-ui-never", invert_job(inputs=image))
    assert refused["error_type"] == "FrontendDisabledError"
    assert refused["error"] == str(FrontendDisabledError()) and "\n" not in refused["error"]
    assert "send API format" in refused["error"] and "FRONTEND_START=boot" in refused["error"]
    assert not scratch.exists()  # nothing was fetched
    with pytest.raises(FrontendDisabledError):
        await scoped.get_prompt_from_workflow(ui_workflow("library"))
    api = await runner.run("job-api-never", {"workflow": api_prompt(prefix="never-api")})
    assert "error" not in api, api
    assert chromium_processes() == [] and await scoped._validate_resources() is True


@pytest.mark.parametrize("scoped", ["boot"], indirect=True)
async def test_boot_starts_the_browser_with_comfyui(scoped: ComfyConnector) -> None:
    assert chromium_processes() and scoped.frontend.healthy and await scoped._validate_resources() is True


async def test_a_ui_self_test_without_a_browser_at_boot_is_refused(connector: ComfyConnector, config_path: Path,
                                                                   tmp_path: Path) -> None:
    await connector.kill_api()
    ui_self_test = tmp_path / "self-test.json"
    ui_self_test.write_text((Path(Config().test_payload_file)).read_text())
    config = dataclasses.replace(Config.load(config_path), frontend_start="first_use",
                                 test_payload_file=str(ui_self_test))
    with pytest.raises(ComfyStartError, match="is a UI-format workflow, which needs the browser at boot; with "
                                              "FRONTEND_START=first_use give an API-format one"):
        async with ComfyConnector(config):
            pytest.fail("the start succeeded")
    assert our_processes() == []


def test_frontend_start_is_checked_at_load() -> None:
    assert Config.load(environ={}).frontend_start == "boot"
    assert Config.load(environ={"FRONTEND_START": "first_use"}).self_test_path.endswith("test_server_api.json")
    with pytest.raises(ConfigError, match="FRONTEND_START must be one of boot, first_use, never, got 'lazy'"):
        Config.load(environ={"FRONTEND_START": "lazy"})
