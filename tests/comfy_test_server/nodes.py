"""Node definitions (recorded from real ComfyUI) and the few nodes this server can execute.

``/object_info`` serves every recorded core definition so the real frontend can load and
convert any core workflow, and validation runs against the same definitions. Execution is
implemented only for a handful of image nodes, in pure Pillow (an IMAGE is a list of Pillow
images, a MASK a list of mode-"L" images); any other known node fails at execution time
with ``NotImplementedError``, which is what a worker sees as an ``execution_error``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from .paths import Paths

OBJECT_INFO_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "object_info.json")

#: Bytes above which EmptyImage fails like torch's CPU allocator would on a small CI box.
MAX_EMPTY_IMAGE_BYTES = 2 * 1024 ** 3

#: Combo inputs whose choices are model files: (class_type, input) -> folder key.
MODEL_COMBOS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "config_name"): "configs",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
}


class ImageBatch(list):  # type: ignore[type-arg]
    """An IMAGE: a batch of same-sized RGB Pillow images (stands in for a [B,H,W,3] tensor)."""

    def __str__(self) -> str:
        if not self:
            return "ImageBatch(shape=[0])"
        w, h = self[0].size
        return f"ImageBatch(shape=[{len(self)}, {h}, {w}, 3])"

    __repr__ = __str__


class MaskBatch(list):  # type: ignore[type-arg]
    """A MASK: a batch of mode-"L" Pillow images (stands in for a [B,H,W] tensor)."""

    def __str__(self) -> str:
        if not self:
            return "MaskBatch(shape=[0])"
        w, h = self[0].size
        return f"MaskBatch(shape=[{len(self)}, {h}, {w}])"

    __repr__ = __str__


@dataclass
class NodeContext:
    """What node implementations need from the server (directories, CLI switches)."""

    paths: Paths
    disable_metadata: bool = False


# --------------------------------------------------------------------------------------------
# Executable nodes. Signatures mirror nodes.py so kwargs/defaults behave the same.
# --------------------------------------------------------------------------------------------


class EmptyImage:
    FUNCTION = "generate"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[ImageBatch]:
        # torch.full([b, h, w, 1]) float32 is the first allocation ComfyUI makes.
        first_alloc = batch_size * height * width * 4
        if batch_size * height * width * 3 * 4 > MAX_EMPTY_IMAGE_BYTES:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                f"you tried to allocate {first_alloc} bytes. Error code 12 (Cannot allocate memory)")
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        img = Image.new("RGB", (width, height), rgb)
        return (ImageBatch([img] * batch_size),)


class ImageInvert:
    FUNCTION = "invert"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def invert(self, image: ImageBatch) -> tuple[ImageBatch]:
        return (ImageBatch(ImageOps.invert(i) for i in image),)


class ImageScale:
    FUNCTION = "upscale"
    _METHODS = {"nearest-exact": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                "area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC,
                "lanczos": Image.Resampling.LANCZOS}

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def upscale(self, image: ImageBatch, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[ImageBatch]:
        if width == 0 and height == 0:
            return (image,)
        old_w, old_h = image[0].size
        if width == 0:
            width = max(1, round(old_w * height / old_h))
        elif height == 0:
            height = max(1, round(old_h * width / old_w))
        out = ImageBatch()
        for img in image:
            if crop == "center":  # comfy.utils.common_upscale: crop to the target aspect first
                old_aspect, new_aspect = old_w / old_h, width / height
                x = y = 0
                if old_aspect > new_aspect:
                    x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
                elif old_aspect < new_aspect:
                    y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
                img = img.crop((x, y, old_w - x, old_h - y))
            out.append(img.resize((width, height), self._METHODS[upscale_method]))
        return (out,)


class ImageBlur:
    FUNCTION = "execute"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def execute(self, image: ImageBatch, blur_radius: int, sigma: float) -> tuple[ImageBatch]:
        if blur_radius == 0:
            return (image,)
        # Pillow's Gaussian is close enough; blur_radius (the kernel half-size) only truncates it.
        return (ImageBatch(i.filter(ImageFilter.GaussianBlur(radius=min(sigma, blur_radius))) for i in image),)


class LoadImage:
    FUNCTION = "load_image"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def load_image(self, image: str) -> tuple[ImageBatch, MaskBatch]:
        img = Image.open(self.ctx.paths.get_annotated_filepath(image))
        images, masks = ImageBatch(), MaskBatch()
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            if "A" in frame.getbands():
                mask = ImageOps.invert(frame.getchannel("A"))
            elif frame.mode == "P" and "transparency" in frame.info:
                mask = ImageOps.invert(frame.convert("RGBA").getchannel("A"))
            else:
                mask = Image.new("L", (64, 64), 0)
            images.append(rgb)
            masks.append(mask)
        if img.format == "MPO":
            images, masks = ImageBatch(images[:1]), MaskBatch(masks[:1])
        return images, masks

    @staticmethod
    def is_changed(ctx: NodeContext, image: str) -> str:
        with open(ctx.paths.get_annotated_filepath(image), "rb") as f:
            return hashlib.sha256(f.read()).digest().hex()


class SaveImage:
    FUNCTION = "save_images"

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.output_dir = ctx.paths.output
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    def save_images(self, images: ImageBatch, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        filename_prefix += self.prefix_append
        # ComfyUI passes shape[1], shape[0] of a [H,W,C] image: height as "width". Kept as is.
        w, h = images[0].size
        full_output_folder, filename, counter, subfolder, filename_prefix = \
            self.ctx.paths.get_save_image_path(filename_prefix, self.output_dir, h, w)
        results = []
        for batch_number, image in enumerate(images):
            metadata = None
            if not self.ctx.disable_metadata:
                metadata = PngInfo()
                if prompt is not None:
                    metadata.add_text("prompt", json.dumps(prompt))
                if extra_pnginfo is not None:
                    for x in extra_pnginfo:
                        metadata.add_text(x, json.dumps(extra_pnginfo[x]))
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            image.save(os.path.join(full_output_folder, file), pnginfo=metadata, compress_level=self.compress_level)
            results.append({"filename": file, "subfolder": subfolder, "type": self.type})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.output_dir = ctx.paths.temp
        self.type = "temp"
        # Same alphabet as ComfyUI (including its "p" typo for "w").
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        self.compress_level = 1


EXECUTABLE: dict[str, type] = {
    "EmptyImage": EmptyImage,
    "ImageInvert": ImageInvert,
    "ImageScale": ImageScale,
    "ImageBlur": ImageBlur,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
}

#: class_type -> IS_CHANGED(ctx, **constant_inputs)
IS_CHANGED: dict[str, Callable[..., Any]] = {"LoadImage": LoadImage.is_changed}


def _validate_image_file(ctx: NodeContext, image: str) -> bool | str:
    if not ctx.paths.exists_annotated_filepath(image):
        return f"Invalid image file: {image}"
    return True


#: class_type -> (VALIDATE_INPUTS(ctx, **inputs), the input names it takes). Inputs it takes
#: skip the min/max/combo checks, exactly like ComfyUI.
VALIDATORS: dict[str, tuple[Callable[..., bool | str], list[str]]] = {
    "LoadImage": (_validate_image_file, ["image"]),
    "LoadImageMask": (_validate_image_file, ["image"]),
}


class NotExecutable:
    """Stand-in instance for a node that is defined but cannot run here."""

    FUNCTION = "execute"

    def __init__(self, ctx: NodeContext, class_type: str) -> None:
        self.class_type = class_type

    def execute(self, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self.class_type} cannot be executed by the ComfyUI test server "
            f"(it can only run: {', '.join(EXECUTABLE)})")


def instantiate(class_type: str, ctx: NodeContext) -> Any:
    """Create the object that executes ``class_type``."""
    cls = EXECUTABLE.get(class_type)
    return cls(ctx) if cls is not None else NotExecutable(ctx, class_type)


class NodeDefinitions:
    """The recorded ``/object_info`` definitions, with file-dependent combos recomputed."""

    def __init__(self, paths: Paths, path: str = OBJECT_INFO_PATH) -> None:
        self.paths = paths
        with open(path, encoding="utf-8") as f:
            self._defs: dict[str, dict[str, Any]] = json.load(f)
        self._dynamic: dict[str, list[tuple[str, Callable[[], list[str]]]]] = {}
        for (cls, name), folder in MODEL_COMBOS.items():
            if cls in self._defs:
                extra = ["pixel_space"] if cls == "VAELoader" else []
                self._dynamic.setdefault(cls, []).append(
                    (name, lambda folder=folder, extra=extra: self.paths.get_filename_list(folder) + extra))
        self._dynamic.setdefault("LoadImage", []).append(("image", self.paths.input_image_files))
        self._dynamic.setdefault("LoadImageMask", []).append(("image", self.paths.input_files))

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._defs

    def names(self) -> list[str]:
        return list(self._defs)

    def get(self, class_type: str) -> dict[str, Any] | None:
        """One definition as ``/object_info`` would return it now (None if unknown)."""
        d = self._defs.get(class_type)
        if d is None or class_type not in self._dynamic:
            return d
        d = copy.deepcopy(d)
        for name, lister in self._dynamic[class_type]:
            for cat in ("required", "optional"):
                spec = d["input"].get(cat, {}).get(name)
                if spec is not None and isinstance(spec[0], list):
                    spec[0] = lister()
        return d

    def all(self) -> dict[str, dict[str, Any]]:
        """Every definition (only the few file-dependent ones are copied)."""
        return {name: self.get(name) for name in self._defs}  # type: ignore[misc]

    # Helpers used by validation/execution -------------------------------------------------
    def is_output(self, class_type: str) -> bool:
        d = self._defs.get(class_type)
        return bool(d and d.get("output_node"))

    def return_types(self, class_type: str) -> list[Any]:
        return list(self._defs[class_type]["output"])

    def hidden(self, class_type: str) -> dict[str, str]:
        return dict(self._defs[class_type]["input"].get("hidden", {}))
