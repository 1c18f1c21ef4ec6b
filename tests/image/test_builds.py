"""Builds of the Dockerfile with other build inputs: the three node packs, and inputs that must fail.

Each build uses a copy of the build context with one file changed, the stand-in build arguments
of `make image-test` (IMAGE_BUILD_ARGS), and Docker's cache, so only the layers from the change
on are built again. A failing build must fail at its step, saying what is wrong.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containers import DOCKER, Container
from tests.support.handler import REPO, post

BUILD_ARGS = shlex.split(os.environ.get("IMAGE_BUILD_ARGS", ""))
GIT_SERVED = Path(os.environ.get("GIT_SERVED", REPO / ".image-test" / "git"))
GIT_URL = os.environ.get("GIT_URL", "git://127.0.0.1:9418/")
#: The packs as users list them (GitHub URLs at the bundles' commits); GIT_MIRROR serves them here.
PACKS = {"kijai/ComfyUI-KJNodes": "ComfyUI-KJNodes", "rgthree/rgthree-comfy": "rgthree-comfy",
         "Kosinkadink/ComfyUI-VideoHelperSuite": "ComfyUI-VideoHelperSuite"}
CONTEXT = ("Dockerfile", ".dockerignore", "builder", "src", "handler.py", "test_input.json", "pyproject.toml",
           "README.md")


def context_copy(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, directory / name)
    return directory


def build(context: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, "build", "--network", "host", "--progress", "plain", "-t", tag, *BUILD_ARGS,
                           *extra, str(context)], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"})


def served_commit(name: str) -> str:
    return subprocess.run(["git", "-C", str(GIT_SERVED / f"{name}.git"), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def nodes_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image with the three packs from custom_nodes.txt, installed and verified by the build."""
    context = context_copy(tmp_path_factory.mktemp("nodes-context"))
    lines = [f"https://github.com/{repo}@{served_commit(name)}" for repo, name in PACKS.items()]
    (context / "builder" / "custom_nodes.txt").write_text("\n".join(lines) + "\n")
    tag = "comfy-serverless:image-test-nodes"
    result = build(context, tag, "--build-arg", f"GIT_MIRROR={GIT_URL}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    heads = subprocess.run([DOCKER, "run", "--rm", "--network", "host", "--entrypoint", "sh", tag, "-c",
                            "for pack in /comfyui/custom_nodes/*/.git; do git -C ${pack%/.git} rev-parse HEAD; done"],
                           capture_output=True, text=True, timeout=120)
    assert sorted(heads.stdout.split()) == sorted(served_commit(name) for name in PACKS.values()), heads
    yield tag


def set_get_video_workflow() -> dict[str, object]:
    """EmptyImage → KJNodes' SetNode("frames") … GetNode("frames") → VHS_VideoCombine (a GIF), in UI format."""
    return {
        "last_node_id": 4, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [300, 130], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "properties": {"Node name for S&R": "EmptyImage"}, "widgets_values": [32, 32, 4, 255]},
            {"id": 2, "type": "SetNode", "pos": [350, 0], "size": [210, 60], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "IMAGE", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "*", "type": "*", "links": None}],
             "properties": {"previousName": "frames"}, "widgets_values": ["frames"], "title": "Set_frames"},
            {"id": 3, "type": "GetNode", "pos": [0, 250], "size": [210, 60], "flags": {}, "order": 2, "mode": 0,
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
             "properties": {}, "widgets_values": ["frames"], "title": "Get_frames"},
            {"id": 4, "type": "VHS_VideoCombine", "pos": [350, 250], "size": [300, 300], "flags": {}, "order": 3,
             "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "Filenames", "type": "VHS_FILENAMES", "links": None}],
             "properties": {"Node name for S&R": "VHS_VideoCombine"},
             "widgets_values": {"frame_rate": 8, "loop_count": 0, "filename_prefix": "image-tier-video",
                                "format": "image/gif", "pingpong": False, "save_output": True}},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 3, 0, 4, 0, "IMAGE"]],
    }


def test_the_node_packs_install_and_a_set_get_video_workflow_runs_in_the_container(nodes_image: str) -> None:
    container = Container(nodes_image)
    try:
        container.wait_for_api()
        answer = post(f"{container.url}/runsync", {"input": {"workflow": set_get_video_workflow()}})
        assert answer["status"] == "COMPLETED", (answer, container.logs()[-6000:])
        (video,) = answer["output"]["outputs"]
        assert video["kind"] == "gifs" and video["content_type"] == "image/gif", video
        assert "fullpath" not in json.dumps(answer["output"]["history"])  # no server paths (issue 25)
        data = answer["output"]["images"][video["image"]]["data"]  # a GIF is an image: worker-comfyui's form
        assert data
    finally:
        container.remove()


def test_a_malformed_custom_nodes_line_fails_the_build(tmp_path: Path) -> None:
    context = context_copy(tmp_path)
    (context / "builder" / "custom_nodes.txt").write_text("github.com/kijai/ComfyUI-KJNodes\n")
    result = build(context, "comfy-serverless:image-test-bad-list")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("custom_nodes.txt:1: expected https://host/owner/repo@<40-hex commit or tag>, got "
            "'github.com/kijai/ComfyUI-KJNodes'" in output), output[-4000:]


def test_a_comfyui_ref_with_other_requirements_fails_the_build(tmp_path: Path) -> None:
    """A ref whose requirements.txt is not the one the lock was made from: a tag of the served ComfyUI."""
    work = tmp_path / "comfyui"
    subprocess.run(["git", "clone", "-q", str(GIT_SERVED / "ComfyUI.git"), str(work)], check=True)
    with (work / "requirements.txt").open("a") as requirements:
        requirements.write("leftpad-unlocked==1.0\n")
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "other requirements"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-qf", "origin", "HEAD:refs/tags/other-requirements"],
                   check=True)
    result = build(context_copy(tmp_path / "context"), "comfy-serverless:image-test-bad-ref",
                   "--build-arg", "COMFYUI_REF=other-requirements")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ComfyUI other-requirements has other requirements than builder/comfyui-requirements.txt: re-lock" \
        in output, output[-4000:]


def test_a_node_pack_that_fails_to_import_fails_the_build(tmp_path: Path) -> None:
    pack = tmp_path / "broken-pack"
    pack.mkdir()
    (pack / "__init__.py").write_text('raise ImportError("this pack needs a module that is not installed")\n')
    subprocess.run(["git", "init", "-q", str(pack)], check=True)
    subprocess.run(["git", "-C", str(pack), "add", "."], check=True)
    subprocess.run(["git", "-C", str(pack), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "broken"],
                   check=True)
    served = GIT_SERVED / "broken-pack.git"
    shutil.rmtree(served, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(pack), str(served)], check=True)
    commit = served_commit("broken-pack")
    context = context_copy(tmp_path / "context")
    (context / "builder" / "custom_nodes.txt").write_text(f"https://github.com/someone/broken-pack@{commit}\n")
    result = build(context, "comfy-serverless:image-test-bad-pack", "--build-arg", f"GIT_MIRROR={GIT_URL}")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "broken-pack" in output and "IMPORT FAILED" in output, output[-4000:]
