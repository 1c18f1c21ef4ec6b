"""``ComfyServer``: one running ComfyUI as the worker uses it, kept running.

It joins the process (:mod:`.process`), the client (:mod:`.client`) and what
ComfyUI reports about itself at start (node types, model folders), and owns the
one policy that spans them: a ComfyUI that died, stopped answering or ignored
an interrupt is restarted, on a fresh port, once however many runs failed on it
together. Runs do not queue here: several prompts wait in ComfyUI's own queue,
which executes one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .browser import FRONTEND_SETTINGS
from .client import ComfyClient, PromptRun
from .config import Config
from .errors import ComfyServerlessError, ComfyUnavailableError, ConnectorStateError, RunTimeoutError
from .process import ComfyProcess

logger = logging.getLogger(__name__)


class ComfyServer:
    """Starts ComfyUI, runs prompts on it, and restarts it when it fails.

    ``after_restart`` runs after every restart, once the new ComfyUI answers:
    whatever depends on its address (the frontend page) reconnects there.
    """

    def __init__(self, config: Config, *, after_restart: Callable[[], Awaitable[None]] | None = None) -> None:
        self._config = config
        self._process = ComfyProcess(config)
        self._client: ComfyClient | None = None
        self._after_restart = after_restart
        #: ComfyUI's ``/object_info`` and ``/internal/folder_paths``, as loaded when it last started.
        self.node_types: dict[str, Any] = {}
        self.model_folders: dict[str, list[str]] = {}
        self.output_node_types: set[str] = set()
        self._health_lock = asyncio.Lock()
        self._restarting: asyncio.Task[None] | None = None
        #: Counts restarts: runs that fail together on one dead ComfyUI ask for one restart, not several.
        self._generation = 0
        #: ComfyUI is down and the last attempt to bring it back failed: only a fresh worker helps.
        self.restart_failed = False
        self._stopping = False

    @property
    def base_url(self) -> str:
        return self._process.base_url

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def client(self) -> ComfyClient:
        if self._client is None:
            raise ConnectorStateError("ComfyUI has not been started")
        return self._client

    def is_alive(self) -> bool:
        return self._process.is_alive()

    # --- start --------------------------------------------------------------------------------
    def spawn(self) -> None:
        """Start the process; :meth:`connect` waits for it (the frontend can load meanwhile)."""
        self._process.spawn()

    async def connect(self, frontend_may_start: asyncio.Event | None = None) -> float:
        """Wait for the spawned ComfyUI, prepare the frontend's settings, open the websocket, load node types.

        ``frontend_may_start`` is set as soon as the settings are in place (the
        frontend reads them first), so the frontend's own requests do not wait
        for ours. Returns the seconds ComfyUI took to answer.
        """
        client = ComfyClient(self._process.base_url, http_timeout_s=self._config.http_timeout_s,
                             is_alive=self._process.is_alive, describe_exit=self.describe_exit,
                             reconnect=self._config.reconnect, trace=self._config.websocket_trace)
        self._client = client
        ready_s = await self._process.wait_ready(client.session)
        await client.request("POST", "/settings", FRONTEND_SETTINGS)
        if frontend_may_start is not None:
            frontend_may_start.set()
        await asyncio.gather(client.connect_socket(), self._load_node_types())
        return ready_s

    async def _load_node_types(self) -> None:
        client = self.client
        self.node_types, self.model_folders = await asyncio.gather(
            client.get_json("/object_info"), client.get_json("/internal/folder_paths"))
        self.model_folders.pop("custom_nodes", None)
        self.output_node_types = {name for name, spec in self.node_types.items() if spec.get("output_node")}

    def describe_exit(self) -> str:
        code = self._process.returncode
        tail = self._process.log_tail(10)
        return f"exit code {code}; last lines of its log:\n{tail}" if code is not None else "not started"

    # --- running ------------------------------------------------------------------------------
    async def run_prompt(self, prompt: dict[str, Any], run: PromptRun, *, extra_data: dict[str, Any],
                         timeout_s: float, queue_timeout_s: float) -> dict[str, Any]:
        """Run ``prompt`` as ``run`` on a healthy ComfyUI; ``{prompt_id: history entry}``.

        ``timeout_s`` counts from the start of its execution, ``queue_timeout_s`` (0: none) bounds
        the wait behind other prompts before it.

        A run that finds ComfyUI gone fails at once, and the restart goes on
        meanwhile (the next run waits for it); a run whose prompt ComfyUI would
        not let go of restarts it before failing.
        """
        await self.ensure_healthy()
        generation = self._generation
        try:
            return await self.client.run_prompt(
                prompt, run, extra_data=extra_data, timeout_s=timeout_s, queue_timeout_s=queue_timeout_s,
                interrupt_grace_s=self._config.interrupt_grace_s)
        except ComfyUnavailableError:
            self._schedule_restart("it became unavailable during a run", generation)
            raise
        except RunTimeoutError as exc:
            if exc.stuck:
                restart = self._schedule_restart("it did not stop after an interrupt", generation)
                if restart is not None:
                    await asyncio.shield(restart)
            raise

    async def forget_history(self, prompt_ids: list[str]) -> None:
        """Drop finished prompts from ComfyUI's in-memory history, so a long-lived worker does not grow."""
        with contextlib.suppress(ComfyUnavailableError):
            await self.client.request("POST", "/history", {"delete": prompt_ids})

    # --- health -------------------------------------------------------------------------------
    async def ensure_healthy(self) -> None:
        """Make sure ComfyUI and its websocket work; restart them when they do not.

        Raises ComfyUnavailableError with ``restart_failed`` when ComfyUI cannot be
        brought back: then only a fresh worker helps.
        """
        async with self._health_lock:  # one restart at a time, also when a user validates during a run
            try:
                await self._ensure_running()
            except ComfyServerlessError as exc:
                self.restart_failed = True
                raise ComfyUnavailableError(f"ComfyUI is down and could not be restarted: {exc}",
                                            restart_failed=True) from None
            self.restart_failed = False

    @property
    def healthy(self) -> bool:
        """Whether the process runs and the websocket is open (as of now; :meth:`ensure_healthy` repairs)."""
        return self._process.is_alive() and self._client is not None and self._client.socket_open

    async def _ensure_running(self) -> None:
        """Wait for a restart under way, then restart what does not work (the one restart path)."""
        pending = self._restarting
        if pending is not None and not pending.done():
            with contextlib.suppress(Exception):  # a failed restart shows below: the process is not alive
                await asyncio.shield(pending)  # a cancelled caller leaves the restart going
        reason = await self._why_unhealthy()
        if reason is not None:
            restart = self._schedule_restart(reason, self._generation)
            if restart is None:
                raise ComfyUnavailableError("ComfyUI is being stopped")
            await asyncio.shield(restart)
        elif not self.client.socket_open:
            await self.client.connect_socket()

    async def _why_unhealthy(self) -> str | None:
        if not self._process.is_alive():
            return f"it exited ({self.describe_exit()})"
        try:
            status, _ = await self.client.request("GET", "/prompt")
        except ComfyUnavailableError:
            status = 0
        return None if status == 200 else f"it did not answer HTTP (status {status})"

    def _schedule_restart(self, reason: str, generation: int) -> asyncio.Task[None] | None:
        """Restart the ComfyUI that ``generation`` names, once however many runs failed on it.

        Returns the restart under way (whichever asked for it), or ``None`` when that ComfyUI was
        replaced already or the server is being stopped: then nothing may start another ComfyUI.
        """
        if self._stopping:
            return None
        if self._restarting is not None and not self._restarting.done():
            return self._restarting
        if generation != self._generation:
            return None
        self._restarting = asyncio.create_task(self._restart(reason))
        return self._restarting

    async def _restart(self, reason: str) -> None:
        """One ComfyUI, on a freshly chosen port; then ``after_restart``."""
        logger.warning("restarting ComfyUI: %s", reason)
        self._generation += 1
        if self._client is not None:
            await self._client.close()
        await self._process.stop()
        if self._stopping:
            raise ComfyUnavailableError("ComfyUI is being stopped")
        self._process.spawn()
        await self.connect()
        if self._after_restart is not None:
            await self._after_restart()

    # --- stop ---------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop a restart under way, close the client, stop the process (SIGTERM, then SIGKILL).

        From here on no restart starts: a run that fails on the stopped ComfyUI does not bring it back.
        """
        self._stopping = True
        restarting, self._restarting = self._restarting, None
        if restarting is not None:
            restarting.cancel()
            with contextlib.suppress(BaseException):
                await restarting
        if self._client is not None:
            await self._client.close()
        await self._process.stop()

    def terminate(self) -> None:
        """Stop the process now, without the event loop (a last resort when a graceful stop cannot run)."""
        self._process.stop_sync()
