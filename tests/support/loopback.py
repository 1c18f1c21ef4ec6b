"""Loopback servers for tests: a real HTTP server for the length of a block (URL inputs, redirects,
request counters), and a free port for a server in a subprocess."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def loopback_server(app: web.Application, *, shutdown_timeout_s: float = 0.5) -> AsyncIterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port; yields its base URL (``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """An unused TCP port on 127.0.0.1, for a server started in another process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
