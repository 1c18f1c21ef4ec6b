"""``ComfyConnector``: the worker's one handle on ComfyUI and the browser, and their lifecycle.

States: ``uninit → initializing → ready | error``, ``ready | error → killed``.
The connector joins three parts and owns only what spans them: ComfyUI
(:class:`.server.ComfyServer`, kept running), the frontend page that converts
UI workflows (:class:`.browser.FrontendConverter`) and ComfyUI's folders
(:class:`.folders.ComfyFiles`). It boots them together, runs workflows across
them, and stops them.

``create()`` is the API reference's factory: one connector per process (an
async singleton), because ComfyUI and Chromium are expensive and every job
shares them. The connector is also an async context manager. It installs no
signal handler or exit hook: those are the entry point's (``handler.py``), which
stops the connector from its own event loop.

When the browser starts is FRONTEND_START's: with ComfyUI at boot (the default),
with the first UI-format job (``first_use``: API-format jobs never wait for it,
and a worker that only sees them never pays for Chromium), or never.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from .browser import FrontendConverter
from .client import ComfyClient, OutputCallback, PromptRun
from .config import Config
from .errors import (
    BrowserError,
    ComfyServerlessError,
    ComfyStartError,
    ComfyUnavailableError,
    ConnectorStateError,
    FrontendDisabledError,
    WorkflowError,
)
from .events import ConnectorState, ProgressCallback
from .folders import ComfyFiles, ComfyFolders
from .server import ComfyServer
from .workflow import Prompt, check_api_prompt, detect_format, mark_output_nodes, parse_workflow

logger = logging.getLogger(__name__)

READY = ConnectorState.READY
#: Every state but ``killed``: files can be placed before the boot and while a failed one is inspected.
_NOT_KILLED = tuple(state for state in ConnectorState if state is not ConnectorState.KILLED)


class ComfyConnector:
    """Boots ComfyUI and Chromium once, then converts and runs workflows for every job.

    ``connector = await ComfyConnector.create(config_path)`` (the process's one
    connector), or ``async with ComfyConnector(Config.load()) as connector:``.
    """

    _instance: ClassVar[ComfyConnector | None] = None

    def __init__(self, config: Config) -> None:
        self.config = config
        self._state = ConnectorState.UNINIT
        self._error: BaseException | None = None
        #: Where ``create()`` loaded the configuration from (its singleton's identity); ``None``: the environment.
        self.config_path: str | None = None
        self.comfy = ComfyServer(config, after_restart=self._comfy_restarted)
        self.frontend = FrontendConverter(config)
        self.files = ComfyFiles(ComfyFolders.from_config(config))
        self.timings: dict[str, float] = {}
        self._booting: asyncio.Task[ComfyConnector] | None = None
        #: FRONTEND_START=first_use: the one start of the browser and page that UI-format jobs share.
        self._frontend_starting: asyncio.Task[None] | None = None

    # --- creation and state -------------------------------------------------------------------
    @classmethod
    async def create(cls, config_path: str | Path | None = None) -> ComfyConnector:
        """The ready connector of this process; boots it on first use. Concurrent callers share one boot.

        Raises ``ConnectorStateError`` if a connector with a different configuration
        is alive, and the boot's own error if booting failed.
        """
        source = str(config_path) if config_path is not None else None
        instance = cls._instance
        if instance is not None:
            if instance.config_path != source:
                raise ConnectorStateError(
                    f"a connector configured from {instance.config_path or 'the environment'} is alive; "
                    f"call kill_api() before creating one from {source or 'the environment'}")
            if instance.state is ConnectorState.INITIALIZING:
                return await instance.start()
            instance._assert_state(READY)
            return instance
        instance = cls(Config.load(config_path))
        instance.config_path = source
        cls._instance = instance
        return await instance.start()

    @classmethod
    def current(cls) -> ComfyConnector | None:
        """The connector ``create()`` made (booting, ready or failed), or ``None`` when none is alive."""
        return cls._instance

    async def __aenter__(self) -> ComfyConnector:
        if self._state is ConnectorState.UNINIT:
            try:
                await self.start()
            except BaseException:
                await self.kill_api()  # __aexit__ does not run when __aenter__ fails, and the caller has no handle
                raise
        self._assert_state(READY)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.kill_api()

    @property
    def state(self) -> ConnectorState:
        return self._state

    @property
    def server_address(self) -> str:
        return self.comfy.base_url

    @property
    def ws_address(self) -> str:
        return self.comfy.client.ws_url

    @property
    def client_id(self) -> str:
        return self.comfy.client.client_id

    @property
    def client(self) -> ComfyClient:
        """The HTTP and websocket client of the running ComfyUI (for requests the connector has no method for)."""
        return self.comfy.client

    @property
    def node_types(self) -> dict[str, Any]:
        """ComfyUI's ``/object_info``, as loaded when it (last) started."""
        return self.comfy.node_types

    def _assert_state(self, *allowed: ConnectorState) -> None:
        if self._state in allowed:
            return
        if self._state is ConnectorState.KILLED:
            raise ConnectorStateError("the connector was killed; call ComfyConnector.create() again")
        detail = f": {self._error}" if self._error is not None else ""
        raise ConnectorStateError(f"the connector is not {' or '.join(allowed)} (state: {self._state.value}{detail})")

    # --- boot ---------------------------------------------------------------------------------
    async def start(self) -> ComfyConnector:
        """Boot ComfyUI and the frontend side by side, then run the self-test; every failure is a RuntimeError.

        Callers that start a booting connector share its boot (a cancelled caller
        leaves it going); :meth:`kill_api` stops it.
        """
        if self._booting is None or self._state is ConnectorState.KILLED:
            self._assert_state(ConnectorState.UNINIT)
            self._state = ConnectorState.INITIALIZING
            self._booting = asyncio.ensure_future(self._boot_and_test())
        try:
            return await asyncio.shield(self._booting)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if self._booting.cancelled() and not (caller and caller.cancelling()):
                raise ConnectorStateError("kill_api() stopped the connector while it started") from None
            raise

    async def _boot_and_test(self) -> ComfyConnector:
        started = time.monotonic()
        try:
            await self._boot()
            self.timings["frontend_ready_s"] = time.monotonic() - started
            await self._self_test()
        except BaseException as exc:
            self._state = ConnectorState.ERROR
            self._error = exc
            logger.error("connector failed to start: %s", exc)
            if isinstance(exc, Exception) and not isinstance(exc, RuntimeError):
                # The API reference promises RuntimeError for every failed start.
                raise ComfyStartError(f"the connector failed to start: {exc}") from exc
            raise
        self.timings["ready_s"] = time.monotonic() - started
        self._state = READY
        logger.info("connector ready in %.2f s", self.timings["ready_s"])
        return self

    async def _boot(self) -> None:
        self.comfy.spawn()
        comfy_ready = asyncio.Event()

        async def comfy() -> None:
            self.timings["comfy_ready_s"] = await self.comfy.connect(comfy_ready)
            self.files.model_folders = self.comfy.model_folders

        async def frontend() -> None:
            await self.frontend.launch()
            await self.frontend.load(self.server_address, comfy_ready)

        try:
            async with asyncio.TaskGroup() as group:  # a failure of one cancels the other
                group.create_task(comfy())
                if self.config.browser_at_boot:
                    group.create_task(frontend())
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure is the cause; the rest follow from it
        if self.config.browser_at_boot:
            await self._verify_record()

    async def _verify_record(self) -> None:
        """After the page set up from a record (FRONTEND_SNAPSHOT): make sure this ComfyUI answers the same."""
        if self.config.frontend_snapshot:
            await self.frontend.verify_record(self.comfy.node_types, await self.comfy.client.get_json("/extensions"))

    async def _frontend_ready(self) -> None:
        """The browser and page a conversion needs. At boot they are there already (FRONTEND_START=boot); with
        first_use the first UI-format job starts them, and jobs that come meanwhile wait for that one start
        (a job cancelled meanwhile leaves it going; a failed start is tried again by the next job)."""
        if self.config.frontend_start == "never":
            raise FrontendDisabledError()
        if self.config.browser_at_boot:
            return
        if self._frontend_starting is None:
            self._frontend_starting = asyncio.ensure_future(self._start_frontend())
        starting = self._frontend_starting
        try:
            await asyncio.shield(starting)
        except Exception:
            if self._frontend_starting is starting:
                self._frontend_starting = None
            raise

    async def _start_frontend(self) -> None:
        started = time.monotonic()
        logger.info("the first UI-format job: starting Chromium and the frontend (FRONTEND_START=first_use)")
        await self.frontend.launch()
        await self.frontend.load(self.server_address, replay_record=True)
        await self._verify_record()
        self.timings["frontend_first_use_s"] = time.monotonic() - started
        logger.info("the frontend is ready in %.2f s", self.timings["frontend_first_use_s"])

    @property
    def _frontend_started(self) -> bool:
        """Whether there is a browser to look after: always with FRONTEND_START=boot, with first_use once a
        UI-format job started it."""
        return self.config.browser_at_boot or (self._frontend_starting is not None and self._frontend_starting.done()
                                               and not self._frontend_starting.cancelled()
                                               and self._frontend_starting.exception() is None)

    async def _comfy_restarted(self) -> None:
        """A restarted ComfyUI listens on a new port and may report other model folders: follow it."""
        self.files.model_folders = self.comfy.model_folders
        if self._frontend_started:
            await self.frontend.load(self.server_address)

    async def _self_test(self) -> None:
        path = self.config.self_test_path
        if not path:
            return
        try:
            workflow = parse_workflow(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ComfyStartError(f"TEST_PAYLOAD_FILE {path} cannot be read: {exc}") from None
        if not self.config.browser_at_boot and detect_format(workflow) == "ui":
            raise ComfyStartError(f"TEST_PAYLOAD_FILE {path} is a UI-format workflow, which needs the browser at "
                                  f"boot; with FRONTEND_START={self.config.frontend_start} give an API-format one")
        started = time.monotonic()
        try:
            history = await self._run_workflow(workflow, detect=True, timeout_s=None, progress=None, extra_data=None)
        except ComfyServerlessError as exc:
            raise ComfyStartError(f"the self-test workflow {path} failed: {exc}", cause=exc.to_dict()) from None
        self.files.delete_outputs(history)
        await self.comfy.forget_history(list(history))
        self.timings["self_test_s"] = time.monotonic() - started

    # --- conversion and execution -------------------------------------------------------------
    async def get_prompt_from_workflow(self, workflow: dict[str, Any] | str) -> Prompt:
        """Convert a UI workflow to an API prompt with the real frontend (cached by content)."""
        self._assert_state(READY)
        return await self._convert(parse_workflow(workflow))

    async def _convert(self, workflow: dict[str, Any]) -> Prompt:
        if detect_format(workflow) != "ui":
            raise WorkflowError("get_prompt_from_workflow() takes a UI-format workflow; this is already API format")
        await self._frontend_ready()
        return await self.frontend.convert(workflow)

    async def run_workflow(self, payload: dict[str, Any] | str, use_workflow_json: bool = True, *,
                           timeout_s: float | None = None, progress: ProgressCallback | None = None,
                           extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a workflow and return ComfyUI's history ``{prompt_id: entry}``.

        ``use_workflow_json`` (the API reference's name) means "detect the
        format": with it (the default) a UI workflow is converted and passed to
        ComfyUI as ``extra_pnginfo.workflow`` (so saved images carry it), and an
        API prompt runs as it is. Without it, the payload must be an API prompt.
        """
        self._assert_state(READY)
        return await self._run_workflow(parse_workflow(payload), detect=use_workflow_json, timeout_s=timeout_s,
                                        progress=progress, extra_data=extra_data)

    async def _run_workflow(self, workflow: dict[str, Any], *, detect: bool, timeout_s: float | None,
                            progress: ProgressCallback | None, extra_data: dict[str, Any] | None) -> dict[str, Any]:
        extra = dict(extra_data or {})
        if detect_format(workflow) == "ui":
            if not detect:
                raise WorkflowError("use_workflow_json=False expects an API prompt, but this is a UI workflow")
            prompt = await self._convert(workflow)
            extra = {"extra_pnginfo": {"workflow": workflow}, **extra}
        else:
            prompt = workflow
        return await self._run_prompt(prompt, timeout_s=timeout_s, progress=progress, extra_data=extra)

    async def run_prompt(self, prompt: Prompt, *, timeout_s: float | None = None,
                         progress: ProgressCallback | None = None, extra_data: dict[str, Any] | None = None,
                         timings: dict[str, float] | None = None,
                         on_executed: OutputCallback | None = None) -> dict[str, Any]:
        """Run an API prompt (already converted and edited) and return ``{prompt_id: entry}``.

        ``timings``, if given, receives the seconds spent waiting in ComfyUI's queue and executing;
        ``on_executed(node_id, output)`` hears each node's outputs as ComfyUI writes them.
        ``timeout_s`` counts from the moment the prompt starts executing (QUEUE_TIMEOUT_S bounds the wait).
        A run that does not succeed leaves nothing: the files its prompt wrote are deleted.
        """
        self._assert_state(READY)
        return await self._run_prompt(prompt, timeout_s=timeout_s, progress=progress, extra_data=extra_data,
                                      timings=timings, on_executed=on_executed)

    async def _run_prompt(self, prompt: Prompt, *, timeout_s: float | None, progress: ProgressCallback | None,
                          extra_data: dict[str, Any] | None, timings: dict[str, float] | None = None,
                          on_executed: OutputCallback | None = None) -> dict[str, Any]:
        check_api_prompt(prompt, self.comfy.node_types)
        # Fresh files on every run, even for a prompt ComfyUI has cached (see workflow.RUN_TOKEN_INPUT).
        marked = mark_output_nodes(prompt, self.comfy.output_node_types, uuid.uuid4().hex)
        run = PromptRun(progress=progress, on_executed=on_executed)
        try:
            return await self.comfy.run_prompt(
                marked, run, extra_data=extra_data or {}, queue_timeout_s=self.config.queue_timeout_s,
                timeout_s=self.config.run_timeout_s if timeout_s is None else timeout_s)
        finally:
            if timings is not None:
                timings.update(run.timings)
            if run.sent and run.entry is None:  # failed or cancelled: no one else knows of its files
                self.files.delete_outputs(run.written())
                await self.comfy.forget_history([run.prompt_id])

    # --- health -------------------------------------------------------------------------------
    async def _validate_resources(self) -> bool:
        """Whether ComfyUI answers HTTP, its websocket is open and the frontend page can convert.

        What does not work is restarted first (ComfyUI on a fresh port, Chromium
        and its page); ``False`` means something is still down after that, or
        the connector is not ready (never started, failed, killed), in which
        case nothing is restarted. A browser that is not needed (FRONTEND_START
        never), or not yet (first_use before the first UI-format job), is no
        reason to be unhealthy; once started, it counts as with ``boot``.
        """
        if self._state is not READY:
            return False
        watch_frontend = self._frontend_started
        try:
            await self.comfy.ensure_healthy()
            if watch_frontend:
                await self.frontend.ensure_ready()
        except (ComfyUnavailableError, BrowserError) as exc:
            logger.warning("resource validation failed: %s", exc)
            return False
        return self.comfy.healthy and (self.frontend.healthy or not watch_frontend)

    # --- files (the API reference's upload_data) ----------------------------------------------
    def upload_data(self, source_path: str | Path, folder_type: str = "input", subfolder: str | None = None,
                    overwrite: bool = False, is_ephemeral: bool = False) -> str:
        """Copy a file into one of ComfyUI's folders; returns the full destination path.

        Synchronous, as the API reference documents (``path = connector.upload_data(...)``);
        see :meth:`.ComfyFiles.upload`, and :meth:`.ComfyFiles.upload_async` for code on
        an event loop that places large files. Ephemeral files are deleted at :meth:`kill_api`.
        """
        self._assert_state(*_NOT_KILLED)
        return self.files.upload(source_path, folder_type, subfolder, overwrite, is_ephemeral)

    # --- shutdown -----------------------------------------------------------------------------
    async def kill_api(self) -> None:
        """Stop everything this connector started and reset the singleton. Idempotent."""
        for task in (self._booting, self._frontend_starting):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})  # its own failure goes to whoever started it
        self._frontend_starting = None
        await self.comfy.stop()
        await self.frontend.close()
        self._stopped()

    def terminate(self) -> None:
        """Kill ComfyUI and Chromium now, without the event loop: the last resort when :meth:`kill_api`
        could not run or finish (the entry point calls it at interpreter exit)."""
        self.frontend.kill_sync()
        self.comfy.terminate()
        self._stopped()

    def _stopped(self) -> None:
        for problem in self.files.delete_ephemeral():
            logger.warning("cleanup: %s", problem)
        self._state = ConnectorState.KILLED
        if type(self)._instance is self:
            type(self)._instance = None
