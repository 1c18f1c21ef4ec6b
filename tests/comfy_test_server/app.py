"""The aiohttp application: ComfyUI 0.3.64's routes, websocket and message pump.

Everything observable by a client is modelled on ComfyUI's ``server.py`` and ``app/*``:
routes exist with and without ``/api`` (``/internal/*`` only without), error replies keep
their odd shapes (plain-text 500s, empty 400s), and websockets are tracked in a plain
``sid -> ws`` dict with the same reconnect gotcha (a second socket with the same clientId
is silently unregistered when the first one closes).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import importlib.resources
import ipaddress
import json
import logging
import mimetypes
import os
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from io import BytesIO
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import logs
from .executor import PromptExecutor, prompt_worker
from .faults import FaultState
from .nodes import NodeContext, NodeDefinitions
from .paths import SUPPORTED_PT_EXTENSIONS, Paths, map_legacy
from .prompt_queue import Interrupt, PromptQueue, QueueItem
from .userdata import UserData
from .validation import Validator

COMFYUI_VERSION = "0.3.64"
FRONTEND_VERSION = "1.27.10"
TEMPLATES_VERSION = "0.1.95"
PYTORCH_VERSION = "2.14.1"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLOSE_ALL_SOCKETS = "__close_all_sockets__"


def frontend_root() -> str:
    """The pip frontend's static dir, as ComfyUI's FrontendManager resolves it."""
    return str(importlib.resources.files("comfyui_frontend_package") / "static")


@web.middleware
async def cache_control(request: web.Request, handler: Any) -> web.StreamResponse:
    """no-cache for js/css/index*.json, one day for images (middleware/cache_middleware.py)."""
    response = await handler(request)
    name = request.path.rsplit("/", 1)[-1]
    if request.path.endswith((".js", ".css")) or (name.startswith("index") and name.endswith(".json")):
        response.headers.setdefault("Cache-Control", "no-cache")
    elif request.path.lower().endswith(IMG_EXTENSIONS):
        if response.status == 404:
            response.headers.setdefault("Cache-Control", "public, max-age=3600")
        elif response.status in (200, 201, 202, 203, 204, 205, 206, 301, 308):
            response.headers.setdefault("Cache-Control", "public, max-age=86400")
        elif response.status in (302, 303, 307):
            response.headers.setdefault("Cache-Control", "no-cache")
    return response


def create_cors_middleware(allowed_origin: str) -> Any:
    @web.middleware
    async def cors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response = web.Response() if request.method == "OPTIONS" else await handler(request)
        response.headers["Access-Control-Allow-Origin"] = allowed_origin
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, DELETE, PUT, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    return cors_middleware


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    loopback = False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            for *_, sockaddr in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM):
                if not ipaddress.ip_address(sockaddr[0]).is_loopback:
                    return loopback
                loopback = True
        except socket.gaierror:
            pass
    return loopback


@web.middleware
async def origin_only_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """403 when a loopback Host and the Origin disagree (ComfyUI's CSRF guard)."""
    if "Host" in request.headers and "Origin" in request.headers:
        host_domain = request.headers["Host"].lower()
        parsed = urllib.parse.urlparse(request.headers["Origin"])
        origin_domain: str | None = parsed.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + host_domain)
        loopback = _is_loopback(host_parsed.hostname)
        host_cmp: str | None = host_domain
        if parsed.port is None:
            host_cmp = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
        if loopback and host_cmp and origin_domain and host_cmp != origin_domain:
            logging.warning(f"WARNING: request with non matching host and origin {host_cmp} != {origin_domain}, "
                            "returning 403")
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes, from /proc/meminfo when there is one."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.strip().split()[0]) * 1024
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError):
        return 16 * 1024 ** 3, 8 * 1024 ** 3


