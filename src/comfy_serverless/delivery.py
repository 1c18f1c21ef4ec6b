"""Delivering one job's outputs, all at the end or node by node as ComfyUI reports them (streaming).

A prompt's outputs are what ComfyUI lists for it (its ``executed`` messages
and its history), and of those only files the prompt wrote: a listed file that
was there before the job (an echo of an earlier job's file, one the image
ships) is neither returned nor deleted. Every listed file the prompt wrote is
the job's to delete, temp previews included, delivered or not; that is how
concurrent jobs that share output prefixes never touch each other's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StorageError
from .files import FileStamp, stamps
from .outputs import FileOutput, collect_outputs, inline_outputs, upload_outputs

if TYPE_CHECKING:
    from .folders import ComfyFolders
    from .storage import S3Storage


@dataclass(frozen=True)
class Destination:
    """Where a job's outputs go: S3 (``bucket``, ``prefix``) or, with ``bucket`` None, inline."""

    bucket: str | None
    prefix: str
    presign: bool
    expires_s: int
    include_temp: bool
    inline_max_bytes: int
    #: Why the outputs go to ``bucket`` when the job and the settings did not name it, for a failed upload.
    why_bucket: str = ""


@dataclass
class Delivery:
    """One job's outputs: delivers each listed file at most once, and remembers which files are the job's."""

    folders: ComfyFolders
    before: dict[Path, FileStamp]
    destination: Destination
    storage: S3Storage | None
    job_id: str
    delivered: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Files the prompt wrote: the job's cleanup deletes exactly these.
    owned: list[Path] = field(default_factory=list)
    _seen_files: set[Path] = field(default_factory=set)
    _seen_texts: set[str] = field(default_factory=set)
    _keys: set[str] = field(default_factory=set)
    _inline_bytes: int = 0

    def claim(self, outputs: dict[str, Any]) -> tuple[list[FileOutput], list[dict[str, Any]]]:
        """The files to deliver and the text outputs among ``outputs`` (``{node_id: node_outputs}``) not seen
        before; every listed file the prompt wrote becomes the job's, delivered or not."""
        listed, texts, warnings = collect_outputs({"outputs": outputs}, self.folders, include_temp=True)
        fresh = [output for output in listed if output.path not in self._seen_files]
        self._seen_files.update(output.path for output in fresh)
        after = stamps(output.path for output in fresh)
        self.owned += [output.path for output in fresh if wrote(output.path, self.before, after)]
        wanted, not_written = written_by_prompt(
            [o for o in fresh if o.folder_type == "output" or self.destination.include_temp], self.before, after)
        self.warnings += warnings + not_written
        new_texts = [text for text in texts if text.node_id not in self._seen_texts]
        self._seen_texts.update(text.node_id for text in new_texts)
        return wanted, [{"node_id": t.node_id, "kind": "text", "text": t.text} for t in new_texts]

    async def deliver(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Deliver what ``outputs`` lists that was not delivered yet; returns the new items, files first."""
        files, texts = self.claim(outputs)
        target = self.destination
        if target.bucket is None:
            items = await inline_outputs(files, max_bytes=target.inline_max_bytes - self._inline_bytes)
            self._inline_bytes += sum(output.bytes for output in files)
        else:
            assert self.storage is not None
            try:
                items = await upload_outputs(files, self.storage, target.bucket, target.prefix, self.job_id,
                                             presign=target.presign, expires_s=target.expires_s, used=self._keys)
            except StorageError as exc:
                if not target.why_bucket:
                    raise
                details = {key: value for key, value in exc.details.items() if key != "limit"}
                raise StorageError(f"{exc.message}; {target.why_bucket}", limit_bytes=exc.limit_bytes,
                                   **details) from exc
        self.delivered += items + texts
        return items + texts


def written_by_prompt(files: list[FileOutput], before: dict[Path, FileStamp],
                      after: dict[Path, FileStamp]) -> tuple[list[FileOutput], list[str]]:
    """The listed outputs that the prompt wrote (new or changed since ``before``), and a warning for each
    other: a file an earlier job or the image put there is neither returned nor deleted."""
    written, warnings = [], []
    for output in files:
        if wrote(output.path, before, after):
            written.append(output)
        else:
            warnings.append(f"node {output.node_id} listed {output.folder_type} file {output.relative_name!r}, "
                            "which this job did not write; not returned")
    return written, warnings


def wrote(path: Path, before: dict[Path, FileStamp], after: dict[Path, FileStamp]) -> bool:
    """Whether ``path`` is new or changed between two stamps: written meanwhile."""
    return path in after and before.get(path) != after[path]


def without_data(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivered items as an error lists them: inline data left out (it went out with the items)."""
    return [{key: value for key, value in item.items() if key != "data"} for item in items]
