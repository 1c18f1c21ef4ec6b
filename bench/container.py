"""The container's cold start: `docker run` to the worker's local API answering, against bare ComfyUI
started in the same image (`docker run … python main.py` to its first HTTP answer), interleaved.

    python -m bench.container [IMAGE] [--repeat 3]     # default comfy-serverless:image-test

Both on the CPU (`--cpu`), host networking, the image's frontend record in use.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import urllib.request
import uuid

from tests.support.loopback import free_port

from .common import Figure, Report, median

DOCKER = "/usr/bin/docker"


def _run_until_answer(image: str, command: list[str], url: str, env: dict[str, str], timeout_s: float = 600) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    environment = [word for key, value in env.items() for word in ("-e", f"{key}={value}")]
    started = time.monotonic()
    subprocess.run([DOCKER, "run", "-d", "--network", "host", "--name", name, *environment, image, *command],
                   check=True, capture_output=True)
    try:
        while time.monotonic() - started < timeout_s:
            try:
                urllib.request.urlopen(url, timeout=1)
                return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{image} {command} did not answer {url}")
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)


def worker_s(image: str) -> float:
    port = free_port()
    return _run_until_answer(image, ["python", "-u", "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                                     "--rp_api_port", str(port)], f"http://127.0.0.1:{port}/docs",
                             {"COMFY_EXTRA_ARGS": "--cpu", "INITIAL_PORT": str(free_port())})


def bare_s(image: str) -> float:
    port = free_port()
    return _run_until_answer(image, ["sh", "-c", f"cd /comfyui && exec python main.py --cpu --port {port}"],
                             f"http://127.0.0.1:{port}/", {})


def run(report: Report, image: str, repeat: int) -> None:
    bare, worker = [], []
    for _ in range(repeat):
        bare.append(bare_s(image))
        worker.append(worker_s(image))
    report.add(Figure(f"container cold start: docker run to the worker's API answering (median of {repeat})",
                      median(worker), "s", median(bare), "bare ComfyUI in the same image answers HTTP",
                      extra={"worker": worker, "bare": bare}))
    report.add(Figure("container cold start overhead over bare ComfyUI", median(worker) - median(bare), "s"))


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.container", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default="comfy-serverless:image-test")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report = Report()
    run(report, args.image, args.repeat)
    print(report.table())


if __name__ == "__main__":
    cli()
