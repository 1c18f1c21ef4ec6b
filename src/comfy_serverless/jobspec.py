"""The job input schema, enforced before anything runs.

A job that would fail half-way (after a 2 GB download, or after minutes of
sampling) because of a typo in its payload wastes the user's money, so every
field is checked here first, and *every* problem is reported at once, each
prefixed with its field path (``input.inputs[2].source: ...``). Nothing is
fetched or resolved here: this module is pure, so it can run on any payload,
however hostile, without touching the network or the disk.

The schema is a superset of runpod-workers/worker-comfyui's
(``{"workflow", "images": [{"name", "image"}], "comfy_org_api_key"}``, with
``input`` possibly given as a JSON string), so its users can switch workers
without changing their clients.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from .config import MAX_PRESIGN_EXPIRES_S, Config
from .errors import JobInputError, WorkflowError
from .files import FOLDER_TYPES, relative_path_problem
from .problems import SHOWN_CHARS, Problems, show
from .sources import ParsedSource, prefixes_text, scheme_of, source_for
from .sources.data import base64_payload, split_data_uri
from .sources.s3 import bucket_problem, parse_s3_uri
from .workflow import WorkflowFormat, detect_format, parse_workflow

OutputMode = Literal["s3", "inline", "default"]

MAX_TIMEOUT_S = 86400
#: Deepest nesting of objects and arrays in a workflow or an override value. Saved workflows stay
#: within about 10; far deeper values exhaust the stack of recursive code downstream (copies,
#: serialisers, ComfyUI's own hashing) instead of failing cleanly.
MAX_NESTING = 100
#: A payload with thousands of bad entries must not produce a result of megabytes of problems: the
#: problems listed (and the characters of each) are capped, so an error stays within a few KB.

_TOP_LEVEL_KEYS = ("workflow", "inputs", "images", "overrides", "output", "timeout_s", "comfy_org_api_key")
_INPUT_KEYS = ("source", "name", "folder_type", "subfolder", "cache", "sha256")
_IMAGE_KEYS = ("name", "image")
_OUTPUT_KEYS = ("s3_uri", "inline", "presign", "expires_s", "include_temp")

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_TYPE_CHECKS: dict[str, tuple[type, ...]] = {
    "boolean": (bool,), "integer": (int,), "number": (int, float), "string": (str,),
}


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One file to place into a ComfyUI folder before the prompt runs.

    ``source`` is the job's value for most kinds (an ``s3://`` URI, an http(s) URL); for
    ``base64`` it is the standard-alphabet base64 text itself, with any
    ``data:`` prefix and whitespace removed (already checked to be well formed).
    ``kind`` is the :class:`~comfy_serverless.sources.Source`'s (``s3``, ``url``, ``base64``, ...).
    ``field`` is the payload path (``input.images[0]``) that errors name.
    ``cache``: kept in the model cache across jobs at a stable path (default for ``models``), instead of
    a folder private to the job; ``sha256`` (lower-case hex, "" if not given) is verified on download.
    """

    source: str
    name: str
    folder_type: str
    subfolder: str
    field: str
    kind: str
    cache: bool = False
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Where the job's outputs go. ``default`` means the worker's OUTPUT_S3_URI, else inline."""

    mode: OutputMode
    s3_uri: str
    presign: bool
    expires_s: int
    include_temp: bool


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A validated job. The job's ``input`` object (or a JSON string holding it) has these keys:

    ``workflow`` (required)
        The workflow, in UI format (as saved by ComfyUI) or API format (``Export (API)``),
        as an object or a JSON string.
    ``inputs`` (optional)
        A list of files to place before the run, each ``{"source", "name"?, "folder_type"?, "subfolder"?}``:

        - ``source``: ``s3://bucket/key``, an ``https://`` or ``http://`` URL (no ``user:pass@``,
          at most 8192 characters), ``data:<mime>;base64,<data>``, or a Hugging Face Hub file,
          ``hf://owner/repo[@revision]/path/in/repo``;
        - ``name``: the file name (no ``/``); default: the S3 key's, URL path's or Hub path's last
          segment, or ``input_<index>.<ext>`` for a data URI;
        - ``folder_type``: ``input`` (default), ``output``, ``temp`` or ``models``;
        - ``subfolder``: a relative path inside that folder (required for ``models``,
          e.g. ``loras`` or ``checkpoints/sdxl``);
        - ``cache``: keep the file in the model cache across jobs, at a stable path (default: true
          for ``models``, false otherwise);
        - ``sha256``: the file's SHA-256 (64 hex digits), checked after download; a cached copy
          with that hash is used without any request.
    ``images`` (optional)
        worker-comfyui's form: a list of ``{"name", "image"}``, ``image`` being base64,
        optionally with a ``data:image/...;base64,`` prefix. Placed in the ``input`` folder.
        No two files (``inputs`` and ``images`` together) may share a folder, subfolder and name.
    ``overrides`` (optional)
        ``{node_id_or_title: {input_name: value}}``: values set on the prompt's nodes before it runs.
    ``output`` (optional)
        ``{"s3_uri": "s3://bucket/prefix", "presign": true, "expires_s": 3600, "include_temp": false}``
        to upload outputs there (``expires_s``: 1 to 604800, default PRESIGN_EXPIRES_S), or
        ``{"inline": true, "include_temp": false}`` to return them as base64. Without ``s3_uri`` or
        ``inline``, OUTPUT_S3_URI is used if set, else inline; ``include_temp`` defaults to
        INCLUDE_TEMP_OUTPUTS.
    ``timeout_s`` (optional)
        Seconds the prompt may run before it is interrupted: more than 0, at most 86400.
        Default: RUN_TIMEOUT_S.
    ``comfy_org_api_key`` (optional)
        A Comfy.org API key for API nodes (worker-comfyui compatibility).

    Unknown keys are refused everywhere, so a typo cannot be silently ignored; ``null`` means absent.
    """

    workflow: dict[str, Any]
    workflow_format: WorkflowFormat
    inputs: tuple[InputSpec, ...]
    overrides: dict[str, dict[str, Any]]
    output: OutputSpec
    timeout_s: float | None
    comfy_org_api_key: str | None


