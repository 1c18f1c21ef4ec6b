"""One job, start to finish: validate, fetch inputs, convert, edit, run, deliver outputs, clean up.

The order matters. Everything that can be checked without side effects is
checked first (the schema, then the workflow's overrides against the converted
prompt), so bad input costs nothing. Inputs land in a folder private to the job
and the prompt's references are rewritten to it, so two jobs that both upload
``photo.png`` never see each other's file; cached inputs (models by default) are
placed by the model cache at a stable path instead, so ComfyUI keeps them loaded.
Whatever happens, the ``finally`` removes the job's inputs (releasing, not
deleting, cached ones), outputs, previews and scratch files.

Jobs overlap (MAX_CONCURRENT_JOBS): while one job's prompt executes, others
fetch, convert, wait in ComfyUI's queue and upload. So a job's outputs are what
ComfyUI lists for its prompt (see :mod:`.delivery`), never "whatever appeared
in output/ meanwhile"; what no prompt lists is swept by the :class:`OutputLedger`.
With streaming, each output is delivered as soon as ComfyUI reports its node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import OutputCallback
from .config import Config
from .connector import ComfyConnector
from .delivery import Delivery, Destination, without_data
from .errors import ComfyServerlessError, InputFetchError, JobInputError, StorageError
from .events import Progress
from .files import OutputLedger, remove_paths
from .inputs import InputFetch, fetch_all
from .jobspec import InputSpec, JobSpec, parse_job_input
from .model_cache import CacheEntry, ModelCache
from .sources.s3 import bucket_problem, parse_s3_uri
from .storage import S3Storage
from .workflow import (
    FileInputs,
    Prompt,
    apply_overrides,
    check_api_prompt,
    check_file_inputs,
    copy_prompt,
    rewrite_references,
)

logger = logging.getLogger(__name__)

ProgressSink = Callable[[dict[str, Any]], None]
#: Receives each streamed item (an output as soon as it is delivered); see :meth:`JobRunner.stream`.
ItemSink = Callable[[dict[str, Any]], None]

#: Largest error result, as JSON. Errors are logged and returned to callers; a hostile payload with
#: 100k problems (or ComfyUI's verdict on 100k nodes) must not turn into megabytes of result.
MAX_ERROR_BYTES = 8192
_KEPT_ITEMS = 10
_KEPT_CHARS = 300
#: The bucket runpod's ``rp_upload.upload_image`` uploads to when given none: ``time.strftime`` of this.
RP_UPLOAD_BUCKET_FORMAT = "%m-%y"


@dataclass
class _JobState:
    """What one job created, so that cleanup removes exactly that."""

    job_id: str
    scratch: Path
    placed: list[str] = field(default_factory=list)
    #: The model cache's entries the job uses: leased until cleanup, so that no eviction removes them.
    cached: list[CacheEntry] = field(default_factory=list)
    #: Per input: name, bytes, whether it came from the cache, and its fetch seconds (the result's ``inputs``).
    inputs: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    #: Set once the job entered the OutputLedger (its prompt is about to be queued): its outputs, its files.
    delivery: Delivery | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class JobRunner:
    """Runs jobs on a ready connector. One instance per worker."""

    def __init__(self, connector: ComfyConnector, config: Config, storage: S3Storage | None) -> None:
        self._connector = connector
        self._config = config
        self._storage = storage
        self._cache = ModelCache.from_config(config)
        self._file_inputs: tuple[dict[str, Any], FileInputs] | None = None
        self._ledger = OutputLedger((connector.files.folders.output, connector.files.folders.temp))

    def file_inputs(self) -> FileInputs:
        """The file inputs of ComfyUI's node types, built once per ``/object_info`` the connector loaded."""
        node_types = self._connector.node_types
        if self._file_inputs is None or self._file_inputs[0] is not node_types:
            self._file_inputs = (node_types, FileInputs.from_object_info(node_types))
        return self._file_inputs[1]

    async def run(self, job_id: str, raw_input: object, progress: ProgressSink | None = None) -> dict[str, Any]:
        """The job's result: outputs on success, ``{"error": ...}`` for every error this package raises.

        A cancelled job interrupts its prompt (only its own), cleans up and re-raises;
        anything else escaping is a bug, and the RunPod SDK reports it as a failed job.
        """
        return await self._job(job_id, raw_input, progress, None)

    async def stream(self, job_id: str, raw_input: object,
                     progress: ProgressSink | None = None) -> AsyncIterator[dict[str, Any]]:
        """The job as items: ``{"output": item}`` for each output as soon as it is delivered, then a final
        item (``"done": true``) with what :meth:`run` returns but the outputs, or the error and the outputs
        already ``delivered``. Closing the iterator early cancels the job (which cleans up)."""
        items: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        job = asyncio.ensure_future(self._job(job_id, raw_input, progress,
                                              lambda item: items.put_nowait({"output": item})))
        job.add_done_callback(lambda _: items.put_nowait(None))
        try:
            while (item := await items.get()) is not None:
                yield item
            yield job.result()
        finally:
            if not job.done():
                job.cancel()
                await asyncio.wait({job})

    async def _job(self, job_id: str, raw_input: object, progress: ProgressSink | None,
                   emit: ItemSink | None) -> dict[str, Any]:
        started = time.monotonic()
        state = _JobState(job_id=job_id, scratch=self._config.scratch_path / f"job-{uuid.uuid4().hex}")
        try:
            result = await self._run(state, raw_input, progress, emit)
        except ComfyServerlessError as exc:
            result = bounded_error(exc.to_dict())
            if emit is not None:
                result["delivered"] = without_data(state.delivery.delivered if state.delivery else [])
        finally:
            cleanup_started = time.monotonic()
            await asyncio.shield(self._cleanup(state))
            state.timings["cleanup"] = time.monotonic() - cleanup_started
            state.timings["total"] = time.monotonic() - started
        if "error" not in result:
            result["inputs"] = state.inputs
            result["timings"] = {k: round(v, 4) for k, v in state.timings.items()}
            result["warnings"] = state.warnings + (state.delivery.warnings if state.delivery else [])
        if emit is not None:
            result["done"] = True
        return result

    async def _run(self, state: _JobState, raw_input: object, progress: ProgressSink | None,
                   emit: ItemSink | None) -> dict[str, Any]:
        # Work proportional to the payload runs in a thread, so the loop stays responsive and a cancel
        # takes effect at once; every check on the payload is linear in its size.
        spec = await asyncio.to_thread(parse_job_input, raw_input, self._config)
        destination = self._output_destination(spec)
        self._check_model_folders(spec.inputs)
        job_folder = state.scratch.name[:16]  # "job-" and 12 hex digits: private to this job

        # The prompt and its overrides are checked before any input is fetched: a typo costs no download.
        with _timer(state, "convert"):
            if spec.workflow_format == "ui":
                workflow = await self._connector.get_prompt_from_workflow(spec.workflow)
            else:
                workflow = spec.workflow
            own = {key for spec_ in spec.inputs for key in _references(spec_, job_folder)}
            prompt = await asyncio.to_thread(self._prepare_prompt, workflow, spec, own)
        with _timer(state, "fetch"):
            references = await self._fetch_inputs(state, spec.inputs, job_folder)
        rewrite_references(prompt, references, self.file_inputs())

        extra_data: dict[str, Any] = {}
        if spec.workflow_format == "ui":
            extra_data["extra_pnginfo"] = {"workflow": spec.workflow}
        api_key = spec.comfy_org_api_key or self._config.comfy_org_api_key  # the job's own key wins
        if api_key:
            extra_data["api_key_comfy_org"] = api_key
        throttled = _throttled(progress, self._config.progress_interval_s) if progress else None

        async def run(on_executed: OutputCallback | None) -> None:
            state.history = await self._connector.run_prompt(
                prompt, timeout_s=spec.timeout_s, extra_data=extra_data, timings=state.timings,
                progress=throttled, on_executed=on_executed)

        state.delivery = Delivery(self._connector.files.folders, self._ledger.enter(), destination, self._storage,
                                  state.job_id)
        if emit is None:
            await run(None)
        else:
            await _run_streaming(run, state.delivery, emit)
        prompt_id, entry = next(iter(state.history.items()))
        with _timer(state, "upload"):  # streaming: what ComfyUI listed only in the history (a message lost)
            delivered = await state.delivery.deliver(entry.get("outputs") or {})
        result: dict[str, Any] = {"prompt_id": prompt_id, "history": {prompt_id: _result_history(entry)}}
        if emit is None:
            result["outputs"] = delivered
        else:
            for item in delivered:
                emit(item)
        return result

    def _prepare_prompt(self, workflow: Prompt, spec: JobSpec, own: set[str]) -> Prompt:
        """The prompt to run, before its inputs are fetched: checked, copied (the caller's job stays as it
        was), with the overrides applied and every file input checked (``own``: the job's input names)."""
        node_types = self._connector.node_types
        if spec.workflow_format == "api":
            check_api_prompt(workflow, node_types)  # before overrides walk its nodes
        prompt = copy_prompt(workflow)
        apply_overrides(prompt, spec.overrides, node_types)
        check_file_inputs(prompt, self.file_inputs(), own)
        return prompt

    def _output_destination(self, spec: JobSpec) -> Destination:
        """Where the outputs go (S3, or inline); decided before any work is done.

        The job's ``output`` first, then OUTPUT_S3_URI; with neither, but the three
        BUCKET_* variables set, where runpod's ``rp_upload.upload_image`` puts them
        for worker-comfyui: the bucket named after the month (``MM-YY``), keys
        under ``<job_id>/``. Otherwise inline.
        """
        output = spec.output
        uri = {"inline": "", "s3": output.s3_uri}.get(output.mode, self._config.output_s3_uri)
        bucket, prefix, why_bucket = None, "", ""
        if uri:
            if self._storage is None:
                raise StorageError("output.s3_uri needs S3 credentials: set BUCKET_ENDPOINT_URL, "
                                   "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (or the AWS credential chain)")
            bucket, prefix = parse_s3_uri(uri, require_key=False)
        elif output.mode == "default" and self._config.month_bucket_outputs:
            bucket = time.strftime(RP_UPLOAD_BUCKET_FORMAT)
            problem = bucket_problem(bucket, self._config.allowed_buckets)
            if problem:
                raise JobInputError([f"input.output: outputs would go to the month's bucket, as runpod's rp_upload "
                                     f"puts them, but {problem}; give output.s3_uri, or set OUTPUT_S3_URI"])
            why_bucket = (f"outputs go to the bucket named after the month ({bucket}), as runpod's rp_upload puts "
                          "them, when BUCKET_* are set without OUTPUT_S3_URI: create it, or set OUTPUT_S3_URI")
        return Destination(bucket, prefix, presign=output.presign, expires_s=output.expires_s,
                           include_temp=output.include_temp, inline_max_bytes=self._config.inline_output_max_bytes,
                           why_bucket=why_bucket)

    def _check_model_folders(self, inputs: tuple[InputSpec, ...]) -> None:
        """A ``models`` input's subfolder must name a model folder this ComfyUI knows; checked before fetching."""
        problems = []
        for spec in inputs:
            if spec.folder_type == "models":
                try:
                    self._connector.files.model_folder(spec.subfolder)
                except ValueError as exc:
                    problems.append(f"{spec.field}.subfolder: {exc}")
        if problems:
            raise JobInputError(problems)

    async def _fetch_inputs(self, state: _JobState, inputs: tuple[InputSpec, ...], job_folder: str) -> dict[str, str]:
        """Download every input (cached ones through the model cache) and place it; reference -> placed reference."""
        if not inputs:
            return {}
        try:
            state.scratch.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputFetchError(f"the worker cannot create its scratch folder (SCRATCH_DIR): "
                                  f"{exc.strerror or type(exc).__name__}") from exc
        # Named by index only: a name of the schema's full 255 bytes must not grow past NAME_MAX here.
        downloads = [state.scratch / f"input-{index}" for index in range(len(inputs))]
        fetches = await fetch_all(list(zip(inputs, downloads, strict=True)), storage=self._storage,
                                  config=self._config, cache=self._cache)
        state.cached.extend(fetch.entry for fetch in fetches if fetch.entry is not None)
        await asyncio.to_thread(self._cache.evict)
        references: dict[str, str] = {}
        for spec, download, fetch in zip(inputs, downloads, fetches, strict=True):
            placed = await self._place(state, spec, download, fetch, job_folder)
            root = self._connector.files.folder_root(spec.folder_type, spec.subfolder)
            references |= _references(spec, placed.relative_to(root).as_posix())
            state.inputs.append({"name": spec.name, "bytes": fetch.size, "cached": fetch.cached,
                                 "fetch_s": round(fetch.seconds, 4)})
        return references

    async def _place(self, state: _JobState, spec: InputSpec, download: Path, fetch: InputFetch,
                     job_folder: str) -> Path:
        """Put one fetched input where the prompt will read it: a cached one at its stable path (the same in
        every job, so ComfyUI keeps it loaded), any other in the job's private folder (removed at cleanup)."""
        entry = fetch.entry
        try:
            if entry is not None:
                subfolder, _ = _placement(spec, entry.folder)
                destination = self._connector.files.folder_for(spec.folder_type, subfolder) / spec.name
                await asyncio.to_thread(self._cache.link, entry, destination)
                return destination
            subfolder, _ = _placement(spec, job_folder)
            placed = await self._connector.files.upload_async(download, spec.folder_type, subfolder=subfolder,
                                                              is_ephemeral=True, name=spec.name, move=True)
        except OSError as exc:  # the disk: full, read-only, a file in the way; its paths are not the user's business
            raise InputFetchError(f"{spec.field} ({spec.name}): could not place the file in ComfyUI's "
                                  f"{spec.folder_type} folder: {exc.strerror or type(exc).__name__}",
                                  input=spec.field) from exc
        state.placed.append(placed)
        return Path(placed)

    async def _cleanup(self, state: _JobState) -> None:
        """Remove exactly what this job added: its inputs and the files its prompt wrote; the last job out of
        the ledger also sweeps what no prompt listed."""
        problems = self._connector.files.delete_ephemeral(state.placed)
        self._cache.release(state.cached)
        if state.delivery is not None:
            problems += remove_paths(state.delivery.owned, ())
            problems += self._ledger.leave()
        if state.history:
            await self._connector.comfy.forget_history(list(state.history))
        shutil.rmtree(state.scratch, ignore_errors=True)
        for problem in problems:
            logger.warning("cleanup: %s", problem)


