"""Headless Chromium with ComfyUI's own frontend, used to turn UI workflows into API prompts.

Only the real frontend converts faithfully: widget values, converted widgets,
primitive/reroute/group nodes, subgraphs and custom nodes' JavaScript all take
part in ``app.graphToPrompt()``. Loading that frontend costs seconds, so it is
loaded once into a warm page and every conversion reuses it; ``clean=true``
loads reset the graph, and a test proves that a conversion does not depend on
what was converted before.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import functools
import importlib.resources
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil
from playwright.async_api import Browser, Page, Playwright, Request, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from .config import Config
from .errors import BrowserError, ConversionError, ConversionTimeoutError, UnknownNodeTypesError
from .workflow import content_hash

logger = logging.getLogger(__name__)

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]

# Settings ComfyUI's frontend reads at load: no template dialog for a "new user", and no
# restoring of a previously open workflow (which could race our first conversion and
# would otherwise write every converted workflow to localStorage).
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.Persist": False}

_APP_READY_JS = "() => !!(window.app && window.app.graph && window.LiteGraph && window.app.graphToPrompt)"

# Missing node types are found before loading: loadGraphData would silently replace them
# with placeholders, which graphToPrompt drops or emits without a class_type. Legacy type
# names are the exception: frontends up to 1.2x rename them while loading (T2IAdapterLoader
# to ControlNetLoader ...), newer ones (1.58) no longer do. So a workflow whose only unknown
# types are legacy names is loaded, and the loaded graph tells whether this frontend renamed
# them. The load options are those of every tested frontend (each reads its own): 1.27 the
# show...Dialog flags, 1.58 deferWarnings and skipAssetScans (its missing-model and -media
# scans cost a request per load and their warnings are not wanted). Each load opens a temporary
# workflow tab in the frontend's store; it is closed again so a long-lived page does not
# accumulate thousands of them. Workflow and prompt cross as JSON text: Playwright's own
# serialisation of a large object costs ~20 ms each way, JSON.parse well under one.
_CONVERT_JS = """
async (workflowJson) => {
  const app = window.app;
  const workflow = JSON.parse(workflowJson);
  const legacyTypes = new Set(["T2IAdapterLoader", "ConditioningAverage ", "SDV_img2vid_Conditioning"]);
  const registered = window.LiteGraph.registered_node_types;
  const subgraphs = ((workflow.definitions || {}).subgraphs || []);
  const subgraphIds = new Set(subgraphs.map((g) => g.id));
  const known = (type) => typeof type === "string" && (type in registered || subgraphIds.has(type));
  const unknown = [];
  for (const graph of [workflow, ...subgraphs]) {
    for (const node of graph.nodes || []) {
      if (node && typeof node.type === "string" && !known(node.type)) {
        unknown.push({graph: graph === workflow ? null : graph.id, id: node.id, type: node.type});
      }
    }
  }
  const missing = (nodes) => JSON.stringify({missing: [...new Set(nodes.map((node) => node.type))]});
  const surelyMissing = unknown.filter((node) => !legacyTypes.has(node.type));
  if (surelyMissing.length) return missing(surelyMissing);
  const store = app.extensionManager.workflow;
  try {
    await app.loadGraphData(workflow, true, true, null,
      {showMissingNodesDialog: false, showMissingModelsDialog: false,
       deferWarnings: true, skipAssetScans: true, silentAssetErrors: true});
    const loaded = (node) => (node.graph === null ? app.graph : app.graph.subgraphs.get(node.graph))
      ?.getNodeById(node.id);
    const notRenamed = unknown.filter((node) => !known(loaded(node)?.type));
    if (notRenamed.length) return missing(notRenamed);
    const {output} = await app.graphToPrompt();
    return JSON.stringify({output});
  } finally {
    if (store.activeWorkflow) await store.closeWorkflow(store.activeWorkflow);
  }
}
"""


def find_chromium(config: Config, playwright: Playwright) -> str:
    """CHROMIUM_EXECUTABLE, else Playwright's installed browser, else ``chromium`` on PATH; never a download."""
    tried: list[str] = []
    if config.chromium_executable:
        if os.access(config.chromium_executable, os.X_OK):
            return config.chromium_executable
        raise BrowserError(f"CHROMIUM_EXECUTABLE {config.chromium_executable} is not an executable file")
    bundled = playwright.chromium.executable_path
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    tried.append(f"Playwright's browser ({bundled or 'none installed'})")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
        tried.append(f"{name} on PATH")
    raise BrowserError("no Chromium found; tried " + ", ".join(tried) +
                       ". Install one (`playwright install chromium` at build time, or the `chromium` "
                       "package) or set CHROMIUM_EXECUTABLE")