def parse_job_input(raw: object, config: Config) -> JobSpec:
    """Validate a job's ``input`` and apply the defaults; ``JobInputError`` lists every problem found."""
    data = _decode(raw, config.max_job_payload_bytes)
    problems = Problems()
    _check_keys(data, "input", _TOP_LEVEL_KEYS, problems)
    workflow = _parse_workflow_field(data.get("workflow"), problems)
    inputs = _parse_files(data, config, problems)
    overrides = _parse_overrides(data.get("overrides"), problems)
    output = _parse_output(data.get("output"), config, problems)
    _check_buckets(inputs, output, config.allowed_buckets, problems)
    timeout_s = _typed(data, "timeout_s", "input", "number", None, problems)
    if timeout_s is not None:
        _check_range(timeout_s, "input.timeout_s", 0, MAX_TIMEOUT_S, problems, low_inclusive=False)
    api_key = _typed(data, "comfy_org_api_key", "input", "string", None, problems)
    if workflow is None or problems:
        raise problems.error()
    return JobSpec(workflow=workflow[0], workflow_format=workflow[1], inputs=tuple(inputs), overrides=overrides,
                   output=output, timeout_s=None if timeout_s is None else float(timeout_s),
                   comfy_org_api_key=api_key or None)


# --- the payload as a whole ---------------------------------------------------------------------

