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
import contextlib
import copy
import importlib.resources
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psutil
from playwright.async_api import Browser, Page, Playwright, Request, Route, ViewportSize, async_playwright
from playwright.async_api import Error as PlaywrightError

from .config import Config
from .errors import BrowserError, ConversionError, ConversionTimeoutError, UnknownNodeTypesError
from .frontend_record import FrontendRecord, RecordedResponse, Staleness
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

#: Seconds without a new API request after which a recording page is considered set up.
_RECORD_QUIET_S = 1.5

#: The frontend's own "refresh": node definitions and combo lists from a fresh /object_info.
_REFRESH_COMBOS_JS = "async () => { await window.app.refreshComboInNodes(); }"

#: Nobody looks at the page: a small viewport and no drawing loop keep what Chromium rasterises
#: (and keeps) per converted graph small. Measured over 200 conversions: Chromium's PSS grew
#: 1.33x at the default 1280x720 with drawing, 1.10x-1.14x with either change.
_VIEWPORT: ViewportSize = {"width": 320, "height": 240}
_STOP_DRAWING_JS = "() => { window.app.canvas.stopRendering?.(); }"

#: Seconds a healthy page needs to answer a trivial evaluation.
_HEALTH_TIMEOUT_S = 5.0
#: Seconds a Playwright driver, started for a boot that was cancelled meanwhile, may take before it is stopped.
_DRIVER_START_TIMEOUT_S = 30.0

APP_READY_JS = "() => !!(window.app && window.app.graph && window.LiteGraph && window.app.graphToPrompt)"

# Missing node types are found before loading: loadGraphData would silently replace them
# with placeholders, which graphToPrompt drops or emits without a class_type. Legacy type
# names are the exception: frontends up to 1.2x rename them while loading (T2IAdapterLoader
# to ControlNetLoader ...), newer ones (1.58) no longer do. So a workflow whose only unknown
# types are legacy names is loaded, and the loaded graph tells whether this frontend renamed
# them. The load options are those of every tested frontend (each reads its own): 1.27 the
# show...Dialog flags, 1.58 deferWarnings and skipAssetScans (its missing-model and -media
# scans cost a request per load and their warnings are not wanted). Each load opens a temporary
# workflow tab in the frontend's store; it is closed again so a long-lived page does not
# accumulate thousands of them; so are the toasts a load raises (a workflow that fails the
# frontend's schema check warns once per load, and nobody reads or closes them: measured, they
# were the page's memory growth). Workflow and prompt cross as JSON text: Playwright's own
# serialisation of a large object costs ~20 ms each way, JSON.parse well under one.
CONVERT_JS = """
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
    app.extensionManager.toast?.removeAll?.();
  }
}
"""


_SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium(config: Config, playwright: Playwright) -> str:
    """The Chromium to launch; never a download.

    CHROMIUM_EXECUTABLE wins. Otherwise a headless shell comes first, Playwright's
    then the distribution's (Debian's ``chromium-headless-shell``): it converts
    exactly as full Chromium does (the conversion suite runs on both) and costs
    less memory. Then Playwright's full Chromium, then ``chromium`` on PATH.
    """
    if config.chromium_executable:
        if os.access(config.chromium_executable, os.X_OK):
            return config.chromium_executable
        raise BrowserError(f"CHROMIUM_EXECUTABLE {config.chromium_executable} is not an executable file")
    bundled = playwright.chromium.executable_path
    shell = _playwright_headless_shell(bundled)
    candidates = [(f"Playwright's headless shell ({shell or 'not installed'})", shell),
                  ("chromium-headless-shell on PATH", shutil.which("chromium-headless-shell")),
                  (f"Playwright's browser ({bundled or 'none installed'})", bundled),
                  *((f"{name} on PATH", shutil.which(name)) for name in _SYSTEM_CHROMIUMS)]
    for _, path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise BrowserError("no Chromium found; tried " + ", ".join(what for what, _ in candidates) +
                       ". Install one (`playwright install --only-shell chromium` at build time, or the "
                       "`chromium-headless-shell` or `chromium` package) or set CHROMIUM_EXECUTABLE")


