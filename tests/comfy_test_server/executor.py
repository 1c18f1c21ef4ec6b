"""Prompt queue, executor and node cache, following ComfyUI 0.3.64's execution.py/main.py.

Like ComfyUI, a single daemon thread (``prompt_worker``) pops prompts off a heap queue and
runs them, emitting websocket events through ``server.send_sync``. The order of events,
the history entry (written *before* ``executing {node: null}``), the routing by
``extra_data.client_id`` and the "classic" cache (which re-sends ``executed`` with the
*previous* file names for an identical re-queued prompt) are all reproduced, because
worker code depends on them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from .cache import CacheSet, NodeCache
from .faults import FaultState
from .nodes import IS_CHANGED, NodeContext, NodeDefinitions, instantiate
from .prompt_queue import ExecutionStatus, Interrupt, InterruptProcessingException, PromptQueue
from .validation import full_type_name, get_input_info, is_link

if TYPE_CHECKING:
    from .app import PromptServer


# --------------------------------------------------------------------------------------------
# Progress (comfy_execution/progress.py)
# --------------------------------------------------------------------------------------------


class ProgressRegistry:
    """Per-prompt node progress; every change sends the whole non-pending map as progress_state."""

    def __init__(self, server: PromptServer, prompt_id: str) -> None:
        self.server = server
        self.prompt_id = prompt_id
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _send(self) -> None:
        active = {
            nid: {"value": s["value"], "max": s["max"], "state": s["state"], "node_id": nid,
                  "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
            for nid, s in self.nodes.items() if s["state"] != "pending"
        }
        self.server.send_sync("progress_state", {"prompt_id": self.prompt_id, "nodes": active},
                              self.server.client_id)

    def start(self, node_id: str) -> None:
        e = self._entry(node_id)
        e.update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id: str, value: float, max_value: float) -> None:
        e = self._entry(node_id)
        e.update(state="running", value=value, max=max_value)
        self._send()

    def finish(self, node_id: str) -> None:
        e = self._entry(node_id)
        e.update(state="finished", value=e["max"])
        self._send()


# --------------------------------------------------------------------------------------------
# Execution order (comfy_execution/graph.py ExecutionList, without lazy/async/subgraphs)
# --------------------------------------------------------------------------------------------


class ExecutionList:
    """Topological dissolve with ComfyUI's "output nodes first" pick heuristic."""

    def __init__(self, prompt: dict[str, Any], defs: NodeDefinitions, outputs: NodeCache) -> None:
        self.prompt = prompt
        self.defs = defs
        self.outputs = outputs
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}
        self.staged: str | None = None

    def is_cached(self, node_id: str) -> bool:
        return self.outputs.get(node_id) is not None

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for name, value in self.prompt[uid]["inputs"].items():
                if is_link(value):
                    src, socket = value
                    defn = self.defs.get(self.prompt[uid]["class_type"]) or {"input": {}}
                    _, _, info = get_input_info(defn, name)
                    lazy = bool(info and info.get("lazy"))
                    if not lazy and not self.is_cached(src):
                        stack.append(src)
                        links.append((src, socket, uid))
        for src, socket, dst in links:
            if not self.is_cached(src):
                self.add_node(src)
                if dst not in self.blocking[src]:
                    self.blocking[src][dst] = {}
                    self.block_count[dst] += 1
                self.blocking[src][dst][socket] = True

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str | None:
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            return None
        self.staged = self._pick(available)
        return self.staged

    def _pick(self, available: list[str]) -> str:
        def is_output(nid: str) -> bool:
            return self.defs.is_output(self.prompt[nid]["class_type"])

        for nid in available:
            if is_output(nid):
                return nid
        for nid in available:
            if any(is_output(b) for b in self.blocking[nid]):
                return nid
        for nid in available:
            if any(is_output(b2) for b in self.blocking[nid] for b2 in self.blocking[b]):
                return nid
        return available[0]

    def complete(self) -> None:
        node_id = self.staged
        assert node_id is not None
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]
        self.staged = None


