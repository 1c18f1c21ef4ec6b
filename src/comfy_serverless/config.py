"""Every setting of the worker: its key, type, default, meaning and validation, in one place.

Settings come from three layers, later ones winning: the defaults below, an
optional JSON file (``ComfyConnector.create(config_path)`` or the
``COMFY_SERVERLESS_CONFIG`` variable), and environment variables of the same
name as the key (containers are configured by environment). A mistake in any
layer is a :class:`ConfigError` that names the file or variable and the key, at
startup, rather than a confusing failure in the middle of a job.

Each setting carries its own rules (:func:`setting`): the range its value must
lie in, and the parser that turns its text into what the worker uses
(``URL_ALLOWLIST`` into a :class:`.addresses.UrlAllowlist`, the command lines
into words), run once, at load. The S3 settings are checked together, so a
partial set of them stops the worker before ComfyUI boots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from yarl import URL

from .addresses import UrlAllowlist
from .errors import ConfigError
from .sources.s3 import bucket_names, bucket_problem, parse_s3_uri
from .sources.url import parse_url

CONFIG_PATH_ENV = "COMFY_SERVERLESS_CONFIG"
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_TEST_PAYLOAD = str(PACKAGE_DIR / "test_server.json")
#: The same self-test in API format: what runs when no browser starts at boot (FRONTEND_START).
DEFAULT_API_TEST_PAYLOAD = str(PACKAGE_DIR / "test_server_api.json")
#: FRONTEND_START's values: when the browser and the warm page start.
FRONTEND_STARTS = ("boot", "first_use", "never")
#: Where RunPod mounts an endpoint's network volume.
NETWORK_VOLUME = Path("/runpod-volume")
#: The longest a presigned URL may live: 7 days, the SigV4 limit (PRESIGN_EXPIRES_S, a job's ``expires_s``).
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
#: PRESIGN_EXPIRES_S when it is not set: an hour, or for outputs that go where runpod's
#: ``rp_upload.upload_image`` puts them, the lifetime it gives its URLs (its ``ExpiresIn``).
DEFAULT_PRESIGN_EXPIRES_S = 3600
RP_UPLOAD_EXPIRES_S = 604800
#: ComfyUI's ``--verbose`` levels (COMFY_LOG_LEVEL).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Reconnecting a dropped websocket: the budget and the pause between attempts when nothing says otherwise,
#: and worker-comfyui's defaults for the one of its two variables that is not set.
RECONNECT_BUDGET_S = 5.0
RECONNECT_DELAY_S = 0.2
WORKER_COMFYUI_RECONNECT = (5, 3.0)


def setting(default: Any, doc: str, *, secret: bool = False, minimum: float | None = None,
             maximum: float | None = None, range_name: str = "", parse: Callable[[Any], Any] | None = None) -> Any:
    """One setting. ``minimum`` and ``maximum`` bound its value (``range_name`` says what a value within both
    is, for the error); ``parse`` turns the value into what the worker uses, once, at load, and raises
    ``ValueError`` with what is wrong (a predicate after the key)."""
    metadata = {"doc": doc, "secret": secret, "minimum": minimum, "maximum": maximum, "range_name": range_name,
                "parse": parse}
    return field(default=default, repr=not secret, metadata=metadata)


def _frontend_start(text: str) -> str:
    if text not in FRONTEND_STARTS:
        raise ValueError(f"must be one of {', '.join(FRONTEND_STARTS)}, got {text!r}")
    return text


def _log_level(text: str) -> list[str]:
    """COMFY_LOG_LEVEL as ComfyUI's arguments (none when empty): ComfyUI itself would refuse another level
    with a usage message in its log, long after the worker started."""
    level = text.strip().upper()
    if not level:
        return []
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return ["--verbose", level]


def _command_words(text: str) -> list[str]:
    """API_COMMAND_LINE, which must name a program."""
    words = _shell_words(text)
    if not words:
        raise ValueError("is empty; it must start ComfyUI")
    return words


def _hub_endpoint(text: str) -> URL:
    """HF_ENDPOINT as the URL every ``hf://`` input is resolved against: checked once, like a job's URL."""
    try:
        return parse_url(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected e.g. https://huggingface.co)") from None


def _shell_words(text: str) -> list[str]:
    """Words as a shell splits them; shlex's own error ("No closing quotation") would name no setting."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot be split like a shell would ({exc})") from None


@dataclass(frozen=True)
class Config:
    """The worker's configuration. Attribute names are the keys, lower-cased."""

    # --- the ComfyUI process -------------------------------------------------------------------
    api_command_line: str = setting(
        "python main.py",
        "Command that starts ComfyUI (split like a shell would). `--port` and `--listen` are appended.",
        parse=_command_words)
    api_working_directory: str = setting(
        "", "Directory ComfyUI is started in. Empty: COMFYUI_PATH.")
    api_url: str = setting("127.0.0.1", "Host ComfyUI listens on and the worker connects to.")
    initial_port: int = setting(8188, "First port tried; the first free one from here is used.",
                                 minimum=1, maximum=65535, range_name="a TCP port")
    comfyui_path: str = setting(
        "/comfyui", "ComfyUI's base directory (holds input/, output/, temp/, user/, models/).")
    comfy_extra_args: str = setting(
        "", "Extra ComfyUI command-line arguments, e.g. `--highvram --preview-method auto`.", parse=_shell_words)
    comfy_log_file: str = setting(
        "", "File that receives ComfyUI's stdout and stderr. Empty: comfyui.log in SCRATCH_DIR.")
    max_comfy_start_attempts: int = setting(
        3000, "Readiness polls before a boot is declared failed (budget = attempts x sleep).", minimum=1)
    comfy_start_attempts_sleep: float = setting(0.1, "Seconds between readiness polls.", minimum=0)
    kill_grace_s: float = setting(10.0, "Seconds ComfyUI gets after SIGTERM before SIGKILL.", minimum=0)
    comfy_log_level: str = setting(
        "", "ComfyUI's log level (its `--verbose`): DEBUG, INFO, WARNING, ERROR or CRITICAL. Empty: ComfyUI's "
            "default, INFO. A `--verbose` in COMFY_EXTRA_ARGS wins.", parse=_log_level)
    websocket_reconnect_budget_s: float | None = setting(
        None, "Seconds spent reopening ComfyUI's websocket after it dropped during a job, before the job fails. "
              "Empty: 5, or WEBSOCKET_RECONNECT_ATTEMPTS x WEBSOCKET_RECONNECT_DELAY_S when either is set "
              "(this setting wins over them).", minimum=0)
    websocket_reconnect_attempts: int | None = setting(
        None, "worker-comfyui's variable: reconnect attempts after the websocket dropped (5 when only the delay "
              "is set).", minimum=1)
    websocket_reconnect_delay_s: float | None = setting(
        None, "worker-comfyui's variable: seconds between reconnect attempts (3 when only the attempts are set, "
              "0.2 when neither is).", minimum=0)
    websocket_trace: bool = setting(
        False, "Log every websocket frame from ComfyUI (kind, size, first 200 characters) and each (re)connect, "
               "at INFO: for diagnosing connection problems, noisy otherwise.")

    # --- the browser and conversion -------------------------------------------------------------
    frontend_start: str = setting(
        "boot", "When the browser and the warm frontend page start: `boot` (with ComfyUI), `first_use` (with the "
                "first UI-format job; API-format jobs never wait for it) or `never` (no browser: UI-format jobs "
                "are refused).", parse=_frontend_start)
    chromium_executable: str = setting(
        "", "Chromium binary. Empty: a headless shell (Playwright's, then `chromium-headless-shell` on PATH), "
            "else Playwright's Chromium, else `chromium` on PATH.")
    convert_timeout_s: float = setting(30.0, "Seconds one UI-to-API conversion attempt may take.", minimum=0)
    convert_attempts: int = setting(
        3, "Conversion attempts; the page, then the browser, is restarted between them.", minimum=1)
    conversion_cache_size: int = setting(256, "Converted workflows kept, by content hash.", minimum=1)
    frontend_load_timeout_s: float = setting(
        120.0, "Seconds the frontend may take to load and set up.", minimum=0)
    page_recycle_conversions: int = setting(
        250, "Conversions after which the frontend page is replaced by a fresh one, loaded in the background "
             "(the frontend keeps a little of every graph it loads). 0: never.", minimum=0)
    frontend_snapshot: str = setting(
        "", "Record of what the frontend reads from ComfyUI at start (`python -m comfy_serverless.snapshot_frontend "
            "PATH`): the page sets up from it while ComfyUI boots. Empty: the page waits for ComfyUI.")

    # --- running prompts ------------------------------------------------------------------------
    test_payload_file: str = setting(
        DEFAULT_TEST_PAYLOAD,
        "Self-test workflow run before the worker reports ready (with FRONTEND_START first_use or never, the "
        "packaged one runs in API format, and a UI-format one is refused). Empty: no self-test.")
    run_timeout_s: float = setting(
        3600.0, "Default seconds a prompt may run before it is interrupted.", minimum=0)
    queue_timeout_s: float = setting(
        600.0, "Seconds a job's prompt may wait in ComfyUI's queue behind other jobs' prompts before it starts "
               "executing; the job's `timeout_s` (or RUN_TIMEOUT_S) counts from the start. 0: no limit.", minimum=0)
    interrupt_grace_s: float = setting(
        10.0, "Seconds ComfyUI gets to stop after an interrupt before it is restarted.", minimum=0)
    http_timeout_s: float = setting(30.0, "Seconds one HTTP request to ComfyUI may take.", minimum=0)
    scratch_dir: str = setting("", "Local scratch space for downloads. Empty: a folder under the system temp.")

    comfy_org_api_key: str = setting(
        "", "Default Comfy.org API key for ComfyUI's API nodes; a job's `comfy_org_api_key` wins.", secret=True)

    # --- jobs: inputs ---------------------------------------------------------------------------
    input_max_bytes: int = setting(
        2 * 1024**3, "Largest single job input (S3, URL or base64), in bytes.", minimum=1)
    download_timeout_s: float = setting(300.0, "Seconds one input download may take.", minimum=0)
    url_allowlist: str = setting(
        "", "Comma-separated hosts, IPs or CIDRs that URL inputs may reach even though they are "
            "loopback, private or link-local (refused by default).", parse=UrlAllowlist.parse)
    hf_endpoint: str = setting(
        "https://huggingface.co", "Hugging Face Hub that `hf://` inputs come from (`<HF_ENDPOINT>/<owner>/<repo>/"
                                  "resolve/<revision>/<path>`), e.g. a mirror; fetched as URL inputs are "
                                  "(URL_ALLOWLIST applies).", parse=_hub_endpoint)
    hf_token: str = setting(
        "", "Hugging Face token for private and gated `hf://` files; sent only to HF_ENDPOINT (its scheme, host and "
            "port), never to the other host a download is redirected to (the Hub's CDN).", secret=True)
    max_job_payload_bytes: int = setting(
        64 * 1024**2, "Largest job input accepted, as serialised JSON (base64 data included).", minimum=1)
    max_job_inputs: int = setting(
        1000, "Most files one job may place (`inputs` and `images` together).", minimum=1)
    max_job_input_bytes: int = setting(
        4 * 1024**3, "Largest total size of one job's inputs, in bytes (INPUT_MAX_BYTES caps each one).", minimum=1)
    fetch_timeout_s: float = setting(
        900.0, "Seconds the fetch phase of a job (all its inputs) may take, apart from the job's `timeout_s`. "
               "0: no limit.", minimum=0)
    model_cache_dir: str = setting(
        "", "Where cached inputs (`models` inputs, and any with `\"cache\": true`) are kept across jobs. Empty: "
            "/runpod-volume/comfy-serverless/model-cache when a network volume is mounted, else "
            "comfy-serverless-model-cache under the system temp.")
    model_cache_max_bytes: int = setting(
        50 * 1024**3, "Size the model cache is kept under, in bytes; least recently used entries go first, never "
                      "one a running job uses.", minimum=1)

    # --- jobs: outputs and storage --------------------------------------------------------------
    output_s3_uri: str = setting(
        "", "Default output location, `s3://bucket/prefix`. Empty: inline outputs, or with the three BUCKET_* "
            "variables set, the month's bucket as runpod's rp_upload uses it (README: S3, worker-comfyui's way).")
    inline_outputs: bool = setting(
        False, "Return outputs inline unless a job gives `output.s3_uri`, even with BUCKET_* set (S3 for inputs "
               "only).")
    bucket_endpoint_url: str = setting("", "S3-compatible endpoint URL (RunPod's variable name).")
    bucket_access_key_id: str = setting("", "S3 access key id (RunPod's variable name).", secret=True)
    bucket_secret_access_key: str = setting("", "S3 secret key (RunPod's variable name).", secret=True)
    s3_region: str = setting("", "S3 region. Empty: the AWS chain (AWS_REGION, AWS_DEFAULT_REGION, ...).")
    s3_bucket_allowlist: str = setting(
        "", "Comma-separated S3 buckets that job inputs and outputs (and OUTPUT_S3_URI) may use. Empty: any "
            "bucket the credentials reach.", parse=bucket_names)
    presign_expires_s: int | None = setting(
        None, "Default lifetime of presigned output URLs, in seconds. Empty: 3600, or 604800 (7 days, as runpod's "
              "rp_upload) when outputs go to the BUCKET_* month bucket (see S3, worker-comfyui's way).",
        minimum=1, maximum=MAX_PRESIGN_EXPIRES_S, range_name="a lifetime in seconds within the 7 days SigV4 allows")
    inline_output_max_bytes: int = setting(
        7 * 1024**2, "Largest total size of outputs returned inline as base64, in bytes.", minimum=0)
    include_temp_outputs: bool = setting(False, "Also return temp outputs (previews) by default.")
    refresh_worker: bool = setting(False, "Ask RunPod for a fresh worker after every job.")
    progress_interval_s: float = setting(
        0.5, "Least seconds between two progress updates sent to RunPod.", minimum=0)

    # --- the local API and diagnostics ---------------------------------------------------------
    serve_api_locally: bool = setting(
        False, "Serve RunPod's local HTTP API (as `--rp_serve_api` does) instead of taking jobs from a queue.")
    network_volume_debug: bool = setting(
        False, "At start, log how each model folder resolves (on /runpod-volume or in the image) and what it holds.")

    # --- throughput -----------------------------------------------------------------------------
    max_concurrent_jobs: int = setting(
        2, "Jobs one worker takes at once (RunPod's concurrency_modifier): while one executes, the others fetch, "
           "convert, wait in ComfyUI's queue and upload. ComfyUI still executes one prompt at a time.", minimum=1)
    stream_outputs: bool = setting(
        False, "Stream: the handler is a generator that yields each output as soon as it is delivered, then a "
               "final item (see README, Streaming). False: one dict result per job.")

    #: Each parsed setting's value, as its ``parse`` returns it (set once, by ``__post_init__``).
    _parsed: dict[str, Any] = field(init=False, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config_path: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None) -> Config:
        """Defaults, then the JSON file (if any), then environment variables."""
        environ = os.environ if environ is None else environ
        if config_path is None and environ.get(CONFIG_PATH_ENV):
            config_path = environ[CONFIG_PATH_ENV]
        kinds = setting_kinds(cls)
        values: dict[str, Any] = {}
        if config_path is not None:
            values.update(_read_json_file(Path(config_path), kinds))
        for spec in settings(cls):
            key = spec.name.upper()
            if key in environ:
                values[spec.name] = _coerce(environ[key], kinds[spec.name], key=key,
                                            source=f"environment variable {key}")
        return cls(**values)

    def __post_init__(self) -> None:
        specs = settings(type(self))
        for spec in specs:
            _check_bounds(spec, getattr(self, spec.name))
        parsed = {spec.name: _parse(spec, getattr(self, spec.name)) for spec in specs if spec.metadata["parse"]}
        object.__setattr__(self, "_parsed", parsed)
        _check_s3_settings(self)

    # --- derived values -----------------------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [*self._parsed["api_command_line"], *self._parsed["comfy_log_level"],
                *self._parsed["comfy_extra_args"]]

    @property
    def browser_at_boot(self) -> bool:
        return self.frontend_start == "boot"

    @property
    def self_test_path(self) -> str:
        """TEST_PAYLOAD_FILE; the packaged self-test in API format when the browser does not start at boot."""
        if self.test_payload_file == DEFAULT_TEST_PAYLOAD and not self.browser_at_boot:
            return DEFAULT_API_TEST_PAYLOAD
        return self.test_payload_file

    @property
    def reconnect(self) -> tuple[float, float]:
        """How a dropped websocket is reopened: (budget in seconds, pause between attempts).

        WEBSOCKET_RECONNECT_BUDGET_S wins; else worker-comfyui's attempts x delay
        when either of its variables is set; else 5 s, retried every 0.2 s.
        """
        attempts, delay_s = self.websocket_reconnect_attempts, self.websocket_reconnect_delay_s
        budget_s = self.websocket_reconnect_budget_s
        if attempts is None and delay_s is None:
            return (RECONNECT_BUDGET_S if budget_s is None else budget_s), RECONNECT_DELAY_S
        attempts = WORKER_COMFYUI_RECONNECT[0] if attempts is None else attempts
        delay_s = WORKER_COMFYUI_RECONNECT[1] if delay_s is None else delay_s
        return (attempts * delay_s if budget_s is None else budget_s), delay_s

    @property
    def month_bucket_outputs(self) -> bool:
        """Whether outputs go where runpod's ``rp_upload.upload_image`` puts them (worker-comfyui's S3): the
        three BUCKET_* variables are set, and neither OUTPUT_S3_URI nor INLINE_OUTPUTS."""
        return all(self.bucket_settings) and not self.output_s3_uri and not self.inline_outputs

    def default_expires_s(self, *, month_bucket: bool) -> int:
        """PRESIGN_EXPIRES_S, or, when it is not set, the lifetime ``rp_upload`` gives its URLs for outputs
        that go its way (``month_bucket``: the job names no destination of its own, see
        :attr:`month_bucket_outputs`)."""
        if self.presign_expires_s is not None:
            return self.presign_expires_s
        return RP_UPLOAD_EXPIRES_S if month_bucket and self.month_bucket_outputs else DEFAULT_PRESIGN_EXPIRES_S

    @property
    def parsed_url_allowlist(self) -> UrlAllowlist:
        return cast(UrlAllowlist, self._parsed["url_allowlist"])

    @property
    def allowed_buckets(self) -> frozenset[str]:
        """S3_BUCKET_ALLOWLIST's buckets; empty: any bucket."""
        return cast(frozenset[str], self._parsed["s3_bucket_allowlist"])

    @property
    def hub_origin(self) -> URL:
        """The scheme, host and port of HF_ENDPOINT: the only origin HF_TOKEN is sent to."""
        return cast(URL, self._parsed["hf_endpoint"]).origin()

    @property
    def bucket_settings(self) -> tuple[str, str, str]:
        """BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY without the blanks a pasted
        value brings along."""
        return (self.bucket_endpoint_url.strip(), self.bucket_access_key_id.strip(),
                self.bucket_secret_access_key.strip())

    @property
    def working_directory(self) -> Path:
        return Path(self.api_working_directory or self.comfyui_path)

    @property
    def comfy_root(self) -> Path:
        return Path(self.comfyui_path)

    @property
    def start_budget_s(self) -> float:
        return self.max_comfy_start_attempts * self.comfy_start_attempts_sleep

    @property
    def scratch_path(self) -> Path:
        return Path(self.scratch_dir or Path(tempfile.gettempdir()) / f"comfy-serverless-{os.getpid()}")

    @property
    def model_cache_path(self) -> Path:
        """On the network volume when there is one, so that every worker of the endpoint shares the cache."""
        if self.model_cache_dir:
            return Path(self.model_cache_dir)
        if NETWORK_VOLUME.is_dir():
            return NETWORK_VOLUME / "comfy-serverless" / "model-cache"
        return Path(tempfile.gettempdir()) / "comfy-serverless-model-cache"

    @property
    def log_path(self) -> Path:
        return Path(self.comfy_log_file) if self.comfy_log_file else self.scratch_path / "comfyui.log"

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, errors or results."""
        return [getattr(self, spec.name) for spec in settings(type(self))
                if spec.metadata["secret"] and getattr(self, spec.name)]

    @classmethod
    def reference(cls) -> list[tuple[str, str, str]]:
        """(KEY, default, meaning) for every setting, as the README documents them."""
        rows = []
        for spec in settings(cls):
            default = "" if spec.metadata["secret"] else spec.default
            rows.append((spec.name.upper(), json.dumps(default), spec.metadata["doc"]))
        return rows


def settings(cls: type[Config]) -> list[dataclasses.Field[Any]]:
    """The settings of ``cls``: its fields declared with :func:`setting`, in declaration order."""
    return [spec for spec in dataclasses.fields(cls) if "doc" in spec.metadata]


# --- types ------------------------------------------------------------------------------------

_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class SettingKind:
    """What a setting's annotation asks for: a scalar type, and whether ``None`` (not set) is allowed."""

    type: type
    optional: bool = False

    @property
    def name(self) -> str:
        return f"{self.type.__name__} or null" if self.optional else self.type.__name__

    @classmethod
    def of(cls, hint: Any) -> SettingKind:
        """``int`` or ``int | None`` (``Optional[int]``): a resolved annotation, never its text."""
        union = typing.get_origin(hint) in (types.UnionType, typing.Union)
        members = typing.get_args(hint) if union else (hint,)
        scalars = [member for member in members if member is not type(None)]
        if len(scalars) != 1 or scalars[0] not in _SCALARS:
            raise TypeError(f"a setting is str, int, float or bool, or one of them | None; got {hint!r}")
        return cls(scalars[0], optional=len(scalars) < len(members))


