"""Every kind of bad job input gets a clear error, nothing runs, and the worker keeps serving.

Each case goes through the real pipeline (``JobRunner.run``) on the real ComfyUI (test server or
real) and real Chromium. For each: the result is an error whose text names the offending field or
node, ComfyUI queued nothing (``/history`` unchanged, and no prompt was accepted by ComfyUI), and
ComfyUI's input/output/temp folders and the job scratch dir are as they were.

URL inputs pointing at non-public addresses must be refused *before* any connection: the ``spies``
fixture (tests/support/spies.py) watches the download's resolver (aiohttp asks it before every
connection) and blocks every DNS lookup of a non-numeric host but ``localhost``, so no case can
reach beyond this machine.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from tests.support.jobs import data_uri, first_pixel, folder_state, invert_job, noise_png, png
from tests.support.spies import Spies, assert_nothing_ran, history
from tests.support.ui_workflows import add_node, with_unknown_node

IMAGE = png((10, 20, 30))
IMAGE_URI = data_uri(IMAGE)
IMAGE_B64 = base64.b64encode(IMAGE).decode()


def api_job(**extra: Any) -> dict[str, Any]:
    """A valid API-format job: LoadImage(photo.png) → SaveImage, the image given inline."""
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}, "_meta": {"title": "Load"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bad-input"},
                      "_meta": {"title": "Save"}}}
    return {"workflow": workflow, "images": [{"name": "photo.png", "image": IMAGE_B64}], **extra}


def with_input(**entry: Any) -> dict[str, Any]:
    """The valid API job plus one ``inputs`` entry (``source`` defaults to an inline image)."""
    return api_job(inputs=[{"source": IMAGE_URI, **entry}])


def url_job(url: str) -> dict[str, Any]:
    return api_job(inputs=[{"source": url, "name": "remote.png"}])


def api_workflow(nodes: dict[str, Any]) -> dict[str, Any]:
    return {"workflow": nodes}


def two_unknown_nodes() -> dict[str, Any]:
    workflow = with_unknown_node("NoSuchCustomNode")
    add_node(workflow, ("ImpactWildcardProcessor", ["x"], [], []))
    return workflow


def case(case_id: str, raw: object, *expected: str, error_type: str = "JobInputError") -> Any:
    return pytest.param(raw, expected, error_type, id=case_id)


SAVE = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bad-input"}}
EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
WHOLE = "input: must be a JSON object"

CASES = [
    # --- the input is not an object ------------------------------------------------------------
    case("list", [], WHOLE),
    case("list-of-jobs", [api_job()], WHOLE),
    case("number", 42, WHOLE),
    case("float", 3.5, WHOLE),
    case("null", None, WHOLE),
    case("bool", True, WHOLE),
    case("non-json-string", "{workflow: nope", "input: is a string but not valid JSON"),
    case("empty-string", "", "input: is a string but not valid JSON"),
    case("json-string-of-list", "[1, 2]", WHOLE),
    case("unknown-top-level-key", api_job(workflw={}), "input: unknown key 'workflw'", "did you mean 'workflow'"),
    # --- the workflow ---------------------------------------------------------------------------
    case("workflow-missing", {"images": api_job()["images"]}, "input.workflow: is required"),
    case("workflow-null", {"workflow": None}, "input.workflow: is required"),
    case("workflow-not-json", {"workflow": "{\"1\": "}, "input.workflow: workflow is a string but not valid JSON"),
    case("workflow-json-list", {"workflow": "[1, 2]"}, "input.workflow: workflow must be a JSON object"),
    case("workflow-number", {"workflow": 7}, "input.workflow: workflow must be a JSON object"),
    case("workflow-empty", {"workflow": {}}, "input.workflow: workflow is empty"),
    case("workflow-neither-format", {"workflow": {"foo": "bar"}}, "input.workflow: workflow is neither UI format"),
    case("workflow-node-without-class", api_workflow({"1": EMPTY, "2": {"inputs": {}}}),
         "input.workflow: workflow is neither UI format"),
    case("ui-unknown-node", {"workflow": with_unknown_node("NoSuchCustomNode")},
         "node types this ComfyUI does not know: NoSuchCustomNode", error_type="UnknownNodeTypesError"),
    case("ui-two-unknown-nodes", {"workflow": two_unknown_nodes()},
         "does not know: ImpactWildcardProcessor, NoSuchCustomNode", error_type="UnknownNodeTypesError"),
    case("api-unknown-class", api_workflow({"1": {"class_type": "ImpactWildcardProcessor", "inputs": {}}, "2": SAVE}),
         "does not know: ImpactWildcardProcessor", error_type="UnknownNodeTypesError"),
    case("api-dangling-link", api_workflow({"1": EMPTY, "2": {**SAVE, "inputs": {"images": ["9", 0]}}}),
         "node 2 (SaveImage) input 'images' links to node 9, which is not in the prompt", error_type="WorkflowError"),
    case("api-cycle", api_workflow({"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
                                    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                                    "3": {**SAVE, "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}),
         "nodes form a cycle: 1 -> 2 -> 1", error_type="WorkflowError"),
    case("api-inputs-not-object", api_workflow({"1": {"class_type": "EmptyImage", "inputs": [8, 8]}, "2": SAVE}),
         "node 1: 'inputs' must be an object", error_type="WorkflowError"),
    case("api-class-type-not-string", api_workflow({"1": {"class_type": 5, "inputs": {}}, "2": SAVE}),
         "node 1: 'class_type' must be a non-empty string", error_type="WorkflowError"),
    case("api-missing-image-file", api_workflow({"1": {"class_type": "LoadImage", "inputs": {"image": "gone.png"}},
                                                 "2": SAVE}),
         "node 1 (LoadImage) input 'image'", "gone.png", error_type="PromptValidationError"),
    # --- base64 garbage ------------------------------------------------------------------------
    case("images-not-base64", api_job(images=[{"name": "photo.png", "image": "not base64!!"}]),
         "input.images[0].image: is not valid base64"),
    case("images-bad-length", api_job(images=[{"name": "photo.png", "image": "abcde"}]),
         "input.images[0].image: is not valid base64"),
    case("images-data-uri-garbage", api_job(images=[{"name": "photo.png", "image": "data:image/png;base64,@@@@"}]),
         "input.images[0].image: is not valid base64"),
    case("images-empty", api_job(images=[{"name": "photo.png", "image": ""}]), "input.images[0].image: holds no data"),
    case("images-not-string", api_job(images=[{"name": "photo.png", "image": 12}]),
         "input.images[0].image: must be a base64 string"),
    case("images-missing-name", api_job(images=[{"image": IMAGE_B64}]), "input.images[0].name: is required"),
    case("data-uri-garbage", with_input(source="data:image/png;base64,!!!!", name="x.png"),
         "input.inputs[0].source: is not valid base64"),
    case("data-uri-not-base64", with_input(source="data:image/png,rawbytes", name="x.png"),
         "input.inputs[0].source: must be a base64 data URI"),
    case("data-uri-no-mime", with_input(source="data:;base64,AAAA", name="x.png"),
         "input.inputs[0].source: must be a base64 data URI"),
    case("data-uri-empty", with_input(source="data:image/png;base64,", name="x.png"),
         "input.inputs[0].source: holds no data"),
    # --- names and subfolders ------------------------------------------------------------------
    case("name-dotdot", with_input(name="../evil.png"), "input.inputs[0].name: must not contain '..'"),
    case("name-dotdot-only", with_input(name=".."), "input.inputs[0].name: must not contain '..'"),
    case("name-absolute", with_input(name="/etc/passwd"), "input.inputs[0].name: must be a relative path"),
    case("name-nul", with_input(name="a\x00.png"), "input.inputs[0].name: must not contain a NUL byte"),
    case("name-nested", with_input(name="sub/a.png"), "input.inputs[0].name: must be a plain file name"),
    case("name-backslash", with_input(name="..\\a.png"), "input.inputs[0].name: must use '/' as separator"),
    case("name-empty", with_input(name=""), "input.inputs[0].name: must not be empty"),
    case("name-too-long", with_input(name="a" * 300 + ".png"), "input.inputs[0].name: is too long"),
    case("subfolder-dotdot", with_input(name="a.png", subfolder="../../etc"),
         "input.inputs[0].subfolder: must not contain '..'"),
    case("subfolder-inner-dotdot", with_input(name="a.png", subfolder="a/../../b"),
         "input.inputs[0].subfolder: must not contain '..'"),
    case("subfolder-absolute", with_input(name="a.png", subfolder="/tmp"),
         "input.inputs[0].subfolder: must be a relative path"),
    case("subfolder-nul", with_input(name="a.png", subfolder="a\x00b"),
         "input.inputs[0].subfolder: must not contain a NUL byte"),
    case("models-subfolder-dotdot", with_input(name="a.safetensors", folder_type="models", subfolder="loras/../.."),
         "input.inputs[0].subfolder: must not contain '..'"),
    case("models-without-subfolder", with_input(name="a.safetensors", folder_type="models"),
         "input.inputs[0].subfolder: is required when folder_type is 'models'"),
    case("models-unknown-folder", with_input(name="a.safetensors", folder_type="models", subfolder="no_such_models"),
         "input.inputs[0].subfolder", "no_such_models", "does not name a model folder"),
    case("folder-type-unknown", with_input(name="a.png", folder_type="etc"),
         "input.inputs[0].folder_type: must be one of input, output, temp, models"),
    case("images-name-dotdot", api_job(images=[{"name": "../x.png", "image": IMAGE_B64}]),
         "input.images[0].name: must not contain '..'"),
    case("images-name-absolute", api_job(images=[{"name": "/abs.png", "image": IMAGE_B64}]),
         "input.images[0].name: must be a relative path"),
    case("images-name-nul", api_job(images=[{"name": "x\x00.png", "image": IMAGE_B64}]),
         "input.images[0].name: must not contain a NUL byte"),
    case("name-derived-from-url-dotdot", api_job(inputs=[{"source": "http://10.0.0.1/..%2Fetc"}]),
         "input.inputs[0].name: the name derived from the source, '../etc', must not contain '..'"),
    case("duplicate-names", api_job(inputs=[{"source": IMAGE_URI, "name": "photo.png"}]),
         "input.images[0].name: 'photo.png' is also the name of input.inputs[0]"),
    # --- URLs: refused before any connection ---------------------------------------------------
    case("url-loopback", url_job("http://127.0.0.1/x.png"), "input.inputs[0] (remote.png)", "loopback",
         error_type="InputFetchError"),
    case("url-loopback-port", url_job("http://127.0.0.2:8188/view?filename=x.png"), "loopback",
         error_type="InputFetchError"),
    case("url-localhost", url_job("http://localhost/x.png"), "input.inputs[0] (remote.png)", "loopback",
         error_type="InputFetchError"),
    case("url-ipv6-loopback", url_job("http://[::1]/x.png"), "input.inputs[0] (remote.png)", "loopback",
         error_type="InputFetchError"),
    case("url-decimal-loopback", url_job("http://2130706433/x.png"), "not a public address", "loopback",
         error_type="InputFetchError"),
    case("url-private-10", url_job("http://10.0.0.1/x.png"), "input.inputs[0] (remote.png)", "10.0.0.1",
         "private", error_type="InputFetchError"),
    case("url-private-192", url_job("https://192.168.1.1/x.png"), "192.168.1.1", "private",
         error_type="InputFetchError"),
    case("url-private-172", url_job("http://172.16.5.4:8080/x.png"), "172.16.5.4", "private",
         error_type="InputFetchError"),
    case("url-link-local", url_job("http://169.254.10.20/x.png"), "link-local", error_type="InputFetchError"),
    case("url-metadata", url_job("http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
         "169.254.169.254", "link-local, where cloud metadata services live", error_type="InputFetchError"),
    case("url-metadata-ipv4-mapped", url_job("http://[::ffff:169.254.169.254]/x.png"), "link-local",
         "embedded in IPv6", error_type="InputFetchError"),
    case("url-ipv6-link-local", url_job("http://[fe80::1]/x.png"), "link-local", error_type="InputFetchError"),
    case("url-unspecified", url_job("http://0.0.0.0/x.png"), "unspecified", error_type="InputFetchError"),
    case("url-cgnat", url_job("http://100.64.0.1/x.png"), "carrier-grade NAT", error_type="InputFetchError"),
    case("url-file", url_job("file:///etc/passwd"),
         "input.inputs[0].source: must start with s3://, https://, http://, data: or hf:// (got scheme 'file')"),
    case("url-ftp", url_job("ftp://example.com/x.png"), "input.inputs[0].source: must start with", "'ftp'"),
    case("url-gopher", url_job("gopher://127.0.0.1:6379/_x"), "input.inputs[0].source", "'gopher'"),
    case("url-no-scheme", url_job("/etc/passwd"), "input.inputs[0].source: must start with", "got no scheme"),
    case("url-credentials", url_job("http://admin:hunter2pw@10.0.0.1/x.png"),
         "input.inputs[0].source: must not contain credentials"),
    case("url-no-host", url_job("http:///x.png"), "input.inputs[0].source: names no host"),
    case("url-whitespace", url_job("http://10.0.0.1/a b.png"), "input.inputs[0].source: must not contain whitespace"),
    case("url-bad-port", url_job("http://10.0.0.1:99999/x.png"), "input.inputs[0].source: is not a valid URL"),
    # --- S3 URIs --------------------------------------------------------------------------------
    case("s3-empty", with_input(source="s3://"), "input.inputs[0].source: has an invalid bucket name ''"),
    case("s3-no-key", with_input(source="s3://my-bucket"), "input.inputs[0].source: names no object key"),
    case("s3-trailing-slash", with_input(source="s3://my-bucket/"), "input.inputs[0].source: names no object key"),
    case("s3-uppercase-bucket", with_input(source="s3://Bad_Bucket/key.png"),
         "input.inputs[0].source: has an invalid bucket name 'Bad_Bucket'"),
    case("s3-short-bucket", with_input(source="s3://ab/key.png"), "input.inputs[0].source: has an invalid bucket"),
    case("s3-dotdot-bucket", with_input(source="s3://a..b/key.png"), "input.inputs[0].source: has an invalid bucket"),
    case("s3-nul-key", with_input(source="s3://my-bucket/k\x00.png"),
         "input.inputs[0].source: must not contain a NUL byte"),
    case("s3-without-storage", with_input(source="s3://my-bucket/uploads/key.png"),
         "input.inputs[0] (key.png)", "no S3 configured", error_type="InputFetchError"),
    case("output-s3-malformed", api_job(output={"s3_uri": "s3://Bad_Bucket/out"}),
         "input.output.s3_uri: has an invalid bucket name"),
    case("output-s3-not-s3", api_job(output={"s3_uri": "https://bucket/out"}),
         "input.output.s3_uri: must start with s3://"),
    case("output-s3-and-inline", api_job(output={"s3_uri": "s3://my-bucket/out", "inline": True}),
         "input.output: give either 's3_uri' or 'inline': true"),
    case("output-s3-without-storage", api_job(output={"s3_uri": "s3://my-bucket/out"}),
         "output.s3_uri needs S3 credentials", error_type="StorageError"),
    case("output-expires-out-of-range", api_job(output={"s3_uri": "s3://my-bucket/out", "expires_s": 10**7}),
         "input.output.expires_s: must be at least 1 and at most 604800"),
    # --- overrides -----------------------------------------------------------------------------
    case("override-unknown-node", api_job(overrides={"77": {"x": 1}}), "input.overrides.77: no node has this id"),
    case("override-unknown-title", api_job(overrides={"Nope": {"x": 1}}), "input.overrides.Nope: no node"),
    case("override-unknown-input", api_job(overrides={"2": {"no_such_input": 1}}),
         "input.overrides.2.no_such_input: node 2 (SaveImage) has no input 'no_such_input'"),
    case("override-unknown-input-by-title", api_job(overrides={"Save": {"colour": 1}}),
         "input.overrides.Save.colour: node 2 (SaveImage)"),
    case("override-both-unknown", api_job(overrides={"77": {"x": 1}, "1": {"nope": 2}}),
         "(2 problems)", "input.overrides.77", "input.overrides.1.nope"),
    case("override-ambiguous-title",
         api_job(workflow={"1": {**EMPTY, "_meta": {"title": "Same"}},
                           "2": {**SAVE, "_meta": {"title": "Same"}}}, images=None,
                 overrides={"Same": {"width": 9}}),
         "input.overrides.Same: the title matches nodes 1, 2"),
    case("override-ui-unknown-node", invert_job(inputs=[{"source": IMAGE_URI, "name": "photo.png"}],
                                                overrides={"42": {"image": "x.png"}}),
         "input.overrides.42: no node"),
    case("override-ui-unknown-input", invert_job(inputs=[{"source": IMAGE_URI, "name": "photo.png"}],
                                                 overrides={"Result": {"quality": 9}}),
         "input.overrides.Result.quality: node 3 (SaveImage) has no input 'quality'"),
    case("override-node-meta-not-object",
         api_job(workflow={"1": {**EMPTY, "_meta": ["not", "an", "object"]}, "2": SAVE}, images=None,
                 overrides={"Nope": {"width": 9}}),
         "input.overrides.Nope: no node has this id or title"),
    case("override-on-malformed-api-prompt",
         api_job(workflow={"1": {"class_type": ["EmptyImage"], "inputs": {}}, "2": SAVE}, images=None,
                 overrides={"1": {"width": 9}}),
         "node 1: 'class_type' must be a non-empty string", error_type="WorkflowError"),
    case("malformed-api-prompt-with-input",
         api_job(workflow={"1": {"class_type": "LoadImage", "inputs": ["photo.png"]}, "2": SAVE}),
         "node 1: 'inputs' must be an object", error_type="WorkflowError"),
    case("overrides-not-object", api_job(overrides=[1]), "input.overrides: must be an object, got an array"),
    case("override-values-not-object", api_job(overrides={"1": 5}), "input.overrides['1']: must be an object"),
    case("override-empty", api_job(overrides={"1": {}}), "input.overrides['1']: must not be empty"),
    case("override-empty-node", api_job(overrides={"": {"a": 1}}), "input.overrides['']: node ids and titles"),
    # --- other fields ---------------------------------------------------------------------------
    case("timeout-negative", api_job(timeout_s=-1), "input.timeout_s: must be more than 0"),
    case("timeout-zero", api_job(timeout_s=0), "input.timeout_s: must be more than 0"),
    case("timeout-nan", api_job(timeout_s=math.nan), "input.timeout_s: must be more than 0"),
    case("timeout-string", api_job(timeout_s="10"), "input.timeout_s: must be a number"),
    case("timeout-bool", api_job(timeout_s=True), "input.timeout_s: must be a number"),
    case("timeout-huge", api_job(timeout_s=10**30), "input.timeout_s: must be more than 0 and at most 86400"),
    case("inputs-not-list", api_job(inputs={"source": IMAGE_URI}), "input.inputs: must be a list"),
    case("inputs-entry-not-object", api_job(inputs=["x"]), "input.inputs[0]: must be an object"),
    case("inputs-unknown-key", api_job(inputs=[{"url": IMAGE_URI, "name": "y.png"}]),
         "input.inputs[0]: unknown key 'url'", "input.inputs[0].source: is required"),
    case("api-key-not-string", api_job(comfy_org_api_key=5), "input.comfy_org_api_key: must be a string"),
    case("many-problems-at-once", {"workflow": "{", "inputs": [{"source": "file:///x"}], "timeout_s": -1,
                                   "colour": "red"},
         "(4 problems)", "input.workflow", "input.inputs[0].source", "input.timeout_s", "'colour'"),
]


# --- the cases --------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected", "error_type"), CASES)
async def test_bad_input_fails_clearly_and_runs_nothing(raw: object, expected: tuple[str, ...], error_type: str,
                                                        runner: JobRunner, connector: ComfyConnector,
                                                        scratch: Path, spies: Spies) -> None:
    history_before, folders_before = await history(connector), folder_state(connector, scratch)
    result = await runner.run("job-bad", copy.deepcopy(raw))
    assert isinstance(result, dict) and "error" in result, result
    assert result["error_type"] == error_type, result
    for text in expected:
        assert text in result["error"], f"{text!r} not in {result['error']!r}"
    assert "\n" not in result["error"], "the error is one line"
    assert "outputs" not in result and "history" not in result
    json.dumps(result)  # JSON-safe
    assert "hunter2pw" not in json.dumps(result)  # a URL's password is never echoed
    await assert_nothing_ran(connector, spies, history_before, folders_before, scratch)
    if error_type != "InputFetchError":  # found before any download: a typo costs nothing
        assert spies.fetched == [], f"{spies.fetched} were fetched before the job was refused"


@pytest.mark.parametrize("as_string", [False, True], ids=["object", "json-string"])
async def test_oversized_payload_is_refused_before_it_is_walked(as_string: bool, connector: ComfyConnector,
                                                                 scratch: Path, spies: Spies) -> None:
    small = JobRunner(connector, Config(scratch_dir=str(scratch), max_job_payload_bytes=2000), None)
    job = api_job(images=[{"name": "photo.png", "image": base64.b64encode(noise_png(40)).decode()}])
    history_before, folders_before = await history(connector), folder_state(connector, scratch)
    result = await small.run("job-big", json.dumps(job) if as_string else job)
    assert result["error_type"] == "JobInputError"
    assert "more than the limit of 2000 (MAX_JOB_PAYLOAD_BYTES)" in result["error"], result["error"]
    assert "input.images" not in result["error"]  # refused as a whole, not field by field
    await assert_nothing_ran(connector, spies, history_before, folders_before, scratch)
    assert spies.fetched == []
    # The same job just under a larger limit runs: the limit, not the job, refused it.
    roomy = JobRunner(connector, Config(scratch_dir=str(scratch), max_job_payload_bytes=len(json.dumps(job)) + 10),
                      None)
    assert "error" not in await roomy.run("job-big-ok", job)


# --- random input: never raises ------------------------------------------------------------------
def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` five times in six, else any JSON: random input that mostly gets past the first checks."""
    return st.one_of(good, good, good, good, good, _json)


_leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["photo.png", "..", "/etc/passwd", IMAGE_URI, IMAGE_B64, "s3://my-bucket/k.png",
                              "http://127.0.0.1:9/x.png", "http://10.0.0.1/x.png", "file:///etc/passwd",
                              "data:image/png;base64,@@", "1", "2", "LoadImage", "SaveImage", "class_type"]))
_json = st.recursive(_leaves, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=8) | st.sampled_from(["1", "2", "image", "inputs"]),
                                       children, max_size=4), max_leaves=16)
_link = st.tuples(st.sampled_from(["1", "2", "9"]), st.integers(0, 1)).map(list)
_api_nodes = st.dictionaries(
    st.sampled_from(["1", "2", "3"]),
    st.fixed_dictionaries(
        {"class_type": st.sampled_from(["LoadImage", "SaveImage", "ImageInvert", "Nope"]) | _json},
        optional={"inputs": _mostly(st.dictionaries(st.sampled_from(["image", "images", "filename_prefix"]),
                                                    st.sampled_from(["photo.png", "x"]) | _link | _json,
                                                    max_size=3)),
                  "_meta": _json | st.fixed_dictionaries({"title": st.sampled_from(["Load", "Save"])})}),
    min_size=1, max_size=3)
_workflow = st.one_of(_api_nodes, _api_nodes, _api_nodes, _api_nodes.map(json.dumps), st.just(api_job()["workflow"]),
                      st.just(invert_job()["workflow"]), _json)
