"""``python -m bench.gpu``: the worker running real diffusion jobs, each figure beside its baseline.

Every other benchmark runs ComfyUI on a CPU, where a job executes for minutes; on a GPU it is
seconds, so per-job overhead, transfers and the cold start weigh differently. This one runs the
real workload, ``CheckpointLoaderSimple`` → ``KSampler`` → ``VAEDecode`` → ``SaveImage`` (API
format, a new seed and prompt text per job), on a full-size SD1.5-shaped checkpoint with random
weights that :mod:`bench.gpu_checkpoint` builds with ComfyUI's own classes (weights cannot be
downloaded; the images are noise, the compute is real). It needs a real ComfyUI::

    COMFYUI_PATH=/opt/ComfyUI API_COMMAND_LINE="/opt/venv/bin/python main.py" python -m bench.gpu
    # a proof on the CPU, small and quick:
    COMFYUI_PATH=... API_COMMAND_LINE=".../python main.py --cpu" python -m bench.gpu \\
        --size 64 --steps 2 --jobs 2 --soak 3 --concurrency-jobs 2 --cold 1

It measures, in one run: the cold start (worker ready against bare ComfyUI answering HTTP,
:mod:`bench.cold_start`); a first and a second job (the second finds the checkpoint loaded: the
loader in ``execution_cached``); per-job overhead (the worker's end-to-end time against the same
prompt from a bare client, interleaved, medians) with KSampler steps per second from the bare
client's progress messages; jobs per minute with MAX_CONCURRENT_JOBS 1 and 2, each job fetching
an input from a loopback server that answers after 0.3 s and uploading its output to moto's S3
on loopback, with ComfyUI's and the GPU's busy fraction (nvidia-smi; n/a without it); and
memory (worker and ComfyUI RSS; VRAM from ComfyUI's /system_stats and nvidia-smi, n/a on a CPU)
after the first job and after the soak. The checkpoint is built once, into ``--models-dir``
(default: .bench-results/models/, ignored by git, so a run never leaves 2 GB in a ComfyUI tree),
which ComfyUI is pointed at with ``--extra-model-paths-config`` unless it is ComfyUI's models/.

Device plan, prepared and not yet run (a lent H100/H200: 16 cores, torch 2.11 in ``python3``, nothing
fetched there, at most 64 MiB carried per call, 15 minutes of device time in all, warm for about 30 s
between calls). The worker boots its frontend page even for API-format jobs (the connector launches
Chromium through Playwright), so Playwright and a Chromium travel too. Sizes as downloaded here for
CPython 3.12, manylinux x86-64 (``pip download --no-deps --only-binary=:all:``, flags in the device
tool's README):

1. Here: ``git archive`` of ``../shared/fixtures/git/ComfyUI.bundle`` (v0.3.64; the bundle is 4.5 MB, the
   tree 16 MB) into ``.gpu/``, with ``user/default/comfy.settings.json`` = ``{"Comfy.TutorialCompleted":
   true}``; into ``.whl/`` what the image lacks: botocore 16.1 MB, boto3, s3transfer, jmespath,
   comfyui-frontend-package 1.27.10 (10.8 MB), moto[server] 5.2.5 (6.9 MB) with flask, flask-cors,
   xmltodict, responses, cryptography, torchsde, trampoline, alembic, sqlalchemy, mako, pydantic,
   pydantic-core, pydantic-settings, python-dotenv, spandrel, kornia, kornia-rs (runpod and
   websocket-client are not needed: the bench drives ``JobRunner``, not handler.py); ``.whl2/``: av
   (34.1 MB, ComfyUI imports it at start); ``.whl3/``: playwright 1.65.2 (52.2 MB); ``.deb/``: Debian's
   ``chromium-headless-shell`` (64.1 MB); ``.deb2/``: ``chromium-common`` (31.6 MB), which it depends on.
2. Call 1 carries ``.gpu`` and ``.whl`` and installs with ``pip install --no-index --no-deps --target
   /tmp/site``, printing ``nvidia-smi``. Calls 2 and 3 carry ``.whl2`` and ``.whl3`` the same way, and
   call 4 ``.deb`` (``dpkg -x`` into /tmp/chromium, never ``/``), one after the other within the warm
   window. Call 5 carries ``.deb2``, unpacks it beside, checks ``ldd /tmp/chromium/usr/lib/chromium/
   chromium-headless-shell`` (libraries the image lacks stop the run there: their debs would need more
   calls), then runs ``PYTHONPATH=/tmp/site:src COMFYUI_PATH=.gpu API_COMMAND_LINE="python3 main.py"
   CHROMIUM_EXECUTABLE=/tmp/chromium/usr/lib/chromium/chromium-headless-shell python3 -m bench.gpu
   --out $OUT/gpu.json`` (defaults: 512x512, 20 steps, 50 jobs, 3 cold starts of each kind) with a
   timeout of about five minutes, leaving room for one rerun. The checkpoint is built there first (2.1 GB;
   26 s here on two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage
from tests.support.fixtures_s3 import moto_server

from . import cold_start
from .common import REAL_COMFY, REPO, Figure, Report, median, write_config
from .jobs import BareRun, overhead_figures, png_bytes, side_by_side
from .memory import MB, process_tree, rss_and_pss
from .model_cache import cached_nodes, executed_loader
from .throughput import Rate, ceiling, jobs_per_minute, slow_input_server

CHECKPOINT = "bench-sd15-random.safetensors"
LOADER, SAMPLER = "4", "3"  # node ids as in ComfyUI's default graph


class Workload:
    """The SD1.5 text-to-image prompt at one size and step count; each call gets a new seed and prompt text,
    so that the sampler, decoder and positive text encoder run every time and the loader is the cache's."""

    def __init__(self, size: int, steps: int) -> None:
        self.size, self.steps = size, steps
        self._seeds = itertools.count(1)

    def prompt(self) -> dict[str, Any]:
        seed = next(self._seeds)
        return {
            "3": {"class_type": "KSampler", "inputs": {
                "seed": seed, "steps": self.steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                "latent_image": ["5", 0]}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": self.size, "height": self.size,
                                                                "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a lighthouse at dusk, {seed}",
                                                             "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "gpu-bench"}}}

    def inline_job(self) -> dict[str, Any]:
        return {"workflow": self.prompt(), "output": {"inline": True}}

    def transfer_job(self, url: str, bucket: str) -> dict[str, Any]:
        """With an input fetched from ``url`` (placed for an unconnected LoadImage, as a reference image a
        job brings: ComfyUI does not execute it) and the image uploaded to S3."""
        prompt = self.prompt()
        prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "reference.png"}}
        return {"workflow": prompt, "inputs": [{"source": url, "name": "reference.png"}],
                "output": {"s3_uri": f"s3://{bucket}/gpu-bench", "presign": False}}


