"""Talking to ComfyUI: HTTP calls, one persistent websocket, and following a prompt to its end.

Rules from ComfyUI's protocol (see comfyui-protocol.md) that shape this module:

* The websocket is opened, with our ``clientId``, *before* the prompt is queued,
  and the prompt carries that ``client_id``: otherwise its events are never sent.
* We choose the ``prompt_id`` ourselves, so events that arrive before the
  ``POST /prompt`` response are not lost.
* A prompt is finished on ``executing`` with ``node: null`` and our prompt id:
  the history entry is written by then (``execution_success`` races it).
* Messages can be lost (socket dropped, ComfyUI busy): after a reconnect, and
  after a few seconds of silence, ``GET /history/{id}`` settles the question, so
  a lost completion message never hangs a run.
* Reconnecting with the same ``clientId`` while the old socket is open leaves the
  new one deaf, so the old one is closed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from .errors import (
    ComfyServerlessError,
    ComfyUnavailableError,
    ExecutionError,
    ExecutionInterruptedError,
    PromptValidationError,
    RunTimeoutError,
    UnexpectedResponseError,
)
from .events import Progress, ProgressCallback

logger = logging.getLogger(__name__)

#: Seconds without any message for our prompt after which history is checked.
SILENCE_CHECK_S = 3.0
#: Characters of a frame that WEBSOCKET_TRACE logs.
TRACE_CHARS = 200

_SOCKET_CLOSED = object()
#: Messages only an executing prompt gets (``execution_start`` first, unless it was lost).
_EXECUTING_EVENTS = frozenset({"execution_start", "execution_cached", "executing", "progress", "executed"})

#: Hears a node's outputs as soon as ComfyUI reports them (``executed``); must not block.
OutputCallback = Callable[[str, dict[str, Any]], None]


class ComfyClient:
    """HTTP and websocket client for one ComfyUI server."""

    def __init__(self, base_url: str, *, http_timeout_s: float, is_alive: Callable[[], bool],
                 describe_exit: Callable[[], str], reconnect: tuple[float, float],
                 trace: bool = False) -> None:
        """``reconnect``: the seconds spent reopening a dropped websocket and the pause between attempts;
        ``trace``: log every frame (WEBSOCKET_TRACE)."""
        self.base_url = base_url.rstrip("/")
        self._reconnect_budget_s, self._reconnect_delay_s = reconnect
        self._trace = trace
        self.client_id = uuid.uuid4().hex
        self._http_timeout = aiohttp.ClientTimeout(total=http_timeout_s)
        self._is_alive = is_alive
        self._describe_exit = describe_exit
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watches: dict[str, asyncio.Queue[Any]] = {}

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._http_timeout)
        return self._session

    @property
    def websocket(self) -> aiohttp.ClientWebSocketResponse | None:
        """The websocket the prompts' messages arrive on (``None`` before it opens): for diagnostics and tests."""
        return self._ws

    @property
    def socket_open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def close(self) -> None:
        await self._close_socket()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- HTTP ---------------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; ``(status, parsed JSON or text)``. Connection failures mean ComfyUI is gone."""
        try:
            async with self.session.request(method, self.base_url + path, json=body) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text) if text else None
                except json.JSONDecodeError:
                    return response.status, text
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._unavailable(f"{method} {path} failed: {exc!r}") from None

    async def get_json(self, path: str) -> Any:
        status, body = await self.request("GET", path)
        if status != 200:
            raise UnexpectedResponseError(f"ComfyUI answered GET {path} with HTTP {status}: {str(body)[:300]}",
                                          http_status=status)
        return body

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of ``prompt_id``, or ``None`` while it has not finished."""
        body = await self.get_json(f"/history/{prompt_id}")
        return body.get(prompt_id) if isinstance(body, dict) else None

    async def interrupt(self, prompt_id: str) -> None:
        """Stop ``prompt_id`` and no other, whether it waits or runs.

        It is taken off the queue first, then interrupted: ComfyUI (0.3.64)
        interrupts only when the prompt named is the one executing, so another
        job's prompt is never hit, and a prompt that starts between the two
        calls is still caught by the second.
        """
        await self.request("POST", "/queue", {"delete": [prompt_id]})
        await self.request("POST", "/interrupt", {"prompt_id": prompt_id})

    async def queue_prompt(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any]) -> None:
        body = {"prompt": prompt, "prompt_id": prompt_id, "client_id": self.client_id, "extra_data": extra_data}
        status, answer = await self.request("POST", "/prompt", body)
        if status == 200 and isinstance(answer, dict):
            if answer.get("node_errors"):
                # ComfyUI queued the valid outputs only; a half-run job is worse than a clear failure.
                raise validation_error({"error": {"type": "prompt_outputs_failed_validation",
                                                  "message": "Some outputs failed validation and were dropped"},
                                        "node_errors": answer["node_errors"]}, queued=True)
            return
        if isinstance(answer, dict):
            raise validation_error(answer)
        raise PromptValidationError(f"ComfyUI could not accept the prompt (HTTP {status}): {str(answer)[:300]}",
                                    http_status=status)

    # --- websocket ----------------------------------------------------------------------------
    async def connect_socket(self) -> None:
        """(Re)open the websocket; the old socket is closed first (see the module docstring)."""
        await self._close_socket()
        try:
            self._ws = await self.session.ws_connect(self.ws_url, heartbeat=30, max_msg_size=0)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._unavailable(f"websocket connection failed: {exc!r}") from None
        if self._trace:
            logger.info("websocket trace: connected to %s", self.ws_url)
        self._reader = asyncio.create_task(self._read(self._ws), name="comfy-ws-reader")

    async def _close_socket(self) -> None:
        reader, ws = self._reader, self._ws
        self._reader, self._ws = None, None
        if ws is not None:
            await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if self._trace:
                    _trace(message)
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary previews carry no prompt id
                try:
                    event = json.loads(message.data)
                except json.JSONDecodeError:
                    continue
                data = event.get("data")
                prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
                watch = self._watches.get(prompt_id) if prompt_id else None
                if watch is not None:
                    watch.put_nowait(event)
        finally:
            if self._trace:
                logger.info("websocket trace: closed (code %s)", ws.close_code)
            if self._ws is ws:
                for watch in self._watches.values():
                    watch.put_nowait(_SOCKET_CLOSED)

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_budget_s
        while True:
            if not self._is_alive():
                raise self._unavailable("the websocket closed")
            try:
                await self.connect_socket()
                return
            except ComfyUnavailableError:
                if loop.time() + self._reconnect_delay_s > deadline:
                    raise
                await asyncio.sleep(self._reconnect_delay_s)

    def _unavailable(self, what: str) -> ComfyUnavailableError:
        if not self._is_alive():
            return ComfyUnavailableError(f"ComfyUI is not running ({self._describe_exit()}); {what}")
        return ComfyUnavailableError(f"ComfyUI at {self.base_url} is not reachable: {what}")

    # --- running a prompt ---------------------------------------------------------------------
    async def run_prompt(self, prompt: dict[str, Any], run: PromptRun, *, extra_data: dict[str, Any],
                         timeout_s: float, interrupt_grace_s: float, queue_timeout_s: float = 0.0) -> dict[str, Any]:
        """Queue ``prompt`` as ``run`` and follow it to its end; returns ``{prompt_id: history_entry}``.

        Several prompts may be followed at once; ComfyUI executes them one at a
        time, so ``timeout_s`` counts from the prompt's ``execution_start``, and
        the wait in ComfyUI's queue before it has its own budget,
        ``queue_timeout_s`` (0: none). Raises PromptValidationError,
        ExecutionError, ExecutionInterruptedError, RunTimeoutError or
        ComfyUnavailableError. A cancelled run is taken off ComfyUI's queue, or
        interrupted if it executes. Whatever ended it, ``run`` tells the caller
        what the prompt wrote (:meth:`PromptRun.written`).
        """
        watch: asyncio.Queue[Any] = asyncio.Queue()
        self._watches[run.prompt_id] = watch
        run.nodes_total = len(prompt)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if not self.socket_open:
                await self.connect_socket()
            run.sent = True
            await self.queue_prompt(prompt, run.prompt_id, extra_data)
            entry = await self._follow(run, watch, _Deadlines(loop, queue_timeout_s, timeout_s))
            executing = run.started_at or loop.time()
            run.timings.update(queue=executing - started, execute=loop.time() - executing)
            run.entry = entry
            return {run.prompt_id: entry}
        except _OutOfTime as late:
            stuck = not await self._stop(run, watch, interrupt_grace_s)
            raise RunTimeoutError(
                late.message(run.prompt_id) + (" (ComfyUI did not stop; it will be restarted)" if stuck else ""),
                prompt_id=run.prompt_id, timeout_s=late.budget_s, phase=late.phase, stuck=stuck) from None
        except PromptValidationError as exc:
            if exc.queued:
                await self._stop(run, watch, interrupt_grace_s)
            raise
        except asyncio.CancelledError:
            # The job was cancelled (RunPod's per-job stop): stop its prompt too, then let the cancel go on.
            if run.sent:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop(run, watch, interrupt_grace_s))
            raise
        finally:
            del self._watches[run.prompt_id]

    async def _follow(self, run: PromptRun, watch: asyncio.Queue[Any], deadlines: _Deadlines) -> dict[str, Any]:
        prompt_id = run.prompt_id
        while True:
            event = await _next_event(watch, deadlines.wait_s(run.started_at, SILENCE_CHECK_S))
            if event is None or event is _SOCKET_CLOSED:
                entry = await self._settle(run, event is _SOCKET_CLOSED)
                if entry is not None:
                    return finished_entry(entry)
                deadlines.check(run.started_at)
                continue
            kind, data = event.get("type"), event.get("data") or {}
            if kind == "executing" and data.get("node") is None:
                entry = await self.history(prompt_id)
                if entry is None:  # cannot happen with a real ComfyUI; never trust it blindly
                    raise UnexpectedResponseError(f"prompt {prompt_id} finished but ComfyUI has no history for it")
                return finished_entry(entry)
            if kind == "execution_error":
                raise execution_error(data)
            if kind == "execution_interrupted":
                raise interrupted_error(data)
            await run.observe(kind, data)
            deadlines.check(run.started_at)

    async def _settle(self, run: PromptRun, socket_closed: bool) -> dict[str, Any] | None:
        """After silence or a dropped socket: the finished entry if there is one; else note whether it runs."""
        prompt_id = run.prompt_id
        if socket_closed:
            logger.warning("websocket dropped while prompt %s ran; reconnecting", prompt_id)
            await self._reconnect()
        elif not self._is_alive():
            raise self._unavailable(f"while prompt {prompt_id} ran")
        entry = await self.history(prompt_id)
        if entry is None and run.started_at is None and prompt_id in await self.running_prompts():
            run.mark_started()  # its execution_start was lost
        return entry

    async def running_prompts(self) -> set[str]:
        """The ids of the prompts ComfyUI executes now (one, or none)."""
        queue = await self.get_json("/queue")
        return {item[1] for item in queue.get("queue_running", [])}

    async def _stop(self, run: PromptRun, watch: asyncio.Queue[Any], grace_s: float) -> bool:
        """Interrupt the run's prompt; true if ComfyUI let go of it within ``grace_s``."""
        prompt_id = run.prompt_id

        async def stopped() -> None:
            await self.interrupt(prompt_id)
            while True:
                event = await _next_event(watch, 0.5)
                if event is not None and event is not _SOCKET_CLOSED:
                    await run.observe(event.get("type"), event.get("data") or {})
                    if event.get("type") in ("execution_interrupted", "execution_error", "execution_success"):
                        return
                entry = await self.history(prompt_id)
                if entry is not None:
                    run.outputs.update(entry.get("outputs") or {})
                    return
                queue = await self.get_json("/queue")
                if not any(item[1] == prompt_id for item in queue.get("queue_running", []) +
                           queue.get("queue_pending", [])):
                    return

        try:
            await asyncio.wait_for(stopped(), grace_s)
            return True
        except (TimeoutError, ComfyServerlessError):
            return False