_input_entry = st.fixed_dictionaries(
    {"source": st.sampled_from([IMAGE_URI, IMAGE_URI, IMAGE_URI, "data:image/png;base64,@@", "s3://my-bucket/k.png",
                                "http://10.0.0.1/x.png", "http://[::1]/x.png"])},
    optional={"name": st.sampled_from(["photo.png", "x.png", "x.png", "../x.png"]),
              "folder_type": st.sampled_from(["input", "input", "output", "temp", "models"]),
              "subfolder": st.sampled_from(["", "loras", "loras", "a/b", "no_such"])})
_image_entry = st.fixed_dictionaries({"name": st.sampled_from(["photo.png", "photo.png", "y.png", "/y.png"]),
                                      "image": st.sampled_from([IMAGE_B64, IMAGE_B64, IMAGE_URI, "@@@@"])})
_overrides = st.dictionaries(
    st.sampled_from(["1", "2", "3", "Load", "Save", "x"]) | st.text(min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(["image", "images", "filename_prefix", "width", "junk"]), _json,
                    min_size=1, max_size=2), min_size=1, max_size=2)
_job = st.fixed_dictionaries({"workflow": _mostly(_workflow), "overrides": _mostly(_overrides)}, optional={
    "inputs": _mostly(st.lists(_input_entry, max_size=2)),
    "images": _mostly(st.lists(_image_entry, max_size=1)),
    "output": _mostly(st.sampled_from([{}, {"inline": True}, {"include_temp": True}, {"s3_uri": "s3://my-bucket/o"},
                                       {"inline": True, "presign": False}])),
    "timeout_s": _mostly(st.floats(0.5, 30)),
    "comfy_org_api_key": _mostly(st.text(max_size=8)),
})
_raw = st.one_of(_job, _job, _job, _job.map(lambda job: json.dumps(job, allow_nan=True)), _json)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_raw)
async def test_random_input_never_raises(raw: object, runner: JobRunner, connector: ComfyConnector,
                                         spies: Spies) -> None:
    before = len(await history(connector))
    queued_before = len(spies.queued)
    result = await runner.run("job-random", raw)
    assert isinstance(result, dict)
    event(result.get("error_type", "success"))  # --hypothesis-show-statistics shows what was reached
    json.dumps(result)
    if "error" in result:
        assert isinstance(result["error"], str) and result["error"] and isinstance(result["error_type"], str)
        assert len(spies.queued) == queued_before or result["error_type"] in (
            "ExecutionError", "PromptValidationError"), result  # a prompt ComfyUI accepted, then failed
    else:
        assert set(result) == {"prompt_id", "history", "outputs", "inputs", "timings", "warnings"}, result
    assert len(await history(connector)) == before
    assert spies.connections == [] and spies.blocked_lookups == []


# --- and the worker keeps serving ------------------------------------------------------------
async def test_valid_job_still_succeeds_after_all_the_bad_ones(runner: JobRunner, connector: ComfyConnector,
                                                             scratch: Path) -> None:
    before = folder_state(connector, scratch)
    result = await runner.run("job-good", api_job())
    assert "error" not in result, result
    assert first_pixel(base64.b64decode(result["outputs"][0]["data"])) == (10, 20, 30)
    result = await runner.run("job-good-ui", invert_job(inputs=[{"source": IMAGE_URI, "name": "photo.png"}]))
    assert "error" not in result, result
    assert first_pixel(base64.b64decode(result["outputs"][0]["data"])) == (245, 235, 225)
    assert folder_state(connector, scratch) == before

