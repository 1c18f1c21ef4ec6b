"""Containers of a built image for the image tier: `docker run --network host`, each with its own ports."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from typing import Any

from tests.support.loopback import free_port

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=check)


class Container:
    """One detached container of the image, its local API on a free port, removed at the end."""

    def __init__(self, image: str, *, env: dict[str, str] | None = None, options: tuple[str, ...] = (),
                 command: tuple[str, ...] | None = None) -> None:
        self.name = f"image-tier-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        settings = {"COMFY_EXTRA_ARGS": "--cpu", "INITIAL_PORT": str(free_port())} | (env or {})
        environment = [word for key, value in settings.items() for word in ("-e", f"{key}={value}")]
        self.command = command or ("python", "-u", "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                                   "--rp_api_port", str(self.port))
        docker("run", "-d", "--network", "host", "--name", self.name, *environment, *options, image, *self.command)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_for_api(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/docs", timeout=2)
                return
            except OSError:
                if docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip() != "true":
                    break
                time.sleep(1)
        raise AssertionError(f"the container's API did not come up:\n{self.logs()[-4000:]}")

    def state(self) -> dict[str, Any]:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)
