"""The job input schema: every problem reported at once with its field path, and nothing else ever raised."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfy_serverless import jobspec
from comfy_serverless.config import Config
from comfy_serverless.errors import JobInputError
from comfy_serverless.jobspec import InputSpec, JobSpec, OutputSpec, parse_job_input
from comfy_serverless.problems import MAX_PROBLEMS
from tests.support.jobs import API_WORKFLOW

CONFIG = Config()
UI_WORKFLOW = {"last_node_id": 1, "last_link_id": 0, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": [],
               "version": 0.4}
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
#: Every problem starts with a field path: input, input.x, input.x[3], input.x['y'] ...
PATH_RE = re.compile(r"^input(?:\.[a-z_0-9]+|\[\d+\]|\[(?:'.*'|\".*\")\])*: ")
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def payload(**fields: Any) -> dict[str, Any]:
    """A valid API-format job input with ``fields`` added or replaced."""
    return {"workflow": API_WORKFLOW, **fields}


def problems_of(raw: object, config: Config = CONFIG) -> list[str]:
    with pytest.raises(JobInputError) as caught:
        parse_job_input(raw, config)
    problems = caught.value.problems
    assert problems, "a JobInputError must list its problems"
    for problem in problems:
        assert PATH_RE.match(problem), f"problem does not start with a field path: {problem!r}"
    return problems


def assert_problem(problems: list[str], path: str, fragment: str = "") -> None:
    matching = [p for p in problems if p.startswith(f"{path}: ") and fragment in p]
    assert matching, f"no problem for {path} containing {fragment!r} in {problems}"


# --- invalid payloads ---------------------------------------------------------------------------

INVALID = [
    pytest.param(None, "input", "must be a JSON object", id="null"),
    pytest.param([API_WORKFLOW], "input", "must be a JSON object", id="list"),
    pytest.param(42, "input", "must be a JSON object", id="number"),
    pytest.param('["a", "b"]', "input", "must be a JSON object", id="json-string-of-list"),
    pytest.param("{not json", "input", "not valid JSON", id="bad-json-string"),
    pytest.param({}, "input.workflow", "is required", id="missing-workflow"),
    pytest.param({"workflow": None}, "input.workflow", "is required", id="null-workflow"),
    pytest.param(payload(workflow="{oops"), "input.workflow", "not valid JSON", id="workflow-bad-json"),
    pytest.param(payload(workflow="[1, 2]"), "input.workflow", "must be a JSON object", id="workflow-json-list"),
    pytest.param(payload(workflow=7), "input.workflow", "must be a JSON object", id="workflow-number"),
    pytest.param(payload(workflow={"a": 1}), "input.workflow", "neither UI format", id="workflow-neither"),
    pytest.param(payload(workflow={}), "input.workflow", "empty", id="workflow-empty"),
    pytest.param(payload(inputs={"source": "s3://b/k"}), "input.inputs", "must be a list", id="inputs-not-list"),
    pytest.param(payload(inputs=["s3://bucket/k"]), "input.inputs[0]", "must be an object", id="input-not-object"),
    pytest.param(payload(inputs=[{}]), "input.inputs[0].source", "is required", id="source-missing"),
    pytest.param(payload(inputs=[{"source": 5}]), "input.inputs[0].source", "must be a string", id="source-number"),
    pytest.param(payload(inputs=[{"source": "file:///etc/passwd"}]), "input.inputs[0].source",
                 "must start with s3://, https://, http://, data: or hf://", id="file-scheme"),
    pytest.param(payload(inputs=[{"source": "ftp://host/x.png"}]), "input.inputs[0].source", "'ftp'",
                 id="ftp-scheme"),
    pytest.param(payload(inputs=[{"source": "gopher://host/x"}]), "input.inputs[0].source", "'gopher'",
                 id="gopher-scheme"),
    pytest.param(payload(inputs=[{"source": "host.com/x.png"}]), "input.inputs[0].source", "no scheme",
                 id="no-scheme"),
    pytest.param(payload(inputs=[{"source": "/abs/x.png"}]), "input.inputs[0].source", "no scheme",
                 id="bare-path"),
    pytest.param(payload(inputs=[{"source": "s3://"}]), "input.inputs[0].source", "bucket", id="s3-empty"),
    pytest.param(payload(inputs=[{"source": "s3:///key"}]), "input.inputs[0].source", "bucket", id="s3-no-bucket"),
    pytest.param(payload(inputs=[{"source": "s3://Bad_Bucket/k"}]), "input.inputs[0].source", "bucket",
                 id="s3-bad-bucket"),
    pytest.param(payload(inputs=[{"source": "s3://bucket"}]), "input.inputs[0].source", "key", id="s3-no-key"),
    pytest.param(payload(inputs=[{"source": "https:///x.png"}]), "input.inputs[0].source", "no host",
                 id="url-no-host"),
    pytest.param(payload(inputs=[{"source": "http:x.png"}]), "input.inputs[0].source", "no host",
                 id="url-no-slashes"),
    pytest.param(payload(inputs=[{"source": "https://[::1/x.png"}]), "input.inputs[0].source", "not a valid URL",
                 id="url-bad-ipv6"),
    pytest.param(payload(inputs=[{"source": "https://h:99999/x.png"}]), "input.inputs[0].source",
                 "not a valid URL", id="url-bad-port"),
    pytest.param(payload(inputs=[{"source": "https://h/a b.png"}]), "input.inputs[0].source", "whitespace",
                 id="url-space"),
    pytest.param(payload(inputs=[{"source": "https://h/" + "a" * 9000}]), "input.inputs[0].source", "longer than",
                 id="url-too-long"),
    pytest.param(payload(inputs=[{"source": "data:image/png,rawbytes"}]), "input.inputs[0].source",
                 "data:<mime>;base64,<data>", id="data-not-base64"),
    pytest.param(payload(inputs=[{"source": "data:;base64,aGk="}]), "input.inputs[0].source",
                 "data:<mime>;base64,<data>", id="data-no-mime"),
    pytest.param(payload(inputs=[{"source": "data:image/png;base64,a*b="}]), "input.inputs[0].source",
                 "not valid base64", id="data-bad-alphabet"),
    pytest.param(payload(inputs=[{"source": "data:image/png;base64,abc"}]), "input.inputs[0].source",
                 "not valid base64", id="data-bad-padding"),
    pytest.param(payload(inputs=[{"source": "data:image/png;base64,"}]), "input.inputs[0].source", "no data",
                 id="data-empty"),
    pytest.param(payload(inputs=[{"source": "https://h/"}]), "input.inputs[0].name", "derived", id="no-derivable"),
    pytest.param(payload(inputs=[{"source": "https://h/%2E%2E"}]), "input.inputs[0].name", "derived from the source",
                 id="derived-dotdot"),
    pytest.param(payload(inputs=[{"source": "https://h/a%2Fb.png"}]), "input.inputs[0].name", "plain file name",
                 id="derived-slash"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "../x.png"}]), "input.inputs[0].name", "'..'",
                 id="name-dotdot"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "/etc/x"}]), "input.inputs[0].name",
                 "absolute", id="name-absolute"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "a\x00.png"}]), "input.inputs[0].name", "NUL",
                 id="name-nul"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "a\\b.png"}]), "input.inputs[0].name", "'\\'",
                 id="name-backslash"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "a/b.png"}]), "input.inputs[0].name",
                 "plain file name", id="name-nested"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": ""}]), "input.inputs[0].name", "empty",
                 id="name-empty"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": 3}]), "input.inputs[0].name",
                 "must be a string", id="name-number"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "name": "a\ud800.png"}]), "input.inputs[0].name",
                 "Unicode", id="name-surrogate"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "subfolder": "a/../../x"}]),
                 "input.inputs[0].subfolder", "'..'", id="subfolder-dotdot"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "subfolder": "/abs"}]), "input.inputs[0].subfolder",
                 "absolute", id="subfolder-absolute"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "subfolder": "a\x00"}]), "input.inputs[0].subfolder",
                 "NUL", id="subfolder-nul"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "subfolder": "a\\b"}]), "input.inputs[0].subfolder",
                 "'\\'", id="subfolder-backslash"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "folder_type": "models"}]),
                 "input.inputs[0].subfolder", "folder_type is 'models'", id="models-no-subfolder"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k.png", "cache": "yes"}]),
                 "input.inputs[0].cache", "must be a boolean", id="cache-not-boolean"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k.png", "sha256": "abc"}]),
                 "input.inputs[0].sha256", "must be a SHA-256 of 64 hex digits", id="sha256-short"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k.png", "sha256": "g" * 64}]),
                 "input.inputs[0].sha256", "must be a SHA-256 of 64 hex digits", id="sha256-not-hex"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k.png", "sha256": 5}]),
                 "input.inputs[0].sha256", "must be a SHA-256 of 64 hex digits", id="sha256-not-string"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "folder_type": "checkpoints"}]),
                 "input.inputs[0].folder_type", "input, output, temp, models", id="bad-folder-type"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/k", "url": "x"}]), "input.inputs[0]", "unknown key 'url'",
                 id="input-unknown-key"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/a.png"}, {"source": "https://h/a.png"}]),
                 "input.inputs[1].name", "input.inputs[0]", id="duplicate-inputs"),
    pytest.param(payload(inputs=[{"source": "s3://bucket/a.png"}], images=[{"name": "a.png", "image": PNG_B64}]),
                 "input.images[0].name", "input.inputs[0]", id="duplicate-input-image"),
    pytest.param(payload(images={"name": "a.png"}), "input.images", "must be a list", id="images-not-list"),
    pytest.param(payload(images=["a.png"]), "input.images[0]", "must be an object", id="image-not-object"),
    pytest.param(payload(images=[{"image": PNG_B64}]), "input.images[0].name", "is required", id="image-no-name"),
    pytest.param(payload(images=[{"name": "a.png"}]), "input.images[0].image", "is required", id="image-no-data"),
    pytest.param(payload(images=[{"name": "a.png", "image": "not base64!"}]), "input.images[0].image",
                 "not valid base64", id="image-not-base64"),
    pytest.param(payload(images=[{"name": "a.png", "image": "data:image/png;base64,%%%"}]), "input.images[0].image",
                 "not valid base64", id="image-prefixed-not-base64"),
    pytest.param(payload(images=[{"name": "a.png", "image": 12}]), "input.images[0].image", "base64 string",
                 id="image-number"),
    pytest.param(payload(images=[{"name": "../a.png", "image": PNG_B64}]), "input.images[0].name", "'..'",
                 id="image-name-dotdot"),
    pytest.param(payload(images=[{"name": "a.png", "image": PNG_B64, "type": "png"}]), "input.images[0]",
                 "unknown key 'type'", id="image-unknown-key"),
    pytest.param(payload(overrides=[1]), "input.overrides", "must be an object", id="overrides-list"),
    pytest.param(payload(overrides={"3": {}}), "input.overrides['3']", "must not be empty", id="overrides-empty"),
    pytest.param(payload(overrides={"3": 5}), "input.overrides['3']", "must be an object", id="overrides-scalar"),
    pytest.param(payload(overrides={"": {"seed": 1}}), "input.overrides['']", "non-empty strings",
                 id="overrides-empty-key"),
    pytest.param(payload(overrides={"3": {"": 1}}), "input.overrides['3']", "input names", id="overrides-empty-input"),
    pytest.param(payload(output="s3://bucket/p"), "input.output", "must be an object", id="output-string"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "inline": True}), "input.output", "not both",
                 id="output-both"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "expires_s": 0}), "input.output.expires_s",
                 "at least 1", id="expires-zero"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "expires_s": 604801}), "input.output.expires_s",
                 "at most 604800", id="expires-too-long"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "expires_s": 60.5}), "input.output.expires_s",
                 "integer", id="expires-float"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "expires_s": True}), "input.output.expires_s",
                 "integer", id="expires-bool"),
    pytest.param(payload(output={"s3_uri": "s3://bucket/p", "presign": "yes"}), "input.output.presign",
                 "boolean, got 'yes'", id="presign-string"),
    pytest.param(payload(output={"s3_uri": "http://x"}), "input.output.s3_uri", "s3://", id="output-not-s3"),
    pytest.param(payload(output={"s3_uri": "s3://Bad_Bucket"}), "input.output.s3_uri", "bucket",
                 id="output-bad-bucket"),
    pytest.param(payload(output={"inline": True, "presign": False}), "input.output.presign", "only applies",
                 id="inline-presign"),
    pytest.param(payload(output={"inline": "true"}), "input.output.inline", "boolean", id="inline-string"),
    pytest.param(payload(output={"s3uri": "s3://bucket/p"}), "input.output", "did you mean 's3_uri'",
                 id="output-unknown-key"),
    pytest.param(payload(timeout_s=-1), "input.timeout_s", "more than 0", id="timeout-negative"),
    pytest.param(payload(timeout_s=0), "input.timeout_s", "more than 0", id="timeout-zero"),
    pytest.param(payload(timeout_s=86401), "input.timeout_s", "at most 86400", id="timeout-too-long"),
    pytest.param(payload(timeout_s=float("nan")), "input.timeout_s", "more than 0", id="timeout-nan"),
    pytest.param(payload(timeout_s=float("inf")), "input.timeout_s", "at most", id="timeout-inf"),
    pytest.param(payload(timeout_s=10**400), "input.timeout_s", "at most", id="timeout-huge-int"),
    pytest.param(payload(timeout_s=True), "input.timeout_s", "must be a number", id="timeout-bool"),
    pytest.param(payload(timeout_s="60"), "input.timeout_s", "must be a number", id="timeout-string"),
    pytest.param(payload(comfy_org_api_key=123), "input.comfy_org_api_key", "must be a string", id="api-key-number"),
    pytest.param(payload(worklfow=API_WORKFLOW), "input", "did you mean 'workflow'", id="unknown-top-level"),
    pytest.param(payload(seed=1), "input", "unknown key 'seed'", id="unknown-top-level-no-hint"),
]


@pytest.mark.parametrize(("raw", "path", "fragment"), INVALID)
def test_invalid_payloads_name_the_field(raw: object, path: str, fragment: str) -> None:
    assert_problem(problems_of(raw), path, fragment)


def test_every_problem_is_reported_together() -> None:
    raw = {
        "workflw": API_WORKFLOW,
        "inputs": [{"source": "ftp://h/x"}, {"source": "s3://bucket/m", "folder_type": "models"}, 7],
        "images": [{"name": "../a.png", "image": "!!"}],
        "output": {"inline": True, "s3_uri": "s3://bucket"},
        "timeout_s": 0,
    }
    problems = problems_of(raw)
    expected = ["input", "input.workflow", "input.inputs[0].source", "input.inputs[1].subfolder", "input.inputs[2]",
                "input.images[0].name", "input.images[0].image", "input.output", "input.timeout_s"]
    for path in expected:
        assert_problem(problems, path)
    assert len(problems) == len(expected)


def test_oversized_payload_is_refused_before_validation() -> None:
    small = Config(max_job_payload_bytes=1000)
    raw = {"workflow": "not even checked", "images": [{"name": "a.png", "image": "A" * 2000}]}
    problems = problems_of(raw, small)
    assert len(problems) == 1, "the workflow must not be looked at"
    assert_problem(problems, "input", "MAX_JOB_PAYLOAD_BYTES")
    assert_problem(problems_of(json.dumps(raw), small), "input", "more than the limit of 1000")


def test_problems_never_echo_huge_values() -> None:
    huge = "x" * 100_000
    problems = problems_of(payload(**{huge: 1}, inputs=[{"source": "s3://bucket/k", "folder_type": huge,
                                                         "name": huge + "/.."}],
                                   output={"s3_uri": "s3://" + huge}))
    assert len(problems) == 4
    assert all(len(p) <= 500 for p in problems), problems


def test_secrets_are_never_echoed() -> None:
    problems = problems_of(payload(comfy_org_api_key=["sk-secret-key"],
                                   inputs=[{"source": "https://user:hunter2@h/x.png"},
                                           {"source": "ftp://user:hunter2@h/x.png"}]))
    assert_problem(problems, "input.inputs[0].source", "credentials")
    text = str(JobInputError(problems))
    assert "hunter2" not in text and "sk-secret-key" not in text


def test_problem_count_is_capped() -> None:
    problems = problems_of(payload(inputs=[{"source": "ftp://h/x"}] * (MAX_PROBLEMS + 50)))
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == "input: 50 more problems not listed"


# --- valid payloads -----------------------------------------------------------------------------

def test_ui_workflow_dict_with_defaults() -> None:
    spec = parse_job_input({"workflow": UI_WORKFLOW}, CONFIG)
    assert spec == JobSpec(workflow=UI_WORKFLOW, workflow_format="ui", inputs=(), overrides={},
                           output=OutputSpec("default", "", True, 3600, False),
                           timeout_s=None, comfy_org_api_key=None)


def test_api_workflow_as_json_string_and_input_as_json_string() -> None:
    spec = parse_job_input(json.dumps({"workflow": json.dumps(API_WORKFLOW), "timeout_s": 30}), CONFIG)
    assert (spec.workflow, spec.workflow_format, spec.timeout_s) == (API_WORKFLOW, "api", 30.0)


def test_worker_comfyui_payload() -> None:
    raw = {"workflow": API_WORKFLOW, "comfy_org_api_key": "key",
           "images": [{"name": "a.png", "image": PNG_B64},
                      {"name": "b.png", "image": f"data:image/png;base64,{PNG_B64[:20]}\n{PNG_B64[20:]}"}]}
    spec = parse_job_input(raw, CONFIG)
    assert spec.inputs == (InputSpec(PNG_B64, "a.png", "input", "", "input.images[0]", "base64"),
                           InputSpec(PNG_B64, "b.png", "input", "", "input.images[1]", "base64"))
    assert spec.comfy_org_api_key == "key"


def test_nulls_mean_absent() -> None:
    spec = parse_job_input(payload(images=None, inputs=None, overrides=None, output=None, timeout_s=None,
                                   comfy_org_api_key=None), CONFIG)
    assert (spec.inputs, spec.overrides, spec.output.mode, spec.timeout_s) == ((), {}, "default", None)


def test_sources_and_derived_names() -> None:
    raw = payload(inputs=[
        {"source": f"data:image/webp;base64,{PNG_B64}"},
        {"source": f"data:image/jpeg;name=x.jpg;base64,{PNG_B64}"},
        {"source": f"data:application/vnd.custom-thing;base64,{PNG_B64}"},
        {"source": "https://example.com/dir/my%20image.png?X-Amz-Signature=abc#frag"},
        {"source": "http://10.0.0.1:8080/a.png"},
        {"source": "s3://my-bucket/models/lora.safetensors", "folder_type": "models", "subfolder": "loras/./sdxl/"},
        {"source": "s3://my-bucket/k", "name": "./renamed.png", "folder_type": "temp", "subfolder": ""},
    ])
    spec = parse_job_input(raw, CONFIG)
    assert [(i.kind, i.name, i.folder_type, i.subfolder) for i in spec.inputs] == [
        ("base64", "input_0.webp", "input", ""),
        ("base64", "input_1.jpg", "input", ""),
        ("base64", "input_2.bin", "input", ""),
        ("url", "my image.png", "input", ""),
        ("url", "a.png", "input", ""),
        ("s3", "lora.safetensors", "models", "loras/sdxl"),
        ("s3", "renamed.png", "temp", ""),
    ]
    assert spec.inputs[0].source == PNG_B64
    assert spec.inputs[3].source == "https://example.com/dir/my%20image.png?X-Amz-Signature=abc#frag"
    assert [i.field for i in spec.inputs] == [f"input.inputs[{n}]" for n in range(7)]


def test_models_are_cached_by_default_and_any_input_may_choose() -> None:
    digest = "AB" * 32
    spec = parse_job_input(payload(inputs=[
        {"source": "s3://bucket/m.safetensors", "folder_type": "models", "subfolder": "loras"},
        {"source": "s3://bucket/n.safetensors", "folder_type": "models", "subfolder": "loras", "cache": False},
        {"source": "s3://bucket/a.png"},
        {"source": "s3://bucket/b.png", "cache": True, "sha256": digest}]), CONFIG)
    assert [(i.cache, i.sha256) for i in spec.inputs] == [(True, ""), (False, ""), (False, ""),
                                                          (True, digest.lower())]


def test_same_name_in_different_folders_is_allowed() -> None:
    spec = parse_job_input(payload(inputs=[{"source": "s3://bucket/a.png"},
                                           {"source": "s3://bucket/a.png", "subfolder": "x"},
                                           {"source": "s3://bucket/a.png", "folder_type": "temp"}]), CONFIG)
    assert len(spec.inputs) == 3


def test_overrides_are_kept() -> None:
    overrides = {"3": {"seed": 5, "cfg": 7.5}, "Positive Prompt": {"text": "a cat", "extra": [1, {"a": None}]}}
    assert parse_job_input(payload(overrides=overrides), CONFIG).overrides == overrides


@pytest.mark.parametrize(("output", "expected"), [
    ({"s3_uri": "s3://bucket/prefix/"}, OutputSpec("s3", "s3://bucket/prefix", True, 60, True)),
    ({"s3_uri": "s3://bucket", "presign": False, "expires_s": 604800, "include_temp": False},
     OutputSpec("s3", "s3://bucket", False, 604800, False)),
    ({"inline": True}, OutputSpec("inline", "", True, 60, True)),
    ({"inline": False, "include_temp": False}, OutputSpec("default", "", True, 60, False)),
    ({"expires_s": 120}, OutputSpec("default", "", True, 120, True)),
    ({}, OutputSpec("default", "", True, 60, True)),
])
def test_output_forms_and_config_defaults(output: dict[str, Any], expected: OutputSpec) -> None:
    config = Config(presign_expires_s=60, include_temp_outputs=True)
    assert parse_job_input(payload(output=output), config).output == expected


# --- properties ---------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates and controls included
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text
    | st.sampled_from(["s3://bucket/k", "https://h/x.png", "data:image/png;base64,aGk=", "models", "..", "/a"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)
FIELD_PATHS: list[tuple[str | int, ...]] = [
    ("workflow",), ("inputs",), ("inputs", 0), ("inputs", 0, "source"), ("inputs", 0, "name"),
    ("inputs", 0, "folder_type"), ("inputs", 0, "subfolder"), ("images",), ("images", 0), ("images", 0, "name"),
    ("images", 0, "image"), ("overrides",), ("overrides", "3"), ("overrides", "3", "seed"), ("output",),
    ("output", "s3_uri"), ("output", "inline"), ("output", "presign"), ("output", "expires_s"),
    ("output", "include_temp"), ("timeout_s",), ("comfy_org_api_key",),
]


def parse_or_reject(raw: object) -> JobSpec | None:
    """The property: a JobSpec or a JobInputError with path-prefixed problems, never anything else."""
    try:
        return parse_job_input(raw, CONFIG)
    except JobInputError as exc:
        assert exc.problems and all(PATH_RE.match(p) for p in exc.problems), exc.problems
        return None


def with_value_at(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    raw: dict[str, Any] = payload(inputs=[{"source": "s3://bucket/a.png"}], images=[{"name": "b", "image": "aGk="}],
                                  overrides={"3": {"seed": 1}}, output={"s3_uri": "s3://bucket/p"}, timeout_s=5)
    raw = json.loads(json.dumps(raw))
    container: Any = raw
    for key in path[:-1]:
        container = container[key]
    container[path[-1]] = value
    return raw


@PROPERTY_SETTINGS
@given(raw=json_like | json_like.map(json.dumps)
       | st.dictionaries(st.sampled_from(["workflow", "inputs", "images", "overrides", "output", "timeout_s",
                                          "comfy_org_api_key"]), json_like))
def test_any_json_value_as_the_input_parses_or_is_rejected(raw: object) -> None:
    parse_or_reject(raw)


@PROPERTY_SETTINGS
@given(path=st.sampled_from(FIELD_PATHS), value=json_like)
def test_any_json_value_in_any_field_parses_or_is_rejected(path: tuple[str | int, ...], value: object) -> None:
    parse_or_reject(with_value_at(path, value))


file_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_. ()-]{0,40}", fullmatch=True)
subfolders = st.lists(file_names, min_size=1, max_size=3).map("/".join)


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``inputs`` and ``images`` entries with unique names, each written in full (nothing left to defaults)."""
    names = draw(st.lists(file_names, unique=True, max_size=8))
    split = draw(st.integers(0, len(names)))
    inputs = []
    for name in names[:split]:
        folder_type = draw(st.sampled_from(["input", "output", "temp", "models"]))
        subfolder = draw(subfolders) if folder_type == "models" else draw(st.just("") | subfolders)
        source = draw(st.sampled_from(["s3://my.bucket-1/a/b.bin", "https://example.com/x?y=1",
                                       f"data:image/png;base64,{PNG_B64}"]))
        inputs.append({"source": source, "name": name, "folder_type": folder_type, "subfolder": subfolder})
    images = [{"name": name, "image": base64.b64encode(draw(st.binary(min_size=1, max_size=30))).decode()}
              for name in names[split:]]
    return inputs, images


