"""One job, start to finish: validate, fetch inputs, convert, edit, run, deliver outputs, clean up.

The order matters. Everything that can be checked without side effects is
checked first (the schema, then the workflow's overrides against the converted
prompt), so bad input costs nothing. Inputs land in a folder private to the job
and the prompt's references are rewritten to it, so two jobs that both upload
``photo.png`` never see each other's file. Whatever happens, the ``finally``
removes the job's inputs, outputs, previews and scratch files.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config
from .connector import ComfyConnector
from .errors import ComfyServerlessError, ComfyUnavailableError, JobInputError, StorageError
from .events import Progress
from .inputs import fetch_all
from .jobspec import InputSpec, JobSpec, parse_job_input
from .outputs import collect_outputs, inline_outputs, upload_outputs
from .storage import S3Storage, parse_s3_uri
from .workflow import RUN_TOKEN_INPUT, Prompt, check_api_prompt

logger = logging.getLogger(__name__)

ProgressSink = Callable[[dict[str, Any]], None]


@dataclass
class _JobState:
    """What one job created, so that cleanup removes exactly that."""

    job_id: str
    scratch: Path
    placed: list[str] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class JobRunner:
    """Runs jobs on a ready connector. One instance per worker."""

    def __init__(self, connector: ComfyConnector, config: Config, storage: S3Storage | None) -> None:
        self._connector = connector
        self._config = config
        self._storage = storage

    async def run(self, job_id: str, raw_input: object, progress: ProgressSink | None = None) -> dict[str, Any]:
        """The job's result: outputs on success, ``{"error": ...}`` for every error this package raises.

        A cancelled job interrupts ComfyUI, cleans up and re-raises; anything else
        escaping is a bug, and the RunPod SDK reports it as a failed job.
        """
        started = time.monotonic()
        state = _JobState(job_id=job_id, scratch=self._config.scratch_path / f"job-{uuid.uuid4().hex}")
        try:
            result = await self._run(state, raw_input, progress)
        except ComfyServerlessError as exc:
            result = exc.to_dict()
            if isinstance(exc, ComfyUnavailableError) and exc.details.get("restart_failed"):
                result["refresh_worker"] = True  # ComfyUI cannot come back here; RunPod gives a fresh worker
        finally:
            cleanup_started = time.monotonic()
            await asyncio.shield(self._cleanup(state))
            state.timings["cleanup"] = time.monotonic() - cleanup_started
            state.timings["total"] = time.monotonic() - started
        if "error" not in result:
            result["timings"] = {k: round(v, 4) for k, v in state.timings.items()}
            result["warnings"] = state.warnings
        if self._config.refresh_worker:
            result["refresh_worker"] = True
        return result

    async def _run(self, state: _JobState, raw_input: object, progress: ProgressSink | None) -> dict[str, Any]:
        spec = parse_job_input(raw_input, self._config)
        destination = self._output_destination(spec)
        self._check_model_folders(spec.inputs)

        # The prompt and its overrides are checked before any input is fetched: a typo costs no download.
        with _timer(state, "convert"):
            if spec.workflow_format == "ui":
                prompt = await self._connector.get_prompt_from_workflow(spec.workflow)
            else:
                prompt = copy.deepcopy(spec.workflow)  # edited below; the caller's job stays as it was
                check_api_prompt(prompt, self._connector.node_types)  # before overrides walk its nodes
        apply_overrides(prompt, spec.overrides, self._connector.node_types)
        with _timer(state, "fetch"):
            references = await self._fetch_inputs(state, spec.inputs)
        rewrite_references(prompt, references)

        extra_data: dict[str, Any] = {}
        if spec.workflow_format == "ui":
            extra_data["extra_pnginfo"] = {"workflow": spec.workflow}
        if spec.comfy_org_api_key:
            extra_data["api_key_comfy_org"] = spec.comfy_org_api_key
        state.history = await self._connector.run_prompt(
            prompt, timeout_s=spec.timeout_s, extra_data=extra_data, timings=state.timings,
            progress=_throttled(progress, self._config.progress_interval_s) if progress else None)
        prompt_id, entry = next(iter(state.history.items()))

        with _timer(state, "upload"):
            files, texts, warnings = collect_outputs(entry, self._connector.folders,
                                                     include_temp=spec.output.include_temp)
            state.warnings.extend(warnings)
            if destination is None:
                delivered = await inline_outputs(files, max_bytes=self._config.inline_output_max_bytes)
            else:
                bucket, prefix = destination
                assert self._storage is not None
                delivered = await upload_outputs(files, self._storage, bucket, prefix, state.job_id,
                                                 presign=spec.output.presign, expires_s=spec.output.expires_s)
        delivered += [{"node_id": t.node_id, "kind": "text", "text": t.text} for t in texts]
        return {"prompt_id": prompt_id, "history": {prompt_id: _result_history(entry)}, "outputs": delivered}

    def _output_destination(self, spec: JobSpec) -> tuple[str, str] | None:
        """``(bucket, prefix)`` for S3 delivery, ``None`` for inline; decided before any work is done."""
        output = spec.output
        if output.mode == "inline":
            return None
        uri = output.s3_uri if output.mode == "s3" else self._config.output_s3_uri
        if not uri:
            return None
        if self._storage is None:
            raise StorageError("output.s3_uri needs S3 credentials: set BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID "
                               "and BUCKET_SECRET_ACCESS_KEY (or the AWS credential chain)")
        return parse_s3_uri(uri, require_key=False)

    def _check_model_folders(self, inputs: tuple[InputSpec, ...]) -> None:
        """A ``models`` input's subfolder must name a model folder this ComfyUI knows; checked before fetching."""
        problems = []
        for spec in inputs:
            if spec.folder_type == "models":
                try:
                    self._connector.model_folder(spec.subfolder)
                except ValueError as exc:
                    problems.append(f"{spec.field}.subfolder: {exc}")
        if problems:
            raise JobInputError(problems)

    async def _fetch_inputs(self, state: _JobState, inputs: tuple[InputSpec, ...]) -> dict[str, str]:
        """Download every input, place it in a folder private to this job; old reference -> new reference."""
        if not inputs:
            return {}
        state.scratch.mkdir(parents=True, exist_ok=True)
        downloads = [state.scratch / f"{index}-{spec.name}".replace("/", "_") for index, spec in enumerate(inputs)]
        await fetch_all(list(zip(inputs, downloads, strict=True)), storage=self._storage, config=self._config)
        job_folder = state.scratch.name[:16]  # "job-" and 12 hex digits: private to this job
        references: dict[str, str] = {}
        for spec, download in zip(inputs, downloads, strict=True):
            subfolder, original = _placement(spec, job_folder)
            placed = await self._connector.upload_data_async(download, spec.folder_type, subfolder=subfolder,
                                                       is_ephemeral=True, name=spec.name, move=True)
            state.placed.append(placed)
            root = (self._connector.model_folder(spec.subfolder) if spec.folder_type == "models"
                    else self._connector.folders.for_type(spec.folder_type))
            references[original] = Path(placed).relative_to(root.resolve()).as_posix()
        return references

    async def _cleanup(self, state: _JobState) -> None:
        problems = self._connector.delete_ephemeral(state.placed)
        if state.history:
            problems += self._connector.delete_outputs(state.history)
            await self._connector.forget_history(list(state.history))
        shutil.rmtree(state.scratch, ignore_errors=True)
        for problem in problems:
            logger.warning("cleanup: %s", problem)