def _playwright_headless_shell(full_chromium: str | None) -> str | None:
    """Where ``playwright install chromium`` puts the headless shell of the same revision as its full Chromium.

    Playwright lays browsers out as ``<root>/chromium-<rev>/chrome-linux64/chrome`` and
    ``<root>/chromium_headless_shell-<rev>/chrome-headless-shell-linux64/chrome-headless-shell``.
    """
    if not full_chromium:
        return None
    full = Path(full_chromium)
    if len(full.parents) < 3 or not full.parents[1].name.startswith("chromium-"):
        return None
    revision = full.parents[1].name.removeprefix("chromium-")
    platform_dir = full.parent.name.replace("chrome-", "chrome-headless-shell-", 1)
    return str(full.parents[2] / f"chromium_headless_shell-{revision}" / platform_dir / "chrome-headless-shell")


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
        #: Replayed during the cold start's load, then checked once by :meth:`verify_record`.
        self._record = FrontendRecord.load(Path(config.frontend_snapshot)) if config.frontend_snapshot else None
        self._replayed_record = False
        self._conversions_on_page = 0
        self._recycling: asyncio.Task[None] | None = None

    @property
    def page(self) -> Page | None:
        """The warm page conversions run in (``None`` before the first load): for diagnostics and tests."""
        return self._page

    @property
    def browser(self) -> Browser | None:
        return self._browser

    @property
    def chromium_pids(self) -> frozenset[int]:
        """The Chromium processes this converter started (a memory benchmark sums them)."""
        return frozenset(self._chromium_pids)

    @property
    def healthy(self) -> bool:
        return (self._browser is not None and self._browser.is_connected()
                and self._page is not None and not self._page.is_closed())

    async def ensure_ready(self) -> None:
        """Check that the page still answers; restart the page (and Chromium if it is gone) when not.

        Raises BrowserError when the frontend cannot be brought back.
        """
        async with self._lock:  # never under a running conversion
            if self.healthy and await self._page_answers():
                return
            logger.warning("the frontend page does not answer; restarting it")
            await self._recover(restart_browser=not self.healthy)

    async def _page_answers(self) -> bool:
        assert self._page is not None
        try:
            return bool(await asyncio.wait_for(self._page.evaluate(APP_READY_JS), _HEALTH_TIMEOUT_S))
        except (TimeoutError, PlaywrightError):
            return False

    async def launch(self) -> None:
        """Start Chromium. Independent of ComfyUI, so it runs while ComfyUI boots."""
        if self._playwright is None:
            self._playwright = await _start_playwright()
        executable = find_chromium(self._config, self._playwright)
        before = _chromium_processes()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            raise BrowserError(f"Chromium ({executable}) failed to start: {exc.message.splitlines()[0]}") from None
        self._chromium_pids = _chromium_processes() - before
        logger.info("Chromium %s started (%s)", self._browser.version, executable)

    async def load(self, server_address: str, comfy_ready: asyncio.Event | None = None, *,
                   replay_record: bool = False) -> None:
        """Open ComfyUI's frontend in a fresh page and wait until it can convert.

        The page is offline for its whole life: it may reach ComfyUI's own
        origin and nothing else (see :class:`_PageRouter`). With ``comfy_ready``
        (cold start) and a frontend package installed beside the worker, the
        page starts loading before ComfyUI answers: the frontend's static files
        come from local disk, and its API requests wait until ``comfy_ready`` is
        set, so downloading, parsing and evaluating ~450 modules overlaps
        ComfyUI's boot instead of following it. If ComfyUI turns out to serve a
        different frontend build, the page is reloaded from ComfyUI itself.
        Without a local package (a runtime-only install) the page can only come
        from ComfyUI, so it waits for ComfyUI to answer first. With a
        FRONTEND_SNAPSHOT record as well, the API answers the frontend needs to
        set up are replayed from it until ComfyUI answers, so the page is ready
        then; :meth:`verify_record` checks the record against the live server.
        ``replay_record`` replays it although ComfyUI answers already (the first
        load of FRONTEND_START=first_use, which then verifies it the same way).
        """
        self._server_address = server_address
        page, replayed = await self._open_page(server_address, comfy_ready, replay_record=replay_record)
        await self._swap_page(page)
        self._replayed_record = replayed > 0
        if replayed:
            logger.info("the frontend set up from %s (%d answers replayed)", self._config.frontend_snapshot, replayed)

    async def _swap_page(self, page: Page) -> None:
        old, self._page = self._page, page
        self._conversions_on_page = 0
        if old is not None and not old.is_closed():
            with contextlib.suppress(PlaywrightError):
                await old.close()

    async def _open_page(self, server_address: str, comfy_ready: asyncio.Event | None, *,
                         replay_record: bool = False) -> tuple[Page, int]:
        """A new page of the frontend, ready to convert, and how many answers it replayed from the record."""
        if self._browser is None or not self._browser.is_connected():
            await self.launch()
        assert self._browser is not None
        page = await self._browser.new_page(viewport=_VIEWPORT)
        page.on("pageerror", lambda error: logger.debug("frontend page error: %s", error))
        ready = comfy_ready or _set_event()
        router = _PageRouter(server_address, _local_frontend_root(), ready,
                             self._record if comfy_ready is not None or replay_record else None,
                             replay_while_ready=replay_record)
        timeout_ms = self._config.frontend_load_timeout_s * 1000
        try:
            await page.route("**/*", router.route)
            if router.static_root is None:
                await ready.wait()
            await page.goto(server_address, wait_until="commit", timeout=timeout_ms)
            await ready.wait()
            if router.static_root is not None and not await _same_frontend(page, server_address, router.static_root):
                logger.warning("ComfyUI serves another frontend build than the worker's; reloading from it")
                router.static_root, router.record, router.replayed = None, None, 0
                await page.goto(server_address, wait_until="commit", timeout=timeout_ms)
            await page.wait_for_function(APP_READY_JS, timeout=timeout_ms)
            await page.evaluate(_STOP_DRAWING_JS)
            await _collect_garbage(page)
        except PlaywrightError as exc:
            await page.close()
            raise BrowserError(f"ComfyUI's frontend did not load from {server_address}: "
                               f"{exc.message.splitlines()[0]}") from None
        return page, router.replayed

    async def verify_record(self, object_info: dict[str, Any], extensions: list[str]) -> None:
        """After a cold start that replayed the record: bring the page up to date with the live ComfyUI.

        Other node definitions or extensions reload the page from ComfyUI; other
        file lists in combo inputs only refresh them. A record serves one cold
        start; later loads (restarts) talk to ComfyUI directly.
        """
        record, self._record = self._record, None
        if record is None or not self._replayed_record:
            return
        staleness = record.staleness(object_info, extensions)
        if staleness is Staleness.CURRENT:
            return
        async with self._lock:
            assert self._server_address is not None and self._page is not None
            if staleness is Staleness.FILE_LISTS:
                logger.info("ComfyUI's file lists changed since FRONTEND_SNAPSHOT was made; refreshing them")
                await self._page.evaluate(_REFRESH_COMBOS_JS)
                return
            logger.warning("FRONTEND_SNAPSHOT %s is stale (%s); reloading the page from ComfyUI "
                           "(make the record again to save this time)", self._config.frontend_snapshot,
                           staleness.value)
            await self.load(self._server_address)

    async def record(self, server_address: str) -> FrontendRecord:
        """Load the frontend from a running ComfyUI and record every API answer it reads while it sets up."""
        if self._browser is None or not self._browser.is_connected():
            await self.launch()
        assert self._browser is not None
        page = await self._browser.new_page()
        recording: dict[str, RecordedResponse] = {}
        router = _PageRouter(server_address, None, _set_event(), None, recording=recording,
                             known_static=_local_frontend_root())
        timeout_ms = self._config.frontend_load_timeout_s * 1000
        try:
            await page.route("**/*", router.route)
            await page.goto(server_address, wait_until="commit", timeout=timeout_ms)
            await page.wait_for_function(APP_READY_JS, timeout=timeout_ms)
            while True:  # late requests (templates, models) come after the app is ready
                count = len(recording)
                await asyncio.sleep(_RECORD_QUIET_S)
                if len(recording) == count:
                    break
        finally:
            await page.close()
        return FrontendRecord.from_responses(recording)

    async def convert(self, workflow: dict[str, Any]) -> dict[str, Any]:
        """The API prompt for a UI workflow (a fresh copy; callers may modify it)."""
        key = content_hash(workflow)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return copy.deepcopy(cached)
        async with self._lock:
            prompt = await self._convert_with_retries(workflow)
            self._conversions_on_page += 1
        self._recycle_when_due()
        self._cache[key] = prompt
        while len(self._cache) > self._config.conversion_cache_size:
            self._cache.popitem(last=False)
        return copy.deepcopy(prompt)

    def _recycle_when_due(self) -> None:
        """Start replacing the page in the background once it has converted PAGE_RECYCLE_CONVERSIONS workflows.

        The frontend keeps a little of every graph it loads (about 50 KB of JS
        heap each, measured), so a page that converts for days grows without
        bound. A fresh page is loaded beside the old one, which keeps converting
        meanwhile, and swapped in between two conversions: no job waits for it.
        """
        limit = self._config.page_recycle_conversions
        if limit and self._conversions_on_page >= limit and self._server_address is not None and (
                self._recycling is None or self._recycling.done()):
            self._recycling = asyncio.create_task(self._recycle(self._server_address), name="frontend-recycle")

    async def _recycle(self, server_address: str) -> None:
        converted = self._conversions_on_page
        try:
            page, _ = await self._open_page(server_address, None)
        except BrowserError as exc:
            logger.warning("could not load a fresh frontend page; the current one goes on: %s", exc)
            return
        async with self._lock:
            await self._swap_page(page)
        logger.info("replaced the frontend page after %d conversions", converted)

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
            result = json.loads(await asyncio.wait_for(self._page.evaluate(CONVERT_JS, json.dumps(workflow)),
                                                       self._config.convert_timeout_s))
        except PlaywrightError as exc:
            if self._page.is_closed() or not self.healthy:
                raise
            raise ConversionError(f"ComfyUI's frontend could not convert the workflow: "
                                  f"{exc.message.splitlines()[0]}") from None
        if result.get("missing"):
            raise UnknownNodeTypesError(result["missing"])
        output: dict[str, Any] | None = result.get("output")
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
        recycling, self._recycling = self._recycling, None
        if recycling is not None:
            recycling.cancel()
            with contextlib.suppress(BaseException):
                await recycling
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