class FrontendConverter:
    """A warm page of ComfyUI's frontend that converts UI workflows, with a bounded cache."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._page: Page | None = None
        self._server_address: str | None = None
        self._lock = asyncio.Lock()
        self._cache: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._chromium_pids: set[int] = set()

    @property
    def healthy(self) -> bool:
        return (self._browser is not None and self._browser.is_connected()
                and self._page is not None and not self._page.is_closed())

    async def launch(self) -> None:
        """Start Chromium. Independent of ComfyUI, so it runs while ComfyUI boots."""
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        executable = find_chromium(self._config, self._playwright)
        before = _chromium_processes()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            raise BrowserError(f"Chromium ({executable}) failed to start: {exc.message.splitlines()[0]}") from None
        self._chromium_pids = _chromium_processes() - before
        logger.info("Chromium %s started (%s)", self._browser.version, executable)

    async def load(self, server_address: str, comfy_ready: asyncio.Event | None = None) -> None:
        """Open ComfyUI's frontend in a fresh page and wait until it can convert.

        With ``comfy_ready`` (cold start) the page starts loading before ComfyUI
        answers: the frontend's static files come from the same frontend package
        on local disk, and its API requests wait until ``comfy_ready`` is set.
        Downloading, parsing and evaluating ~450 modules thus overlaps ComfyUI's
        boot instead of following it. If ComfyUI turns out to serve a different
        frontend build, the page is reloaded from ComfyUI itself.
        """
        self._server_address = server_address
        if self._browser is None or not self._browser.is_connected():
            await self.launch()
        assert self._browser is not None
        if self._page is not None and not self._page.is_closed():
            await self._page.close()
        page = await self._browser.new_page()
        page.on("pageerror", lambda error: logger.debug("frontend page error: %s", error))
        ready = comfy_ready or _set_event()
        static_root = _local_frontend_root()
        timeout_ms = self._config.frontend_load_timeout_s * 1000
        try:
            if static_root is not None:
                await page.route("**/*", functools.partial(_route_frontend, server_address, static_root, ready))
            await page.goto(server_address, wait_until="commit", timeout=timeout_ms)
            await ready.wait()
            if static_root is not None:
                # Interception costs a round trip per request: once ComfyUI answers, it serves the rest.
                await page.unroute_all(behavior="wait")
                if not await _same_frontend(page, server_address, static_root):
                    logger.warning("ComfyUI serves another frontend build than the worker's; reloading from it")
                    await page.goto(server_address, wait_until="commit", timeout=timeout_ms)
            await page.wait_for_function(_APP_READY_JS, timeout=timeout_ms)
        except PlaywrightError as exc:
            await page.close()
            raise BrowserError(f"ComfyUI's frontend did not load from {server_address}: "
                               f"{exc.message.splitlines()[0]}") from None
        self._page = page

    async def convert(self, workflow: dict[str, Any]) -> dict[str, Any]:
        """The API prompt for a UI workflow (a fresh copy; callers may modify it)."""
        key = content_hash(workflow)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return copy.deepcopy(cached)
        async with self._lock:
            prompt = await self._convert_with_retries(workflow)
        self._cache[key] = prompt
        while len(self._cache) > self._config.conversion_cache_size:
            self._cache.popitem(last=False)
        return copy.deepcopy(prompt)

    async def _convert_with_retries(self, workflow: dict[str, Any]) -> dict[str, Any]:
        attempts = self._config.convert_attempts
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                if attempt > 1 or not self.healthy:
                    await self._recover(restart_browser=attempt > 2 or not self.healthy)
                return await self._convert_once(workflow)
            except (UnknownNodeTypesError, ConversionError):
                raise
            except (TimeoutError, PlaywrightError, BrowserError) as exc:
                last_error = exc
                logger.warning("conversion attempt %d/%d failed: %r", attempt, attempts, exc)
        if isinstance(last_error, asyncio.TimeoutError):
            raise ConversionTimeoutError(
                f"converting the workflow timed out {attempts} times (CONVERT_TIMEOUT_S="
                f"{self._config.convert_timeout_s:g}), the page and browser restarted in between")
        raise BrowserError(f"converting the workflow failed {attempts} times; last error: {last_error}")

    async def _convert_once(self, workflow: dict[str, Any]) -> dict[str, Any]:
        assert self._page is not None
        try:
            result = json.loads(await asyncio.wait_for(self._page.evaluate(_CONVERT_JS, json.dumps(workflow)),
                                                       self._config.convert_timeout_s))
        except PlaywrightError as exc:
            if self._page.is_closed() or not self.healthy:
                raise
            raise ConversionError(f"ComfyUI's frontend could not convert the workflow: "
                                  f"{exc.message.splitlines()[0]}") from None
        if result.get("missing"):
            raise UnknownNodeTypesError(result["missing"])
        output = result.get("output")
        if not output:
            raise ConversionError("the workflow converted to an empty prompt (no executable nodes: are they all "
                                  "muted, bypassed or virtual?)")
        return output

    async def _recover(self, *, restart_browser: bool) -> None:
        if self._server_address is None:
            raise BrowserError("the frontend was never loaded")
        if restart_browser:
            logger.warning("restarting Chromium")
            await self._close_browser()
        await self.load(self._server_address)

    async def _close_browser(self) -> None:
        browser, self._browser, self._page = self._browser, None, None
        if browser is not None:
            try:
                await asyncio.wait_for(browser.close(), 10)
            except (TimeoutError, PlaywrightError):
                pass
        self.kill_sync()

    async def close(self) -> None:
        await self._close_browser()
        if self._playwright is not None:
            playwright, self._playwright = self._playwright, None
            try:
                await asyncio.wait_for(playwright.stop(), 10)
            except (TimeoutError, PlaywrightError):
                pass

    def kill_sync(self) -> None:
        """Force-kill the Chromium processes this converter started, and only those."""
        victims: list[psutil.Process] = []
        for pid in self._chromium_pids:
            try:
                process = psutil.Process(pid)
                victims.extend([process, *process.children(recursive=True)])
            except psutil.Error:
                continue
        for process in victims:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(victims, timeout=3)
        self._chromium_pids.clear()


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


def _local_frontend_root() -> Path | None:
    """The static files of the ``comfyui-frontend-package`` installed beside the worker, if any."""
    try:
        root = Path(str(importlib.resources.files("comfyui_frontend_package") / "static"))
    except ModuleNotFoundError:
        return None
    return root if (root / "index.html").is_file() else None


def _static_file(static_root: Path, url_path: str) -> Path | None:
    relative = unquote(url_path).lstrip("/") or "index.html"
    candidate = (static_root / relative).resolve()
    if static_root.resolve() not in candidate.parents or not candidate.is_file():
        return None
    return candidate


async def _route_frontend(server_address: str, static_root: Path, comfy_ready: asyncio.Event,
                          route: Route, request: Request) -> None:
    """Static files from disk at once; ComfyUI's API once it is up; nothing from other hosts (offline)."""
    url = urlsplit(request.url)
    if f"{url.scheme}://{url.netloc}" != server_address:
        await route.abort()
        return
    local = _static_file(static_root, url.path) if request.method == "GET" else None
    try:
        if local is not None:
            await route.fulfill(path=local)
            return
        await comfy_ready.wait()
        await route.continue_()
    except PlaywrightError:
        pass  # the page was closed meanwhile


async def _same_frontend(page: Page, server_address: str, static_root: Path) -> bool:
    """Whether ComfyUI's index.html (which names every hashed asset) is the local one."""
    response = await page.request.get(server_address + "/")
    return response.ok and await response.body() == (static_root / "index.html").read_bytes()


def _chromium_processes() -> set[int]:
    """Chromium processes below this process (Playwright's driver starts them as its children)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in Path(child.exe()).name.lower() or "chrom" in child.name().lower():
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids
