"""runpod-workers/worker-comfyui's result form, beside ours, so that its clients switch unchanged.

Its clients read ``output["images"][i]["data"]``: base64 bytes (``"type": "base64"``)
or a presigned URL (``"type": "s3_url"``), one entry per image; ``errors`` when
something went wrong that did not fail the job; ``"status": "success_no_images"``
when the run made no image. Our own form (``outputs``, with every kind of file,
texts, sizes and S3 URIs) stays as it is.

The bytes go out once: RunPod caps a ``/runsync`` answer at about 20 MB, so an
inline image's base64 lives in ``images`` only, and its ``outputs`` entry says
where: ``"image": <index into images>`` in place of ``data``. Other inline files
(video, audio) keep their ``data`` in ``outputs``. A failure keeps ``error`` as
one string and gets nothing added.
"""

from __future__ import annotations

from typing import Any

#: ``status`` of a run that delivered no image (worker-comfyui's word for it).
NO_IMAGES = "success_no_images"


def with_images(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (a job's, as :class:`.job.JobRunner` makes it) with worker-comfyui's fields added; changed
    in place and returned."""
    if "error" in result:
        return result
    images: list[dict[str, Any]] = []
    for output in result.get("outputs", []):
        if not _is_image(output):
            continue
        if output.get("data") is not None:
            images.append({"filename": output["filename"], "type": "base64", "data": output.pop("data")})
            output["image"] = len(images) - 1
        else:  # uploaded: the presigned URL, or the object's s3:// URI when the job asked for no URL
            images.append({"filename": output["filename"], "type": "s3_url", "data": output["url"] or output["s3_uri"]})
    result["images"] = images
    if not images:
        result["status"] = NO_IMAGES
    if result.get("warnings"):
        result["errors"] = list(result["warnings"])
    return result


def inline_data(result: dict[str, Any], output: dict[str, Any]) -> str | None:
    """An ``outputs`` entry's base64 bytes, wherever :func:`with_images` put them (``None``: not inline)."""
    if "image" in output:
        return str(result["images"][output["image"]]["data"])
    data = output.get("data")
    return None if data is None else str(data)


def _is_image(output: dict[str, Any]) -> bool:
    return output.get("kind") != "text" and str(output.get("content_type", "")).startswith("image/")