# --------------------------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------------------------


def format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


class PromptExecutor:
    """Runs one prompt at a time; mirrors ``PromptExecutor.execute_async`` and ``execute``."""

    def __init__(self, server: PromptServer, defs: NodeDefinitions, ctx: NodeContext, faults: FaultState,
                 interrupt: Interrupt, cache_none: bool) -> None:
        self.server = server
        self.defs = defs
        self.ctx = ctx
        self.faults = faults
        self.interrupt = interrupt
        self.cache_none = cache_none
        self.reset()

    def reset(self) -> None:
        """Drop every cached output (``POST /free {"free_memory": true}``)."""
        self.caches = CacheSet(self.cache_none)
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.success = True
        self.history_result: dict[str, Any] = {}

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.status_messages.append((event, data))
        if self.server.client_id is not None or broadcast:
            self.server.send_sync(event, data, self.server.client_id)

    def _is_changed(self, prompt: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node_id, node in prompt.items():
            fn = IS_CHANGED.get(node["class_type"])
            if fn is None:
                out[node_id] = False
                continue
            try:
                consts = {k: v for k, v in node["inputs"].items() if not is_link(v)}
                out[node_id] = [fn(self.ctx, **consts)]
            except Exception as e:
                logging.warning(f"WARNING: {e}")
                out[node_id] = math.nan
        return out

    def execute(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any],
                execute_outputs: list[str]) -> None:
        self.interrupt.set(False)
        self.server.client_id = extra_data.get("client_id") if "client_id" in extra_data else None
        self.status_messages = []
        self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
        if self.faults.consume("drop_websocket_during_next_prompt"):
            logging.info("[fault] closing every websocket")
            self.server.send_sync("__close_all_sockets__", None, None)

        self.progress = ProgressRegistry(self.server, prompt_id)
        id_nodes = {nid for nid, n in prompt.items()
                    if "UNIQUE_ID" in self.defs.hidden(n["class_type"]).values()}
        self.caches.set_prompt(prompt, self._is_changed(prompt), id_nodes)
        cached_nodes = [nid for nid in prompt if self.caches.outputs.get(nid) is not None]
        self.add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, broadcast=False)

        executed: list[str] = []
        execution_list = ExecutionList(prompt, self.defs, self.caches.outputs)
        current_outputs = self.caches.outputs.all_node_ids()
        for node_id in execute_outputs:
            execution_list.add_node(node_id)

        self.success = True
        while not execution_list.is_empty():
            node_id = execution_list.stage()
            if node_id is None:
                error = {"node_id": next(iter(execution_list.pending)),
                         "exception_message": "Dependency cycle detected",
                         "exception_type": "graph.DependencyCycleError", "traceback": [], "current_inputs": []}
                self.success = False
                self.handle_execution_error(prompt_id, prompt, current_outputs, executed, error, None)
                break
            ok, error, ex = self.execute_node(prompt, prompt_id, node_id, extra_data, executed)
            self.success = ok
            if not ok:
                assert error is not None
                self.handle_execution_error(prompt_id, prompt, current_outputs, executed, error, ex)
                break
            execution_list.complete()
        else:
            self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)

        ui_outputs, meta_outputs = {}, {}
        for node_id in self.caches.ui.all_node_ids():
            ui_info = self.caches.ui.get(node_id)
            if ui_info is not None:
                ui_outputs[node_id] = ui_info["output"]
                meta_outputs[node_id] = ui_info["meta"]
        self.history_result = {"outputs": ui_outputs, "meta": meta_outputs}
        self.server.last_node_id = None

    def handle_execution_error(self, prompt_id: str, prompt: dict[str, Any], current_outputs: list[str],
                               executed: list[str], error: dict[str, Any], ex: BaseException | None) -> None:
        node_id = error["node_id"]
        mes: dict[str, Any] = {"prompt_id": prompt_id, "node_id": node_id,
                               "node_type": prompt[node_id]["class_type"], "executed": list(executed)}
        if isinstance(ex, InterruptProcessingException):
            self.add_message("execution_interrupted", mes, broadcast=True)
            return
        mes.update({"exception_message": error["exception_message"], "exception_type": error["exception_type"],
                    "traceback": error["traceback"], "current_inputs": error["current_inputs"],
                    "current_outputs": list(current_outputs)})
        self.add_message("execution_error", mes, broadcast=False)

    def _input_data(self, prompt: dict[str, Any], node_id: str, extra_data: dict[str, Any]
                    ) -> dict[str, list[Any]]:
        node = prompt[node_id]
        defn = self.defs.get(node["class_type"]) or {"input": {}}
        data: dict[str, list[Any]] = {}
        for name, value in node["inputs"].items():
            _, category, _ = get_input_info(defn, name)
            if is_link(value):
                cached = self.caches.outputs.get(value[0])
                idx = int(value[1])
                data[name] = cached[idx] if cached is not None and idx < len(cached) else [None]
            elif category is not None:  # unknown extra keys are ignored (but count in the cache key)
                data[name] = [value]
        for name, kind in self.defs.hidden(node["class_type"]).items():
            if kind == "PROMPT":
                data[name] = [prompt]
            elif kind == "EXTRA_PNGINFO":
                data[name] = [extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                data[name] = [node_id]
            elif kind in ("AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"):
                data[name] = [extra_data.get(kind.lower())]
        return data

    def _wait(self, seconds: float, honour_interrupt: bool = True, steps: int = 0, node_id: str = "") -> None:
        """Sleep in 10 ms slices, checking for interrupts (like a sampler's progress hook)."""
        deadline = time.monotonic() + seconds
        next_step, step = 0.0, 0
        while True:
            now = time.monotonic()
            if steps and step < steps and now >= next_step:
                step += 1
                self._progress(node_id, step, steps)
                next_step = now + seconds / steps
            if now >= deadline and (not steps or step >= steps):
                return
            if honour_interrupt:
                self.interrupt.throw_if_interrupted()
            time.sleep(0.01)

    def _progress(self, node_id: str, value: int, total: int) -> None:
        """What ComfyUI's progress hook does: interrupt check, progress_state, then progress."""
        self.interrupt.throw_if_interrupted()
        self.progress.update(node_id, value, total)
        self.server.send_sync("progress", {"value": value, "max": total, "prompt_id": self.progress.prompt_id,
                                           "node": node_id}, self.server.client_id)

    def _apply_node_faults(self, node_id: str, class_type: str) -> None:
        if self.faults.consume("hang_ignoring_interrupt"):
            logging.info("[fault] hanging forever, ignoring interrupts")
            while True:
                time.sleep(1)
        if self.faults.consume("exit_during_next_prompt"):
            logging.info("[fault] exiting abruptly (137) during a prompt")
            self.server.wait_messages_flushed(2.0)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(137)
        if self.faults.consume("hang_next_prompt"):
            logging.info("[fault] hanging until interrupted")
            while True:
                self.interrupt.throw_if_interrupted()
                time.sleep(0.01)
        message = self.faults.consume("fail_next_prompt_with")
        if message:
            raise RuntimeError(str(message))
        delay = float((self.faults.get("class_delay_s") or {}).get(class_type, 0)  # slow nodes, as a GPU has them
                      or self.faults.get("node_delay_s", 0) or 0)
        steps = int(self.faults.get("progress_steps", 0) or 0)
        if delay > 0 or steps > 0:
            self._wait(delay, steps=steps, node_id=node_id)

    def execute_node(self, prompt: dict[str, Any], prompt_id: str, node_id: str, extra_data: dict[str, Any],
                     executed: list[str]) -> tuple[bool, dict[str, Any] | None, BaseException | None]:
        class_type = prompt[node_id]["class_type"]
        server = self.server
        if self.caches.outputs.get(node_id) is not None:
            if server.client_id is not None:
                cached_ui = self.caches.ui.get(node_id) or {}
                server.send_sync("executed", {"node": node_id, "display_node": node_id,
                                              "output": cached_ui.get("output", None), "prompt_id": prompt_id},
                                 server.client_id)
            self.progress.finish(node_id)
            return True, None, None

        input_data: dict[str, list[Any]] | None = None
        try:
            self.progress.start(node_id)
            input_data = self._input_data(prompt, node_id, extra_data)
            if server.client_id is not None:
                server.last_node_id = node_id
                server.send_sync("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                                 server.client_id)
            obj = self.caches.objects.get(node_id)
            if obj is None:
                obj = instantiate(class_type, self.ctx)
                self.caches.objects.set(node_id, obj)

            func = getattr(obj, obj.FUNCTION)
            max_len = max((len(v) for v in input_data.values()), default=0)
            results = []
            for i in range(max(max_len, 1)):
                self.interrupt.throw_if_interrupted()  # nodes.before_node_execution()
                if i == 0:
                    self._apply_node_faults(node_id, class_type)
                args = {k: v[i if len(v) > i else -1] for k, v in input_data.items()} if max_len else {}
                results.append(func(**args))

            n_outputs = len(self.defs.return_types(class_type))
            output: list[list[Any]] = [[] for _ in range(n_outputs)]
            uis: list[dict[str, Any]] = []
            for r in results:
                if isinstance(r, dict):
                    if "ui" in r:
                        uis.append(r["ui"])
                    r = r.get("result", ())
                for j in range(min(n_outputs, len(r))):
                    output[j].append(r[j])
            output_ui = {k: [y for u in uis for y in u[k]] for k in uis[0]} if uis else {}
            if output_ui:
                self.caches.ui.set(node_id, {"meta": {"node_id": node_id, "display_node": node_id,
                                                      "parent_node": None, "real_node_id": node_id},
                                             "output": output_ui})
                if server.client_id is not None:
                    server.send_sync("executed", {"node": node_id, "display_node": node_id, "output": output_ui,
                                                  "prompt_id": prompt_id}, server.client_id)
            self.caches.outputs.set(node_id, output)
        except InterruptProcessingException as iex:
            logging.info("Processing interrupted")
            return False, {"node_id": node_id}, iex
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            formatted = {name: [format_value(x) for x in values] for name, values in (input_data or {}).items()}
            logging.error(f"!!! Exception during processing !!! {ex}")
            logging.error(traceback.format_exc())
            return False, {"node_id": node_id, "exception_message": f"{ex}\n",
                           "exception_type": full_type_name(typ),  # type: ignore[arg-type]
                           "traceback": traceback.format_tb(tb), "current_inputs": formatted}, ex

        self.progress.finish(node_id)
        executed.append(node_id)
        return True, None, None


def prompt_worker(queue: PromptQueue, executor: PromptExecutor) -> None:
    """The executor thread: ComfyUI main.py ``prompt_worker`` without GPU housekeeping."""
    server = executor.server
    while True:
        queue_item = queue.get(timeout=1000.0)
        if queue_item is not None:
            item, item_id = queue_item
            start = time.perf_counter()
            server.last_prompt_id = item.prompt_id
            executor.execute(item.prompt, item.prompt_id, item.extra_data, item.outputs_to_execute)
            queue.task_done(item_id, executor.history_result,
                            ExecutionStatus("success" if executor.success else "error", executor.success,
                                            [list(m) for m in executor.status_messages]))
            if server.client_id is not None:
                server.send_sync("executing", {"node": None, "prompt_id": item.prompt_id}, server.client_id)
            logging.info(f"Prompt executed in {time.perf_counter() - start:.2f} seconds")

        flags = queue.get_flags()
        if flags.get("free_memory", False):
            executor.reset()
