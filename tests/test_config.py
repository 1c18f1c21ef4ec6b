"""Configuration: defaults, JSON file, environment overrides, and errors that name the file and key."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from comfy_serverless import ConfigError
from comfy_serverless.config import Config, SettingKind, setting, setting_kinds, settings


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_defaults_cover_a_real_cold_boot() -> None:
    config = Config.load(environ={})
    assert config.start_budget_s >= 120  # custom nodes and model imports take minutes, not 10 s
    assert config.initial_port == 8188 and config.api_url == "127.0.0.1"
    assert Path(config.test_payload_file).is_file()


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, {"INITIAL_PORT": 9000, "CONVERT_TIMEOUT_S": 5, "COMFYUI_PATH": "/srv/comfy"})
    config = Config.load(path, environ={"INITIAL_PORT": "9100", "REFRESH_WORKER": "true"})
    assert config.initial_port == 9100  # the environment wins
    assert config.convert_timeout_s == 5.0 and isinstance(config.convert_timeout_s, float)
    assert config.working_directory == Path("/srv/comfy")
    assert config.refresh_worker is True


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, {"INITIAL_PORT": 9300})
    assert Config.load(environ={"COMFY_SERVERLESS_CONFIG": str(path)}).initial_port == 9300


@pytest.mark.parametrize("content,needle", [
    ({"NOT_A_KEY": 1}, "unknown key 'NOT_A_KEY'"),
    ({"INITIAL_PORT": "8188"}, "INITIAL_PORT must be int"),
    ({"REFRESH_WORKER": "yes"}, "REFRESH_WORKER must be bool"),
    ({"INITIAL_PORT": True}, "INITIAL_PORT must be int, got a boolean"),
    ("[1, 2]", "must hold a JSON object"),
    ("{not json", "is not valid JSON"),
])
def test_file_errors_name_the_file_and_key(tmp_path: Path, content: object, needle: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        Config.load(path, environ={})
    assert str(path) in str(caught.value) and needle in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "absent.json", environ={})


@pytest.mark.parametrize("environ,needle", [
    ({"INITIAL_PORT": "http"}, "environment variable INITIAL_PORT must be int"),
    ({"RUN_TIMEOUT_S": "soon"}, "environment variable RUN_TIMEOUT_S must be float"),
    ({"REFRESH_WORKER": "maybe"}, "environment variable REFRESH_WORKER must be true or false"),
    ({"INITIAL_PORT": "70000"}, "INITIAL_PORT must be a TCP port"),
    ({"CONVERT_ATTEMPTS": "0"}, "CONVERT_ATTEMPTS must be at least 1"),
    ({"RUN_TIMEOUT_S": "-1"}, "RUN_TIMEOUT_S must not be negative"),
    ({"API_COMMAND_LINE": "  "}, "API_COMMAND_LINE is empty"),
    ({"PRESIGN_EXPIRES_S": "604801"}, "PRESIGN_EXPIRES_S must be a lifetime in seconds within the 7 days SigV4 "
                                      r"allows \(1-604800\), got 604801"),
    ({"COMFY_EXTRA_ARGS": '--output-directory "/data/out'}, "COMFY_EXTRA_ARGS cannot be split like a shell would"),
])
def test_environment_errors_name_the_variable(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as caught:
        Config.load(environ=environ)
    assert caught.value.details["key"] == next(iter(environ))


BOUNDED = [spec for spec in settings(Config) if spec.metadata["minimum"] is not None]


@pytest.mark.parametrize("spec", BOUNDED, ids=lambda spec: spec.name.upper())
def test_every_bound_is_enforced_from_the_environment_and_the_file(tmp_path: Path,
                                                                   spec: dataclasses.Field[object]) -> None:
    key = spec.name.upper()
    too_low = spec.metadata["minimum"] - 1
    with pytest.raises(ConfigError, match=f"^{key} must .*, got {too_low}") as caught:
        Config.load(environ={key: str(too_low)})
    assert caught.value.details["key"] == key
    with pytest.raises(ConfigError, match=f"^{key} must "):
        Config.load(write(tmp_path, {key: too_low}), environ={})
    lowest = Config.load(environ={key: str(spec.metadata["minimum"])})
    assert getattr(lowest, spec.name) == spec.metadata["minimum"]


@pytest.mark.parametrize("key,highest", [("INITIAL_PORT", 65535), ("PRESIGN_EXPIRES_S", 7 * 24 * 3600)])
def test_upper_bounds(key: str, highest: int) -> None:
    assert getattr(Config.load(environ={key: str(highest)}), key.lower()) == highest
    with pytest.raises(ConfigError, match=f"^{key} must be .*, got {highest + 1}$"):
        Config.load(environ={key: str(highest + 1)})


def test_secrets_are_not_in_repr() -> None:
    config = Config.load(environ={"BUCKET_SECRET_ACCESS_KEY": "s3cr3t-value", "BUCKET_ACCESS_KEY_ID": "AKIDVALUE"})
    assert "s3cr3t-value" not in repr(config) and "AKIDVALUE" not in repr(config)
    assert set(config.secrets()) == {"s3cr3t-value", "AKIDVALUE"}


def test_comfy_folders_follow_directory_flags(tmp_path: Path) -> None:
    from comfy_serverless.folders import ComfyFolders
    config = Config.load(environ={"COMFYUI_PATH": str(tmp_path),
                                  "COMFY_EXTRA_ARGS": "--output-directory /data/out --temp-directory /scratch"})
    folders = ComfyFolders.from_config(config)
    assert folders.input == tmp_path.resolve() / "input"
    assert folders.output == Path("/data/out") and folders.temp == Path("/scratch/temp")


def test_reference_lists_every_key() -> None:
    keys = [row[0] for row in Config.reference()]
    assert {"API_COMMAND_LINE", "API_WORKING_DIRECTORY", "API_URL", "INITIAL_PORT", "TEST_PAYLOAD_FILE",
            "MAX_COMFY_START_ATTEMPTS", "COMFY_START_ATTEMPTS_SLEEP", "COMFYUI_PATH"} <= set(keys)
    secret_rows = [row for row in Config.reference() if row[0] == "BUCKET_SECRET_ACCESS_KEY"]
    assert secret_rows[0][1] == '""'


# --- types: from resolved annotations, optional settings included ----------------------------------

@pytest.mark.parametrize("hint,kind", [
    (int, SettingKind(int)),
    (str, SettingKind(str)),
    (int | None, SettingKind(int, optional=True)),
    (str | None, SettingKind(str, optional=True)),
    (None | float, SettingKind(float, optional=True)),
])
def test_setting_kind_of_an_annotation(hint: object, kind: SettingKind) -> None:
    assert SettingKind.of(hint) == kind


@pytest.mark.parametrize("hint", [list[str], int | str, dict, type(None)])
def test_unsupported_setting_types_are_refused(hint: object) -> None:
    with pytest.raises(TypeError, match="a setting is str, int, float or bool"):
        SettingKind.of(hint)


def test_every_setting_of_config_has_a_kind() -> None:
    kinds = setting_kinds(Config)
    assert list(kinds) == [spec.name for spec in settings(Config)]
    assert kinds["initial_port"] == SettingKind(int) and kinds["refresh_worker"] == SettingKind(bool)
    assert kinds["run_timeout_s"] == SettingKind(float) and kinds["url_allowlist"] == SettingKind(str)


@dataclasses.dataclass(frozen=True)
class WithOptional(Config):
    """Config plus two optional settings of kinds no real setting has (an optional int bounded below, a str)."""

    seed: int | None = setting(None, "A seed. Unset: random.", minimum=0)
    label: str | None = setting(None, "A label. Unset: none.")


def test_optional_settings_load_from_the_environment_and_the_file(tmp_path: Path) -> None:
    assert WithOptional.load(environ={}).seed is None
    assert WithOptional.load(environ={"SEED": "7", "LABEL": "night"}) == WithOptional(seed=7, label="night")
    assert WithOptional.load(environ={"SEED": " ", "LABEL": ""}) == WithOptional()
    from_file = WithOptional.load(write(tmp_path, {"SEED": 3, "LABEL": None, "INITIAL_PORT": 9000}), environ={})
    assert (from_file.seed, from_file.label, from_file.initial_port) == (3, None, 9000)
    assert WithOptional.load(write(tmp_path, {"SEED": None}), environ={"SEED": "5"}).seed == 5


@pytest.mark.parametrize("environ,content,needle", [
    ({"SEED": "soon"}, None, "environment variable SEED must be int, got 'soon'"),
    ({"SEED": "-1"}, None, "SEED must not be negative, got -1"),
    ({}, {"SEED": "3"}, "SEED must be int or null, got str '3'"),
    ({}, {"INITIAL_PORT": None}, "INITIAL_PORT must be int, got NoneType None"),
])
def test_optional_setting_errors_name_the_key(tmp_path: Path, environ: dict[str, str], content: object,
                                              needle: str) -> None:
    path = None if content is None else write(tmp_path, content)
    with pytest.raises(ConfigError, match=needle):
        WithOptional.load(path, environ=environ)


# --- values parsed once, at load --------------------------------------------------------------------

def test_url_allowlist_is_parsed_at_load() -> None:
    allowlist = Config.load(environ={"URL_ALLOWLIST": "Files.Example.COM., 10.0.0.0/8, [fd00::1]"}).parsed_url_allowlist
    assert allowlist.covers("files.example.com", ipaddress.ip_address("192.168.1.1"))
    assert allowlist.covers("elsewhere", ipaddress.ip_address("10.2.3.4"))
    assert allowlist.covers("elsewhere", ipaddress.ip_address("::ffff:10.2.3.4"))  # the IPv4 inside counts
    assert allowlist.covers("elsewhere", ipaddress.ip_address("fd00::1"))
    assert not allowlist.covers("elsewhere", ipaddress.ip_address("11.0.0.1"))
    assert Config.load(environ={}).parsed_url_allowlist.covers("localhost", ipaddress.ip_address("127.0.0.1")) is False


@pytest.mark.parametrize("entry", ["10.0.0.0/99", "not/a/cidr", "fe80::zz"])
def test_bad_url_allowlist_entry_stops_the_load(tmp_path: Path, entry: str) -> None:
    needle = f"URL_ALLOWLIST entry '{entry}' is not a host name, IP address or CIDR"
    with pytest.raises(ConfigError) as caught:
        Config.load(environ={"URL_ALLOWLIST": f"example.com, {entry}"})
    assert str(caught.value) == needle and caught.value.details["key"] == "URL_ALLOWLIST"
    with pytest.raises(ConfigError, match=needle):
        Config.load(write(tmp_path, {"URL_ALLOWLIST": entry}), environ={})


def test_command_joins_both_settings_as_a_shell_splits_them() -> None:
    config = Config.load(environ={"API_COMMAND_LINE": "'/opt/comfy venv/bin/python' main.py",
                                  "COMFY_EXTRA_ARGS": "--preview-method 'auto'"})
    assert config.command == ["/opt/comfy venv/bin/python", "main.py", "--preview-method", "auto"]


# --- worker-comfyui's variables -----------------------------------------------------------------------

@pytest.mark.parametrize("environ,expected", [
    ({}, (5.0, 0.2)),
    ({"WEBSOCKET_RECONNECT_ATTEMPTS": "5", "WEBSOCKET_RECONNECT_DELAY_S": "3"}, (15.0, 3.0)),  # its template's
    ({"WEBSOCKET_RECONNECT_ATTEMPTS": "4"}, (12.0, 3.0)),  # its default delay for the other
    ({"WEBSOCKET_RECONNECT_DELAY_S": "0.5"}, (2.5, 0.5)),
    ({"WEBSOCKET_RECONNECT_BUDGET_S": "8"}, (8.0, 0.2)),
    ({"WEBSOCKET_RECONNECT_BUDGET_S": "8", "WEBSOCKET_RECONNECT_ATTEMPTS": "5",
      "WEBSOCKET_RECONNECT_DELAY_S": "3"}, (8.0, 3.0)),  # ours wins over theirs for the budget
])
def test_reconnect_settings_map_onto_one_budget(environ: dict[str, str], expected: tuple[float, float]) -> None:
    assert Config.load(environ=environ).reconnect == expected


def test_comfy_log_level_is_comfyuis_verbose_flag() -> None:
    config = Config.load(environ={"COMFY_LOG_LEVEL": "debug", "COMFY_EXTRA_ARGS": "--preview-method auto"})
    assert config.command == ["python", "main.py", "--verbose", "DEBUG", "--preview-method", "auto"]
    assert "--verbose" not in Config.load(environ={}).command
    with pytest.raises(ConfigError, match="COMFY_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
                                          "got 'LOUD'"):
        Config.load(environ={"COMFY_LOG_LEVEL": "LOUD"})


def test_bucket_variables_alone_send_outputs_the_rp_upload_way() -> None:
    bucket = {"BUCKET_ENDPOINT_URL": "https://s3.example.com", "BUCKET_ACCESS_KEY_ID": "AKIAEXAMPLE",
              "BUCKET_SECRET_ACCESS_KEY": "secret-example-0123456789"}
    month = Config.load(environ=bucket)
    assert month.month_bucket_outputs and month.default_expires_s(month_bucket=True) == 604800
    assert month.default_expires_s(month_bucket=False) == 3600  # a job that names its own destination
    assert Config.load(environ=bucket | {"PRESIGN_EXPIRES_S": "60"}).default_expires_s(month_bucket=True) == 60
    for other in ({"OUTPUT_S3_URI": "s3://mine/out"}, {"INLINE_OUTPUTS": "true"}):
        assert not Config.load(environ=bucket | other).month_bucket_outputs
    assert not Config.load(environ={"BUCKET_ACCESS_KEY_ID": "AKIAEXAMPLE",  # AWS: rp_upload needs the endpoint
                                    "BUCKET_SECRET_ACCESS_KEY": "secret-example-0123456789"}).month_bucket_outputs
    with pytest.raises(ConfigError, match="OUTPUT_S3_URI and INLINE_OUTPUTS are both set"):
        Config.load(environ=bucket | {"OUTPUT_S3_URI": "s3://mine/out", "INLINE_OUTPUTS": "true"})
