"""A record of what ComfyUI's frontend reads from ComfyUI's API while it sets up.

The frontend's setup is seconds of JavaScript between requests to ComfyUI's API
(settings, users, extensions, ``/object_info``…), and on a cold start it cannot
begin before ComfyUI answers. Those answers only change when the image changes,
so the image records them once (``python -m comfy_serverless.snapshot_frontend``)
and a cold start replays them while ComfyUI boots: the page is set up by the
time ComfyUI answers. The record is then checked against the live server: if the
node definitions or the extension list differ, the page is reloaded from ComfyUI;
if only the lists of files in combo inputs differ (a model added to the volume,
an image in input/), the page refreshes them in place, as ComfyUI's own
"refresh" does. A stale record costs time, never correctness.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .workflow import content_hash

RECORD_VERSION = 1
OBJECT_INFO_PATH = "/api/object_info"
EXTENSIONS_PATH = "/api/extensions"


class Staleness(Enum):
    CURRENT = "current"
    FILE_LISTS = "the lists of files in combo inputs differ"
    NODES = "the node definitions differ"
    EXTENSIONS = "the extension list differs (other custom nodes' web files)"


def structure_hash(object_info: dict[str, Any]) -> str:
    """A hash of the node definitions without the options of combo inputs, which list files on disk."""
    def without_options(spec: Any) -> Any:
        if not isinstance(spec, list) or not spec:
            return spec
        if isinstance(spec[0], list):
            return ["COMBO", *spec[1:]]
        if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return ["COMBO", {k: v for k, v in spec[1].items() if k != "options"}, *spec[2:]]
        return spec

    def node(definition: Any) -> Any:
        if not isinstance(definition, dict) or not isinstance(definition.get("input"), dict):
            return definition
        inputs = {group: {name: without_options(spec) for name, spec in specs.items()}
                  if isinstance(specs, dict) else specs for group, specs in definition["input"].items()}
        return {**definition, "input": inputs}

    return content_hash({name: node(definition) for name, definition in object_info.items()})


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class FrontendRecord:
    """ComfyUI's answers to the frontend's GETs, keyed by path and query (``/api/userdata?dir=workflows``)."""

    responses: dict[str, RecordedResponse]
    object_info_hash: str
    structure_hash: str
    extensions: tuple[str, ...]

    @classmethod
    def from_responses(cls, responses: dict[str, RecordedResponse]) -> FrontendRecord:
        """A record of what a setting-up page was answered; it must include ``/object_info`` and the extensions."""
        missing = [path for path in (OBJECT_INFO_PATH, EXTENSIONS_PATH)
                   if path not in responses or responses[path].status != 200]
        if missing:
            raise ConfigError(f"the frontend did not read {', '.join(missing)} while setting up; nothing to record")
        object_info = json.loads(responses[OBJECT_INFO_PATH].body)
        extensions = json.loads(responses[EXTENSIONS_PATH].body)
        return cls(responses, content_hash(object_info), structure_hash(object_info), tuple(extensions))

    def staleness(self, object_info: dict[str, Any], extensions: list[str]) -> Staleness:
        """How the live ComfyUI's answers differ from this record, the worst difference first."""
        if tuple(extensions) != self.extensions:
            return Staleness.EXTENSIONS
        if content_hash(object_info) == self.object_info_hash:
            return Staleness.CURRENT
        if structure_hash(object_info) != self.structure_hash:
            return Staleness.NODES
        return Staleness.FILE_LISTS

    def save(self, path: Path) -> None:
        data = {
            "version": RECORD_VERSION, "object_info_hash": self.object_info_hash,
            "structure_hash": self.structure_hash, "extensions": list(self.extensions),
            "responses": {key: {"status": r.status, "content_type": r.content_type,
                                "body": base64.b64encode(r.body).decode("ascii")}
                          for key, r in sorted(self.responses.items())},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FrontendRecord:
        """The record at ``path``; a missing or malformed file is a ConfigError naming FRONTEND_SNAPSHOT."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != RECORD_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {RECORD_VERSION}")
            responses = {key: RecordedResponse(int(r["status"]), str(r["content_type"]), base64.b64decode(r["body"]))
                         for key, r in data["responses"].items()}
            return cls(responses, str(data["object_info_hash"]), str(data["structure_hash"]),
                       tuple(data["extensions"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"FRONTEND_SNAPSHOT {path} cannot be used: {exc} (make it again with "
                              "`python -m comfy_serverless.snapshot_frontend PATH`)", key="FRONTEND_SNAPSHOT") from None
