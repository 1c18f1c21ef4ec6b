"""The image's lock: it is what its resolver command makes today, and it holds all ComfyUI needs.

``builder/requirements.lock`` pins the image's whole Python environment. It is resolved from
``builder/requirements.in`` (ComfyUI's requirements at the pinned ref, kept verbatim in
``builder/comfyui-requirements.txt``, the worker's, and torch) by the command written at its
top. ComfyUI imports packages its requirements.txt does not list (``requests``), so the
imports of ComfyUI at the pinned ref are listed here too and checked against the lock; with
``COMFYUI_PATH`` at that ComfyUI, the list itself is checked against its sources.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.comfy import needs_real_comfy
from tests.support.imports import third_party_imports

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "builder"
LOCK = BUILDER / "requirements.lock"
COMFYUI_REQUIREMENTS = BUILDER / "comfyui-requirements.txt"

#: The image's Python (Ubuntu 24.04's python3) and platform, which the lock must be made for.
IMAGE_PYTHON = "3.12"
IMAGE_PLATFORM_RE = re.compile(r"^x86_64-manylinux_2_\d+$")

#: Every third-party module ComfyUI 0.3.64 imports (tests and CI scripts aside), and the
#: distribution that provides it; None for the optional ones, which ComfyUI imports inside
#: ``try`` or only for one feature, and which the image leaves out on purpose.
COMFYUI_IMPORTS: dict[str, str | None] = {
    "PIL": "pillow",
    "aiohttp": "aiohttp",
    "alembic": "alembic",
    "av": "av",
    "comfyui_embedded_docs": "comfyui-embedded-docs",
    "comfyui_frontend_package": "comfyui-frontend-package",
    "comfyui_workflow_templates": "comfyui-workflow-templates",
    "einops": "einops",
    "kornia": "kornia",
    "numpy": "numpy",
    "packaging": "packaging",  # not in ComfyUI's requirements.txt
    "psutil": "psutil",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",  # pydantic's own, pinned by it
    "pydantic_settings": "pydantic-settings",
    "requests": "requests",  # not in ComfyUI's requirements.txt: app/frontend_management.py
    "safetensors": "safetensors",
    "scipy": "scipy",
    "sentencepiece": "sentencepiece",
    "spandrel": "spandrel",
    "sqlalchemy": "sqlalchemy",
    "tokenizers": "tokenizers",
    "torch": "torch",
    "torchaudio": "torchaudio",
    "torchsde": "torchsde",
    "torchvision": "torchvision",
    "tqdm": "tqdm",
    "transformers": "transformers",
    "typing_extensions": "typing-extensions",  # not in ComfyUI's requirements.txt
    "yaml": "pyyaml",
    # Optional: other accelerators and attention kernels, tried at startup.
    "cublas_ops": None,
    "flash_attn": None,
    "intel_extension_for_pytorch": None,
    "sageattention": None,
    "torch_directml": None,
    "torch_mlu": None,
    "torch_npu": None,
    "xformers": None,
    # Optional: non-commercial upscaler architectures (inside try), mesh loading for Hunyuan3D.
    "spandrel_extra_arches": None,
    "trimesh": None,
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """name -> version of every ``name==version`` entry of a lock."""
    return {normalise(match[1]): match[2] for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.M)}


def resolver_command(text: str) -> list[str]:
    """The command the lock's header says made it."""
    match = re.search(r"^#\s+(uv pip compile .*)$", text, re.M)
    assert match, "the lock must start with the command that made it (uv pip compile ...)"
    return shlex.split(match[1])


def option(command: list[str], name: str) -> str:
    assert name in command, f"the resolver command lacks {name}: {shlex.join(command)}"
    return command[command.index(name) + 1]


def requirement_names(path: Path) -> dict[str, str | None]:
    """name -> exact version (None when not pinned with ==) of a plain requirements file."""
    names: dict[str, str | None] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(==\s*([^\s,;]+)$)?", line)
        assert match, f"{path.name}: cannot read {raw!r}"
        names[normalise(match[1])] = match[3]
    return names


