"""Every output a prompt produced, and delivering it: to S3, or inline as base64.

ComfyUI reports outputs per node under keys that depend on the node: core
nodes use ``images``/``audio``/``3d``/``text``, video packs use ``gifs`` or
``videos``, other packs invent their own. Rather than a list of known keys,
anything that looks like a file (``filename`` + ``type``) is a file output and
any ``text`` list is a text output, so new node packs work without a release.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StorageError
from .files import resolve_inside

if TYPE_CHECKING:
    from .folders import ComfyFolders
    from .storage import S3Storage

# Types the stdlib table lacks or gets wrong on minimal images.
_CONTENT_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".flac": "audio/flac", ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".opus": "audio/opus",
    ".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".obj": "model/obj", ".json": "application/json",
    ".txt": "text/plain", ".latent": "application/octet-stream", ".safetensors": "application/octet-stream",
}


def content_type_for(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass
class FileOutput:
    node_id: str
    kind: str
    filename: str
    subfolder: str
    folder_type: str
    path: Path
    bytes: int
    content_type: str

    @property
    def relative_name(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


@dataclass
class TextOutput:
    node_id: str
    text: str


def collect_outputs(history_entry: dict[str, Any], folders: ComfyFolders, *,
                    include_temp: bool) -> tuple[list[FileOutput], list[TextOutput], list[str]]:
    """Files and texts of one history entry, plus warnings for listed files that are missing."""
    files: list[FileOutput] = []
    texts: list[TextOutput] = []
    warnings: list[str] = []
    for node_id, node_outputs in (history_entry.get("outputs") or {}).items():
        for kind, items in node_outputs.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if kind == "text" and isinstance(item, str):
                    texts.append(TextOutput(str(node_id), item))
                elif isinstance(item, dict) and isinstance(item.get("filename"), str):
                    folder_type = item.get("type") or "output"
                    if folder_type not in ("output", "temp") or folder_type == "temp" and not include_temp:
                        continue  # "input" entries are the job's own inputs, echoed by some nodes
                    subfolder = item.get("subfolder") or ""
                    try:
                        path = resolve_inside(folders.for_type(folder_type), f"{subfolder}/{item['filename']}"
                                              if subfolder else item["filename"])
                    except ValueError:
                        warnings.append(f"node {node_id} listed an unsafe file name {item['filename']!r}; skipped")
                        continue
                    if not path.is_file():
                        warnings.append(f"node {node_id} listed {folder_type} file {item['filename']!r}, "
                                        "which does not exist")
                        continue
                    files.append(FileOutput(str(node_id), kind, item["filename"], subfolder, folder_type, path,
                                            path.stat().st_size, content_type_for(item["filename"])))
    return files, texts, warnings


async def upload_outputs(files: list[FileOutput], storage: S3Storage, bucket: str, prefix: str, job_id: str, *,
                         presign: bool, expires_s: int, used: set[str] | None = None) -> list[dict[str, Any]]:
    """Upload every file concurrently; all succeed or a StorageError is raised (nothing half-reported).

    ``used`` holds the keys a job's earlier uploads took (streaming uploads node by node); it is updated.
    """
    used = set() if used is None else used
    keys = []
    for output in files:
        key = _key(prefix, job_id, output.relative_name)
        if key in used:  # the same name from output and temp folders
            key = _key(prefix, job_id, output.folder_type, output.relative_name)
        used.add(key)
        keys.append(key)
    await asyncio.gather(*(storage.upload(output.path, bucket, key, content_type=output.content_type)
                           for output, key in zip(files, keys, strict=True)))
    return [{**_describe(output), "s3_uri": f"s3://{bucket}/{key}",
             "url": storage.presign(bucket, key, expires_s) if presign else None}
            for output, key in zip(files, keys, strict=True)]


def _key(*parts: str) -> str:
    """An object key of ``parts`` joined by '/', without empty, '.' or '..' segments (S3 would resolve them)."""
    return "/".join(segment for part in parts for segment in part.split("/") if segment not in ("", ".", ".."))


async def inline_outputs(files: list[FileOutput], *, max_bytes: int) -> list[dict[str, Any]]:
    """Outputs as base64 in the result, up to ``max_bytes`` in total (RunPod caps result sizes)."""
    total = sum(output.bytes for output in files)
    if total > max_bytes:
        raise StorageError(
            f"the outputs total {total} bytes, more than INLINE_OUTPUT_MAX_BYTES ({max_bytes}) can return "
            "inline; configure S3 (OUTPUT_S3_URI plus BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and "
            "BUCKET_SECRET_ACCESS_KEY) or pass output.s3_uri in the job", total_bytes=total, max_bytes=max_bytes)

    def encode(output: FileOutput) -> str:
        try:
            return base64.b64encode(output.path.read_bytes()).decode("ascii")
        except OSError as exc:
            raise StorageError(f"could not read output {output.relative_name} of node {output.node_id}: "
                               f"{exc.strerror or type(exc).__name__}") from exc

    encoded = await asyncio.gather(*(asyncio.to_thread(encode, output) for output in files))
    return [{**_describe(output), "s3_uri": None, "url": None, "data": data}
            for output, data in zip(files, encoded, strict=True)]


def _describe(output: FileOutput) -> dict[str, Any]:
    return {"node_id": output.node_id, "kind": output.kind, "filename": output.filename,
            "subfolder": output.subfolder, "type": output.folder_type, "bytes": output.bytes,
            "content_type": output.content_type}