def _decode(raw: object, limit: int) -> dict[str, Any]:
    """The job input as a dict, refused outright if too large: a huge payload must not be walked."""
    if isinstance(raw, str):
        _check_size(len(raw), limit)
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise JobInputError([f"input: is a string but not valid JSON ({exc})"]) from None
    elif isinstance(raw, dict):
        try:
            size = len(json.dumps(raw, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            raise JobInputError(["input: must be plain JSON data, not nested too deeply"]) from None
        _check_size(size, limit)
    if not isinstance(raw, dict):
        raise JobInputError(["input: must be a JSON object"])
    return raw


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise JobInputError([f"input: is {size} bytes as JSON, more than the limit of {limit} "
                             "(MAX_JOB_PAYLOAD_BYTES); pass large files as s3:// or https:// inputs, not base64"])


def _parse_workflow_field(value: object, problems: Problems) -> tuple[dict[str, Any], WorkflowFormat] | None:
    path = "input.workflow"
    if value is None:
        problems.add(path, "is required (a UI or API format workflow, as an object or a JSON string)")
        return None
    try:
        workflow = parse_workflow(value)
        if _nested_too_deeply(workflow):
            problems.add(path, f"is nested more than {MAX_NESTING} levels deep")
            return None
        return workflow, detect_format(workflow)
    except WorkflowError as exc:
        problems.add(path, exc.message)
    except RecursionError:
        problems.add(path, "is nested too deeply")
    return None


# --- files to place -----------------------------------------------------------------------------

def _parse_files(data: dict[str, Any], config: Config, problems: Problems) -> list[InputSpec]:
    """``inputs`` and ``images`` together, counted before any entry is parsed (MAX_JOB_INPUTS)."""
    count = sum(len(data[key]) for key in ("inputs", "images") if isinstance(data.get(key), list))
    if count > config.max_job_inputs:
        problems.add("input.inputs", f"the job has {count} files (inputs and images together), more than "
                                     f"MAX_JOB_INPUTS ({config.max_job_inputs}); bundle them, e.g. in an archive")
        return []
    inputs = _parse_inputs(data.get("inputs"), problems) + _parse_images(data.get("images"), problems)
    _check_unique(inputs, problems)
    return inputs


def _check_buckets(inputs: list[InputSpec], output: OutputSpec, allowed: frozenset[str],
                   problems: Problems) -> None:
    """S3_BUCKET_ALLOWLIST, for S3 inputs and the job's own output location."""
    if not allowed:
        return
    uris = [(f"{spec.field}.source", spec.source) for spec in inputs if spec.kind == "s3"]
    uris += [("input.output.s3_uri", output.s3_uri)] if output.mode == "s3" else []
    for path, uri in uris:
        try:
            problem = bucket_problem(parse_s3_uri(uri, require_key=False)[0], allowed)
        except ValueError:
            continue  # a malformed URI, already reported
        if problem:
            problems.add(path, problem)


def _parse_inputs(value: object, problems: Problems, path: str = "input.inputs") -> list[InputSpec]:
    specs = (_parse_input_entry(index, entry_path, entry, problems)
             for index, entry_path, entry in _entries(value, path, _INPUT_KEYS, problems))
    return [spec for spec in specs if spec is not None]


def parse_input_list(value: object, path: str) -> list[InputSpec]:
    """A list of ``inputs`` entries outside a job (the cache's pre-warming list); errors name ``path[i].field``."""
    problems = Problems()
    inputs = _parse_inputs([] if value is None else value, problems, path)
    if problems:
        raise problems.error()
    return inputs


def _parse_input_entry(index: int, path: str, entry: dict[str, Any], problems: Problems) -> InputSpec | None:
    source = _parse_source(entry.get("source"), f"{path}.source", index, problems)
    folder_type = _parse_folder_type(entry.get("folder_type"), f"{path}.folder_type", problems)
    subfolder_value = entry.get("subfolder")
    subfolder = ("" if subfolder_value in (None, "") else
                 _relative_path(subfolder_value, f"{path}.subfolder", problems, allow_nested=True))
    if folder_type == "models" and subfolder == "":
        problems.add(f"{path}.subfolder", "is required when folder_type is 'models' (e.g. 'checkpoints', 'loras')")
    name_value = entry.get("name")
    if source is None and name_value is None:
        return None  # the name would come from the source, whose problem is already reported
    name = _file_name(name_value, f"{path}.name", problems, derived=source.default_name if source else None)
    cache = _typed(entry, "cache", path, "boolean", folder_type == "models", problems)
    sha256 = _parse_sha256(entry.get("sha256"), f"{path}.sha256", problems)
    if source is None or folder_type is None or subfolder is None or name is None or sha256 is None:
        return None
    return InputSpec(source=source.source, name=name, folder_type=folder_type, subfolder=subfolder,
                     field=path, kind=source.kind, cache=cache, sha256=sha256)


def _parse_sha256(value: object, path: str, problems: Problems) -> str | None:
    """The hash in lower case, "" when absent; ``None`` (and a problem) when it is not 64 hex digits."""
    if value is None:
        return ""
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        problems.add(path, f"must be a SHA-256 of 64 hex digits, got {show(value)}")
        return None
    return value.lower()


def _parse_images(value: object, problems: Problems) -> list[InputSpec]:
    """worker-comfyui's ``images`` entries, as base64 inputs in the input folder."""
    specs = []
    for _, path, entry in _entries(value, "input.images", _IMAGE_KEYS, problems):
        name = _file_name(entry.get("name"), f"{path}.name", problems, derived=None)
        data = _parse_image_data(entry.get("image"), f"{path}.image", problems)
        if name is not None and data is not None:
            specs.append(InputSpec(source=data, name=name, folder_type="input", subfolder="", field=path,
                                   kind="base64"))
    return specs


def _parse_image_data(value: object, path: str, problems: Problems) -> str | None:
    if not isinstance(value, str):
        problems.add(path, "is required (base64 image data)" if value is None else
                     f"must be a base64 string, got {show(value)}")
        return None
    try:
        return split_data_uri(value)[1] if scheme_of(value) == "data" else base64_payload(value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None


def _entries(value: object, path: str, allowed: Sequence[str],
             problems: Problems) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The object entries of an optional list field, as (index, path, entry); other entries are problems.

    A generator, so that problems come out in the order of the entries.
    """
    if value is None:
        return
    if not isinstance(value, list):
        problems.add(path, f"must be a list, got {show(value)}")
        return
    for index, entry in enumerate(value):
        entry_path = f"{path}[{index}]"
        if _object(entry, entry_path, problems, allowed=allowed) is not None:
            yield index, entry_path, entry


def _check_unique(inputs: list[InputSpec], problems: Problems) -> None:
    """Two inputs written to the same file would silently replace one another."""
    seen: dict[tuple[str, str, str], str] = {}
    for spec in inputs:
        key = (spec.folder_type, spec.subfolder, spec.name)
        if key in seen:
            problems.add(f"{spec.field}.name", f"{show(spec.name)} is also the name of {seen[key]} in the same "
                                               "folder; names must be unique")
        else:
            seen[key] = spec.field


def _parse_folder_type(value: object, path: str, problems: Problems) -> str | None:
    if value is None:
        return "input"
    if value not in FOLDER_TYPES:
        problems.add(path, f"must be one of {', '.join(FOLDER_TYPES)} (got {show(value)})")
        return None
    return str(value)


def _file_name(value: object, path: str, problems: Problems, *, derived: str | None) -> str | None:
    """The given name, else the one ``derived`` from the source (``None``: there is no source to derive from)."""
    if value is not None:
        return _relative_path(value, path, problems, allow_nested=False)
    if not derived:
        problems.add(path, "is required" if derived is None else
                     "is required: no file name can be derived from the source")
        return None
    problem = _path_problem(derived, allow_nested=False)
    if problem:
        problems.add(path, f"the name derived from the source, {show(derived)}, {problem}; give 'name'")
        return None
    return _normalise(derived)


def _relative_path(value: object, path: str, problems: Problems, *, allow_nested: bool) -> str | None:
    """A safe relative path, normalised (``a/./b/`` is ``a/b``) so duplicates are found; ``None`` if unsafe."""
    problem = _path_problem(value, allow_nested=allow_nested)
    if problem:
        problems.add(path, f"{problem} (got {show(value)})")
        return None
    return _normalise(str(value))


def _path_problem(value: object, *, allow_nested: bool) -> str | None:
    """files.relative_path_problem, also refusing text that cannot be a file name (lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text"
    return relative_path_problem(value, allow_nested=allow_nested)


def _normalise(relative: str) -> str:
    normalised = str(PurePosixPath(relative))
    return "" if normalised == "." else normalised


# --- sources ------------------------------------------------------------------------------------

def _parse_source(value: object, path: str, index: int, problems: Problems) -> ParsedSource | None:
    if not isinstance(value, str):
        problems.add(path, "is required" if value is None else f"must be a string, got {show(value)}")
        return None
    scheme = scheme_of(value)
    source = source_for(scheme)
    if source is None:
        # Only the scheme is echoed: the rest of a URL may hold credentials.
        got = f"got scheme {show(scheme)}" if scheme else "got no scheme"
        problems.add(path, f"must start with {prefixes_text()} ({got})")
        return None
    try:
        return source.parse(value, index)
    except ValueError as exc:
        problems.add(path, str(exc))
        return None


# --- overrides and output -----------------------------------------------------------------------

def _parse_overrides(value: object, problems: Problems) -> dict[str, dict[str, Any]]:
    path = "input.overrides"
    checked = None if value is None else _object(value, path, problems)
    if checked is None:
        return {}
    overrides: dict[str, dict[str, Any]] = {}
    for node, node_inputs in checked.items():
        if isinstance(node, str) and node and isinstance(node_inputs, dict) and node_inputs and all(
                isinstance(name, str) and name for name in node_inputs) and not _nested_too_deeply(node_inputs):
            overrides[node] = dict(node_inputs)
            continue
        node_path = f"{path}[{show(node)}]"
        if not isinstance(node, str) or not node:
            problems.add(node_path, "node ids and titles must be non-empty strings")
        elif not isinstance(node_inputs, dict):
            problems.add(node_path, f"must be an object of {{input_name: value}}, got {show(node_inputs)}")
        elif not node_inputs:
            problems.add(node_path, "must not be empty (give at least one input_name: value)")
        elif not all(isinstance(name, str) and name for name in node_inputs):
            problems.add(node_path, "input names must be non-empty strings")
        else:
            problems.add(node_path, f"is nested more than {MAX_NESTING} levels deep")
    return overrides


def _parse_output(value: object, config: Config, problems: Problems) -> OutputSpec:
    path = "input.output"
    spec = {} if value is None else _object(value, path, problems, allowed=_OUTPUT_KEYS) or {}
    include_temp = _typed(spec, "include_temp", path, "boolean", config.include_temp_outputs, problems)
    presign = _typed(spec, "presign", path, "boolean", True, problems)
    s3_uri = spec.get("s3_uri")
    inline = _typed(spec, "inline", path, "boolean", False, problems)
    default_expires_s = config.default_expires_s(month_bucket=s3_uri is None and not inline)
    expires_s = _typed(spec, "expires_s", path, "integer", default_expires_s, problems)
    _check_range(expires_s, f"{path}.expires_s", 1, MAX_PRESIGN_EXPIRES_S, problems, low_inclusive=True)
    if inline:
        if s3_uri is not None:
            problems.add(path, "give either 's3_uri' or 'inline': true, not both")
        for key in ("presign", "expires_s"):
            if spec.get(key) is not None:
                problems.add(f"{path}.{key}", "only applies to S3 outputs, not with 'inline': true")
        return OutputSpec("inline", "", presign, expires_s, include_temp)
    if s3_uri is None:
        return OutputSpec("default", "", presign, expires_s, include_temp)
    try:
        bucket, prefix = parse_s3_uri(s3_uri, require_key=False)
    except ValueError as exc:
        problems.add(f"{path}.s3_uri", str(exc))
        bucket, prefix = "", ""
    return OutputSpec("s3", f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", presign, expires_s,
                      include_temp)


# --- shared checks ------------------------------------------------------------------------------

def _object(value: object, path: str, problems: Problems, *,
            allowed: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``value`` if it is an object whose keys are all ``allowed`` (any, if ``None``); else report why."""
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {show(value)}")
        return None
    if allowed is not None:
        _check_keys(value, path, allowed, problems)
    return value


def _check_keys(value: dict[Any, Any], path: str, allowed: Sequence[str], problems: Problems) -> None:
    """Unknown keys are problems, with a "did you mean" for near misses: typos must not be ignored."""
    for key in value:
        if key in allowed:
            continue
        close = (difflib.get_close_matches(key, allowed, n=1)
                 if isinstance(key, str) and len(key) <= SHOWN_CHARS and not problems.full else [])
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.add(path, f"unknown key {show(key)} ({hint}known keys: {', '.join(allowed)})")


def _typed(obj: dict[str, Any], key: str, path: str, kind: str, default: Any, problems: Problems) -> Any:
    """``obj[key]`` if it is of JSON type ``kind``, ``default`` if absent or null; booleans are not numbers."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, _TYPE_CHECKS[kind]):
        problems.add(f"{path}.{key}", f"must be a{'n' if kind == 'integer' else ''} {kind}, got {show(value)}")
        return default
    return value


def _check_range(value: float, path: str, low: float, high: float, problems: Problems, *,
                 low_inclusive: bool) -> None:
    """Compared without conversion: NaN fails both bounds and a huge integer cannot overflow a float."""
    above_low = low <= value if low_inclusive else low < value
    if not (above_low and value <= high):
        bound = "at least" if low_inclusive else "more than"
        problems.add(path, f"must be {bound} {low} and at most {high}")


def _nested_too_deeply(value: object) -> bool:
    """Whether objects and arrays in ``value`` nest deeper than MAX_NESTING; iterative, linear in size."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_NESTING:
                    return True
                stack.append((child, depth + 1))
    return False
