"""Every setting of the worker: its key, type, default, meaning and validation, in one place.

Settings come from three layers, later ones winning: the defaults below, an
optional JSON file (``ComfyConnector.create(config_path)`` or the
``COMFY_SERVERLESS_CONFIG`` variable), and environment variables of the same
name as the key (containers are configured by environment). A mistake in any
layer is a :class:`ConfigError` that names the file or variable and the key, at
startup, rather than a confusing failure in the middle of a job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_PATH_ENV = "COMFY_SERVERLESS_CONFIG"
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_TEST_PAYLOAD = str(PACKAGE_DIR / "test_server.json")
#: Where RunPod mounts an endpoint's network volume.
NETWORK_VOLUME = Path("/runpod-volume")
#: The longest a presigned URL may live: 7 days, the SigV4 limit (PRESIGN_EXPIRES_S, a job's ``expires_s``).
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600


def _setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, repr=not secret, metadata={"doc": doc, "secret": secret})


@dataclass(frozen=True)
class Config:
    """The worker's configuration. Attribute names are the keys, lower-cased."""

    # --- the ComfyUI process -------------------------------------------------------------------
    api_command_line: str = _setting(
        "python main.py",
        "Command that starts ComfyUI (split like a shell would). `--port` and `--listen` are appended.")
    api_working_directory: str = _setting(
        "", "Directory ComfyUI is started in. Empty: COMFYUI_PATH.")
    api_url: str = _setting("127.0.0.1", "Host ComfyUI listens on and the worker connects to.")
    initial_port: int = _setting(8188, "First port tried; the first free one from here is used.")
    comfyui_path: str = _setting(
        "/comfyui", "ComfyUI's base directory (holds input/, output/, temp/, user/, models/).")
    comfy_extra_args: str = _setting(
        "", "Extra ComfyUI command-line arguments, e.g. `--highvram --preview-method auto`.")
    comfy_log_file: str = _setting(
        "", "File that receives ComfyUI's stdout and stderr. Empty: comfyui.log in SCRATCH_DIR.")
    max_comfy_start_attempts: int = _setting(
        3000, "Readiness polls before a boot is declared failed (budget = attempts x sleep).")
    comfy_start_attempts_sleep: float = _setting(0.1, "Seconds between readiness polls.")
    kill_grace_s: float = _setting(10.0, "Seconds ComfyUI gets after SIGTERM before SIGKILL.")

    # --- the browser and conversion -------------------------------------------------------------
    chromium_executable: str = _setting(
        "", "Chromium binary. Empty: a headless shell (Playwright's, then `chromium-headless-shell` on PATH), "
            "else Playwright's Chromium, else `chromium` on PATH.")
    convert_timeout_s: float = _setting(30.0, "Seconds one UI-to-API conversion attempt may take.")
    convert_attempts: int = _setting(
        3, "Conversion attempts; the page, then the browser, is restarted between them.")
    conversion_cache_size: int = _setting(256, "Converted workflows kept, by content hash.")
    frontend_load_timeout_s: float = _setting(120.0, "Seconds the frontend may take to load and set up.")
    page_recycle_conversions: int = _setting(
        250, "Conversions after which the frontend page is replaced by a fresh one, loaded in the background "
             "(the frontend keeps a little of every graph it loads). 0: never.")
    frontend_snapshot: str = _setting(
        "", "Record of what the frontend reads from ComfyUI at start (`python -m comfy_serverless.snapshot_frontend "
            "PATH`): the page sets up from it while ComfyUI boots. Empty: the page waits for ComfyUI.")

    # --- running prompts ------------------------------------------------------------------------
    test_payload_file: str = _setting(
        DEFAULT_TEST_PAYLOAD,
        "Self-test workflow run before the worker reports ready. Empty: no self-test.")
    run_timeout_s: float = _setting(3600.0, "Default seconds a prompt may run before it is interrupted.")
    queue_timeout_s: float = _setting(
        600.0, "Seconds a job's prompt may wait in ComfyUI's queue behind other jobs' prompts before it starts "
               "executing; the job's `timeout_s` (or RUN_TIMEOUT_S) counts from the start. 0: no limit.")
    interrupt_grace_s: float = _setting(
        10.0, "Seconds ComfyUI gets to stop after an interrupt before it is restarted.")
    http_timeout_s: float = _setting(30.0, "Seconds one HTTP request to ComfyUI may take.")
    scratch_dir: str = _setting("", "Local scratch space for downloads. Empty: a folder under the system temp.")

    # --- jobs: inputs ---------------------------------------------------------------------------
    input_max_bytes: int = _setting(2 * 1024**3, "Largest single job input (S3, URL or base64), in bytes.")
    download_timeout_s: float = _setting(300.0, "Seconds one input download may take.")
    url_allowlist: str = _setting(
        "", "Comma-separated hosts, IPs or CIDRs that URL inputs may reach even though they are "
            "loopback, private or link-local (refused by default).")
    hf_endpoint: str = _setting(
        "https://huggingface.co", "Hugging Face Hub that `hf://` inputs come from (`<HF_ENDPOINT>/<owner>/<repo>/"
                                  "resolve/<revision>/<path>`), e.g. a mirror; fetched as URL inputs are "
                                  "(URL_ALLOWLIST applies).")
    hf_token: str = _setting(
        "", "Hugging Face token for private and gated `hf://` files; sent only to HF_ENDPOINT (its scheme, host and "
            "port), never to the other host a download is redirected to (the Hub's CDN).", secret=True)
    max_job_payload_bytes: int = _setting(
        64 * 1024**2, "Largest job input accepted, as serialised JSON (base64 data included).")
    max_job_inputs: int = _setting(1000, "Most files one job may place (`inputs` and `images` together).")
    max_job_input_bytes: int = _setting(
        4 * 1024**3, "Largest total size of one job's inputs, in bytes (INPUT_MAX_BYTES caps each one).")
    fetch_timeout_s: float = _setting(
        900.0, "Seconds the fetch phase of a job (all its inputs) may take, apart from the job's `timeout_s`. "
               "0: no limit.")
    model_cache_dir: str = _setting(
        "", "Where cached inputs (`models` inputs, and any with `\"cache\": true`) are kept across jobs. Empty: "
            "/runpod-volume/comfy-serverless/model-cache when a network volume is mounted, else "
            "comfy-serverless-model-cache under the system temp.")
    model_cache_max_bytes: int = _setting(
        50 * 1024**3, "Size the model cache is kept under, in bytes; least recently used entries go first, never "
                      "one a running job uses.")

    # --- jobs: outputs and storage --------------------------------------------------------------
    output_s3_uri: str = _setting("", "Default output location, `s3://bucket/prefix`. Empty: inline outputs.")
    bucket_endpoint_url: str = _setting("", "S3-compatible endpoint URL (RunPod's variable name).")
    bucket_access_key_id: str = _setting("", "S3 access key id (RunPod's variable name).", secret=True)
    bucket_secret_access_key: str = _setting("", "S3 secret key (RunPod's variable name).", secret=True)
    s3_region: str = _setting("", "S3 region. Empty: the AWS chain (AWS_REGION, AWS_DEFAULT_REGION, ...).")
    s3_bucket_allowlist: str = _setting(
        "", "Comma-separated S3 buckets that job inputs and outputs (and OUTPUT_S3_URI) may use. Empty: any "
            "bucket the credentials reach.")
    presign_expires_s: int = _setting(3600, "Default lifetime of presigned output URLs, in seconds.")
    inline_output_max_bytes: int = _setting(
        7 * 1024**2, "Largest total size of outputs returned inline as base64, in bytes.")
    include_temp_outputs: bool = _setting(False, "Also return temp outputs (previews) by default.")
    refresh_worker: bool = _setting(False, "Ask RunPod for a fresh worker after every job.")
    progress_interval_s: float = _setting(0.5, "Least seconds between two progress updates sent to RunPod.")

    # --- throughput -----------------------------------------------------------------------------
    max_concurrent_jobs: int = _setting(
        2, "Jobs one worker takes at once (RunPod's concurrency_modifier): while one executes, the others fetch, "
           "convert, wait in ComfyUI's queue and upload. ComfyUI still executes one prompt at a time.")
    stream_outputs: bool = _setting(
        False, "Stream: the handler is a generator that yields each output as soon as it is delivered, then a "
               "final item (see README, Streaming). False: one dict result per job.")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config_path: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None) -> Config:
        """Defaults, then the JSON file (if any), then environment variables."""
        environ = os.environ if environ is None else environ
        if config_path is None and environ.get(CONFIG_PATH_ENV):
            config_path = environ[CONFIG_PATH_ENV]
        values: dict[str, Any] = {}
        if config_path is not None:
            values.update(_read_json_file(Path(config_path)))
        for spec in dataclasses.fields(cls):
            key = spec.name.upper()
            if key in environ:
                values[spec.name] = _coerce(environ[key], spec.type, source=f"environment variable {key}")
        return cls(**values)

    def __post_init__(self) -> None:
        positive = ("max_comfy_start_attempts", "convert_attempts", "conversion_cache_size", "input_max_bytes",
                    "max_job_payload_bytes", "max_job_inputs", "max_job_input_bytes", "presign_expires_s",
                    "model_cache_max_bytes", "max_concurrent_jobs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.upper()} must be at least 1, got {getattr(self, name)!r}",
                                  key=name.upper())
        non_negative = ("comfy_start_attempts_sleep", "kill_grace_s", "convert_timeout_s", "run_timeout_s",
                        "interrupt_grace_s", "http_timeout_s", "download_timeout_s", "inline_output_max_bytes",
                        "progress_interval_s", "frontend_load_timeout_s", "fetch_timeout_s", "page_recycle_conversions",
                        "queue_timeout_s")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.upper()} must not be negative, got {getattr(self, name)!r}",
                                  key=name.upper())
        if not 1 <= self.initial_port <= 65535:
            raise ConfigError(f"INITIAL_PORT must be a TCP port (1-65535), got {self.initial_port}",
                              key="INITIAL_PORT")
        if not self.command:
            raise ConfigError("API_COMMAND_LINE is empty; it must start ComfyUI", key="API_COMMAND_LINE")
        if self.presign_expires_s > MAX_PRESIGN_EXPIRES_S:
            raise ConfigError(f"PRESIGN_EXPIRES_S must be at most {MAX_PRESIGN_EXPIRES_S} (7 days, the SigV4 limit)",
                              key="PRESIGN_EXPIRES_S")

    # --- derived values -----------------------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return shlex.split(self.api_command_line) + shlex.split(self.comfy_extra_args)

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
        return [getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("secret") and getattr(self, f.name)]

    @classmethod
    def reference(cls) -> list[tuple[str, str, str]]:
        """(KEY, default, meaning) for every setting, as the README documents them."""
        rows = []
        for spec in dataclasses.fields(cls):
            default = "" if spec.metadata.get("secret") else spec.default
            rows.append((spec.name.upper(), json.dumps(default), spec.metadata["doc"]))
        return rows


def _read_json_file(path: Path) -> dict[str, Any]:
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
    types = {spec.name.upper(): spec for spec in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = types.get(key)
        if spec is None:
            known = ", ".join(sorted(types))
            raise ConfigError(f"config file {path}: unknown key {key!r} (known keys: {known})",
                              file=str(path), key=key)
        values[spec.name] = _check_json_type(value, spec.type, source=f"config file {path}", key=key)
    return values


_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _check_json_type(value: Any, type_name: Any, *, source: str, key: str) -> Any:
    expected = _TYPES[str(type_name)]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{source}: {key} must be {expected.__name__}, got a boolean", key=key)
    if not isinstance(value, expected):
        raise ConfigError(f"{source}: {key} must be {expected.__name__}, got {type(value).__name__} "
                          f"{value!r}", key=key)
    return value


def _coerce(text: str, type_name: Any, *, source: str) -> Any:
    expected = _TYPES[str(type_name)]
    key = source.rsplit(" ", 1)[-1]
    if expected is str:
        return text
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{source} must be true or false, got {text!r}", key=key)
    try:
        return expected(text)
    except ValueError:
        raise ConfigError(f"{source} must be {expected.__name__}, got {text!r}", key=key) from None
