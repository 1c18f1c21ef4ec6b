"""Fault injection, so the worker's failure handling can be tested against a real process.

Boot faults come from environment variables read at start-up; run-time faults are set via
``POST /_test/faults`` and read by the executor thread, hence the lock. "next prompt" faults
are consumed once, when they fire.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

#: Faults that fire once, on the next prompt.
ONE_SHOT = ("exit_during_next_prompt", "hang_next_prompt", "hang_ignoring_interrupt",
            "drop_websocket_during_next_prompt", "fail_next_prompt_with")
#: Faults that persist until reset.
PERSISTENT = ("node_delay_s", "progress_steps", "class_delay_s")
KNOWN = ONE_SHOT + PERSISTENT


class FaultState:
    """Thread-safe fault settings shared by the HTTP handlers and the executor thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (``{"reset": true}`` clears first); falsy/None values remove a key."""
        unknown = [k for k in changes if k not in KNOWN and k != "reset"]
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(KNOWN)}")
        with self._lock:
            if changes.get("reset"):
                self._state.clear()
            for key, value in changes.items():
                if key == "reset":
                    continue
                if value is None or value is False or value == 0:
                    self._state.pop(key, None)
                else:
                    self._state[key] = value
            return dict(self._state)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._state.get(key, default)

    def consume(self, key: str) -> Any:
        """Return and clear a one-shot fault (None if not armed)."""
        with self._lock:
            return self._state.pop(key, None)


def apply_boot_faults() -> None:
    """``COMFY_TEST_BOOT_EXIT_CODE`` exits after a fake crash; ``COMFY_TEST_BOOT_DELAY_S`` stalls boot."""
    exit_code = os.environ.get("COMFY_TEST_BOOT_EXIT_CODE")
    if exit_code:
        logging.info("Loading custom nodes...")
        logging.error("Traceback (most recent call last):\n"
                      '  File "/comfyui/main.py", line 147, in <module>\n'
                      "    import execution\n"
                      '  File "/comfyui/execution.py", line 15, in <module>\n'
                      "    import comfy.model_management\n"
                      "RuntimeError: COMFY_TEST_BOOT_EXIT_CODE: simulated start-up crash")
        sys.stdout.flush()
        sys.stderr.flush()
        sys.exit(int(exit_code))
    delay = os.environ.get("COMFY_TEST_BOOT_DELAY_S")
    if delay:
        logging.info(f"Delaying start-up by {float(delay)} s (COMFY_TEST_BOOT_DELAY_S)")
        time.sleep(float(delay))
