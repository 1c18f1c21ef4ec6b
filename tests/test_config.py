"""Configuration: defaults, JSON file, environment overrides, and errors that name the file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_serverless import ConfigError
from comfy_serverless.config import Config


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
])
def test_environment_errors_name_the_variable(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Config.load(environ=environ)


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