# --- the checkpoint and ComfyUI's model folders -------------------------------------------------

def ensure_checkpoint(config: Config, models_dir: Path) -> Path:
    """The random checkpoint in ``models_dir``/checkpoints, built in ComfyUI's Python unless it is there."""
    path = models_dir / "checkpoints" / CHECKPOINT
    if not path.exists():
        print(f"building {path} …", flush=True)
        builder = REPO / "bench" / "gpu_checkpoint.py"
        subprocess.run([config.command[0], str(builder), str(config.comfy_root), str(path)], check=True, timeout=1800)
    return path


def point_comfy_at(models_dir: Path, workdir: Path, comfy_models: Path) -> None:
    """Make ComfyUI read checkpoints from ``models_dir`` too: an extra_model_paths file named in
    COMFY_EXTRA_ARGS (set in this process's environment, which wins over a config file)."""
    if models_dir.resolve() == comfy_models.resolve():
        return
    extra = workdir / "extra_model_paths.yaml"
    extra.write_text(json.dumps({"bench": {"base_path": str(models_dir.resolve()), "checkpoints": "checkpoints"}}))
    os.environ["COMFY_EXTRA_ARGS"] = f"{os.environ.get('COMFY_EXTRA_ARGS', '')} --extra-model-paths-config {extra}"


# --- the GPU, as nvidia-smi and ComfyUI see it --------------------------------------------------

