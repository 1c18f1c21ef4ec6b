"""``ComfyConnector``: the worker's one handle on ComfyUI and the browser, and their lifecycle.

States: ``uninit → initializing → ready | error``, ``ready | error → killed``.
One connector exists per process (an async singleton): a container is one
worker, ComfyUI and Chromium are expensive, and every job shares them. The
cleanup that ``kill_api()`` does also runs on SIGTERM/SIGINT and at interpreter
exit, synchronously, so that no ComfyUI or Chromium outlives the worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from .browser import FRONTEND_SETTINGS, FrontendConverter
from .client import ComfyClient, OutputCallback
from .config import Config
from .errors import (
    BrowserError,
    ComfyServerlessError,
    ComfyStartError,
    ComfyUnavailableError,
    ConnectorStateError,
    RunTimeoutError,
    WorkflowError,
)
from .events import ConnectorState, ProgressCallback
from .files import FOLDER_TYPES, EphemeralFiles, place_file, place_file_sync, remove_paths, resolve_inside
from .outputs import collect_outputs
from .process import ComfyFolders, ComfyProcess
from .workflow import check_api_prompt, detect_format, mark_output_nodes, parse_workflow

logger = logging.getLogger(__name__)


class ComfyConnector:
    """Boots ComfyUI and Chromium once, then converts and runs workflows for every job.

    Use ``connector = await ComfyConnector.create(config_path)``; the constructor is private.
    """

    _instance: ClassVar[ComfyConnector | None] = None
    _creating: ClassVar[asyncio.Task[ComfyConnector] | None] = None
    _exit_hooks_installed: ClassVar[bool] = False

    def __init__(self, config: Config, config_path: str | None) -> None:
        self.config = config
        self._config_path = config_path
        self._state = ConnectorState.UNINIT
        self._error: BaseException | None = None
        self.folders = ComfyFolders.from_config(config)
        self._process = ComfyProcess(config)
        self._converter = FrontendConverter(config)
        self._client: ComfyClient | None = None
        self._ephemeral = EphemeralFiles()
        self._output_node_types: set[str] = set()
        self._node_types: dict[str, Any] = {}
        self._model_folders: dict[str, list[str]] = {}
        self._health_lock = asyncio.Lock()
        self._restarting: asyncio.Task[None] | None = None
        #: Counts ComfyUI restarts: runs that fail together on one dead ComfyUI ask for one restart, not several.
        self._generation = 0
        self.timings: dict[str, float] = {}

    # --- creation and state -------------------------------------------------------------------
    @classmethod
    async def create(cls, config_path: str | None = None) -> ComfyConnector:
        """The ready connector; boots it on first use. Concurrent callers share one boot.

        Raises ``ConnectorStateError`` if a connector with a different configuration
        is alive, and the boot's own error if booting failed.
        """
        key = str(config_path) if config_path is not None else None
        instance = cls._instance
        if instance is not None:
            if instance._config_path != key:
                raise ConnectorStateError(
                    f"a connector configured from {instance._config_path or 'the environment'} is alive; "
                    f"call kill_api() before creating one from {key or 'the environment'}")
            if cls._creating is not None:
                return await asyncio.shield(cls._creating)
            if instance._state is ConnectorState.READY:
                return instance
            raise ConnectorStateError(f"the connector is in state {instance._state.value}: {instance._error}")
        instance = cls(Config.load(config_path), key)
        cls._instance = instance
        cls.install_exit_hooks()
        cls._creating = asyncio.ensure_future(instance._boot())
        try:
            return await asyncio.shield(cls._creating)
        finally:
            cls._creating = None

    @classmethod
    def current(cls) -> ComfyConnector | None:
        """The connector of this process (booting, ready or failed), or ``None`` when none is alive."""
        return cls._instance

    @property
    def state(self) -> ConnectorState:
        return self._state

    @property
    def client(self) -> ComfyClient:
        """The HTTP and websocket client of the running ComfyUI (for requests the connector has no method for)."""
        return self._require_client()

    @property
    def server_address(self) -> str:
        return self._process.base_url

    @property
    def ws_address(self) -> str:
        return self._require_client().ws_url

    @property
    def client_id(self) -> str:
        return self._require_client().client_id

    @property
    def comfy_pid(self) -> int | None:
        return self._process.pid

    def _require_client(self) -> ComfyClient:
        if self._client is None:
            raise ConnectorStateError("ComfyUI has not been started")
        return self._client

    def _require_ready(self) -> None:
        if self._state is ConnectorState.KILLED:
            raise ConnectorStateError("the connector was killed; call ComfyConnector.create() again")
        if self._state is not ConnectorState.READY:
            raise ConnectorStateError(f"the connector is not ready (state: {self._state.value})")

    # --- boot ---------------------------------------------------------------------------------
    async def _boot(self) -> ComfyConnector:
        self._state = ConnectorState.INITIALIZING
        started = time.monotonic()
        try:
            self._process.spawn()
            comfy_ready = asyncio.Event()

            async def comfy() -> None:
                await self._connect_comfy(comfy_ready)

            async def frontend() -> None:
                await self._converter.launch()
                await self._converter.load(self.server_address, comfy_ready)

            try:
                async with asyncio.TaskGroup() as group:  # a failure of one cancels the other
                    group.create_task(comfy())
                    group.create_task(frontend())
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None  # the first failure is the cause; the rest follow from it
            await self._verify_frontend_record()
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
        self._state = ConnectorState.READY
        logger.info("connector ready in %.2f s", self.timings["ready_s"])
        return self

    async def _connect_comfy(self, frontend_may_start: asyncio.Event | None = None) -> None:
        """Wait for the spawned ComfyUI, prepare the frontend's settings, open the websocket, load node types.

        ``frontend_may_start`` is set as soon as the settings are in place (the
        frontend reads them first), so the frontend's own requests do not wait
        for ours.
        """
        client = ComfyClient(self._process.base_url, http_timeout_s=self.config.http_timeout_s,
                             is_alive=self._process.is_alive, describe_exit=self._describe_exit)
        self._client = client
        self.timings["comfy_ready_s"] = await self._process.wait_ready(client.session)
        await client.request("POST", "/settings", FRONTEND_SETTINGS)
        if frontend_may_start is not None:
            frontend_may_start.set()
        await asyncio.gather(client.connect_socket(), self._load_node_types())

    async def _verify_frontend_record(self) -> None:
        """A FRONTEND_SNAPSHOT record set the page up: make sure this ComfyUI still answers the same."""
        if self.config.frontend_snapshot:
            extensions = await self._require_client().get_json("/extensions")
            await self._converter.verify_record(self._node_types, extensions)

    async def _load_node_types(self) -> None:
        client = self._require_client()
        self._node_types, self._model_folders = await asyncio.gather(
            client.get_json("/object_info"), client.get_json("/internal/folder_paths"))
        self._model_folders.pop("custom_nodes", None)
        self._output_node_types = {name for name, spec in self._node_types.items() if spec.get("output_node")}

    def _describe_exit(self) -> str:
        code = self._process.returncode
        tail = self._process.log_tail(10)
        return f"exit code {code}; last lines of its log:\n{tail}" if code is not None else "not started"

    async def _self_test(self) -> None:
        path = self.config.test_payload_file
        if not path:
            return
        try:
            workflow = parse_workflow(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ComfyStartError(f"TEST_PAYLOAD_FILE {path} cannot be read: {exc}") from None
        started = time.monotonic()
        try:
            history = await self.run_workflow(workflow, _allow_initializing=True)
        except ComfyServerlessError as exc:
            raise ComfyStartError(f"the self-test workflow {path} failed: {exc}", cause=exc.to_dict()) from None
        self.delete_outputs(history)
        await self.forget_history(list(history))
        self.timings["self_test_s"] = time.monotonic() - started

    # --- conversion and execution -------------------------------------------------------------
    async def get_prompt_from_workflow(self, workflow: dict[str, Any] | str) -> dict[str, Any]:
        """Convert a UI workflow to an API prompt with the real frontend (cached by content)."""
        return await self._get_prompt(workflow, allow_initializing=False)

    async def _get_prompt(self, workflow: dict[str, Any] | str, *, allow_initializing: bool) -> dict[str, Any]:
        if not allow_initializing:
            self._require_ready()
        parsed = parse_workflow(workflow)
        if detect_format(parsed) != "ui":
            raise WorkflowError("get_prompt_from_workflow() takes a UI-format workflow; this is already API format")
        return await self._converter.convert(parsed)

    async def run_workflow(self, payload: dict[str, Any] | str, use_workflow_json: bool = True, *,
                           timeout_s: float | None = None, progress: ProgressCallback | None = None,
                           extra_data: dict[str, Any] | None = None,
                           _allow_initializing: bool = False) -> dict[str, Any]:
        """Run a workflow and return ComfyUI's history ``{prompt_id: entry}``.

        With ``use_workflow_json`` (the default) the format is detected: a UI
        workflow is converted and passed to ComfyUI as ``extra_pnginfo.workflow``
        (so saved images carry it), an API prompt runs as is. Without it, the
        payload must be an API prompt.
        """
        if not _allow_initializing:
            self._require_ready()
        parsed = parse_workflow(payload)
        workflow_format = detect_format(parsed)
        if workflow_format == "ui":
            if not use_workflow_json:
                raise WorkflowError("use_workflow_json=False expects an API prompt, but this is a UI workflow")
            prompt = await self._get_prompt(parsed, allow_initializing=_allow_initializing)
            extra = {"extra_pnginfo": {"workflow": parsed}, **(extra_data or {})}
        else:
            prompt, extra = parsed, dict(extra_data or {})
        return await self.run_prompt(prompt, timeout_s=timeout_s, progress=progress, extra_data=extra,
                                     _allow_initializing=_allow_initializing)

    async def run_prompt(self, prompt: dict[str, Any], *, timeout_s: float | None = None,
                         progress: ProgressCallback | None = None, extra_data: dict[str, Any] | None = None,
                         timings: dict[str, float] | None = None, on_executed: OutputCallback | None = None,
                         _allow_initializing: bool = False) -> dict[str, Any]:
        """Run an API prompt (already converted and edited) and return ``{prompt_id: entry}``.

        ``timings``, if given, receives the seconds spent waiting in ComfyUI's queue and executing;
        ``on_executed(node_id, output)`` hears each node's outputs as ComfyUI writes them.
        ``timeout_s`` counts from the moment the prompt starts executing (QUEUE_TIMEOUT_S bounds the wait).
        """
        if not _allow_initializing:
            self._require_ready()
        check_api_prompt(prompt, self._node_types)
        # No lock around the run: several jobs' prompts wait in ComfyUI's own queue, which executes one at a time.
        await self._ensure_healthy()
        generation = self._generation
        # Fresh files on every run, even for a prompt ComfyUI has cached (see workflow.RUN_TOKEN_INPUT).
        marked = mark_output_nodes(prompt, self._output_node_types, uuid.uuid4().hex)
        client = self._require_client()
        try:
            return await client.run_prompt(
                marked, extra_data=extra_data or {}, progress=progress, on_executed=on_executed, timings=timings,
                timeout_s=self.config.run_timeout_s if timeout_s is None else timeout_s,
                queue_timeout_s=self.config.queue_timeout_s, interrupt_grace_s=self.config.interrupt_grace_s)
        except ComfyUnavailableError:
            # Fail this job now; the restart runs meanwhile and the next run waits for it.
            self._schedule_restart("it became unavailable during a run", generation)
            raise
        except (ComfyServerlessError, asyncio.CancelledError) as exc:
            if getattr(exc, "history", None):  # files written before the failure
                self.delete_outputs(exc.history)
                await self.forget_history(list(exc.history))
            if isinstance(exc, RunTimeoutError) and exc.details["stuck"]:
                restart = self._schedule_restart("it did not stop after an interrupt", generation)
                if restart is not None:
                    await asyncio.shield(restart)
            raise

    def _schedule_restart(self, reason: str, generation: int) -> asyncio.Task[None] | None:
        """Restart the ComfyUI that ``generation`` names, once however many runs failed on it.

        Returns the restart under way, or ``None`` when that ComfyUI was replaced already.
        """
        if generation != self._generation:
            return None
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.create_task(self._restart_comfy(reason))
        return self._restarting

    # --- health -------------------------------------------------------------------------------
    async def _validate_resources(self) -> bool:
        """Whether ComfyUI answers HTTP, its websocket is open and the frontend page can convert.

        What does not work is restarted first (ComfyUI on a fresh port, Chromium
        and its page); ``False`` means something is still down after that, or
        the connector is not ready (never started, failed, killed), in which
        case nothing is restarted.
        """
        if self._state is not ConnectorState.READY:
            return False
        try:
            await self._ensure_healthy()
            await self._converter.ensure_ready()
        except (ComfyUnavailableError, BrowserError) as exc:
            logger.warning("resource validation failed: %s", exc)
            return False
        return self._process.is_alive() and self._require_client().socket_open and self._converter.healthy

    async def _ensure_healthy(self) -> None:
        """Make sure ComfyUI and its websocket work before a run; restart them when they do not.

        Raises ComfyUnavailableError with ``restart_failed`` when ComfyUI cannot be
        brought back: then only a fresh worker helps.
        """
        async with self._health_lock:  # one restart at a time, also when a user validates during a run
            try:
                await self._ensure_comfy()
            except ComfyServerlessError as exc:
                raise ComfyUnavailableError(f"ComfyUI is down and could not be restarted: {exc}",
                                            restart_failed=True) from None

    async def _ensure_comfy(self) -> None:
        restarting, self._restarting = self._restarting, None
        if restarting is not None:
            await restarting
        client = self._require_client()
        if not self._process.is_alive():
            await self._restart_comfy(f"it exited ({self._describe_exit()})")
            return
        try:
            status, _ = await client.request("GET", "/prompt")
        except ComfyUnavailableError:
            status = 0
        if status != 200:
            await self._restart_comfy(f"it did not answer HTTP (status {status})")
            return
        if not client.socket_open:
            await client.connect_socket()

    async def _restart_comfy(self, reason: str) -> None:
        """One ComfyUI, on a freshly chosen port, with the frontend reloaded against it."""
        logger.warning("restarting ComfyUI: %s", reason)
        self._generation += 1
        if self._client is not None:
            await self._client.close()
        await self._process.stop()
        self._process.spawn()
        await self._connect_comfy()
        await self._converter.load(self.server_address)

    @property
    def node_types(self) -> dict[str, Any]:
        """ComfyUI's ``/object_info``, as loaded at boot."""
        return self._node_types

    async def forget_history(self, prompt_ids: list[str]) -> None:
        """Drop finished prompts from ComfyUI's in-memory history, so a long-lived worker does not grow."""
        try:
            await self._require_client().request("POST", "/history", {"delete": prompt_ids})
        except ComfyUnavailableError:
            pass

    # --- files --------------------------------------------------------------------------------
    def upload_data(self, source_path: str | Path, folder_type: str = "input", subfolder: str | None = None,
                    overwrite: bool = False, is_ephemeral: bool = False, *,
                    name: str | None = None, move: bool = False) -> str:
        """Copy a file into one of ComfyUI's folders; returns the full destination path.

        Synchronous, as the API reference documents (``path = connector.upload_data(...)``);
        code on an event loop that places large files uses :meth:`upload_data_async`.
        ``folder_type`` is input, output, temp or models (models needs a
        ``subfolder`` naming a model folder ComfyUI knows, e.g. ``loras``).
        Without ``overwrite`` an existing file is never replaced: the returned
        path carries the name actually used. ``name`` renames the file on the
        way; ``move`` moves instead of copying (a job's downloads: no second
        copy of a large file). Ephemeral files are deleted with
        :meth:`delete_ephemeral` and at :meth:`kill_api`.
        """
        source, target = self._upload_target(source_path, folder_type, subfolder, name)
        return self._track(place_file_sync(source, target, overwrite=overwrite, move=move), is_ephemeral)

    async def upload_data_async(self, source_path: str | Path, folder_type: str = "input",
                                subfolder: str | None = None, overwrite: bool = False, is_ephemeral: bool = False,
                                *, name: str | None = None, move: bool = False) -> str:
        """:meth:`upload_data` with the copy in a worker thread, so the event loop keeps serving."""
        source, target = self._upload_target(source_path, folder_type, subfolder, name)
        return self._track(await place_file(source, target, overwrite=overwrite, move=move), is_ephemeral)

    def _upload_target(self, source_path: str | Path, folder_type: str, subfolder: str | None,
                       name: str | None) -> tuple[Path, Path]:
        """The checked source file and its destination inside ComfyUI's folders (no file is touched)."""
        if self._state is ConnectorState.KILLED:
            raise ConnectorStateError("the connector was killed; call ComfyConnector.create() again")
        source = Path(source_path)
        if not source.is_file():
            raise FileNotFoundError(f"upload source {source} does not exist or is not a file")
        return source, resolve_inside(self.folder_for(folder_type, subfolder), name or source.name)

    def folder_root(self, folder_type: str, subfolder: str | None) -> Path:
        """The folder that names of ``folder_type`` are relative to (for models, the model folder
        ``subfolder`` starts with), resolved."""
        if folder_type not in FOLDER_TYPES:
            raise ValueError(f"folder_type must be one of {', '.join(FOLDER_TYPES)}, got {folder_type!r}")
        root = self.model_folder(subfolder) if folder_type == "models" else self.folders.for_type(folder_type)
        return root.resolve()

    def folder_for(self, folder_type: str, subfolder: str | None) -> Path:
        """The directory ``subfolder`` names in ``folder_type``, checked to stay inside ComfyUI's folders
        (for models, ``subfolder`` starts with the model folder: ``loras/x``)."""
        root = self.folder_root(folder_type, subfolder)
        if folder_type == "models":
            subfolder = "/".join(subfolder.split("/")[1:]) if subfolder else None
        return resolve_inside(root, subfolder) if subfolder else root

    def _track(self, written: Path, is_ephemeral: bool) -> str:
        if is_ephemeral:
            self._ephemeral.add(written)
        return str(written)

    def model_folder(self, subfolder: str | None) -> Path:
        """The directory of the model folder ``subfolder`` starts with (``loras/x`` -> loras), as ComfyUI
        resolves it: a network volume's path from extra_model_paths.yaml when that is where it points."""
        if not subfolder:
            raise ValueError("folder_type 'models' needs a subfolder naming a model folder, e.g. 'loras'")
        folder = subfolder.split("/")[0]
        default = self.folders.models / folder
        paths = [Path(p) for p in self._model_folders.get(folder, [])]
        if paths:
            return default if default in paths else paths[0]
        if any(default == Path(p) for known in self._model_folders.values() for p in known):
            return default  # a legacy name ComfyUI maps, e.g. clip -> text_encoders
        raise ValueError(f"subfolder {subfolder!r} does not name a model folder ComfyUI knows "
                         f"({', '.join(sorted(self._model_folders))})")

    def delete_ephemeral(self, paths: list[str] | None = None) -> list[str]:
        """Delete the given ephemeral files (all of them by default); returns problems met."""
        chosen = self._ephemeral.take([Path(p) for p in paths] if paths is not None else None)
        return remove_paths(chosen, self._roots())

    def delete_outputs(self, history: dict[str, Any]) -> list[str]:
        """Delete the output and temp files a run produced (inputs belong to the job's own cleanup)."""
        paths = [output.path for entry in history.values()
                 for output in collect_outputs(entry, self.folders, include_temp=True)[0]]
        return remove_paths(paths, self._roots())

    def _roots(self) -> list[Path]:
        """Folders below which emptied job folders are removed (model folders may live on a volume)."""
        model_paths = [Path(p) for paths in self._model_folders.values() for p in paths]
        return [self.folders.input, self.folders.output, self.folders.temp, self.folders.models, *model_paths]

    # --- shutdown -----------------------------------------------------------------------------
    async def kill_api(self) -> None:
        """Stop everything this connector started and reset the singleton. Idempotent."""
        creating = type(self)._creating
        if creating is not None and not creating.done() and type(self)._instance is self:
            creating.cancel()
        restarting, self._restarting = self._restarting, None
        if restarting is not None:
            restarting.cancel()
            with contextlib.suppress(BaseException):
                await restarting
        if self._client is not None:
            await self._client.close()
        await self._converter.close()
        await self._process.stop()
        self.delete_ephemeral()
        self._state = ConnectorState.KILLED
        if type(self)._instance is self:
            type(self)._instance = None

    def _kill_sync(self) -> None:
        """The same cleanup without an event loop, for signal handlers and interpreter exit."""
        self._converter.kill_sync()
        self._process.stop_sync()
        self.delete_ephemeral()
        self._state = ConnectorState.KILLED

    @classmethod
    def install_exit_hooks(cls) -> None:
        """Stop ComfyUI and Chromium on SIGTERM/SIGINT and at exit (signals: only from the main thread)."""
        if cls._exit_hooks_installed:
            return
        cls._exit_hooks_installed = True
        atexit.register(cls._cleanup_at_exit)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                cls._cleanup_at_exit()
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    signal.raise_signal(signum)

            signal.signal(sig, handler)

    @classmethod
    def _cleanup_at_exit(cls) -> None:
        instance, cls._instance = cls._instance, None
        if instance is not None:
            instance._kill_sync()