def _placement(spec: InputSpec, job_folder: str) -> tuple[str, str]:
    """Where an input goes (a subfolder under its folder type) and how a workflow refers to it.

    A workflow names an input as ComfyUI would: ``subfolder/name`` relative to
    the folder (for models, relative to the model folder, e.g. ``my.safetensors``
    for ``subfolder: loras``). The job's private folder is slipped in between.
    """
    if spec.folder_type == "models":
        model_folder, _, inner = spec.subfolder.partition("/")
        original = f"{inner}/{spec.name}" if inner else spec.name
        return "/".join(p for p in (model_folder, job_folder, inner) if p), original
    original = f"{spec.subfolder}/{spec.name}" if spec.subfolder else spec.name
    return "/".join(p for p in (job_folder, spec.subfolder) if p), original


def apply_overrides(prompt: Prompt, overrides: dict[str, dict[str, Any]], node_types: dict[str, Any]) -> None:
    """Set node inputs by node id or title; every unknown node or input is reported at once."""
    problems: list[str] = []
    for target, values in overrides.items():
        node_ids = [target] if target in prompt else [
            node_id for node_id, node in prompt.items() if _title(node) == target]
        if not node_ids:
            problems.append(f"input.overrides.{target}: no node has this id or title")
            continue
        if len(node_ids) > 1:
            problems.append(f"input.overrides.{target}: the title matches nodes {', '.join(node_ids)}; use a node id")
            continue
        node = prompt[node_ids[0]]
        declared = _declared_inputs(node_types.get(node["class_type"], {}))
        for name, value in values.items():
            if name not in node.get("inputs", {}) and name not in declared:
                problems.append(f"input.overrides.{target}.{name}: node {node_ids[0]} ({node['class_type']}) "
                                f"has no input '{name}'")
                continue
            node.setdefault("inputs", {})[name] = value
    if problems:
        raise JobInputError(problems)


def _title(node: dict[str, Any]) -> object:
    meta = node.get("_meta")
    return meta.get("title") if isinstance(meta, dict) else None  # _meta is free-form in a user's prompt


def _declared_inputs(spec: dict[str, Any]) -> set[str]:
    inputs = spec.get("input") or {}
    return {name for group in ("required", "optional") for name in (inputs.get(group) or {})}


def rewrite_references(prompt: Prompt, references: dict[str, str]) -> None:
    """Point every input value that names a job input at the job's private copy."""
    if not references:
        return
    for node in prompt.values():
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            if isinstance(value, str) and value in references and name != RUN_TOKEN_INPUT:
                inputs[name] = references[value]


def _result_history(entry: dict[str, Any]) -> dict[str, Any]:
    """The part of ComfyUI's history entry a caller needs: outputs and status (with its messages).

    The rest (``prompt``) repeats what the caller sent, the whole UI workflow included,
    and RunPod caps a /runsync response at about 20 MB.
    """
    return {key: entry[key] for key in ("outputs", "status") if key in entry}


class _timer:
    """``with _timer(state, "fetch"):`` records the block's duration in the job's timings."""

    def __init__(self, state: _JobState, name: str) -> None:
        self._state, self._name = state, name

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self._state.timings[self._name] = time.monotonic() - self._started


def _throttled(sink: ProgressSink, interval_s: float) -> Callable[[Progress], None]:
    """At most one progress update per ``interval_s``, except the end of a node, which always goes out."""
    last = 0.0

    def forward(event: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < interval_s and event.value < event.max:
            return
        last = now
        sink({"node": event.node, "value": event.value, "max": event.max, "percent": event.percent})

    return forward
