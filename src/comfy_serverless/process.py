"""The ComfyUI server process: finding a port, spawning, readiness, and a stop that leaves nothing behind.

ComfyUI runs in its own process group so that SIGTERM/SIGKILL reach every
process it spawned, and so that a Ctrl-C in the worker's terminal is handled by
the worker (which then stops ComfyUI in order) rather than by both at once.
Being in its own session, it would outlive a worker that ends without stopping
it (a script that never calls ``kill_api()``, an OOM kill); on Linux the kernel
kills it then (``PR_SET_PDEATHSIG``), with no exit hook in the library.
Its output goes to a log file whose tail is put into every boot error: "exited
with code 1" is useless without the traceback that preceded it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque

import aiohttp
import psutil

from .config import Config
from .errors import ComfyStartError

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: libc's prctl, looked up before any fork: the child may only call it between fork and exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the thread that started it ends (the worker's loop
    thread, or the process). Nothing graceful is left to do for a ComfyUI whose worker is gone."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

LOG_TAIL_LINES = 30
#: ComfyUI's seed for hashing strings, unless the environment sets one. Node packs build definitions
#: from sets (VideoHelperSuite's ``vhs_path_extensions``), whose order follows the seed: with Python's
#: random one, /object_info differs at every boot, and a frontend record made at build time would be
#: stale at every cold start. A fixed seed gives the same definitions at every boot of the same ComfyUI.
COMFY_HASH_SEED = "0"


def find_free_port(host: str, start: int, attempts: int = 100) -> int:
    """The first port from ``start`` that can be bound on ``host`` right now."""
    for port in range(start, min(start + attempts, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise ComfyStartError(f"no free TCP port on {host} in {start}-{start + attempts - 1} "
                          "(set INITIAL_PORT to a free range)")


class ComfyProcess:
    """One ComfyUI server subprocess."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._popen: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def base_url(self) -> str:
        return f"http://{self._config.api_url}:{self.port}"

    def is_alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def spawn(self) -> None:
        """Start ComfyUI on a free port; returns at once (see :meth:`wait_ready`)."""
        config = self._config
        if not config.working_directory.is_dir():
            raise ComfyStartError(
                f"ComfyUI directory {config.working_directory} does not exist "
                "(set COMFYUI_PATH or API_WORKING_DIRECTORY to where ComfyUI is installed)")
        self.port = find_free_port(config.api_url, config.initial_port)
        command = [*config.command, "--port", str(self.port), "--listen", config.api_url]
        config.log_path.parent.mkdir(parents=True, exist_ok=True)
        with config.log_path.open("ab") as log:
            log.write(f"\n--- comfy-serverless starting ComfyUI: {' '.join(command)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    command, cwd=config.working_directory, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
                    env={"PYTHONHASHSEED": COMFY_HASH_SEED, **os.environ})
            except OSError as exc:
                raise ComfyStartError(f"cannot start ComfyUI with {command[0]!r}: {exc} "
                                      "(check API_COMMAND_LINE)", command=command) from None
        logger.info("ComfyUI starting (pid %s, port %s, log %s)", self._popen.pid, self.port, config.log_path)

    async def wait_ready(self, session: aiohttp.ClientSession) -> float:
        """Poll until ComfyUI answers HTTP; seconds taken. Fails at once if the process exits."""
        config = self._config
        started = time.monotonic()
        url = f"{self.base_url}/prompt"
        timeout = aiohttp.ClientTimeout(total=max(1.0, config.comfy_start_attempts_sleep * 10))
        for _ in range(config.max_comfy_start_attempts):
            code = self.returncode
            if code is not None:
                raise ComfyStartError(
                    f"ComfyUI exited with code {code} during startup; last lines of {config.log_path}:\n"
                    f"{self.log_tail()}", exit_code=code, log_file=str(config.log_path))
            try:
                async with session.get(url, timeout=timeout) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(config.comfy_start_attempts_sleep)
        raise ComfyStartError(
            f"ComfyUI did not answer on {self.base_url} within {config.start_budget_s:.0f} s "
            f"(MAX_COMFY_START_ATTEMPTS x COMFY_START_ATTEMPTS_SLEEP); last lines of {config.log_path}:\n"
            f"{self.log_tail()}", log_file=str(config.log_path))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with self._config.log_path.open("rb") as log:
                return b"".join(deque(log, maxlen=lines)).decode("utf-8", "replace").rstrip()
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def stop_sync(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period; synchronous for exit handlers."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        descendants = _descendants(popen.pid)
        _signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=self._config.kill_grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("ComfyUI (pid %s) ignored SIGTERM for %.0f s; killing it",
                           popen.pid, self._config.kill_grace_s)
        _signal_group(popen.pid, signal.SIGKILL)
        for child in descendants:  # children that left the group (setsid) still die
            try:
                child.kill()
            except psutil.Error:
                pass
        popen.wait()
        psutil.wait_procs(descendants, timeout=2)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