def setting_kinds(cls: type[Config]) -> dict[str, SettingKind]:
    """Each setting's kind, from the class's resolved annotations (``from __future__ import annotations``
    leaves only their text in ``Field.type``)."""
    hints = typing.get_type_hints(cls)
    return {spec.name: SettingKind.of(hints[spec.name]) for spec in settings(cls)}


def _coerce(text: str, kind: SettingKind, *, key: str, source: str) -> Any:
    """An environment variable's text as ``kind``; an empty one leaves an optional setting unset (``None``)."""
    if kind.optional and not text.strip():
        return None
    if kind.type is str:
        return text
    if kind.type is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{source} must be true or false, got {text!r}", key=key)
    try:
        return kind.type(text)
    except ValueError:
        raise ConfigError(f"{source} must be {kind.type.__name__}, got {text!r}", key=key) from None


def _check_json_type(value: Any, kind: SettingKind, *, key: str, source: str) -> Any:
    """A config file's value as ``kind``: JSON has the types already, so only an int is widened to float."""
    if value is None and kind.optional:
        return None
    if kind.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind.type is not bool:
        raise ConfigError(f"{source}: {key} must be {kind.name}, got a boolean", key=key)
    if not isinstance(value, kind.type):
        raise ConfigError(f"{source}: {key} must be {kind.name}, got {type(value).__name__} {value!r}", key=key)
    return value


