"""The frontend builds the conversion tests run against: the pinned package and the newest release."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

import pytest

from tests.support.comfy import TESTS_DIR

REQUIREMENTS_DEV = TESTS_DIR.parent / "builder" / "requirements-dev.txt"
NEWEST_FRONTEND_DIR = TESTS_DIR.parent / ".frontend-latest"
FRONTEND_PACKAGE = "comfyui-frontend-package"


@dataclass(frozen=True)
class Frontend:
    """A frontend build the conversion tests run against, and how ComfyUI is told to serve it."""

    name: str
    version: str
    comfy_args: tuple[str, ...]


def newest_frontend_version() -> str:
    """The version on requirements-dev.txt's ``# newest-frontend:`` line (local_setup.sh installs that)."""
    prefix = f"# newest-frontend: {FRONTEND_PACKAGE}=="
    for line in REQUIREMENTS_DEV.read_text().splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    raise AssertionError(f"{REQUIREMENTS_DEV} has no {prefix!r} line")


def newest_frontend() -> Frontend:
    """The newest frontend release, installed beside the venv; a failure (not a skip) if it is missing,
    since a silently skipped tier would test nothing."""
    version = newest_frontend_version()
    installed = [dist.version for dist in
                 importlib.metadata.distributions(name=FRONTEND_PACKAGE, path=[str(NEWEST_FRONTEND_DIR)])]
    if installed != [version]:
        pytest.fail(f"{FRONTEND_PACKAGE}=={version} is not installed in {NEWEST_FRONTEND_DIR} (found {installed}); "
                    "`make test` or `bash builder/local_setup.sh newest-frontend` installs it")
    static = NEWEST_FRONTEND_DIR / "comfyui_frontend_package" / "static"
    return Frontend("newest", version, ("--front-end-root", str(static)))


def pinned_frontend() -> Frontend:
    """The frontend package installed in the venv: the one ComfyUI serves by default, and the worker preloads."""
    return Frontend("pinned", importlib.metadata.version(FRONTEND_PACKAGE), ())