class _OutOfTime(Exception):
    """A run's budget ran out: ``phase`` is ``queue`` (waiting behind other prompts) or ``execute``."""

    def __init__(self, phase: str, budget_s: float) -> None:
        self.phase, self.budget_s = phase, budget_s

    def message(self, prompt_id: str) -> str:
        if self.phase == "queue":
            return (f"the prompt waited more than {self.budget_s:g} s in ComfyUI's queue behind other jobs "
                    "(QUEUE_TIMEOUT_S) and was taken off it")
        return f"the prompt did not finish within {self.budget_s:g} s and was interrupted"


class _Deadlines:
    """A run's two budgets: the wait in ComfyUI's queue, then the execution (from ``execution_start``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_s: float, execute_s: float) -> None:
        self._loop = loop
        self._queued_at = loop.time()
        self._queue_s, self._execute_s = queue_s, execute_s

    def _left(self, started_at: float | None) -> tuple[float, str, float]:
        if started_at is None:
            left = self._queued_at + self._queue_s - self._loop.time() if self._queue_s else float("inf")
            return left, "queue", self._queue_s
        return started_at + self._execute_s - self._loop.time(), "execute", self._execute_s

    def wait_s(self, started_at: float | None, at_most: float) -> float:
        """How long to wait for the next message: until the current deadline, at most ``at_most``."""
        return max(0.0, min(at_most, self._left(started_at)[0]))

    def check(self, started_at: float | None) -> None:
        left, phase, budget = self._left(started_at)
        if left <= 0:
            raise _OutOfTime(phase, budget)


def _trace(message: aiohttp.WSMessage) -> None:
    """One frame as WEBSOCKET_TRACE logs it: its kind, size and beginning (binary frames are previews)."""
    size = len(message.data) if isinstance(message.data, (str, bytes)) else 0
    head = message.data[:TRACE_CHARS] if isinstance(message.data, str) else ""
    logger.info("websocket trace: %s frame, %d bytes %s", message.type.name, size, head)


async def _next_event(watch: asyncio.Queue[Any], timeout_s: float) -> Any:
    """The next message for a prompt, or ``None`` after ``timeout_s`` of silence.

    Not ``asyncio.wait_for``: on Python 3.11 it loses a cancel that arrives as a
    message does, and a cancelled job must stop its prompt, however busy the socket.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await watch.get()
    except TimeoutError:
        return None


