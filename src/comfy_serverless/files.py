"""Placing files into ComfyUI's folders safely, and removing the ones a job left.

Every name that reaches the disk is checked here, because job payloads are
untrusted: a name or subfolder must stay inside the folder it targets (no
``..``, no absolute path, no NUL byte, no symlink leading out). Files placed for
one job are tracked as *ephemeral* so that the job's cleanup, and ``kill_api()``,
remove exactly them and nothing else.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .problems import CONTROL_RE

FOLDER_TYPES = ("input", "output", "temp", "models")
#: The folder private to one job, slipped between ComfyUI's folder and the job's files (``input/job-…/``).
JOB_FOLDER_RE = re.compile(r"job-[0-9a-f]{12}")
#: The folder of one cached file's stable placement (``loras/cache-<16 hex of its sha256>/name``): shared by
#: jobs, owned by the model cache, never by a job's cleanup.
CACHE_FOLDER_RE = re.compile(r"cache-[0-9a-f]{16}")
#: What identifies a file's content for :func:`snapshot`: inode, size, modification time.
FileStamp = tuple[int, int, int]
_SIZE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")


def describe_size(size: int) -> str:
    """``"3221225472 bytes (3.0 GiB)"``: exact for machines, readable for people."""
    if size < 1024:
        return f"{size} bytes"
    exponent = min((size.bit_length() - 1) // 10, len(_SIZE_UNITS) - 1)
    return f"{size} bytes ({size / 1024**exponent:.1f} {_SIZE_UNITS[exponent]})"


def relative_path_problem(value: object, *, allow_nested: bool = True) -> str | None:
    """Why ``value`` is not a safe relative path, or ``None`` if it is.

    Shared by the job schema (to reject bad names before anything runs) and by
    :func:`resolve_inside` (the last line of defence at the disk).
    """
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if "\x00" in value:
        return "must not contain a NUL byte"
    if CONTROL_RE.search(value):
        return "must not contain control characters (newlines, escapes)"
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    if "\\" in value:
        return "must use '/' as separator, not '\\'"
    path = PurePosixPath(value)
    if path.is_absolute():
        return "must be a relative path, not an absolute one"
    if any(part == ".." for part in path.parts):
        return "must not contain '..'"
    if not allow_nested and len(path.parts) != 1:
        return "must be a plain file name without '/'"
    if len(encoded) > 1024 or any(len(part.encode("utf-8")) > 255 for part in path.parts):
        return "is too long"
    return None


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, guaranteed (after resolving symlinks) to stay inside ``root``."""
    problem = relative_path_problem(relative)
    if problem:
        raise ValueError(f"path {relative!r} {problem}")
    root_resolved = root.resolve()
    candidate = (root_resolved / relative).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise ValueError(f"path {relative!r} escapes {root} (through a symlink)")
    return candidate


def unique_destination(directory: Path, name: str) -> Path:
    """The first of ``name``, ``stem (1).ext``, ``stem (2).ext`` … that does not exist yet.

    The same naming ComfyUI's own upload route uses, so users see familiar names.
    """
    candidate = directory / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while candidate.exists() or candidate.is_symlink():
        candidate = directory / f"{stem} ({counter}){suffix}"
        counter += 1
    return candidate


def place_file_sync(source: Path, destination: Path, *, overwrite: bool, move: bool = False) -> Path:
    """Copy (or, with ``move``, move) a file into place; never clobber unless asked. Returns the path used.

    Without ``overwrite`` the name is claimed atomically (a hard link, or a
    file opened with O_EXCL), so two concurrent placements of the same name
    cannot both win: the loser takes the next free name. A move on the same
    filesystem is a link and an unlink: no byte is copied.
    """
    def claim(target: Path) -> None:
        if move:
            try:
                os.link(source, target)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise  # FileExistsError included
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)

    _make_folders(destination.parent)
    target = destination
    if overwrite:
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    else:
        while True:
            try:
                claim(target)
                break
            except FileExistsError:
                target = unique_destination(target.parent, target.name)
    if move:
        source.unlink()
    return target


async def place_file(source: Path, destination: Path, *, overwrite: bool, move: bool = False) -> Path:
    """:func:`place_file_sync` in a worker thread: a large model must not stall the event loop."""
    return await asyncio.to_thread(place_file_sync, source, destination, overwrite=overwrite, move=move)


#: Folders this process created to place files: cleanup removes these once emptied, never a folder that
#: was there before (a model folder, an output subfolder the image ships). Placements run in threads.
_created_folders: set[Path] = set()
_created_lock = threading.Lock()


