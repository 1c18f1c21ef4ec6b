"""``python -m bench``: every benchmark, a table on stdout and JSON in .bench-results/.

    python -m bench                     # against the test server
    COMFYUI_PATH=/opt/ComfyUI API_COMMAND_LINE="/opt/venv/bin/python main.py --cpu" python -m bench
    python -m bench --only conversion --conversions 100

Benchmarks never fail: they measure and report. Each figure stands beside its baseline,
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from comfy_serverless import ComfyConnector
from comfy_serverless.config import Config
from comfy_serverless.job import JobRunner
from comfy_serverless.storage import S3Storage
from tests.support.fixtures_s3 import moto_server

from . import chromium_memory, cold_start, conversion, frontend_start, jobs, model_cache, throughput
from .common import REPO, Report, comfy_root, write_config
from .memory import MemorySampler

PARTS = ("cold", "frontend-start", "chromium-memory", "conversion", "jobs", "s3", "model-cache", "throughput", "soak")


async def main(args: argparse.Namespace) -> Report:
    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    root = comfy_root()
    if "cold" in args.only:
        print("cold start …", flush=True)
        await cold_start.run(report, workdir, root, args.repeat)
    if "frontend-start" in args.only:
        print("FRONTEND_START modes …", flush=True)
        await frontend_start.run(report, workdir, root, args.repeat)
    if "chromium-memory" in args.only:
        print(f"Chromium memory over {args.memory_conversions} conversions …", flush=True)
        await chromium_memory.run(report, workdir, root, args.memory_conversions)
    connector = await ComfyConnector.create(str(write_config(workdir, root)))
    try:
        with MemorySampler(connector) as sampler:
            if "conversion" in args.only:
                print("conversion …", flush=True)
                await conversion.run(report, connector, args.conversions)
            runner = JobRunner(connector, Config(scratch_dir=str(workdir / "scratch")), None)
            if "jobs" in args.only:
                print("per-job overhead …", flush=True)
                await jobs.overhead(report, connector, runner, args.jobs)
            if "s3" in args.only:
                print("S3 …", flush=True)
                with moto_server() as s3:
                    config = s3.config(scratch_dir=str(workdir / "scratch"))
                    s3_runner = JobRunner(connector, config, S3Storage.from_config(config))
                    await jobs.s3_transfer(report, s3_runner, s3.client(), s3.bucket, max(5, args.jobs // 4))
            if "model-cache" in args.only:
                print("model cache …", flush=True)
                with moto_server() as s3:
                    await model_cache.run(report, connector, s3, workdir)
            if "throughput" in args.only:
                print("throughput and streaming …", flush=True)
                with moto_server() as s3:
                    config = s3.config(scratch_dir=str(workdir / "scratch"), url_allowlist="127.0.0.1")
                    s3_runner = JobRunner(connector, config, S3Storage.from_config(config))
                    await throughput.throughput(report, connector, s3_runner, s3.bucket)
                    await throughput.time_to_first_output(report, connector, s3_runner)
            if "soak" in args.only:
                print(f"soak ({args.soak} jobs) …", flush=True)
                await jobs.soak(report, connector, runner, args.soak, sampler)
        sampler.report(report)
        if "conversion" in args.only:
            await conversion.against_fresh_context(report, connector, args.conversions)
    finally:
        await connector.kill_api()
    return report


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeat", type=int, default=5, help="cold starts of each kind (default 5)")
    parser.add_argument("--memory-conversions", type=int, default=1000,
                        help="distinct conversions per browser in chromium-memory (default 1000)")
    parser.add_argument("--conversions", type=int, default=40, help="conversions per workflow (default 40)")
    parser.add_argument("--jobs", type=int, default=30, help="jobs for the per-job overhead (default 30)")
    parser.add_argument("--soak", type=int, default=500, help="jobs in the soak (default 500)")
    parser.add_argument("--out", type=Path, default=REPO / ".bench-results" / "latest.json")
    args = parser.parse_args()
    started = time.monotonic()
    report = asyncio.run(main(args))
    print()
    print(report.table())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**report.as_json(), "seconds": time.monotonic() - started}, indent=1))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    cli()
