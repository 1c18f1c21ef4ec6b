"""Jobs for the runner tests: tiny images in, the pixels that come out, and what a job leaves on disk."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from tests.support.ui_workflows import chain, invert, load_image, save_image

if TYPE_CHECKING:
    from comfy_serverless import ComfyConnector

#: The smallest valid API-format workflow: EmptyImage → SaveImage.
API_WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "out"}},
}


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def noise_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def first_pixel(data: bytes) -> tuple[int, ...]:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))


def invert_job(name: str = "photo.png", **extra: Any) -> dict[str, Any]:
    """A UI workflow: LoadImage(name) → Invert → SaveImage."""
    return {"workflow": chain(load_image(name), invert(), save_image("job"), titles={3: "Result"}), **extra}


def folder_state(connector: ComfyConnector, scratch: Path) -> dict[str, list[str]]:
    state = {}
    for name in ("input", "output", "temp"):
        folder = connector.files.folders.for_type(name)
        state[name] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
    state["scratch"] = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*")) if scratch.exists() else []
    return state