async def _run_streaming(run: Callable[[OutputCallback], Awaitable[None]], delivery: Delivery,
                         emit: ItemSink) -> None:
    """``run`` the prompt while its outputs are delivered node by node, each emitted once delivered.

    A failed delivery cancels the run (which stops the prompt); a failed run cancels the deliveries.
    """
    reported: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def deliver_reported() -> None:
        while (outputs := await reported.get()) is not None:
            for item in await delivery.deliver(outputs):
                emit(item)

    async def run_then_close() -> None:
        await run(lambda node_id, output: reported.put_nowait({node_id: output}))
        reported.put_nowait(None)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(deliver_reported())
            group.create_task(run_then_close())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the first failure is the cause; the other task was cancelled


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


def _references(spec: InputSpec, private: str) -> dict[str, str]:
    """Every way a workflow may name an input, as ComfyUI would, mapped to the same name for ``private``.

    In the input folder a plain name works (``photo.png``, or ``photo.png [input]``); the output and temp
    folders need ComfyUI's annotation (``photo.png [output]``); model inputs are named relative to
    their model folder. ``private`` is the reference to the job's private copy.
    """
    _, original = _placement(spec, "")
    if spec.folder_type == "models":
        return {original: private}
    tag = f" [{spec.folder_type}]"
    names = {original + tag: private + tag}
    if spec.folder_type == "input":
        names[original] = private
    return names