def _read_json_file(path: Path, kinds: Mapping[str, SettingKind]) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}", file=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings", file=str(path))
    by_key = {name.upper(): name for name in kinds}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in by_key:
            known = ", ".join(sorted(by_key))
            raise ConfigError(f"config file {path}: unknown key {key!r} (known keys: {known})",
                              file=str(path), key=key)
        name = by_key[key]
        values[name] = _check_json_type(value, kinds[name], key=key, source=f"config file {path}")
    return values


# --- values -----------------------------------------------------------------------------------

def _check_bounds(spec: dataclasses.Field[Any], value: Any) -> None:
    minimum, maximum = spec.metadata["minimum"], spec.metadata["maximum"]
    if value is None or ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)):
        return
    if spec.metadata["range_name"]:
        problem = f"must be {spec.metadata['range_name']} ({minimum}-{maximum})"
    elif maximum is not None and value > maximum:
        problem = f"must be at most {maximum}"
    else:
        problem = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
    key = spec.name.upper()
    raise ConfigError(f"{key} {problem}, got {value!r}", key=key)


def _parse(spec: dataclasses.Field[Any], value: Any) -> Any:
    try:
        return spec.metadata["parse"](value)
    except ValueError as exc:
        key = spec.name.upper()
        raise ConfigError(f"{key} {exc}", key=key) from None