class PromptServer:
    """Holds the server state ComfyUI keeps on ``PromptServer.instance``."""

    def __init__(self, args: argparse.Namespace, paths: Paths, loop: asyncio.AbstractEventLoop) -> None:
        self.args = args
        self.paths = paths
        self.loop = loop
        self.web_root = args.front_end_root or frontend_root()
        self.ctx = NodeContext(paths=paths, disable_metadata=args.disable_metadata)
        self.defs = NodeDefinitions(paths)
        self.validator = Validator(self.defs, self.ctx)
        self.faults = FaultState()
        self.interrupt = Interrupt()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self.messages: asyncio.Queue[tuple[Any, Any, str | None]] = asyncio.Queue()
        self._counter_lock = threading.Lock()
        self._enqueued = 0
        self._published = 0
        self.userdata = UserData(paths)
        self.log_subscribers: set[str] = set()
        self.prompt_queue = PromptQueue(self)
        self.executor = PromptExecutor(self, self.defs, self.ctx, self.faults, self.interrupt,
                                       cache_none=args.cache_none)
        self.features = {"supports_preview_metadata": True, "max_upload_size": args.max_upload_size * 1024 * 1024}
        self.app = self._build_app()

    # -- messaging ------------------------------------------------------------------------------
    def get_queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.prompt_queue.get_tasks_remaining()}}

    def queue_updated(self) -> None:
        self.send_sync("status", {"status": self.get_queue_info()})

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Thread-safe enqueue; ``publish_loop`` sends in order. ``sid=None`` broadcasts."""
        with self._counter_lock:
            self._enqueued += 1
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def wait_messages_flushed(self, timeout: float) -> None:
        """Block (from a non-loop thread) until every queued message was written out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._counter_lock:
                if self._published >= self._enqueued:
                    return
            time.sleep(0.01)

    async def publish_loop(self) -> None:
        while True:
            event, data, sid = await self.messages.get()
            try:
                if event == CLOSE_ALL_SOCKETS:
                    for ws in list(self.sockets.values()):
                        await ws.close()
                else:
                    await self.send(event, data, sid)
            except Exception:
                logging.exception("error while publishing a websocket message")
            finally:
                with self._counter_lock:
                    self._published += 1

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        if isinstance(data, (bytes, bytearray)):
            message = bytearray(struct.pack(">I", event)) + data
            targets = list(self.sockets.values()) if sid is None else (
                [self.sockets[sid]] if sid in self.sockets else [])
            for ws in targets:
                await self._safe(ws.send_bytes, message)
            return
        message_json = {"type": event, "data": data}
        if sid is None:
            for ws in list(self.sockets.values()):
                await self._safe(ws.send_json, message_json)
        elif sid in self.sockets:
            await self._safe(self.sockets[sid].send_json, message_json)

    @staticmethod
    async def _safe(function: Any, message: Any) -> None:
        try:
            await function(message)
        except (aiohttp.ClientError, ConnectionResetError, BrokenPipeError, ConnectionError) as err:
            logging.warning(f"send error: {err}")

    # -- app ------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        middlewares: list[Any] = [cache_control]
        if self.args.enable_cors_header:
            middlewares.append(create_cors_middleware(self.args.enable_cors_header))
        else:
            middlewares.append(origin_only_middleware)
        app = web.Application(client_max_size=round(self.args.max_upload_size * 1024 * 1024),
                              middlewares=middlewares)
        routes = web.RouteTableDef()
        self._core_routes(routes)
        self.userdata.add_routes(routes)
        self._model_routes(routes)
        api_routes = web.RouteTableDef()
        for route in routes:
            if isinstance(route, web.RouteDef):
                api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
        app.add_routes(api_routes)
        app.add_routes(routes)
        app.add_routes([web.get("/_test/faults", self._get_faults), web.post("/_test/faults", self._post_faults)])
        app.add_subapp("/internal", self._internal_app())
        app.add_routes([web.static("/", self.web_root)])
        return app

    async def _get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def _post_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        try:
            return web.json_response(self.faults.update(body))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)

    def _dir_by_type(self, dir_type: str | None) -> tuple[str, str]:
        if dir_type is None:
            dir_type = "input"
        if dir_type == "input":
            type_dir = self.paths.input
        elif dir_type == "temp":
            type_dir = self.paths.temp
        elif dir_type == "output":
            type_dir = self.paths.output
        # Like ComfyUI, any other type leaves type_dir unbound -> UnboundLocalError -> HTTP 500.
        return type_dir, dir_type

    def _core_routes(self, routes: web.RouteTableDef) -> None:  # noqa: C901 - a route table
        @routes.get("/ws")
        async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            sid = request.rel_url.query.get("clientId", "")
            if sid:
                self.sockets.pop(sid, None)  # reusing a session: forget the old socket (not closed!)
            else:
                sid = uuid.uuid4().hex
            self.sockets[sid] = ws
            self.sockets_metadata[sid] = {"feature_flags": {}}
            try:
                await self.send("status", {"status": self.get_queue_info(), "sid": sid}, sid)
                if self.client_id == sid and self.last_node_id is not None:
                    await self.send("executing", {"node": self.last_node_id}, sid)
                first_message = True
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        logging.warning(f"ws connection closed with exception {ws.exception()}")
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        try:
                            data = json.loads(msg.data)
                            if first_message and data.get("type") == "feature_flags":
                                self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                                await self.send("feature_flags", dict(self.features), sid)
                            first_message = False
                        except json.JSONDecodeError:
                            logging.warning(f"Invalid JSON received from client {sid}: {msg.data}")
                        except Exception as e:
                            logging.error(f"Error processing WebSocket message: {e}")
            finally:
                # The gotcha: this also removes a *newer* socket registered under the same sid.
                self.sockets.pop(sid, None)
                self.sockets_metadata.pop(sid, None)
            return ws

        @routes.get("/")
        async def get_root(request: web.Request) -> web.StreamResponse:
            response = web.FileResponse(os.path.join(self.web_root, "index.html"))
            response.headers["Cache-Control"] = "no-cache"
            response.headers["Pragma"] = "no-cache"
            response.headers["Expires"] = "0"
            return response

        @routes.get("/embeddings")
        async def get_embeddings(request: web.Request) -> web.Response:
            return web.json_response([os.path.splitext(a)[0] for a in self.paths.get_filename_list("embeddings")])

        @routes.get("/extensions")
        async def get_extensions(request: web.Request) -> web.Response:
            files = glob.glob(os.path.join(glob.escape(self.web_root), "extensions/**/*.js"), recursive=True)
            return web.json_response(["/" + os.path.relpath(f, self.web_root).replace("\\", "/") for f in files])

        @routes.post("/upload/image")
        async def upload_image(request: web.Request) -> web.Response:
            return self._image_upload(await request.post())

        @routes.post("/upload/mask")
        async def upload_mask(request: web.Request) -> web.Response:
            post = await request.post()

            def save_mask(image: Any, post: Any, filepath: str) -> None:
                original_ref = json.loads(post.get("original_ref"))
                filename, output_dir = self.paths.annotated_filepath(original_ref["filename"])
                if not filename or filename[0] == "/" or ".." in filename:
                    return
                if output_dir is None:
                    output_dir = self.paths.get_directory_by_type(original_ref.get("type", "output"))
                if output_dir is None:
                    return
                if original_ref.get("subfolder", "") != "":
                    full = os.path.join(output_dir, original_ref["subfolder"])
                    if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
                        return
                    output_dir = full
                file = os.path.join(output_dir, filename)
                if os.path.isfile(file):
                    with Image.open(file) as original:
                        metadata = PngInfo()
                        for key, value in getattr(original, "text", {}).items():
                            metadata.add_text(key, value)
                        original_rgba = original.convert("RGBA")
                        original_rgba.putalpha(Image.open(image.file).convert("RGBA").getchannel("A"))
                        original_rgba.save(filepath, compress_level=4, pnginfo=metadata)

            return self._image_upload(post, save_mask)

        @routes.get("/view")
        async def view_image(request: web.Request) -> web.StreamResponse:
            query = request.rel_url.query
            if "filename" in query:
                filename, output_dir = self.paths.annotated_filepath(query["filename"])
                if not filename or filename[0] == "/" or ".." in filename:
                    return web.Response(status=400)
                if output_dir is None:
                    output_dir = self.paths.get_directory_by_type(query.get("type", "output"))
                if output_dir is None:
                    return web.Response(status=400)
                if "subfolder" in query:
                    full_output_dir = os.path.join(output_dir, query["subfolder"])
                    if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                        return web.Response(status=403)
                    output_dir = full_output_dir
                filename = os.path.basename(filename)
                file = os.path.join(output_dir, filename)
                if os.path.isfile(file):
                    return self._view_file(file, filename, query)
            return web.Response(status=404)

        @routes.get("/view_metadata/{folder_name}")
        async def view_metadata(request: web.Request) -> web.Response:
            folder_name = request.match_info["folder_name"]
            filename = request.rel_url.query.get("filename")
            if not filename or not filename.endswith(".safetensors"):
                return web.Response(status=404)
            path = self.paths.get_full_path(folder_name, filename)
            if path is None:
                return web.Response(status=404)
            try:
                with open(path, "rb") as f:  # noqa: ASYNC230 - tiny files, as in ComfyUI
                    length = struct.unpack("<Q", f.read(8))[0]
                    if length > 1024 * 1024:
                        return web.Response(status=404)
                    header = json.loads(f.read(length))
            except (OSError, ValueError, struct.error):
                return web.Response(status=404)
            if "__metadata__" not in header:
                return web.Response(status=404)
            return web.json_response(header["__metadata__"])

        @routes.get("/system_stats")
        async def system_stats(request: web.Request) -> web.Response:
            total, free = _memory()
            return web.json_response({
                "system": {
                    "os": os.name, "ram_total": total, "ram_free": free, "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": FRONTEND_VERSION,
                    "installed_templates_version": TEMPLATES_VERSION,
                    "required_templates_version": TEMPLATES_VERSION,
                    "python_version": sys.version, "pytorch_version": PYTORCH_VERSION,
                    "embedded_python": os.path.split(os.path.split(sys.executable)[0])[1] == "python_embeded",
                    "argv": sys.argv,
                },
                "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                             "torch_vram_total": total, "torch_vram_free": free}],
            })

        @routes.get("/features")
        async def get_features(request: web.Request) -> web.Response:
            return web.json_response(dict(self.features))

        @routes.get("/prompt")
        async def get_prompt(request: web.Request) -> web.Response:
            return web.json_response(self.get_queue_info())

        @routes.get("/object_info")
        async def get_object_info(request: web.Request) -> web.Response:
            return web.json_response(self.defs.all())

        @routes.get("/object_info/{node_class}")
        async def get_object_info_node(request: web.Request) -> web.Response:
            node_class = request.match_info["node_class"]
            d = self.defs.get(node_class)
            return web.json_response({node_class: d} if d is not None else {})

        @routes.get("/history")
        async def get_history(request: web.Request) -> web.Response:
            max_items = request.rel_url.query.get("max_items")
            offset = request.rel_url.query.get("offset")
            return web.json_response(self.prompt_queue.get_history(
                max_items=int(max_items) if max_items is not None else None,
                offset=int(offset) if offset is not None else -1))

        @routes.get("/history/{prompt_id}")
        async def get_history_prompt_id(request: web.Request) -> web.Response:
            return web.json_response(self.prompt_queue.get_history(prompt_id=request.match_info["prompt_id"]))

        @routes.get("/queue")
        async def get_queue(request: web.Request) -> web.Response:
            running, pending = self.prompt_queue.get_current_queue_volatile()
            return web.json_response({"queue_running": [list(x) for x in running],
                                      "queue_pending": [list(x) for x in pending]})

        @routes.post("/prompt")
        async def post_prompt(request: web.Request) -> web.Response:
            logging.info("got prompt")
            json_data = await request.json()
            if "number" in json_data:
                number: float = float(json_data["number"])
            else:
                number = self.number
                if "front" in json_data and json_data["front"]:
                    number = -number
                self.number += 1
            if "prompt" not in json_data:
                error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                         "extra_info": {}}
                return web.json_response({"error": error, "node_errors": {}}, status=400)
            prompt = json_data["prompt"]
            prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
            partial = json_data.get("partial_execution_targets", None)
            valid = self.validator.validate_prompt(prompt, partial)
            extra_data = json_data.get("extra_data", {})
            if "client_id" in json_data:
                extra_data["client_id"] = json_data["client_id"]
            if valid[0]:
                self.prompt_queue.put(QueueItem(number, prompt_id, prompt, extra_data, valid[2]))
                return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})
            logging.warning(f"invalid prompt: {valid[1]}")
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)

        @routes.post("/queue")
        async def post_queue(request: web.Request) -> web.Response:
            json_data = await request.json()
            if "clear" in json_data and json_data["clear"]:
                self.prompt_queue.wipe_queue()
            if "delete" in json_data:
                for id_to_delete in json_data["delete"]:
                    self.prompt_queue.delete_queue_item(id_to_delete)
            return web.Response(status=200)

        @routes.post("/interrupt")
        async def post_interrupt(request: web.Request) -> web.Response:
            try:
                json_data = await request.json()
            except json.JSONDecodeError:
                json_data = {}
            prompt_id = json_data.get("prompt_id")
            if prompt_id:
                running, _ = self.prompt_queue.get_current_queue()
                if any(item.prompt_id == prompt_id for item in running):
                    logging.info(f"Interrupting prompt {prompt_id}")
                    self.interrupt.set(True)
                else:
                    logging.info(f"Prompt {prompt_id} is not currently running, skipping interrupt")
            else:
                logging.info("Global interrupt (no prompt_id specified)")
                self.interrupt.set(True)
            return web.Response(status=200)

        @routes.post("/free")
        async def post_free(request: web.Request) -> web.Response:
            json_data = await request.json()
            unload_models = json_data.get("unload_models", False)
            free_memory = json_data.get("free_memory", False)
            if unload_models:
                self.prompt_queue.set_flag("unload_models", unload_models)
            if free_memory:
                self.prompt_queue.set_flag("free_memory", free_memory)
            return web.Response(status=200)

        @routes.post("/history")
        async def post_history(request: web.Request) -> web.Response:
            json_data = await request.json()
            if "clear" in json_data and json_data["clear"]:
                self.prompt_queue.wipe_history()
            if "delete" in json_data:
                for id_to_delete in json_data["delete"]:
                    self.prompt_queue.delete_history_item(id_to_delete)
            return web.Response(status=200)

    def _image_upload(self, post: Any, image_save_function: Any = None) -> web.Response:
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_dir, image_upload_type = self._dir_by_type(post.get("type"))
        if not (image and image.file):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_output_folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(full_output_folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        duplicate = False
        if not (overwrite is not None and (overwrite == "true" or overwrite == "1")):
            i = 1
            while os.path.exists(filepath):
                if self._same_content(filepath, image):
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(full_output_folder, filename)
                i += 1
        if not duplicate:
            if image_save_function is not None:
                image_save_function(image, post, filepath)
            else:
                with open(filepath, "wb") as f:
                    shutil.copyfileobj(image.file, f)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": image_upload_type})

    def _same_content(self, filepath: str, image: Any) -> bool:
        if not os.path.exists(filepath):
            return False
        a = hashlib.new(self.args.default_hashing_function)
        b = hashlib.new(self.args.default_hashing_function)
        with open(filepath, "rb") as f:
            a.update(f.read())
        b.update(image.file.read())
        image.file.seek(0)
        return a.hexdigest() == b.hexdigest()

    @staticmethod
    def _view_file(file: str, filename: str, query: Any) -> web.StreamResponse:
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            with Image.open(file) as img:
                preview_info = query["preview"].split(";")
                image_format = preview_info[0]
                if image_format not in ["webp", "jpeg"] or "a" in query.get("channel", ""):
                    image_format = "webp"
                quality = int(preview_info[-1]) if preview_info[-1].isdigit() else 90
                buffer = BytesIO()
                if image_format == "jpeg" or query.get("channel", "") == "rgb":
                    img = img.convert("RGB")
                img.save(buffer, format=image_format, quality=quality)
                return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format}", headers=disposition)
        channel = query.get("channel", "rgba")
        if channel == "rgb":
            with Image.open(file) as img:
                new_img = Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
                buffer = BytesIO()
                new_img.save(buffer, format="PNG")
                return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)
        if channel == "a":
            with Image.open(file) as img:
                a = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
                alpha_img = Image.new("RGBA", img.size)
                alpha_img.putalpha(a)
                buffer = BytesIO()
                alpha_img.save(buffer, format="PNG")
                return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}:
            content_type = "application/octet-stream"
        return web.FileResponse(file, headers={**disposition, "Content-Type": content_type})

    # -- models, templates, i18n ---------------------------------------------------------------
    def _model_routes(self, routes: web.RouteTableDef) -> None:
        @routes.get("/models")
        async def list_model_types(request: web.Request) -> web.Response:
            return web.json_response(list(self.paths.folders))

        @routes.get("/models/{folder}")
        async def get_models(request: web.Request) -> web.Response:
            folder = request.match_info["folder"]
            if folder not in self.paths.folders:
                return web.Response(status=404)
            return web.json_response(self.paths.get_filename_list(folder))

        @routes.get("/experiment/models")
        async def get_model_folders(request: web.Request) -> web.Response:
            return web.json_response([{"name": k, "folders": v[0]} for k, v in self.paths.folders.items()
                                      if k not in ("configs", "custom_nodes")])

        @routes.get("/experiment/models/{folder}")
        async def get_all_models(request: web.Request) -> web.Response:
            folder = request.match_info["folder"]
            if folder not in self.paths.folders:
                return web.Response(status=404)
            out = []
            for index, directory in enumerate(self.paths.folders[map_legacy(folder)][0]):
                for root, dirs, files in os.walk(directory, followlinks=True):
                    dirs[:] = [d for d in dirs if d != ".git" and not d.startswith(".")]
                    for fn in files:
                        if fn.startswith(".") or os.path.splitext(fn)[1].lower() not in SUPPORTED_PT_EXTENSIONS:
                            continue
                        full = os.path.join(root, fn)
                        out.append({"name": os.path.relpath(full, directory), "pathIndex": index,
                                    "modified": os.path.getmtime(full), "created": os.path.getctime(full),
                                    "size": os.path.getsize(full)})
            return web.json_response(out)

        @routes.get("/workflow_templates")
        async def get_workflow_templates(request: web.Request) -> web.Response:
            return web.json_response({})

        @routes.get("/i18n")
        async def get_i18n(request: web.Request) -> web.Response:
            return web.json_response({})

    # -- /internal -------------------------------------------------------------------------------
    def _internal_app(self) -> web.Application:
        routes = web.RouteTableDef()

        @routes.get("/logs")
        async def get_logs(request: web.Request) -> web.Response:
            return web.json_response("".join(e["t"] + " - " + e["m"] for e in logs.get_logs()))

        @routes.get("/logs/raw")
        async def get_raw_logs(request: web.Request) -> web.Response:
            size = shutil.get_terminal_size()
            return web.json_response({"entries": logs.get_logs(), "size": {"cols": size.columns, "rows": size.lines}})

        @routes.patch("/logs/subscribe")
        async def subscribe_logs(request: web.Request) -> web.Response:
            json_data = await request.json()
            if json_data["enabled"]:
                self.log_subscribers.add(json_data["clientId"])
            else:
                self.log_subscribers.discard(json_data["clientId"])
            return web.Response(status=200)

        @routes.get("/folder_paths")
        async def get_folder_paths(request: web.Request) -> web.Response:
            return web.json_response({k: v[0] for k, v in self.paths.folders.items()})

        @routes.get("/files/{directory_type}")
        async def get_files(request: web.Request) -> web.Response:
            directory_type = request.match_info["directory_type"]
            if directory_type not in ("output", "input", "temp"):
                return web.json_response({"error": "Invalid directory type"}, status=400)
            directory = self.paths.get_directory_by_type(directory_type)
            assert directory is not None
            entries = sorted((e for e in os.scandir(directory) if e.is_file()), key=lambda e: -e.stat().st_mtime)
            return web.json_response([e.name for e in entries])

        app = web.Application()
        app.add_routes(routes)
        return app

    # -- lifecycle -------------------------------------------------------------------------------
    def start_worker(self) -> threading.Thread:
        thread = threading.Thread(target=prompt_worker, args=(self.prompt_queue, self.executor), daemon=True,
                                  name="prompt_worker")
        thread.start()
        return thread

    async def start(self, addresses: list[tuple[str, int]], verbose: bool = True) -> web.AppRunner:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        if verbose:
            logging.info("Starting server\n")
        for address, port in addresses:
            try:
                await web.TCPSite(runner, address, port).start()
            except OSError as e:
                # Bare --listen means "0.0.0.0,::"; tolerate hosts without IPv6 (ComfyUI would crash).
                if ":" in address and len(addresses) > 1:
                    logging.warning(f"Could not listen on {address}: {e}")
                    continue
                raise
            if verbose:
                shown = f"[{address}]" if ":" in address else address
                logging.info(f"To see the GUI go to: http://{shown}:{port}")
        return runner

