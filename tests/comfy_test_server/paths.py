"""Directory layout and file-name rules, mirroring ComfyUI's ``folder_paths`` module.

Kept as an object (not module globals) so several servers could live in one process; the
rules themselves (annotated ``"x.png [output]"`` names, the ``{prefix}_{counter:05}_.png``
counter scan, model folder keys) follow ComfyUI 0.3.64 so file names match exactly.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import time
from dataclasses import dataclass, field

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

#: (folder key, [sub-directories of models/], extensions) in ComfyUI's registration order.
_MODEL_FOLDERS: list[tuple[str, list[str], set[str]]] = [
    ("checkpoints", ["checkpoints"], SUPPORTED_PT_EXTENSIONS),
    ("configs", ["configs"], {".yaml"}),
    ("loras", ["loras"], SUPPORTED_PT_EXTENSIONS),
    ("vae", ["vae"], SUPPORTED_PT_EXTENSIONS),
    ("text_encoders", ["text_encoders", "clip"], SUPPORTED_PT_EXTENSIONS),
    ("diffusion_models", ["unet", "diffusion_models"], SUPPORTED_PT_EXTENSIONS),
    ("clip_vision", ["clip_vision"], SUPPORTED_PT_EXTENSIONS),
    ("style_models", ["style_models"], SUPPORTED_PT_EXTENSIONS),
    ("embeddings", ["embeddings"], SUPPORTED_PT_EXTENSIONS),
    ("diffusers", ["diffusers"], {"folder"}),
    ("vae_approx", ["vae_approx"], SUPPORTED_PT_EXTENSIONS),
    ("controlnet", ["controlnet", "t2i_adapter"], SUPPORTED_PT_EXTENSIONS),
    ("gligen", ["gligen"], SUPPORTED_PT_EXTENSIONS),
    ("upscale_models", ["upscale_models"], SUPPORTED_PT_EXTENSIONS),
    ("custom_nodes", [], set()),  # lives in <base>/custom_nodes, handled below
    ("hypernetworks", ["hypernetworks"], SUPPORTED_PT_EXTENSIONS),
    ("photomaker", ["photomaker"], SUPPORTED_PT_EXTENSIONS),
    ("classifiers", ["classifiers"], {""}),
    ("model_patches", ["model_patches"], SUPPORTED_PT_EXTENSIONS),
    ("audio_encoders", ["audio_encoders"], SUPPORTED_PT_EXTENSIONS),
]

_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}


def map_legacy(folder_name: str) -> str:
    """``unet``/``clip`` are aliases of ``diffusion_models``/``text_encoders`` in ComfyUI."""
    return _LEGACY.get(folder_name, folder_name)


@dataclass
class Paths:
    """All directories the server reads and writes, resolved to absolute paths."""

    base: str
    input: str
    output: str
    temp: str
    user: str
    folders: dict[str, tuple[list[str], set[str]]] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Paths:
        """Resolve directories the way ComfyUI's main.py does (note ``--temp-directory X`` -> X/temp)."""
        base = os.path.abspath(args.base_directory or os.getcwd())
        models = os.path.join(base, "models")
        output = os.path.abspath(args.output_directory) if args.output_directory else os.path.join(base, "output")
        paths = cls(
            base=base,
            input=os.path.abspath(args.input_directory) if args.input_directory else os.path.join(base, "input"),
            output=output,
            temp=(os.path.join(os.path.abspath(args.temp_directory), "temp") if args.temp_directory
                  else os.path.join(base, "temp")),
            user=os.path.abspath(args.user_directory) if args.user_directory else os.path.join(base, "user"),
        )
        for key, subdirs, exts in _MODEL_FOLDERS:
            dirs = [os.path.join(models, d) for d in subdirs] if key != "custom_nodes" else [
                os.path.join(base, "custom_nodes")]
            paths.folders[key] = (dirs, set(exts))
        # main.py: default folders that CheckpointSave & co. write to.
        for key in ("checkpoints", "clip", "vae", "diffusion_models", "loras"):
            dirs = paths.folders[map_legacy(key)][0]
            extra = os.path.join(output, key)
            if extra not in dirs:
                dirs.append(extra)
        return paths

    # -- typed directories -------------------------------------------------------------------
    def get_directory_by_type(self, type_name: str | None) -> str | None:
        """``output``/``temp``/``input`` -> directory, anything else -> None."""
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(type_name or "")

    def annotated_filepath(self, name: str) -> tuple[str, str | None]:
        """Split ``"x.png [output]"`` into the name and the directory it names (or None)."""
        for suffix, directory in (("[output]", self.output), ("[input]", self.input), ("[temp]", self.temp)):
            if name.endswith(suffix):
                return name[: -(len(suffix) + 1)], directory
        return name, None

    def get_annotated_filepath(self, name: str, default_dir: str | None = None) -> str:
        """Full path of an annotated name; un-annotated names live in the input directory."""
        name, base_dir = self.annotated_filepath(name)
        return os.path.join(base_dir or default_dir or self.input, name)

    def exists_annotated_filepath(self, name: str) -> bool:
        """What LoadImage's VALIDATE_INPUTS checks."""
        return os.path.exists(self.get_annotated_filepath(name))

    # -- listings ----------------------------------------------------------------------------
    def input_image_files(self) -> list[str]:
        """LoadImage's combo list: top-level files of the input dir whose mimetype is image/*."""
        try:
            files = [f for f in os.listdir(self.input) if os.path.isfile(os.path.join(self.input, f))]
        except FileNotFoundError:
            return []
        return sorted(filter_files_content_types(files, ["image"]))

    def input_files(self) -> list[str]:
        """LoadImageMask's combo list: every top-level file of the input dir."""
        try:
            return sorted(f for f in os.listdir(self.input) if os.path.isfile(os.path.join(self.input, f)))
        except FileNotFoundError:
            return []

    def get_filename_list(self, folder_name: str) -> list[str]:
        """Model files of a folder key, recursive, relative, filtered by extension, sorted."""
        folder_name = map_legacy(folder_name)
        if folder_name not in self.folders:
            return []
        dirs, exts = self.folders[folder_name]
        out: set[str] = set()
        for d in dirs:
            for rel in recursive_search(d):
                if not exts or os.path.splitext(rel)[1].lower() in exts:
                    out.add(rel)
        return sorted(out)

    def get_full_path(self, folder_name: str, filename: str) -> str | None:
        """First existing file ``filename`` under the folder key's directories."""
        folder_name = map_legacy(folder_name)
        if folder_name not in self.folders:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for d in self.folders[folder_name][0]:
            full = os.path.join(d, filename)
            if os.path.isfile(full):
                return full
        return None

    # -- saving ------------------------------------------------------------------------------
    def get_save_image_path(self, filename_prefix: str, output_dir: str, image_width: int = 0,
                            image_height: int = 0) -> tuple[str, str, int, str, str]:
        """Same counter scan as ComfyUI: next ``{prefix}_{NNNNN}_.png`` number in that subfolder."""
        def map_filename(filename: str) -> tuple[int, str]:
            prefix_len = len(os.path.basename(filename_prefix))
            prefix = filename[: prefix_len + 1]
            try:
                digits = int(filename[prefix_len + 1:].split("_")[0])
            except ValueError:
                digits = 0
            return digits, prefix

        if "%" in filename_prefix:
            now = time.localtime()
            for key, value in (("%width%", str(image_width)), ("%height%", str(image_height)),
                               ("%year%", str(now.tm_year)), ("%month%", str(now.tm_mon).zfill(2)),
                               ("%day%", str(now.tm_mday).zfill(2)), ("%hour%", str(now.tm_hour).zfill(2)),
                               ("%minute%", str(now.tm_min).zfill(2)), ("%second%", str(now.tm_sec).zfill(2))):
                filename_prefix = filename_prefix.replace(key, value)

        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                "\n full_output_folder: " + os.path.abspath(full_output_folder)
                + "\n         output_dir: " + output_dir
                + "\n         commonpath: " + os.path.commonpath((output_dir, os.path.abspath(full_output_folder))))
        try:
            counter = max(
                filter(lambda a: os.path.normcase(a[1][:-1]) == os.path.normcase(filename) and a[1][-1] == "_",
                       map(map_filename, os.listdir(full_output_folder))))[0] + 1
        except ValueError:
            counter = 1
        except FileNotFoundError:
            os.makedirs(full_output_folder, exist_ok=True)
            counter = 1
        return full_output_folder, filename, counter, subfolder, filename_prefix


_EXTENSION_CONTENT_TYPES = {"webp": "image", "fbx": "model"}


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    """Keep files whose guessed mimetype major type is in ``content_types``."""
    result = []
    for file in files:
        extension = file.split(".")[-1]
        if extension not in _EXTENSION_CONTENT_TYPES:
            mime_type, _ = mimetypes.guess_type(file, strict=False)
            if not mime_type:
                continue
            _EXTENSION_CONTENT_TYPES[extension] = mime_type.split("/")[0]
        if _EXTENSION_CONTENT_TYPES[extension] in content_types:
            result.append(file)
    return result


def recursive_search(directory: str) -> list[str]:
    """Relative ``/``-separated paths of every file below ``directory`` (missing dir -> [])."""
    if not os.path.isdir(directory):
        return []
    out = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if d != ".git"]
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/"))
    return out
