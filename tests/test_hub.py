"""The RunPod Hub listing (.runpod/hub.json, .runpod/tests.json) says what the worker does.

The Hub builds the image from a release, runs tests.json's inputs on it, and
shows hub.json's variables to a deployer; a variable the worker does not know,
a default that is not the worker's, or a test input it refuses would all show
only there, after a release.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless.config import Config, setting_kinds, settings
from comfy_serverless.jobspec import parse_job_input
from tests.support.handler import REPO, post, serve_api, stop

HUB = json.loads((REPO / ".runpod" / "hub.json").read_text())
TESTS = json.loads((REPO / ".runpod" / "tests.json").read_text())
HUB_TYPES = {str: "string", int: "number", float: "number", bool: "boolean"}
#: The image, as measured when it was built here (issue 20): what containerDiskInGb must hold, with room.
IMAGE_GB = 9.9


def test_every_hub_variable_is_a_setting_with_its_type_and_default() -> None:
    kinds = setting_kinds(Config)
    declared = {spec.name.upper(): spec for spec in settings(Config)}
    for entry in HUB["config"]["env"]:
        key, shown = entry["key"], entry["input"]
        assert key in declared, f"hub.json lists {key}, which is not a setting"
        kind = kinds[key.lower()]
        assert not kind.optional, f"{key}: an unset optional setting has no Hub default"
        assert shown["type"] == HUB_TYPES[kind.type], key
        assert shown["default"] == declared[key].default, key
        assert shown.keys() >= {"name", "type", "description", "default", "advanced"}, key
    keys = [entry["key"] for entry in HUB["config"]["env"]]
    assert len(keys) == len(set(keys))
    assert {"BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "COMFY_ORG_API_KEY",
            "MAX_CONCURRENT_JOBS", "COMFY_LOG_LEVEL"} <= set(keys)


def test_the_listing_matches_the_image() -> None:
    assert {"title", "description", "type", "category", "config"} <= HUB.keys() and HUB["type"] == "serverless"
    config = HUB["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] == 1 and config["gpuIds"]
    assert config["containerDiskInGb"] >= 2 * IMAGE_GB  # the image, plus outputs, previews and a model cache
    lock = (REPO / "builder" / "requirements.lock").read_text()
    built = re.search(r"^nvidia-cuda-runtime-cu12==(\d+)\.(\d+)\.", lock, re.MULTILINE)
    assert built, "the lock pins torch's CUDA runtime"
    wheels_cuda = (int(built[1]), int(built[2]))
    for allowed in (config["allowedCudaVersions"], TESTS["config"]["allowedCudaVersions"]):
        assert allowed and all(tuple(map(int, version.split("."))) >= wheels_cuda for version in allowed), \
            f"torch's wheels need CUDA {wheels_cuda}; a host with an older driver cannot run them"


@pytest.mark.parametrize("test", TESTS["tests"], ids=lambda test: test["name"])
def test_each_hub_test_input_passes_the_job_schema(test: dict[str, Any]) -> None:
    assert test["timeout"] > 0
    parse_job_input(test["input"], Config())


def test_the_hub_tests_run_through_the_handler(comfy_root: Path) -> None:
    """What the Hub does with a build: each input through the handler, behind the SDK's API. They need no
    model, so they pass on any GPU, on CPU, and against the test server."""
    env = {entry["key"]: entry["value"] for entry in TESTS["config"]["env"]}
    process, port = serve_api(comfy_root, **env)
    try:
        answers = {test["name"]: post(f"http://127.0.0.1:{port}/runsync", {"input": test["input"]})
                   for test in TESTS["tests"]}
    finally:
        stop(process)
    for name, answer in answers.items():
        assert answer["status"] == "COMPLETED", (name, answer)
        (image,) = answer["output"]["images"]
        assert image["type"] == "base64" and image["data"], name