@PROPERTY_SETTINGS
@given(entries=valid_inputs(),
       timeout_s=st.none() | st.integers(1, 86400) | st.floats(0, 86400, exclude_min=True),
       as_string=st.booleans())
def test_valid_payloads_parse_and_round_trip(entries: tuple[list[dict[str, Any]], list[dict[str, Any]]],
                                             timeout_s: float | None, as_string: bool) -> None:
    inputs, images = entries
    raw = payload(inputs=inputs, images=images, timeout_s=timeout_s)
    spec = parse_job_input(json.dumps(raw) if as_string else raw, CONFIG)
    expected = ([(i["name"], i["folder_type"], i["subfolder"]) for i in inputs]
                + [(i["name"], "input", "") for i in images])
    assert [(i.name, i.folder_type, i.subfolder) for i in spec.inputs] == expected
    assert [i.source for i in spec.inputs[len(inputs):]] == [i["image"] for i in images]
    assert spec.timeout_s == (None if timeout_s is None else float(timeout_s))


unsafe_paths = (
    st.tuples(st.lists(file_names, max_size=3), st.lists(file_names, max_size=3))
    .map(lambda parts: "/".join([*parts[0], "..", *parts[1]]))
    | file_names.map(lambda name: "/" + name)
)


@PROPERTY_SETTINGS
@given(unsafe=unsafe_paths, where=st.sampled_from(["inputs.name", "inputs.subfolder", "images.name"]))
def test_dotdot_segments_and_absolute_paths_are_rejected(unsafe: str, where: str) -> None:
    field, key = where.split(".")
    entry = {"source": "s3://bucket/k", key: unsafe} if field == "inputs" else {"name": unsafe, "image": "aGk="}
    assert_problem(problems_of(payload(**{field: [entry]})), f"input.{field}[0].{key}")


def test_the_schema_loads_no_network_library() -> None:
    """The schema is pure: importing it (in a fresh interpreter) loads neither aiohttp nor boto3."""
    code = ("import sys, comfy_serverless.jobspec as spec; "
            "print(spec.__file__); print(sorted({'aiohttp', 'boto3', 'botocore'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    module_file, loaded = run.stdout.splitlines()
    assert module_file == jobspec.__file__, "the child must import the code under test"
    assert loaded == "[]"