class PromptRun:
    """One prompt's run, created and owned by whoever runs it: its id, its progress, what it wrote.

    The owner reads it after the run, however that ended (success, an error, a
    cancel): a failed prompt's history lists no outputs, yet nodes that ran
    before the failure wrote files; ``executed`` messages are the only record of
    them, and cleanup needs it.
    """

    def __init__(self, *, progress: ProgressCallback | None = None, on_executed: OutputCallback | None = None) -> None:
        self.prompt_id = str(uuid.uuid4())
        self.nodes_total = 0
        #: Whether the prompt was sent to ComfyUI: from then on it may run, write files and keep a history entry.
        self.sent = False
        #: The finished history entry; ``None`` until the prompt finished successfully.
        self.entry: dict[str, Any] | None = None
        self.outputs: dict[str, Any] = {}
        self.started_at: float | None = None
        #: Seconds spent in ComfyUI's queue and executing, once finished.
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._on_executed = on_executed
        self._done: set[str] = set()
        self._current: str | None = None

    def written(self) -> dict[str, Any]:
        """``{prompt_id: {"outputs": ...}}`` of what the prompt wrote so far, as history entries list files."""
        return {self.prompt_id: {"outputs": dict(self.outputs)}}

    def mark_started(self) -> None:
        if self.started_at is None:
            self.started_at = asyncio.get_running_loop().time()

    async def observe(self, kind: str, data: dict[str, Any]) -> None:
        if kind in _EXECUTING_EVENTS:
            self.mark_started()
        if kind == "executed" and isinstance(data.get("output"), dict):
            self.outputs[str(data.get("node"))] = data["output"]
            if self._on_executed is not None:
                self._on_executed(str(data.get("node")), data["output"])
        if self._progress is None:
            return
        if kind == "execution_cached":
            self._done.update(str(n) for n in data.get("nodes", []))
            return
        if kind == "executing":
            if self._current is not None:
                self._done.add(self._current)
            self._current = str(data.get("node"))
            await self._emit(self._current, 0, 1)
        elif kind == "progress":
            await self._emit(str(data.get("node")), float(data.get("value", 0)), float(data.get("max", 1)))

    async def _emit(self, node: str, value: float, maximum: float) -> None:
        event = Progress(self.prompt_id, node, value, maximum, len(self._done), self.nodes_total)
        result = self._progress(event) if self._progress else None
        if inspect.isawaitable(result):
            await result


