"""Start the test server as a real subprocess (for pytest fixtures and scripts).

A real process (not an in-process app) is what the worker supervises in production, so
crash/exit/hang faults and boot timing can be exercised faithfully.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.support.loopback import free_port

MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")


@dataclass
class ServerProcess:
    """A running test server; use as a context manager or call ``stop()``."""

    base_dir: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: str
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll ``/system_stats`` until it answers; raise if the process died or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise TimeoutError(f"test server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(base_dir: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 port: int | None = None, wait: bool = True, python: str = sys.executable) -> ServerProcess:
    """Launch ``main.py --base-directory base_dir --port P --cpu *args``; logs go to base_dir/server.log."""
    os.makedirs(base_dir, exist_ok=True)
    port = port or free_port()
    log_path = os.path.join(base_dir, "server.log")
    cmd = [python, MAIN, "--listen", "127.0.0.1", "--port", str(port), "--base-directory", base_dir, "--cpu",
           "--disable-auto-launch", *args]
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(base_dir=base_dir, port=port, proc=proc, log_path=log_path, args=list(args))
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
    return server