def bounded_error(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (an error's ``to_dict()``) within MAX_ERROR_BYTES: long texts and lists are cut, marked so.

    The one-line message and the error type always stay; details are shortened
    (strings to 300 characters, lists to their first 10 items), and dropped if
    they are still too large.
    """
    if _json_size(result) <= MAX_ERROR_BYTES:
        return result
    bounded: dict[str, Any] = {"error": _clip(result["error"], 2000), "error_type": result["error_type"],
                               "truncated": True}
    for key, value in result.items():
        if key in bounded:
            continue
        value = _shortened(value)
        if _json_size(bounded) + _json_size({key: value}) <= MAX_ERROR_BYTES:
            bounded[key] = value
    return bounded


def _shortened(value: Any) -> Any:
    if isinstance(value, str):
        return _clip(value, _KEPT_CHARS)
    if isinstance(value, list):
        kept = [_clip(item, _KEPT_CHARS) if isinstance(item, str) else item for item in value[:_KEPT_ITEMS]]
        return kept + ([f"… {len(value) - _KEPT_ITEMS} more"] if len(value) > _KEPT_ITEMS else [])
    return value


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def _result_history(entry: dict[str, Any]) -> dict[str, Any]:
    """The part of ComfyUI's history entry a caller needs: outputs and status (with its messages), without
    the worker's own paths.

    The rest (``prompt``) repeats what the caller sent, the whole UI workflow included,
    and RunPod caps a /runsync response at about 20 MB. Some packs list where the
    worker keeps a file (VideoHelperSuite's ``fullpath``: ``/comfyui/output/anim_00001.gif``):
    the client has the file, and the worker's layout is nobody's business.
    """
    kept: dict[str, Any] = {key: entry[key] for key in ("outputs", "status") if key in entry}
    if "outputs" in kept:
        kept["outputs"] = without_server_paths(kept["outputs"])
    return kept


def without_server_paths(value: Any) -> Any:
    """``value`` (JSON) without the object entries whose value is an absolute path."""
    if isinstance(value, dict):
        return {key: without_server_paths(item) for key, item in value.items()
                if not (isinstance(item, str) and item.startswith("/"))}
    if isinstance(value, list):
        return [without_server_paths(item) for item in value]
    return value


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
