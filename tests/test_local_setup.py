"""README's commands find Chromium on a fresh machine by themselves (builder/local_setup.sh).

The machine here has Chromium, so the script runs with a PATH that lacks it and with
Playwright's download pointed at a closed port: the situation of a fresh Debian machine
without access to Playwright's download host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: What local_setup.sh's Chromium step runs, apart from Chromium itself.
TOOLS = ("bash", "sh", "sed", "head", "tr", "sha256sum", "cut", "cat", "id", "timeout", "dirname", "apt-cache",
         "apt-get", "env", "rm", "mkdir", "grep", "tee", "mktemp", "sleep")


@pytest.fixture
def checkout_without_chromium() -> Iterator[tuple[Path, Path]]:
    """A copy of the set-up files with the project's venv, and a bin folder holding TOOLS but no Chromium."""
    top = Path(tempfile.mkdtemp(prefix="local-setup-"))
    try:
        top.chmod(0o755)
        checkout = top / "checkout"
        for relative in ("builder/local_setup.sh", "builder/requirements.txt", "builder/requirements-dev.txt",
                         "pyproject.toml", "Dockerfile"):
            (checkout / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / relative, checkout / relative)
        (checkout / ".venv").symlink_to(REPO / ".venv")
        bin_dir = top / "bin"
        bin_dir.mkdir()
        for tool in TOOLS:
            found = shutil.which(tool)
            if found:
                (bin_dir / tool).symlink_to(found)
        yield checkout, bin_dir
    finally:
        shutil.rmtree(top)


def run_setup(checkout: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(bin_dir), "HOME": str(checkout), "PLAYWRIGHT_DOWNLOAD_HOST": "http://127.0.0.1:9",
           "PLAYWRIGHT_BROWSERS_PATH": str(checkout / "browsers")}
    return subprocess.run([str(bin_dir / "bash"), str(checkout / "builder/local_setup.sh"), "chromium"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_as_root_the_distribution_package_is_installed(checkout_without_chromium: tuple[Path, Path]) -> None:
    """apt-get really runs; Chromium is installed already here, so it only confirms the package.
    The script then looks for Chromium again, which this PATH hides: the final message proves the
    install step ran, and a fresh machine (CI's `.ci/run` installs no Chromium) proves the rest."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    checkout, bin_dir = checkout_without_chromium
    result = run_setup(checkout, bin_dir)
    assert "installing the distribution's Chromium (chromium chromium-headless-shell)" in result.stderr
    assert "apt-get install -y -qq --no-install-recommends chromium chromium-headless-shell" in result.stderr
    assert "but no chromium is on PATH" in result.stderr
    assert subprocess.run(["dpkg-query", "-W", "-f=${Status}", "chromium"], capture_output=True,
                          text=True).stdout == "install ok installed"


#: Holds apt's locks as another apt-get would (fcntl locks on the same files) for argv[1] seconds.
HOLD_APT_LOCKS = """
import fcntl, sys, time
held = [open(path, "a") for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")]
for handle in held:
    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(float(sys.argv[1]))
"""


def test_the_install_waits_while_another_apt_holds_the_lock(checkout_without_chromium: tuple[Path, Path]) -> None:
    """A fresh machine's unattended-upgrades holds the lock at boot: the step waits, says so, then installs."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    checkout, bin_dir = checkout_without_chromium
    holder = subprocess.Popen([sys.executable, "-c", HOLD_APT_LOCKS, "8"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = run_setup(checkout, bin_dir)
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for the package lock, held by process {holder.pid} (python" in result.stderr
    assert "but no chromium is on PATH" in result.stderr, result.stderr[-2000:]
