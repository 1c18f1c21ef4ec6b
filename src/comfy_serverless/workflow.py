"""Workflow formats: telling UI ("save") format from API format, and checking API prompts.

Users hand us whatever ComfyUI saved. A UI workflow (``nodes`` + ``links``) has
to go through the real frontend to become a prompt; an API prompt
(``{id: {class_type, inputs}}``) goes straight to ComfyUI. Anything else is
rejected here with a message that says which of the two was expected, instead of
ComfyUI's opaque "500 Server got itself in trouble".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import UnknownNodeTypesError, WorkflowError
from .files import JOB_FOLDER_RE
from .problems import Problems, show

WorkflowFormat = Literal["ui", "api"]
Prompt = dict[str, dict[str, Any]]

#: Extra input added to every output node so that ComfyUI re-executes it (and
#: writes fresh files) even when the same prompt ran before. ComfyUI ignores
#: inputs a node does not declare, but includes them in the cache key; upstream
#: nodes stay cached. See README, "Repeated prompts".
RUN_TOKEN_INPUT = "comfy_serverless_run"

#: ComfyUI's annotations that pick the folder an input-file name is resolved in (folder_paths.annotated_filepath).
ANNOTATIONS = {"[input]": "input", "[output]": "output", "[temp]": "temp"}
#: A combo option that names a file: it ends in an extension (``sdxl.safetensors``, ``sd15/a.ckpt``).
_FILE_OPTION_RE = re.compile(r".*\.[A-Za-z][A-Za-z0-9_]{0,11}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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


def copy_prompt(prompt: Mapping[str, Any]) -> Prompt:
    """A copy whose nodes and ``inputs`` objects may be edited; the values themselves are shared.

    The worker only ever replaces whole input values, so two levels are enough:
    linear and cheap for huge prompts, and safe for values nested thousands of
    levels deep, where ``copy.deepcopy`` runs out of stack.
    """
    return {node_id: {**node, "inputs": dict(node.get("inputs") or {})} for node_id, node in prompt.items()}


def mark_output_nodes(prompt: Prompt, output_types: set[str], token: str) -> Prompt:
    """A copy of ``prompt`` whose output nodes carry ``token`` (see :data:`RUN_TOKEN_INPUT`)."""
    marked = dict(prompt)
    for node_id, node in prompt.items():
        if node.get("class_type") in output_types:
            marked[node_id] = {**node, "inputs": {**(node.get("inputs") or {}), RUN_TOKEN_INPUT: token}}
    return marked


# --- inputs that ComfyUI resolves as files ------------------------------------------------------

@dataclass(frozen=True)
class FileInputs:
    """Which inputs of which node types ComfyUI resolves as files, decided from ``/object_info``.

    Job inputs are stored in a folder private to the job, so references to them
    must be rewritten, and a hostile prompt could name ``../../etc/passwd`` where
    ComfyUI joins the value onto one of its folders. Both apply to file inputs
    only, never to free text (a prompt that says "photo.png" stays as it is). A
    file input is a combo (a list of choices) that is an upload widget
    (``image_upload``, ``video_upload``, ``audio_upload``, ``file_upload``…) or
    whose choices are file names, as model lists are (``ckpt_name``,
    ``lora_name``…); an empty combo counts too, as it is what a model list is
    when its folder holds nothing yet.
    """

    by_type: Mapping[str, frozenset[str]]

    @classmethod
    def from_object_info(cls, node_types: Mapping[str, Any]) -> FileInputs:
        by_type = {}
        for class_type, spec in node_types.items():
            declared = spec.get("input") if isinstance(spec, Mapping) else None
            names = frozenset(name for group in ("required", "optional")
                              for name, input_spec in _items(declared, group) if _is_file_input(input_spec))
            if names:
                by_type[class_type] = names
        return cls(by_type)

    def values(self, prompt: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
        """``(node_id, class_type, input_name, value)`` for every file input of the prompt given as text."""
        for node_id, node in prompt.items():
            names = self.by_type.get(node.get("class_type"), frozenset())
            inputs = node.get("inputs") or {}
            for name in names.intersection(inputs):
                if isinstance(inputs[name], str):
                    yield node_id, node["class_type"], name, inputs[name]


def _items(declared: object, group: str) -> list[tuple[str, Any]]:
    section = declared.get(group) if isinstance(declared, Mapping) else None
    return list(section.items()) if isinstance(section, Mapping) else []


def _is_file_input(spec: object) -> bool:
    """A combo that is an upload widget or lists files (see :class:`FileInputs`)."""
    if not isinstance(spec, list) or not spec:
        return False
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if isinstance(spec[0], list):
        choices: object = spec[0]
    elif spec[0] == "COMBO":
        choices = options.get("options", [])
    else:
        return False
    if any(value and (key == "upload" or str(key).endswith("_upload")) for key, value in options.items()):
        return True
    return isinstance(choices, list) and (not choices or any(
        isinstance(choice, str) and _FILE_OPTION_RE.fullmatch(choice) for choice in choices))


def split_annotation(value: str) -> tuple[str, str | None]:
    """``("x.png", "output")`` for ``"x.png [output]"``, exactly as ComfyUI strips it; no annotation: ``None``."""
    for tag, folder in ANNOTATIONS.items():
        if value.endswith(tag):
            return value[:-len(tag) - 1], folder
    return value, None


def file_value_problem(value: str) -> str | None:
    """Why ComfyUI must not resolve ``value`` as a file for a job, or ``None``.

    ComfyUI joins the value onto its folders as it is, so an absolute path or a
    ``..`` would read any file the process can; another job's private folder,
    or the output and temp folders (``[output]``), would read another job's
    files. Plain names and subfolders, as a normal workflow uses, pass.
    """
    name, folder = split_annotation(value)
    if folder in ("output", "temp"):
        return (f"reads from ComfyUI's {folder} folder ([{folder}]); a job may only read its own inputs there "
                f"(pass the file in 'inputs' with folder_type '{folder}')")
    if _CONTROL_RE.search(name):
        return "contains control characters"
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "is an absolute path; name the file relative to ComfyUI's folder"
    if ".." in parts:
        return "steps outside ComfyUI's folders ('..')"
    if any(JOB_FOLDER_RE.fullmatch(part) for part in parts):
        return "names another job's private folder"
    return None


# --- editing a prompt for a job ---------------------------------------------------------------
def apply_overrides(prompt: Prompt, overrides: dict[str, dict[str, Any]], node_types: dict[str, Any]) -> None:
    """Set node inputs by node id or title; every unknown node or input is reported at once.

    Titles are indexed once, so the work is linear in the number of nodes plus overrides.
    """
    problems = Problems()
    titles = _titles(prompt) if any(target not in prompt for target in overrides) else {}
    for target, values in overrides.items():
        node_ids = [target] if target in prompt else titles.get(target, [])
        if not node_ids:
            problems.add(f"input.overrides.{target}", "no node has this id or title")
            continue
        if len(node_ids) > 1:
            problems.add(f"input.overrides.{target}", f"the title matches nodes {', '.join(node_ids[:10])}"
                                                      f"{', …' if len(node_ids) > 10 else ''}; use a node id")
            continue
        node = prompt[node_ids[0]]
        declared = _declared_inputs(node_types.get(node["class_type"], {}))
        for name, value in values.items():
            if name not in node["inputs"] and name not in declared:
                problems.add(f"input.overrides.{target}.{name}",
                             f"node {node_ids[0]} ({node['class_type']}) has no input {show(name)}")
                continue
            node["inputs"][name] = value
    if problems:
        raise problems.error()


def _titles(prompt: Prompt) -> dict[str, list[str]]:
    """Node ids by title (``_meta.title``; free-form in a user's prompt, so anything else is ignored)."""
    titles: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        if isinstance(title, str):
            titles.setdefault(title, []).append(node_id)
    return titles


def _declared_inputs(spec: dict[str, Any]) -> set[str]:
    inputs = spec.get("input") or {}
    return {name for group in ("required", "optional") for name in (inputs.get(group) or {})}


def check_file_inputs(prompt: Prompt, file_inputs: FileInputs, own: set[str]) -> None:
    """Refuse file inputs that would make ComfyUI read outside its folders or another job's files.

    ``own`` holds the names of this job's inputs, which are rewritten to its private folder.
    """
    problems = Problems()
    for node_id, class_type, name, value in file_inputs.values(prompt):
        problem = None if value in own else file_value_problem(value)
        if problem:
            problems.add(f"prompt node {node_id} ({class_type}) input {name!r}", f"{show(value)} {problem}")
    if problems:
        raise problems.error()


def rewrite_references(prompt: Prompt, references: dict[str, str], file_inputs: FileInputs) -> None:
    """Point every file input that names a job input at the job's private copy; free text stays as it is.

    A widget whose value is an object of fields names files too, though no node declares it as a file
    input: rgthree's Power Lora Loader sends ``{"on", "lora", "strength"}`` per LoRA. A field that equals a
    job input's name is pointed at the private copy as well. Left as it was, that pack would match the name
    against every LoRA on the worker, by path and then by bare file name, and could load another file.
    The object is replaced, never edited: values are shared with the conversion cache (copy_prompt).
    """
    if not references:
        return
    for node_id, _, name, value in list(file_inputs.values(prompt)):
        if value in references:
            prompt[node_id]["inputs"][name] = references[value]
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            if isinstance(value, dict) and any(isinstance(v, str) and v in references for v in value.values()):
                inputs[name] = {field: references.get(v, v) if isinstance(v, str) else v for field, v in value.items()}
