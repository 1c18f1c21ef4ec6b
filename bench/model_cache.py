"""The model cache: one job with a 200 MB model from S3, run twice; the second finds it cached.

The model is a RealESRGAN "Compact" upscaler (one inner convolution of 2360 features, zero
weights) that ComfyUI's UpscaleModelLoader really loads, so on a real ComfyUI the second job
also shows whether ComfyUI kept the loaded model (the loader node reported as cached).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

from comfy_serverless import ComfyConnector
from comfy_serverless.files import CACHE_FOLDER_RE
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage

from .common import REAL_COMFY, Figure, Report
from .jobs import png_bytes

FEATURES = 2360  # 2360 x 2360 x 3 x 3 float32 weights: about 200 MB


def compact_model(features: int = FEATURES) -> bytes:
    """A safetensors SRVGGNetCompact (3 -> ``features`` -> ``features`` -> 12 channels, 2x) of zero weights."""
    shapes = {"body.0.weight": [features, 3, 3, 3], "body.0.bias": [features], "body.1.weight": [features],
              "body.2.weight": [features, features, 3, 3], "body.2.bias": [features], "body.3.weight": [features],
              "body.4.weight": [12, features, 3, 3], "body.4.bias": [12]}
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + bytes(offset)


def job(bucket: str, photo: str, **model: Any) -> dict[str, Any]:
    """LoadImage → ImageUpscaleWithModel(UpscaleModelLoader) → SaveImage; on the test server, which cannot run
    the loader, LoadImage → SaveImage with the loader beside it (its value is still rewritten)."""
    upscale = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}}
    return {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "bench-upscaler.safetensors"}},
        **({"3": upscale} if REAL_COMFY else {}),
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3" if REAL_COMFY else "1", 0],
                                                     "filename_prefix": "cache-bench"}}},
        "inputs": [{"source": photo, "name": "photo.png"},
                   {"source": f"s3://{bucket}/bench/bench-upscaler.safetensors", "folder_type": "models",
                    "subfolder": "upscale_models", **model}],
        "output": {"inline": True}}


def cached_nodes(entry: dict[str, Any]) -> set[str]:
    """The nodes ComfyUI reported in ``execution_cached`` for a history entry: those it did not run."""
    return {node for kind, data in entry["status"]["messages"] if kind == "execution_cached"
            for node in data["nodes"]}


def executed_loader(result: dict[str, Any], loader: str = "2") -> bool:
    """Whether ComfyUI ran the loader node of a job's result (it did unless it reported it cached)."""
    (entry,) = result["history"].values()
    return loader not in cached_nodes(entry)


async def run(report: Report, connector: ComfyConnector, s3: Any, workdir: Path) -> None:
    client = s3.client()
    model = compact_model()
    client.put_object(Bucket=s3.bucket, Key="bench/bench-upscaler.safetensors", Body=model)
    photo = "data:image/png;base64," + base64.b64encode(png_bytes(256, noise=False)).decode()
    config = s3.config(scratch_dir=str(workdir / "scratch"), model_cache_dir=str(workdir / "model-cache"))
    runner = JobRunner(connector, config, S3Storage.from_config(config))
    model_folder = connector.files.model_folder("upscale_models")
    before = set(model_folder.iterdir()) if model_folder.exists() else set()
    try:
        first, second = [await runner.run(f"cache-bench-{index}", job(s3.bucket, photo)) for index in (1, 2)]
        known = await runner.run("cache-bench-3", job(s3.bucket, photo, sha256=hashlib.sha256(model).hexdigest()))
    finally:
        for path in set(model_folder.iterdir()) - before if model_folder.exists() else ():
            if CACHE_FOLDER_RE.fullmatch(path.name):
                shutil.rmtree(path)
        shutil.rmtree(workdir / "model-cache", ignore_errors=True)
    for result in (first, second, known):
        assert "error" not in result, result
    size_mb = first["inputs"][1]["bytes"] / 1e6
    model_1, model_2 = first["inputs"][1]["fetch_s"], second["inputs"][1]["fetch_s"]
    report.add(Figure(f"model cache: job 1 model fetch ({size_mb:.0f} MB from S3, downloaded)", model_1 * 1000, "ms"))
    report.add(Figure("model cache: job 2 model fetch (cached: one HEAD)", model_2 * 1000, "ms", model_1 * 1000,
                      "job 1 model fetch", target="<= 0.01x", met=model_2 / model_1 <= 0.01,
                      extra={"cached": [i["cached"] for i in second["inputs"]]}))
    model_3 = known["inputs"][1]["fetch_s"]
    report.add(Figure("model cache: job 3 model fetch (cached, sha256 given: no request)", model_3 * 1000, "ms",
                      model_1 * 1000, "job 1 model fetch", target="<= 0.01x", met=model_3 / model_1 <= 0.01))
    report.add(Figure("model cache: job 2 fetch phase (model + inline photo)", second["timings"]["fetch"] * 1000,
                      "ms", first["timings"]["fetch"] * 1000, "job 1 fetch phase"))
    report.add(Figure("model cache: job 1 total", first["timings"]["total"] * 1000, "ms"))
    report.add(Figure("model cache: job 2 total", second["timings"]["total"] * 1000, "ms",
                      first["timings"]["total"] * 1000, "job 1 total"))
    if REAL_COMFY:
        ran = executed_loader(second)
        report.add(Figure("model cache: job 2 runs the loader node (1 = yes)", float(ran), "", float(
            executed_loader(first)), "job 1", target="0 (ComfyUI keeps the model)", met=not ran))