async def _collect_garbage(page: Page) -> None:
    """A full collection of the page's heap once the frontend is set up: V8 keeps what the set-up left
    until memory pressure, which a worker with memory to spare never feels (−35 MB measured after boot)."""
    session = await page.context.new_cdp_session(page)
    try:
        await session.send("HeapProfiler.collectGarbage")
    finally:
        await session.detach()


async def _start_playwright() -> Playwright:
    """Playwright's driver, started to the end even when the caller is cancelled (a boot that kill_api()
    stops), and then stopped again: a driver cancelled halfway has no handle, and would outlive the worker."""
    starting = asyncio.ensure_future(async_playwright().start())
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await asyncio.wait_for(starting, _DRIVER_START_TIMEOUT_S)).stop()
        raise


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


class _PageRouter:
    """Every request of the frontend page goes through here, for the page's whole life.

    - Another origin is aborted: a workflow's markdown note, image URL or a
      frontend feature (its release-notes check) must never make the worker
      reach another host, nor wait on one.
    - While ``static_root`` is set (the worker's frontend package is the build
      ComfyUI serves), static files come from local disk: at once during a
      cold start, and without a trip to ComfyUI after it.
    - Until ComfyUI answers (or, with ``replay_while_ready``, even after), GETs
      that ``record`` holds are answered from it.
    - Everything else goes to ComfyUI, once ``comfy_ready`` is set; with
      ``recording``, GET answers are kept there (see :meth:`FrontendConverter.record`),
      except the files of the frontend package ``known_static`` (a cold start serves
      them from disk). ComfyUI's own routes are all kept, ``/user.css`` as much as
      ``/api/settings``: a held stylesheet would hold the whole page.
    """

    def __init__(self, server_address: str, static_root: Path | None, comfy_ready: asyncio.Event,
                 record: FrontendRecord | None, *, recording: dict[str, RecordedResponse] | None = None,
                 known_static: Path | None = None, replay_while_ready: bool = False) -> None:
        self.origin = server_address
        self.static_root = static_root
        self.record = record
        self.recording = recording
        self.replayed = 0
        self._known_static = known_static
        self._comfy_ready = comfy_ready
        self._replay_while_ready = replay_while_ready

    async def route(self, route: Route, request: Request) -> None:
        url = urlsplit(request.url)
        try:
            if f"{url.scheme}://{url.netloc}" != self.origin:
                logger.debug("the frontend page may not reach %s://%s; blocked", url.scheme, url.hostname)
                await route.abort("blockedbyclient")
                return
            if request.method != "GET":
                await self._comfy_ready.wait()
                await route.continue_()
                return
            local = _static_file(self.static_root, url.path) if self.static_root is not None else None
            if local is not None:
                await route.fulfill(path=local)
                return
            key = url.path + (f"?{url.query}" if url.query else "")
            recorded = self.record.responses.get(key) if self.record is not None else None
            if recorded is not None and (self._replay_while_ready or not self._comfy_ready.is_set()):
                self.replayed += 1
                await route.fulfill(status=recorded.status, content_type=recorded.content_type, body=recorded.body)
                return
            await self._comfy_ready.wait()
            if self.recording is not None and not self._is_known_static(url.path):
                await self._record_answer(self.recording, route, key)
            else:
                await route.continue_()
        except PlaywrightError:
            pass  # the page was closed meanwhile

    def _is_known_static(self, path: str) -> bool:
        if self._known_static is None:
            return path.startswith("/assets/")  # no package to compare with: keep all but the bundle
        return _static_file(self._known_static, path) is not None

    async def _record_answer(self, recording: dict[str, RecordedResponse], route: Route, key: str) -> None:
        response = await route.fetch()
        body = await response.body()
        content_type = response.headers.get("content-type", "application/octet-stream")
        recording[key] = RecordedResponse(response.status, content_type, body)
        await route.fulfill(response=response, body=body)


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