def test_lock_is_what_its_command_resolves_for_the_image(tmp_path):
    """Re-run the lock's own command (network: PyPI): it must succeed for the image's Python and
    platform and give the same lock. uv keeps the pins of an existing output file where they
    still satisfy the inputs, so this fails when an input changed without a re-lock, or when
    a pin can no longer be resolved (e.g. yanked), not when PyPI merely has newer releases."""
    text = LOCK.read_text()
    command = resolver_command(text)
    assert option(command, "--python-version") == IMAGE_PYTHON
    assert IMAGE_PLATFORM_RE.match(option(command, "--python-platform"))
    assert "--generate-hashes" in command, "the Dockerfile installs with --require-hashes"
    assert option(command, "-o") == "builder/requirements.lock"
    uv = Path(sys.executable).parent / "uv"
    assert uv.exists(), f"{uv} missing: pip install -r builder/requirements-dev.txt (uv)"
    output = tmp_path / "requirements.lock"
    shutil.copy(LOCK, output)
    command[command.index("-o") + 1] = str(output)
    result = subprocess.run([str(uv), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "UV_NO_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    fresh = output.read_text()
    body = text[text.index("\n", text.index("uv pip compile")):]
    assert fresh[fresh.index("\n", fresh.index("uv pip compile")):] == body, \
        "builder/requirements.lock is stale: re-run the command at its top"


def test_readme_gives_the_locks_command():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^\.venv/bin/uv (pip compile .*?)\n```", readme.replace("\\\n", ""), re.M | re.S)
    assert match, "README's deploy section shows how to re-lock"
    assert shlex.split(match[1]) == resolver_command(LOCK.read_text())[1:]


def test_lock_pins_torch_with_its_cuda_libraries():
    pins = lock_pins(LOCK.read_text())
    for name in ("torch", "torchvision", "torchaudio", "triton"):
        assert name in pins, f"{name} is not locked"
    cuda = {name: version for name, version in pins.items() if name.startswith("nvidia-")}
    assert "nvidia-cudnn-cu12" in cuda and "nvidia-cublas-cu12" in cuda, \
        "torch's CUDA libraries must be in the lock (PyPI's Linux torch wheels depend on them)"
    assert cuda["nvidia-cuda-runtime-cu12"].startswith("12.8."), \
        "the base image (nvidia/cuda:12.8.x) and README's allowed CUDA versions assume torch's CUDA 12.8"


def test_lock_holds_comfyuis_requirements_and_every_package_it_imports():
    pins = lock_pins(LOCK.read_text())
    listed = requirement_names(COMFYUI_REQUIREMENTS)
    for name, version in listed.items():
        assert name in pins, f"ComfyUI requires {name}, which the lock lacks"
        if version is not None:
            assert pins[name] == version, f"ComfyUI pins {name}=={version}, the lock has {pins[name]}"
    for module, distribution in COMFYUI_IMPORTS.items():
        if distribution is not None:
            assert normalise(distribution) in pins, f"ComfyUI imports {module}, but the lock lacks {distribution}"
        else:
            assert module not in pins, f"{module} is listed as optional, yet it is locked"


def test_lock_holds_the_workers_requirements():
    pins = lock_pins(LOCK.read_text())
    for name, version in requirement_names(BUILDER / "requirements.txt").items():
        assert pins.get(name) == version, \
            f"builder/requirements.txt pins {name}=={version}; the lock has {pins.get(name)}"


def comfyui_third_party_imports(comfy: Path) -> dict[str, str]:
    """Top-level third-party modules imported anywhere in a ComfyUI checkout -> one importing file."""
    local = {path.name for path in comfy.iterdir() if path.is_dir()} | {path.stem for path in comfy.glob("*.py")}
    found: dict[str, str] = {}
    for path in sorted(comfy.rglob("*.py")):
        relative = path.relative_to(comfy).as_posix()
        if relative.split("/")[0] in ("tests", "tests-unit", "script_examples", "custom_nodes", ".ci"):
            continue
        for top in third_party_imports(path, local):
            found.setdefault(top, relative)
    return found


@needs_real_comfy
def test_comfyui_import_list_matches_its_sources():
    """With COMFYUI_PATH at the pinned ComfyUI (as `make test` runs it), COMFYUI_IMPORTS must be
    exactly what its sources import: a new import there needs a look at the lock."""
    comfy = Path(os.environ["COMFYUI_PATH"])
    pinned = re.search(r"^ARG COMFYUI_REF=v?(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    version = re.search(r"__version__\s*=\s*[\"']([^\"']+)", (comfy / "comfyui_version.py").read_text())
    assert pinned and version
    if version[1] != pinned[1]:
        pytest.skip(f"COMFYUI_PATH is ComfyUI {version[1]}, not the pinned {pinned[1]}")
    found = comfyui_third_party_imports(comfy)
    assert set(found) == set(COMFYUI_IMPORTS), (
        f"new: {[f'{module} ({found[module]})' for module in sorted(set(found) - set(COMFYUI_IMPORTS))]}, "
        f"gone: {sorted(set(COMFYUI_IMPORTS) - set(found))}")
