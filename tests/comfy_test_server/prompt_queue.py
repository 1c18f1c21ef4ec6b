"""The prompt queue and history (ComfyUI execution.py ``PromptQueue``) and the interrupt flag.

Shared between the aiohttp thread (which enqueues, reads /queue and /history) and the executor
thread, hence a lock around everything, like ComfyUI.
"""

from __future__ import annotations

import copy
import heapq
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .app import PromptServer

MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class InterruptProcessingException(Exception):
    """Raised at the next cooperative check after ``POST /interrupt``."""


class Interrupt:
    """ComfyUI's global ``interrupt_processing`` flag (set by HTTP, read by the worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flag = False

    def set(self, value: bool = True) -> None:
        with self._lock:
            self._flag = value

    def throw_if_interrupted(self) -> None:
        with self._lock:
            if self._flag:
                self._flag = False
                raise InterruptProcessingException()


class QueueItem(NamedTuple):
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]


class ExecutionStatus(NamedTuple):
    status_str: str
    completed: bool
    messages: list[Any]


class PromptQueue:
    """Heap queue + running set + history, guarded by one lock, as in ComfyUI."""

    def __init__(self, server: PromptServer) -> None:
        self.server = server
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.task_counter = 0
        self.queue: list[QueueItem] = []
        self.currently_running: dict[int, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, Any] = {}

    def put(self, item: QueueItem) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.server.queue_updated()
            self.not_empty.notify()

    def get(self, timeout: float | None = None) -> tuple[QueueItem, int] | None:
        with self.not_empty:
            while len(self.queue) == 0:
                self.not_empty.wait(timeout=timeout)
                if timeout is not None and len(self.queue) == 0:
                    return None
            item = heapq.heappop(self.queue)
            i = self.task_counter
            self.currently_running[i] = copy.deepcopy(item)
            self.task_counter += 1
            self.server.queue_updated()
            return item, i

    def task_done(self, item_id: int, history_result: dict[str, Any], status: ExecutionStatus | None) -> None:
        with self.mutex:
            prompt = self.currently_running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            for key in SENSITIVE_EXTRA_DATA_KEYS:
                prompt.extra_data.pop(key, None)
            self.history[prompt.prompt_id] = {
                "prompt": list(prompt),
                "outputs": {},
                "status": copy.deepcopy(status._asdict()) if status is not None else None,
            }
            self.history[prompt.prompt_id].update(history_result)
            self.server.queue_updated()

    def get_current_queue(self) -> tuple[list[QueueItem], list[QueueItem]]:
        with self.mutex:
            return list(self.currently_running.values()), copy.deepcopy(self.queue)

    def get_current_queue_volatile(self) -> tuple[list[QueueItem], list[QueueItem]]:
        with self.mutex:
            return list(self.currently_running.values()), list(self.queue)

    def get_tasks_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.currently_running)

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []
            self.server.queue_updated()

    def delete_queue_item(self, prompt_id: str) -> bool:
        with self.mutex:
            for x in range(len(self.queue)):
                if self.queue[x].prompt_id == prompt_id:
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(x)
                        heapq.heapify(self.queue)
                    self.server.queue_updated()
                    return True
        return False

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is None:
                out: dict[str, Any] = {}
                if offset < 0 and max_items is not None:
                    offset = len(self.history) - max_items
                for i, k in enumerate(self.history):
                    if i >= offset:
                        out[k] = self.history[k]
                        if max_items is not None and len(out) >= max_items:
                            break
                return copy.deepcopy(out)
            if prompt_id in self.history:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])}
            return {}

    def wipe_history(self) -> None:
        with self.mutex:
            self.history = {}

    def delete_history_item(self, prompt_id: str) -> None:
        with self.mutex:
            self.history.pop(prompt_id, None)

    def set_flag(self, name: str, data: Any) -> None:
        with self.mutex:
            self.flags[name] = data
            self.not_empty.notify()

    def get_flags(self) -> dict[str, Any]:
        with self.mutex:
            ret, self.flags = self.flags, {}
            return ret
