"""Run by the runtime-only venv (builder/requirements.txt alone): boot, convert and run, then try to leave the page.

    runtime_probe.py CONFIG_PATH OTHER_ORIGIN

Prints one JSON line: whether the frontend package was importable, the prompt's output
files, and whether the warm page could reach ``OTHER_ORIGIN`` (it must not).
It imports only what the worker itself installs, never the test suite's modules.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from typing import Any

from comfy_serverless import ComfyConnector

# EmptyImage -> SaveImage as ComfyUI's frontend saves it (schema 0.4).
UI_WORKFLOW: dict[str, Any] = {
    "last_node_id": 2, "last_link_id": 1, "groups": [], "config": {}, "extra": {}, "version": 0.4,
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    "nodes": [
        {"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [280, 120], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "properties": {}, "widgets_values": [16, 16, 1, 0]},
        {"id": 2, "type": "SaveImage", "pos": [300, 0], "size": [280, 120], "flags": {}, "order": 1, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
         "properties": {}, "widgets_values": ["runtime-probe"]},
    ],
}

_LEAVE_PAGE_JS = """async (other) => {
  try { await fetch(other + "/from-runtime-page", {mode: "no-cors"}); return true; } catch (e) { return false; }
}"""


async def probe(config_path: str, other_origin: str) -> dict[str, Any]:
    connector = await ComfyConnector.create(config_path)
    try:
        history = await connector.run_workflow(UI_WORKFLOW)
        files = [image["filename"] for entry in history.values()
                 for output in entry["outputs"].values() for image in output.get("images", [])]
        connector.files.delete_outputs(history)
        page = connector.frontend.page  # the warm page itself
        assert page is not None
        reached = await page.evaluate(_LEAVE_PAGE_JS, other_origin)
        return {"frontend_package": importlib.util.find_spec("comfyui_frontend_package") is not None,
                "files": files, "page_reached_other_origin": reached}
    finally:
        await connector.kill_api()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1], sys.argv[2]))))
