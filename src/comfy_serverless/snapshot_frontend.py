"""``python -m comfy_serverless.snapshot_frontend PATH``: record what the frontend reads from ComfyUI at start.

Run once per image, after ComfyUI and its custom nodes are installed (the
Dockerfile does), with the worker's own configuration: it boots ComfyUI, loads
the frontend once with the settings the worker gives it, records ComfyUI's API
answers (see :mod:`.frontend_record`) and stops. Setting ``FRONTEND_SNAPSHOT=PATH``
then lets every cold start set the page up while ComfyUI is still booting.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from .browser import FrontendConverter
from .config import Config
from .errors import ComfyServerlessError
from .frontend_record import FrontendRecord
from .server import ComfyServer

logger = logging.getLogger(__name__)


async def snapshot(config: Config, path: Path) -> FrontendRecord:
    """Boot ComfyUI, record the frontend's set-up answers into ``path``, stop everything."""
    config = dataclasses.replace(config, frontend_snapshot="")  # the record being made is not there yet
    server = ComfyServer(config)
    converter = FrontendConverter(config)
    server.spawn()
    try:
        await server.connect()  # as the worker's boot does: the settings its page reads are in place
        record = await converter.record(server.base_url)
        record.save(path)
        logger.info("recorded %d answers of ComfyUI's API to %s", len(record.responses), path)
        return record
    finally:
        await converter.close()
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfy_serverless.snapshot_frontend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="where the record is written (then set FRONTEND_SNAPSHOT to it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        asyncio.run(snapshot(Config.load(), args.path))
    except ComfyServerlessError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
