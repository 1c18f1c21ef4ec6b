"""Workflow formats: telling UI ("save") format from API format, and checking API prompts.

Users hand us whatever ComfyUI saved. A UI workflow (``nodes`` + ``links``) has
to go through the real frontend to become a prompt; an API prompt
(``{id: {class_type, inputs}}``) goes straight to ComfyUI. Anything else is
rejected here with a message that says which of the two was expected, instead of
ComfyUI's opaque "500 Server got itself in trouble".
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from .errors import UnknownNodeTypesError, WorkflowError

WorkflowFormat = Literal["ui", "api"]
Prompt = dict[str, dict[str, Any]]

#: Extra input added to every output node so that ComfyUI re-executes it (and
#: writes fresh files) even when the same prompt ran before. ComfyUI ignores
#: inputs a node does not declare, but includes them in the cache key; upstream
#: nodes stay cached. See README, "Repeated prompts".
RUN_TOKEN_INPUT = "comfy_serverless_run"


def parse_workflow(workflow: object) -> dict[str, Any]:
    """Accept a dict or a JSON string holding an object; return the dict."""
    if isinstance(workflow, (str, bytes)):
        try:
            workflow = json.loads(workflow)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkflowError(f"workflow is a string but not valid JSON: {exc}") from None
    if not isinstance(workflow, dict):
        raise WorkflowError(f"workflow must be a JSON object, got {type(workflow).__name__}")
    return workflow


def detect_format(workflow: Mapping[str, Any]) -> WorkflowFormat:
    """``"ui"`` for a saved UI workflow, ``"api"`` for an API prompt, else ``WorkflowError``."""
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        return "ui"
    if workflow and all(isinstance(node, Mapping) and "class_type" in node for node in workflow.values()):
        return "api"
    if not workflow:
        raise WorkflowError("workflow is empty")
    raise WorkflowError(
        "workflow is neither UI format (an object with 'nodes' and 'links', as saved by ComfyUI's "
        "Save/Export) nor API format (an object of {node_id: {'class_type', 'inputs'}}, as exported by "
        "'Export (API)')")


def is_link(value: object) -> bool:
    """ComfyUI's own rule: a two-item list ``[source_node_id, output_index]`` is a link."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def check_api_prompt(prompt: Mapping[str, Any], known_types: Mapping[str, Any] | None = None) -> None:
    """Reject what ComfyUI would answer with a 500 or a confusing error: bad nodes, dangling links, cycles.

    ``known_types`` is ``/object_info``; when given, unknown class types are reported together.
    """
    problems: list[str] = []
    unknown: set[str] = set()
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping):
            problems.append(f"node {node_id}: must be an object")
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            problems.append(f"node {node_id}: 'class_type' must be a non-empty string")
        elif known_types is not None and class_type not in known_types:
            unknown.add(class_type)
        inputs = node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            problems.append(f"node {node_id}: 'inputs' must be an object")
            continue
        for name, value in inputs.items():
            if is_link(value) and str(value[0]) not in prompt:
                problems.append(f"node {node_id} ({class_type}) input '{name}' links to node "
                                f"{value[0]}, which is not in the prompt")
    if unknown:
        raise UnknownNodeTypesError(sorted(unknown))
    if problems:
        raise WorkflowError("invalid API prompt: " + "; ".join(problems), problems=problems)
    cycle = _find_cycle(prompt)
    if cycle:
        raise WorkflowError("invalid API prompt: nodes form a cycle: " + " -> ".join(cycle), cycle=cycle)


def _find_cycle(prompt: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """A cycle of node ids through links, if any (iterative DFS: prompts can be thousands of nodes deep)."""
    edges = {node_id: [str(v[0]) for v in node.get("inputs", {}).values() if is_link(v)]
             for node_id, node in prompt.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        state[start] = 1
        while stack:
            node, index = stack[-1]
            if index < len(edges[node]):
                stack[-1] = (node, index + 1)
                child = edges[node][index]
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    state[child] = 1
                    stack.append((child, 0))
                    path.append(child)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def content_hash(workflow: Mapping[str, Any]) -> str:
    """A stable hash of a workflow's content, for the conversion cache (key order does not matter)."""
    canonical = json.dumps(workflow, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def ui_node_types(workflow: Mapping[str, Any]) -> set[str]:
    """Every node type a UI workflow uses, subgraph definitions included."""
    types: set[str] = set()
    subgraph_ids: set[str] = set()
    definitions = workflow.get("definitions") or {}
    subgraphs = definitions.get("subgraphs", []) if isinstance(definitions, Mapping) else []
    graphs = [workflow] + [g for g in subgraphs if isinstance(g, Mapping)]
    for graph in graphs[1:]:
        if isinstance(graph.get("id"), str):
            subgraph_ids.add(graph["id"])
    for graph in graphs:
        for node in graph.get("nodes") or []:
            if isinstance(node, Mapping) and isinstance(node.get("type"), str):
                types.add(node["type"])
    return types - subgraph_ids


def mark_output_nodes(prompt: Prompt, output_types: set[str], token: str) -> Prompt:
    """A copy of ``prompt`` whose output nodes carry ``token`` (see :data:`RUN_TOKEN_INPUT`)."""
    marked = copy.deepcopy(prompt)
    for node in marked.values():
        if node.get("class_type") in output_types:
            node.setdefault("inputs", {})[RUN_TOKEN_INPUT] = token
    return marked