def nvidia_smi(*fields: str) -> list[str] | None:
    """One reading of ``fields`` for the first GPU, or None where there is no nvidia-smi."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    out = subprocess.run([executable, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [value.strip() for value in out.splitlines()[0].split(",")]


class GpuBusy:
    """nvidia-smi's utilisation every 100 ms while the block runs; ``fraction`` is NaN without nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> GpuBusy:
        executable = shutil.which("nvidia-smi")
        if executable is not None:
            self._process = subprocess.Popen([executable, "--query-gpu=utilization.gpu",
                                              "--format=csv,noheader,nounits", "-lms", "100"],
                                             stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
            self._reader.start()
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._reader is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._reader.join(timeout=10)

    @property
    def fraction(self) -> float:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else math.nan


async def memory_now(connector: ComfyConnector) -> dict[str, float]:
    """MB: the worker's and ComfyUI's RSS; VRAM the device uses, and what ComfyUI's torch reserved and
    allocated (its /system_stats), NaN on a CPU."""
    device = (await connector.client.get_json("/system_stats"))["devices"][0]
    on_gpu = device["type"] == "cuda"

    def vram(value: float) -> float:
        return value / MB if on_gpu else math.nan

    return {"worker RSS": psutil.Process().memory_info().rss / MB,
            "ComfyUI RSS": rss_and_pss(process_tree(connector.comfy.pid))[0] / MB,
            "VRAM used on the device": vram(device["vram_total"] - device["vram_free"]),
            "VRAM reserved by ComfyUI's torch": vram(device["torch_vram_total"]),
            "VRAM allocated by ComfyUI's torch": vram(device["torch_vram_total"] - device["torch_vram_free"])}


# --- the measurements ---------------------------------------------------------------------------

async def first_jobs(report: Report, connector: ComfyConnector, runner: JobRunner,
                     workload: Workload) -> dict[str, float]:
    """Job 1 loads the checkpoint, job 2 finds it loaded (the loader in ``execution_cached``); returns the
    memory after job 1."""
    first = await runner.run("gpu-first", workload.inline_job())
    assert "error" not in first, first
    after_first = await memory_now(connector)
    second = await runner.run("gpu-second", workload.inline_job())
    assert "error" not in second, second
    report.add(Figure("job 1 total (loads the checkpoint)", first["timings"]["total"], "s"))
    report.add(Figure("job 2 total (checkpoint loaded)", second["timings"]["total"], "s", first["timings"]["total"],
                      "job 1"))
    ran = executed_loader(second, LOADER)
    report.add(Figure("job 2 runs the checkpoint loader (1 = yes)", float(ran), "",
                      float(executed_loader(first, LOADER)), "job 1", target="0 (the model stays loaded)",
                      met=not ran))
    return after_first


def steps_per_s(run: BareRun) -> float:
    """KSampler steps per second from the progress messages' arrival: (last - first) over the steps between."""
    ticks = [(at, data["value"]) for at, data in run.of_prompt("progress") if data.get("node") == SAMPLER]
    if len(ticks) < 2:
        return math.nan
    (first_at, first_step), (last_at, last_step) = ticks[0], ticks[-1]
    return float(last_step - first_step) / (last_at - first_at)


async def overhead_and_speed(report: Report, connector: ComfyConnector, runner: JobRunner, workload: Workload,
                             count: int) -> None:
    bare, worker = await side_by_side(connector, runner, count, lambda _: workload.prompt(),
                                      lambda _: workload.inline_job())
    assert all(LOADER in cached_nodes(run.history) for run in bare), "a bare run reloaded the checkpoint"
    label = f"SD1.5 {workload.size}x{workload.size}, {workload.steps} steps"
    overhead_figures(report, f"per job, {label}", bare, worker)
    report.add(Figure(f"KSampler steps/s, {label} (bare client's progress messages)",
                      median([steps_per_s(run) for run in bare]), "steps/s"))
    report.add(Figure(f"job total, {label} (worker)", median([r["timings"]["total"] for r in worker]), "s",
                      median([r["timings"]["execute"] for r in worker]), "of which executing"))


async def concurrency(report: Report, connector: ComfyConnector, workload: Workload, count: int,
                      scratch: Path) -> None:
    """Jobs per minute with MAX_CONCURRENT_JOBS 1 and 2: each fetches an input that takes 0.3 s and uploads
    its image to S3 on loopback; beside it, how busy ComfyUI and the GPU were."""
    with moto_server() as s3:
        config = s3.config(scratch_dir=str(scratch), url_allowlist="127.0.0.1")
        runner = JobRunner(connector, config, S3Storage.from_config(config))
        async with slow_input_server(png_bytes(workload.size * workload.size * 3, noise=True)) as url:
            measured: dict[int, tuple[Rate, float]] = {}
            for n in (1, 2):
                with GpuBusy() as gpu:
                    rate = await jobs_per_minute(runner, lambda _: workload.transfer_job(url, s3.bucket), n, count)
                measured[n] = rate, gpu.fraction
    base = measured[1][0].per_minute
    for n, (rate, gpu_busy) in measured.items():
        shape = f"{count} jobs: URL in +300 ms, {median(rate.executed):.2f} s executing, S3 out"
        report.add(Figure(f"MAX_CONCURRENT_JOBS {n} ({shape})", rate.per_minute, "jobs/min", base,
                          "MAX_CONCURRENT_JOBS 1"))
        report.add(Figure(f"ComfyUI busy, MAX_CONCURRENT_JOBS {n}", 100 * rate.comfy_busy, "%"))
        report.add(Figure(f"GPU busy (nvidia-smi), MAX_CONCURRENT_JOBS {n}", 100 * gpu_busy, "%"))
    report.add(ceiling(measured[1][0]))


async def soak(report: Report, connector: ComfyConnector, runner: JobRunner, workload: Workload, count: int,
               after_first: dict[str, float], jobs_before: int) -> None:
    for index in range(count):
        result = await runner.run(f"gpu-soak-{index}", workload.inline_job())
        assert "error" not in result, result
    total = jobs_before + count
    for name, value in (await memory_now(connector)).items():
        report.add(Figure(f"{name} after {total} jobs", value, "MB", after_first[name], "after job 1",
                          target="flat (<= 1.05x)",
                          met=None if math.isnan(value) else value <= 1.05 * after_first[name]))


async def main(args: argparse.Namespace) -> tuple[Report, dict[str, Any]]:
    if not REAL_COMFY:
        raise SystemExit("bench.gpu needs a real ComfyUI: set COMFYUI_PATH (and API_COMMAND_LINE)")
    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    root = Path(os.environ["COMFYUI_PATH"])
    config_path = write_config(workdir, root)
    config = Config.load(config_path)
    models_dir = args.models_dir
    checkpoint = ensure_checkpoint(config, models_dir)
    point_comfy_at(models_dir, workdir, root / "models")
    gpu = nvidia_smi("name", "driver_version", "memory.total")
    context = {"checkpoint": str(checkpoint), "checkpoint_bytes": checkpoint.stat().st_size, "gpu": gpu,
               "date": time.strftime("%Y-%m-%d"), "size": args.size, "steps": args.steps}
    print(f"GPU: {gpu or 'none (no nvidia-smi)'}", flush=True)
    if args.cold:
        print("cold start …", flush=True)
        await cold_start.run(report, workdir, root, args.cold)
    workload = Workload(args.size, args.steps)
    connector = await ComfyConnector.create(str(write_config(workdir, root)))
    try:
        runner = JobRunner(connector, Config(scratch_dir=str(workdir / "scratch")), None)
        print("jobs 1 and 2 …", flush=True)
        after_first = await first_jobs(report, connector, runner, workload)
        print(f"per-job overhead and speed ({args.jobs} jobs each) …", flush=True)
        await overhead_and_speed(report, connector, runner, workload, args.jobs)
        print(f"MAX_CONCURRENT_JOBS 1 and 2 ({args.concurrency_jobs} jobs each) …", flush=True)
        await concurrency(report, connector, workload, args.concurrency_jobs, workdir / "scratch")
        print(f"soak ({args.soak} jobs) …", flush=True)
        jobs_so_far = 2 + args.jobs + 2 * args.concurrency_jobs
        await soak(report, connector, runner, workload, args.soak, after_first, jobs_so_far)
    finally:
        await connector.kill_api()
    return report, context


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image width and height (default 512)")
    parser.add_argument("--steps", type=int, default=20, help="KSampler steps (default 20)")
    parser.add_argument("--jobs", type=int, default=10, help="jobs each for the bare client and the worker (10)")
    parser.add_argument("--concurrency-jobs", type=int, default=10, help="jobs at each MAX_CONCURRENT_JOBS (10)")
    parser.add_argument("--soak", type=int, default=18, help="jobs after the others, before the last memory reading "
                                                              "(default 18: 50 jobs in all)")
    parser.add_argument("--cold", type=int, default=3, help="cold starts of each kind (default 3; 0: none)")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".bench-results" / "models",
                        help="where the checkpoint is built and read (default .bench-results/models; ComfyUI "
                             "reads it through an extra_model_paths file)")
    parser.add_argument("--out", type=Path, default=REPO / ".bench-results" / "gpu.json")
    args = parser.parse_args()
    started = time.monotonic()
    report, context = asyncio.run(main(args))
    print()
    print(report.table())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**report.as_json(), **context, "seconds": time.monotonic() - started}, indent=1))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    cli()
