"""ComfyUI's folders, and the files the worker puts into them and takes out again.

``ComfyFolders`` says where this ComfyUI keeps its files (its command line can
move each folder). ``ComfyFiles`` is the one place that writes there for
callers: uploads (the API reference's ``upload_data``), a job's inputs, model
files on a network volume, and the deletions that follow a run. It keeps the
set of *ephemeral* files, so that a job's cleanup and the connector's shutdown
remove exactly those. The checks that keep an untrusted name inside its folder
are :mod:`.files`'.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .files import FOLDER_TYPES, EphemeralFiles, place_file, place_file_sync, remove_paths, resolve_inside
from .outputs import collect_outputs


@dataclass(frozen=True)
class ComfyFolders:
    """Where this ComfyUI keeps its files, honouring the directory flags in its command line."""

    input: Path
    output: Path
    temp: Path
    user: Path
    models: Path

    @classmethod
    def from_config(cls, config: Config) -> ComfyFolders:
        parser = argparse.ArgumentParser(add_help=False)
        for flag in ("--base-directory", "--input-directory", "--output-directory", "--temp-directory",
                     "--user-directory"):
            parser.add_argument(flag)
        args, _ = parser.parse_known_args(config.command)
        workdir = config.working_directory

        def absolute(value: str | None, default: Path) -> Path:
            return (workdir / value).resolve() if value else default

        base = absolute(args.base_directory, config.comfy_root.resolve())
        return cls(
            input=absolute(args.input_directory, base / "input"),
            output=absolute(args.output_directory, base / "output"),
            # ComfyUI's --temp-directory X really means X/temp (main.py).
            temp=absolute(args.temp_directory, base) / "temp",
            user=absolute(args.user_directory, base / "user"),
            models=base / "models",
        )

    def for_type(self, folder_type: str) -> Path:
        return {"input": self.input, "output": self.output, "temp": self.temp, "models": self.models}[folder_type]


class ComfyFiles:
    """Places files into ComfyUI's folders and removes what runs and jobs left there.

    ``model_folders`` is ComfyUI's own map of model folders (``/internal/folder_paths``):
    a network volume's path from extra_model_paths.yaml is where a ``loras`` file goes
    when ComfyUI reads loras from there. It is known once ComfyUI answers; until then
    only the input, output and temp folders can be used.
    """

    def __init__(self, folders: ComfyFolders) -> None:
        self.folders = folders
        self.model_folders: dict[str, list[str]] = {}
        self._ephemeral = EphemeralFiles()

    def upload(self, source_path: str | Path, folder_type: str = "input", subfolder: str | None = None,
               overwrite: bool = False, is_ephemeral: bool = False, *, name: str | None = None,
               move: bool = False) -> str:
        """Copy a file into one of ComfyUI's folders; returns the full destination path.

        ``folder_type`` is input, output, temp or models (models needs a
        ``subfolder`` naming a model folder ComfyUI knows, e.g. ``loras``).
        Without ``overwrite`` an existing file is never replaced: the returned
        path carries the name actually used. ``name`` renames the file on the
        way; ``move`` moves instead of copying (a job's downloads: no second
        copy of a large file). Ephemeral files are deleted by :meth:`delete_ephemeral`.
        """
        source, target = self._upload_target(source_path, folder_type, subfolder, name)
        return self._track(place_file_sync(source, target, overwrite=overwrite, move=move), is_ephemeral)

    async def upload_async(self, source_path: str | Path, folder_type: str = "input", subfolder: str | None = None,
                           overwrite: bool = False, is_ephemeral: bool = False, *, name: str | None = None,
                           move: bool = False) -> str:
        """:meth:`upload` with the copy in a worker thread, so the event loop keeps serving."""
        source, target = self._upload_target(source_path, folder_type, subfolder, name)
        return self._track(await place_file(source, target, overwrite=overwrite, move=move), is_ephemeral)

    def _upload_target(self, source_path: str | Path, folder_type: str, subfolder: str | None,
                       name: str | None) -> tuple[Path, Path]:
        """The checked source file and its destination inside ComfyUI's folders (no file is touched)."""
        source = Path(source_path)
        if not source.is_file():
            raise FileNotFoundError(f"upload source {source} does not exist or is not a file")
        return source, resolve_inside(self.folder_for(folder_type, subfolder), name or source.name)

    def _track(self, written: Path, is_ephemeral: bool) -> str:
        if is_ephemeral:
            self._ephemeral.add(written)
        return str(written)

    def folder_root(self, folder_type: str, subfolder: str | None) -> Path:
        """The folder that names of ``folder_type`` are relative to (for models, the model folder
        ``subfolder`` starts with), resolved."""
        if folder_type not in FOLDER_TYPES:
            raise ValueError(f"folder_type must be one of {', '.join(FOLDER_TYPES)}, got {folder_type!r}")
        root = self.model_folder(subfolder) if folder_type == "models" else self.folders.for_type(folder_type)
        return root.resolve()

    def folder_for(self, folder_type: str, subfolder: str | None) -> Path:
        """The directory ``subfolder`` names in ``folder_type``, checked to stay inside ComfyUI's folders
        (for models, ``subfolder`` starts with the model folder: ``loras/x``)."""
        root = self.folder_root(folder_type, subfolder)
        if folder_type == "models":
            subfolder = "/".join(subfolder.split("/")[1:]) if subfolder else None
        return resolve_inside(root, subfolder) if subfolder else root

    def model_folder(self, subfolder: str | None) -> Path:
        """The directory of the model folder ``subfolder`` starts with (``loras/x`` -> loras), as ComfyUI
        resolves it: a network volume's path from extra_model_paths.yaml when that is where it points."""
        if not subfolder:
            raise ValueError("folder_type 'models' needs a subfolder naming a model folder, e.g. 'loras'")
        folder = subfolder.split("/")[0]
        default = self.folders.models / folder
        paths = [Path(p) for p in self.model_folders.get(folder, [])]
        if paths:
            return default if default in paths else paths[0]
        if any(default == Path(p) for known in self.model_folders.values() for p in known):
            return default  # a legacy name ComfyUI maps, e.g. clip -> text_encoders
        raise ValueError(f"subfolder {subfolder!r} does not name a model folder ComfyUI knows "
                         f"({', '.join(sorted(self.model_folders))})")

    def delete_ephemeral(self, paths: list[str] | None = None) -> list[str]:
        """Delete the given ephemeral files (all of them by default); returns problems met."""
        chosen = self._ephemeral.take([Path(p) for p in paths] if paths is not None else None)
        return remove_paths(chosen, self._roots())

    def delete_outputs(self, history: dict[str, Any]) -> list[str]:
        """Delete the output and temp files a run produced (inputs belong to the job's own cleanup)."""
        paths = [output.path for entry in history.values()
                 for output in collect_outputs(entry, self.folders, include_temp=True)[0]]
        return remove_paths(paths, self._roots())

    def _roots(self) -> list[Path]:
        """Folders below which emptied job folders are removed (model folders may live on a volume)."""
        model_paths = [Path(p) for paths in self.model_folders.values() for p in paths]
        return [self.folders.input, self.folders.output, self.folders.temp, self.folders.models, *model_paths]