def _make_folders(directory: Path) -> None:
    """``mkdir -p``, remembering which of the folders it made."""
    missing = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    with _created_lock:
        _created_folders.update(folder.resolve() for folder in missing)


class EphemeralFiles:
    """The set of files (and the folders created for them) that must vanish with a job or the worker."""

    def __init__(self) -> None:
        self._paths: set[Path] = set()

    def add(self, path: Path) -> None:
        self._paths.add(path)

    def take(self, paths: Iterable[Path] | None = None) -> list[Path]:
        """Remove and return the given tracked paths, or all of them."""
        chosen = set(self._paths) if paths is None else {p for p in paths if p in self._paths}
        self._paths -= chosen
        return sorted(chosen, key=lambda p: len(p.parts), reverse=True)


def remove_paths(paths: Iterable[Path], roots: Iterable[Path]) -> list[str]:
    """Delete files and directories, then the folders below one of ``roots`` that placing them created.

    A folder that existed before (a model folder, an output subfolder the
    image ships) stays, even when it is left empty. Returns the problems met
    instead of raising, so one undeletable file does not keep the rest of a
    job's files on disk.
    """
    problems: list[str] = []
    root_set = {p.resolve() for p in roots}
    parents: set[Path] = set()
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            parents.add(path.parent)
        except OSError as exc:
            problems.append(f"could not delete {path}: {exc}")
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        current = parent.resolve()
        while current in _created_folders and any(root in current.parents for root in root_set):
            try:
                current.rmdir()
            except OSError:
                break
            with _created_lock:
                _created_folders.discard(current)
            current = current.parent
    return problems


def snapshot(roots: Iterable[Path]) -> dict[Path, FileStamp]:
    """Every file and folder below ``roots`` with its stamp, jobs' private folders and cache folders left out.

    Two snapshots differ by what was written in between (see :class:`OutputLedger`);
    jobs' private folders hold other jobs' inputs, which are theirs to remove, and cache folders
    the model cache's placements, which outlive jobs.
    """
    found: dict[Path, FileStamp] = {}
    stack = list(roots)
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # not there (yet), or gone meanwhile
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if JOB_FOLDER_RE.fullmatch(entry.name) or CACHE_FOLDER_RE.fullmatch(entry.name):
                        continue
                    stack.append(Path(entry.path))
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[Path(entry.path)] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def remove_added(before: dict[Path, Any], after: dict[Path, Any]) -> list[str]:
    """Delete what is in ``after`` but not in ``before`` (two :func:`snapshot`s): files, then emptied folders."""
    problems: list[str] = []
    for path in sorted(set(after) - set(before), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            problems.append(f"could not delete {path.name}: {exc.strerror or type(exc).__name__}")
    return problems


def stamps(paths: Iterable[Path]) -> dict[Path, FileStamp]:
    """The :data:`FileStamp` of each of ``paths`` that exists (a :func:`snapshot` of just these files)."""
    found: dict[Path, FileStamp] = {}
    for path in paths:
        try:
            stat = path.lstat()
        except OSError:
            continue
        found[path] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


class OutputLedger:
    """What ComfyUI wrote while jobs ran, for what no job can claim: files nodes write without listing them
    (CheckpointSave and the like) and the folders output prefixes create.

    Several jobs' prompts pass through ComfyUI one after another while their
    jobs overlap, so a difference of two snapshots cannot tell whose such a
    file is. Each job deletes the files its prompt listed; the rest is swept
    when the last job in flight leaves: from the snapshot taken when the first
    one entered, when nothing of ours can be writing. Entering and leaving are
    synchronous, on the worker's loop, so no job enters while a sweep runs.
    """

    def __init__(self, roots: Iterable[Path]) -> None:
        self._roots = [root.resolve() for root in roots]  # keys comparable with resolved output paths
        self._in_flight = 0
        self._baseline: dict[Path, FileStamp] = {}

    def enter(self) -> dict[Path, FileStamp]:
        """A job's prompt is about to be queued; returns the folders' snapshot as it is now."""
        before = snapshot(self._roots)
        if self._in_flight == 0:
            self._baseline = before
        self._in_flight += 1
        return before

    def leave(self) -> list[str]:
        """A job is done with ComfyUI's folders; the last one out sweeps. Returns problems met."""
        self._in_flight -= 1
        if self._in_flight:
            return []
        return remove_added(self._baseline, snapshot(self._roots))
