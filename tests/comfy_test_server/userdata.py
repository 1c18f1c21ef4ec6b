"""User, settings and userdata routes (ComfyUI's app/user_manager.py and app/app_settings.py).

Single-user only (``user/default``), which is what a headless worker and the frontend use.
The frontend needs these to load: settings decide e.g. whether the template dialog opens.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import urllib.parse
import uuid
from typing import Any

from aiohttp import web

from .paths import Paths


def file_info(path: str, relative_to: str) -> dict[str, Any]:
    return {"path": os.path.relpath(path, relative_to).replace(os.sep, "/"), "size": os.path.getsize(path),
            "modified": os.path.getmtime(path), "created": os.path.getctime(path)}


class UserData:
    """Files under ``<user dir>/default``: settings and everything the UI stores."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.users: dict[str, str] = {"default": "default"}

    def _user_path(self, file: str | None, create_dir: bool = True) -> str | None:
        root = self.paths.user
        path = user_root = os.path.abspath(os.path.join(root, "default"))
        if file is not None:
            if "%" in file:
                file = urllib.parse.unquote(file)
            path = os.path.abspath(os.path.join(user_root, file))
            if os.path.commonpath((user_root, path)) != user_root:
                return None
        parent = os.path.split(path)[0]
        if create_dir and not os.path.exists(parent):
            os.makedirs(parent, exist_ok=True)
        return path

    def _settings(self) -> dict[str, Any]:
        file = self._user_path("comfy.settings.json")
        if file and os.path.isfile(file):
            try:
                with open(file) as f:
                    return json.load(f)
            except (OSError, ValueError):
                logging.error(f"The user settings file is corrupted: {file}")
        return {}

    def _save_settings(self, settings: dict[str, Any]) -> None:
        file = self._user_path("comfy.settings.json")
        assert file is not None
        with open(file, "w") as f:
            f.write(json.dumps(settings, indent=4))

    def add_routes(self, routes: web.RouteTableDef) -> None:  # noqa: C901 - a route table
        @routes.get("/settings")
        async def get_settings(request: web.Request) -> web.Response:
            return web.json_response(self._settings())

        @routes.get("/settings/{id}")
        async def get_setting(request: web.Request) -> web.Response:
            return web.json_response(self._settings().get(request.match_info["id"]))

        @routes.post("/settings")
        async def post_settings(request: web.Request) -> web.Response:
            settings = self._settings()
            self._save_settings({**settings, **(await request.json())})
            return web.Response(status=200)

        @routes.post("/settings/{id}")
        async def post_setting(request: web.Request) -> web.Response:
            settings = self._settings()
            settings[request.match_info["id"]] = await request.json()
            self._save_settings(settings)
            return web.Response(status=200)

        @routes.get("/users")
        async def get_users(request: web.Request) -> web.Response:
            user_dir = self._user_path(None, create_dir=False)
            return web.json_response({"storage": "server", "migrated": bool(user_dir and os.path.exists(user_dir))})

        @routes.post("/users")
        async def post_users(request: web.Request) -> web.Response:
            username = (await request.json())["username"]
            if username in self.users.values():
                return web.json_response({"error": "Duplicate username."}, status=400)
            name = username.strip()
            if not name:
                raise ValueError("username not provided")
            user_id = re.sub("[^a-zA-Z0-9-_]+", "-", name) + "_" + str(uuid.uuid4())
            self.users[user_id] = name
            with open(os.path.join(self.paths.user, "users.json"), "w") as f:  # noqa: ASYNC230 - tiny files, as in ComfyUI
                json.dump(self.users, f)
            return web.json_response(user_id)

        @routes.get("/userdata")
        async def list_userdata(request: web.Request) -> web.Response:
            directory = request.rel_url.query.get("dir", "")
            if not directory:
                return web.Response(status=400, text="Directory not provided")
            path = self._user_path(directory)
            if not path:
                return web.Response(status=403, text="Invalid directory")
            if not os.path.exists(path):
                return web.Response(status=404, text="Directory not found")
            recurse = request.rel_url.query.get("recurse", "").lower() == "true"
            full_info = request.rel_url.query.get("full_info", "").lower() == "true"
            split_path = request.rel_url.query.get("split", "").lower() == "true"
            pattern = os.path.join(glob.escape(path), "**", "*") if recurse else os.path.join(glob.escape(path), "*")
            results: list[Any] = []
            for full_path in glob.glob(pattern, recursive=recurse):
                if not os.path.isfile(full_path):
                    continue
                if full_info:
                    results.append(file_info(full_path, path))
                    continue
                rel = os.path.relpath(full_path, path).replace(os.sep, "/")
                results.append([rel] + rel.split("/") if split_path else rel)
            return web.json_response(results)

        @routes.get("/v2/userdata")
        async def list_userdata_v2(request: web.Request) -> web.Response:
            rel = urllib.parse.unquote(request.rel_url.query.get("path", ""))
            base = self._user_path(None, create_dir=False)
            target = self._user_path(rel, create_dir=False) if rel else base
            if not target or not base:
                return web.Response(status=400, text="Invalid path requested")
            if not os.path.exists(target):
                if target == base:
                    return web.json_response([])
                return web.Response(status=404, text="Requested path not found")
            if not os.path.isdir(target):
                return web.Response(status=400, text="Requested path is not a directory")
            results: list[dict[str, Any]] = []
            for root, dirs, files in os.walk(target, topdown=True):
                for d in dirs:
                    rel_dir = os.path.relpath(os.path.join(root, d), base).replace(os.sep, "/")
                    results.append({"name": d, "path": rel_dir,
                                    "type": "directory"})
                for fn in files:
                    fp = os.path.join(root, fn)
                    entry: dict[str, Any] = {"name": fn, "path": os.path.relpath(fp, base).replace(os.sep, "/"),
                                             "type": "file"}
                    try:
                        st = os.stat(fp)
                        entry.update(size=st.st_size, modified=st.st_mtime)
                    except OSError:
                        pass
                    results.append(entry)
            results.sort(key=lambda x: (x["type"] != "directory", x["name"].lower()))
            return web.json_response(results)

        def data_path(request: web.Request, check_exists: bool = False, param: str = "file") -> str | web.Response:
            file = request.match_info.get(param)
            if not file:
                return web.Response(status=400)
            path = self._user_path(file)
            if not path:
                return web.Response(status=403)
            if check_exists and not os.path.exists(path):
                return web.Response(status=404)
            return path

        @routes.get("/userdata/{file}")
        async def get_userdata(request: web.Request) -> web.StreamResponse:
            path = data_path(request, check_exists=True)
            return path if not isinstance(path, str) else web.FileResponse(path)

        @routes.post("/userdata/{file}")
        async def post_userdata(request: web.Request) -> web.StreamResponse:
            path = data_path(request)
            if not isinstance(path, str):
                return path
            overwrite = request.query.get("overwrite", "true") != "false"
            full_info = request.query.get("full_info", "false").lower() == "true"
            if not overwrite and os.path.exists(path):
                return web.Response(status=409, text="File already exists")
            try:
                body = await request.read()
                with open(path, "wb") as f:  # noqa: ASYNC230 - tiny files, as in ComfyUI
                    f.write(body)
            except OSError as e:
                logging.warning(f"Error saving file '{path}': {e}")
                return web.Response(status=400,
                                    reason="Invalid filename. Please avoid special characters like :\\/*?\"<>|")
            user_path = self._user_path(None)
            assert user_path is not None
            return web.json_response(file_info(path, user_path) if full_info else os.path.relpath(path, user_path))

        @routes.delete("/userdata/{file}")
        async def delete_userdata(request: web.Request) -> web.StreamResponse:
            path = data_path(request, check_exists=True)
            if not isinstance(path, str):
                return path
            os.remove(path)
            return web.Response(status=204)

        @routes.post("/userdata/{file}/move/{dest}")
        async def move_userdata(request: web.Request) -> web.StreamResponse:
            source = data_path(request, check_exists=True)
            if not isinstance(source, str):
                return source
            dest = data_path(request, check_exists=False, param="dest")
            if not isinstance(dest, str):
                return dest
            overwrite = request.query.get("overwrite", "true") != "false"
            full_info = request.query.get("full_info", "false").lower() == "true"
            if not overwrite and os.path.exists(dest):
                return web.Response(status=409, text="File already exists")
            shutil.move(source, dest)
            user_path = self._user_path(None)
            assert user_path is not None
            return web.json_response(file_info(dest, user_path) if full_info else os.path.relpath(dest, user_path))