def finished_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The history entry of a finished prompt, or the error it ended with."""
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for kind, data in reversed(status.get("messages") or []):
            if kind == "execution_error":
                raise execution_error(data)
            if kind == "execution_interrupted":
                raise interrupted_error(data)
        raise ExecutionError("ComfyUI reports the prompt failed, without details", history=entry)
    return entry


def execution_error(data: dict[str, Any]) -> ExecutionError:
    message = str(data.get("exception_message", "")).strip()
    return ExecutionError(
        f"node {data.get('node_id')} ({data.get('node_type')}) raised {data.get('exception_type')}: {message}",
        node_id=data.get("node_id"), node_type=data.get("node_type"),
        exception_type=data.get("exception_type"), exception_message=message,
        traceback=data.get("traceback", []), prompt_id=data.get("prompt_id"))


def interrupted_error(data: dict[str, Any]) -> ExecutionInterruptedError:
    return ExecutionInterruptedError(
        f"the prompt was interrupted at node {data.get('node_id')} ({data.get('node_type')})",
        node_id=data.get("node_id"), node_type=data.get("node_type"), prompt_id=data.get("prompt_id"))


def validation_error(answer: dict[str, Any], *, queued: bool = False) -> PromptValidationError:
    """ComfyUI's 400 body as one readable line naming node id, class and input, plus the raw details."""
    error = answer.get("error") or {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    node_errors = answer.get("node_errors") or {}
    items = node_errors.items() if isinstance(node_errors, dict) else enumerate(node_errors)
    parts: list[str] = []
    for node_id, node_error in items:
        if not isinstance(node_error, dict):
            parts.append(f"node {node_id}: {node_error}")
            continue
        class_type = node_error.get("class_type", "?")
        for item in node_error.get("errors") or []:
            input_name = (item.get("extra_info") or {}).get("input_name")
            where = f"node {node_id} ({class_type})" + (f" input '{input_name}'" if input_name else "")
            detail = item.get("details") or ""
            parts.append(f"{where}: {item.get('message', 'invalid')}" + (f": {detail}" if detail else ""))
    head = error.get("message") or "ComfyUI rejected the prompt"
    detail = error.get("details")
    message = head + (f" ({detail})" if detail else "") + ("; " + "; ".join(parts) if parts else "")
    return PromptValidationError(message, queued=queued, comfy_error=error, node_errors=node_errors)
