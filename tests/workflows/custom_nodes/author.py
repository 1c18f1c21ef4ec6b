"""Makes the workflows beside this file again: author.js in a page of a ComfyUI that has the packs.

    .comfyui-nodes/ from `make test` (or `bash builder/local_setup.sh nodes-comfyui`), started with
    `cd .comfyui-nodes && ../.comfyui-venv/bin/python main.py --cpu --port 18999`, then
    .venv/bin/python tests/workflows/custom_nodes/author.py http://127.0.0.1:18999
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from playwright.async_api import async_playwright

from comfy_serverless.browser import APP_READY_JS
from tests.support.comfy import chromium_executable

HERE = Path(__file__).parent


async def main(server: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable() or None)
        page = await browser.new_page()
        await page.goto(server)
        await page.wait_for_function(APP_READY_JS, timeout=60_000)
        workflows = await page.evaluate((HERE / "author.js").read_text())
        for name, workflow in workflows.items():
            (HERE / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
            print(f"{name}.json: {len(workflow['nodes'])} nodes")
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
