"""UI-format ("save" format) workflows built in code, for tests and benchmarks.

Writing them by hand in JSON hides what they test; here a pipeline of image nodes reads
as a list. The output is exactly what ComfyUI's frontend saves (schema 0.4). Workflows
saved by a real frontend (tests/workflows) are loaded with :func:`load_workflow`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"

# (type, widget values, [(input name, type)], [(output name, type)])
NodeSpec = tuple[str, list[Any], list[tuple[str, str]], list[tuple[str, str]]]

EMPTY_IMAGE = "EmptyImage"


def empty_image(width: int = 64, height: int = 64, color: int = 0) -> NodeSpec:
    return ("EmptyImage", [width, height, 1, color], [], [("IMAGE", "IMAGE")])


def load_image(name: str) -> NodeSpec:
    return ("LoadImage", [name, "image"], [], [("IMAGE", "IMAGE"), ("MASK", "MASK")])


def invert() -> NodeSpec:
    return ("ImageInvert", [], [("image", "IMAGE")], [("IMAGE", "IMAGE")])


def scale(width: int, height: int) -> NodeSpec:
    return ("ImageScale", ["nearest-exact", width, height, "disabled"], [("image", "IMAGE")], [("IMAGE", "IMAGE")])


def save_image(prefix: str = "ComfyUI") -> NodeSpec:
    return ("SaveImage", [prefix], [("images", "IMAGE")], [])


def preview_image() -> NodeSpec:
    return ("PreviewImage", [], [("images", "IMAGE")], [])


def chain(*specs: NodeSpec, titles: dict[int, str] | None = None, mode: dict[int, int] | None = None) -> dict[str, Any]:
    """A linear pipeline: each node's first output feeds the next node's first input.

    Node ids are 1..n in order; ``titles`` and ``mode`` (0 normal, 2 muted, 4 bypassed)
    are keyed by node id.
    """
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    for index, (node_type, widgets, inputs, outputs) in enumerate(specs, start=1):
        node_inputs = [{"name": name, "type": kind, "link": None} for name, kind in inputs]
        if index > 1 and node_inputs:
            link_id = len(links) + 1
            node_inputs[0]["link"] = link_id
            links.append([link_id, index - 1, 0, index, 0, node_inputs[0]["type"]])
            nodes[-1]["outputs"][0]["links"].append(link_id)
        node: dict[str, Any] = {
            "id": index, "type": node_type, "pos": [40 + 300 * index, 40], "size": [280, 120], "flags": {},
            "order": index - 1, "mode": (mode or {}).get(index, 0), "inputs": node_inputs,
            "outputs": [{"name": name, "type": kind, "links": []} for name, kind in outputs],
            "properties": {"Node name for S&R": node_type}, "widgets_values": widgets,
        }
        if titles and index in titles:
            node["title"] = titles[index]
        nodes.append(node)
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def large_chain(length: int = 60) -> dict[str, Any]:
    """A 60+ node workflow: an image through ``length`` inverts and scales, saved at the end."""
    middle = [invert() if i % 2 else scale(64 + i, 64) for i in range(length)]
    return chain(empty_image(), *middle, save_image("large"))


def add_node(workflow: dict[str, Any], spec: NodeSpec, *, mode: int = 0) -> dict[str, Any]:
    """Add an unconnected node (a stray preview, an unknown custom node …); returns the new node."""
    node_type, widgets, inputs, outputs = spec
    node_id = workflow["last_node_id"] + 1
    node = {"id": node_id, "type": node_type, "pos": [40, 400], "size": [200, 80], "flags": {},
            "order": len(workflow["nodes"]), "mode": mode,
            "inputs": [{"name": name, "type": kind, "link": None} for name, kind in inputs],
            "outputs": [{"name": name, "type": kind, "links": []} for name, kind in outputs],
            "properties": {"Node name for S&R": node_type}, "widgets_values": widgets}
    workflow["nodes"].append(node)
    workflow["last_node_id"] = node_id
    return node


def with_unknown_node(node_type: str = "NoSuchCustomNode") -> dict[str, Any]:
    """A valid pipeline plus one node whose type no ComfyUI knows (a custom node not installed)."""
    workflow = chain(empty_image(), invert(), save_image())
    add_node(workflow, (node_type, ["x"], [], []))
    return workflow


def load_workflow(name: str) -> dict[str, Any]:
    """A workflow saved by ComfyUI's frontend, from tests/workflows."""
    return json.loads((WORKFLOWS_DIR / name).read_text())
