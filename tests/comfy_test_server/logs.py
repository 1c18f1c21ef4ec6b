"""Logging set-up like ComfyUI's app/logger.py: bare messages, stderr by default, and a
300-entry in-memory buffer that ``/internal/logs`` serves."""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from datetime import datetime
from typing import Any

_entries: deque[dict[str, Any]] = deque(maxlen=300)
_lock = threading.Lock()


class _BufferHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"t": datetime.now().isoformat(), "m": self.format(record) + "\n"}
        except Exception:  # never let logging break the server
            return
        with _lock:
            _entries.append(entry)


def get_logs() -> list[dict[str, Any]]:
    """Snapshot of buffered ``{"t": iso time, "m": message}`` entries."""
    with _lock:
        return list(_entries)


def setup_logging(level: str = "INFO", use_stdout: bool = False) -> None:
    """``--log-stdout`` sends < ERROR to stdout and the rest to stderr, as ComfyUI does."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    fmt = logging.Formatter("%(message)s")
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(fmt)
    if use_stdout:
        stderr_handler.addFilter(lambda r: r.levelno >= logging.ERROR)
        stdout_handler = logging.StreamHandler(sys.stdout)
        stdout_handler.setFormatter(fmt)
        stdout_handler.addFilter(lambda r: r.levelno < logging.ERROR)
        root.addHandler(stdout_handler)
    root.addHandler(stderr_handler)
    buffer = _BufferHandler()
    buffer.setFormatter(fmt)
    root.addHandler(buffer)
    # aiohttp's access log would add noise ComfyUI does not print.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
