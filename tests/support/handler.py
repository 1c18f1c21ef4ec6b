"""handler.py as RunPod's SDK runs it, in a subprocess: its environment, a one-shot run, the local API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.comfy import connector_settings
from tests.support.loopback import free_port

REPO = Path(__file__).resolve().parents[2]


def handler_env(comfy_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "OUTPUT_S3"))}
    settings = connector_settings(comfy_root, INITIAL_PORT=18600)
    env.update({key: str(value) for key, value in settings.items()})
    env.update(extra)
    return env


def run_handler(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "handler.py"), *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def output_files(comfy_root: Path) -> list[Path]:
    return sorted(p for p in (comfy_root / "output").rglob("*") if p.is_file())


def post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def serve_api(comfy_root: Path, *, flag: bool = True, **env: str) -> tuple[subprocess.Popen[str], int]:
    """``handler.py --rp_serve_api`` in a subprocess, once its API answers; the process and its port.
    ``flag=False`` leaves the flag out (SERVE_API_LOCALLY in ``env`` asks for the API instead)."""
    port = free_port()
    serve = ["--rp_serve_api"] if flag else []
    process = subprocess.Popen(
        [sys.executable, str(REPO / "handler.py"), *serve, "--rp_api_port", str(port)], cwd=REPO,
        env=handler_env(comfy_root, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=2)
            return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the development API did not come up: "
                                     + (process.stdout.read()[-3000:] if process.stdout else "")) from None
            time.sleep(0.5)


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