def _check_s3_settings(config: Config) -> None:
    """Every partial S3 configuration, named by the variable that is missing or wrong, before ComfyUI boots;
    storage builds its client from settings that passed."""
    endpoint, key_id, secret = config.bucket_settings
    if config.output_s3_uri and config.inline_outputs:
        raise ConfigError("OUTPUT_S3_URI and INLINE_OUTPUTS are both set; outputs go to one place by default: "
                          "unset one", key="INLINE_OUTPUTS")
    if config.output_s3_uri:
        try:
            bucket, _ = parse_s3_uri(config.output_s3_uri, require_key=False)
        except ValueError as exc:
            raise ConfigError(f"OUTPUT_S3_URI {exc} (expected s3://bucket or s3://bucket/prefix)",
                              key="OUTPUT_S3_URI") from None
        problem = bucket_problem(bucket, config.allowed_buckets)
        if problem:
            raise ConfigError(f"OUTPUT_S3_URI: {problem}", key="OUTPUT_S3_URI")
    if key_id and not secret:
        raise ConfigError("BUCKET_SECRET_ACCESS_KEY is not set but BUCKET_ACCESS_KEY_ID is; set both",
                          key="BUCKET_SECRET_ACCESS_KEY")
    if secret and not key_id:
        raise ConfigError("BUCKET_ACCESS_KEY_ID is not set but BUCKET_SECRET_ACCESS_KEY is; set both",
                          key="BUCKET_ACCESS_KEY_ID")
    if endpoint and not key_id:
        raise ConfigError("BUCKET_ENDPOINT_URL is set but BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY are "
                          "not; set both keys (or unset BUCKET_ENDPOINT_URL to use AWS S3 with the AWS "
                          "credential chain)", key="BUCKET_ACCESS_KEY_ID")
    if endpoint:
        _check_endpoint(endpoint)


def _check_endpoint(endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        has_credentials = parts.username is not None or parts.password is not None
        _ = parts.port
    except ValueError:
        raise ConfigError("BUCKET_ENDPOINT_URL is not a valid URL (malformed host or port)",
                          key="BUCKET_ENDPOINT_URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("BUCKET_ENDPOINT_URL must be an http:// or https:// URL with a host, e.g. "
                          "https://<account>.r2.cloudflarestorage.com", key="BUCKET_ENDPOINT_URL")
    if has_credentials:
        raise ConfigError("BUCKET_ENDPOINT_URL must not contain credentials (user:password@); use "
                          "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY", key="BUCKET_ENDPOINT_URL")