#: Entries NETWORK_VOLUME_DEBUG looks at per folder: a network file system with a million files must not
#: hold up the start.
_LISTED_ENTRIES = 1000


def describe_model_folders(model_folders: dict[str, list[str]], volume: Path) -> list[str]:
    """NETWORK_VOLUME_DEBUG's report: whether ``volume`` is mounted, then where each model folder ComfyUI
    knows resolves (on the volume or in the image) and how many files it holds, for "model not found"."""
    models = volume / "models"
    if not volume.is_dir():
        lines = [f"network volume: {volume} is not mounted; models come from the image only"]
    elif not models.is_dir():
        lines = [f"network volume: {volume} is mounted but has no models/ folder; put models in "
                 f"{models}/<folder>/ (e.g. {models}/checkpoints/)"]
    else:
        lines = [f"network volume: {volume} is mounted; {models} holds: "
                 f"{', '.join(sorted(p.name for p in models.iterdir() if p.is_dir())) or 'no folders'}"]
    for name in sorted(model_folders):
        places = [f"{path} ({_where(Path(path), volume)}, {_count_files(Path(path))})" for path in model_folders[name]]
        lines.append(f"model folder {name}: {'; '.join(places) or 'no paths'}")
    return lines


def _where(path: Path, volume: Path) -> str:
    return "network volume" if path.is_relative_to(volume) else "image"


def _count_files(folder: Path) -> str:
    if not folder.is_dir():
        return "missing"
    count = 0
    for count, _ in enumerate(folder.rglob("*"), start=1):
        if count >= _LISTED_ENTRIES:
            return f"{_LISTED_ENTRIES}+ entries"
    return f"{count} entries"
