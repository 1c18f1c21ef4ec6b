"""Spies on the job pipeline, for the tests that a bad or hostile job runs nothing and reaches nothing.

They record what ComfyUI accepted, which inputs were fetched and placed, and which hosts a download
connected to; and they block every DNS lookup of a non-numeric host but ``localhost``, so no case
can reach beyond this machine. The real calls still happen.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from comfy_serverless import ComfyConnector
from comfy_serverless import job as job_module
from comfy_serverless.client import ComfyClient
from comfy_serverless.errors import PromptValidationError
from comfy_serverless.folders import ComfyFiles
from comfy_serverless.inputs import fetch_all
from comfy_serverless.sources.guarded_http import PinnedResolver
from tests.support.jobs import folder_state


class Spies:
    """Prompts ComfyUI accepted, inputs fetched and placed, hosts a download connected to, DNS lookups refused."""

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.fetched: list[str] = []
        self.placed: list[str] = []
        self.connections: list[str] = []
        self.blocked_lookups: list[str] = []


def _local_host(host: object) -> bool:
    """Loopback names and numeric addresses: looking them up sends nothing over the network."""
    if host is None or (isinstance(host, str) and host.lower() in ("localhost", "localhost.")):
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        socket.inet_pton(socket.AF_INET6, text.split("%")[0])
        return True
    except OSError:
        pass
    try:
        socket.inet_aton(text)  # also the short and decimal forms (2130706433, 0x7f.1)
        return True
    except OSError:
        return False


def spy_on_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> Spies:
    """Spies in place until ``monkeypatch`` is undone (the end of the test)."""
    spies = Spies()
    queue_prompt = ComfyClient.queue_prompt
    resolve = PinnedResolver.resolve
    upload_async = ComfyFiles.upload_async
    getaddrinfo = socket.getaddrinfo

    async def spy_queue_prompt(self: ComfyClient, prompt: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        try:
            await queue_prompt(self, prompt, *args, **kwargs)
        except PromptValidationError as exc:
            if exc.queued:  # ComfyUI queued the valid part
                spies.queued.append(prompt)
            raise
        spies.queued.append(prompt)

    async def spy_fetch_all(items: Any, **kwargs: Any) -> list[int]:
        spies.fetched.extend(spec.field for spec, _ in items)
        return await fetch_all(items, **kwargs)

    async def spy_upload_async(self: ComfyFiles, *args: Any, **kwargs: Any) -> str:
        placed = await upload_async(self, *args, **kwargs)
        spies.placed.append(placed)
        return placed

    async def spy_resolve(self: PinnedResolver, host: str, *args: Any, **kwargs: Any) -> Any:
        spies.connections.append(host)
        return await resolve(self, host, *args, **kwargs)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _local_host(host):
            spies.blocked_lookups.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"the test spies block DNS lookups of {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(ComfyClient, "queue_prompt", spy_queue_prompt)
    monkeypatch.setattr(PinnedResolver, "resolve", spy_resolve)
    monkeypatch.setattr(ComfyFiles, "upload_async", spy_upload_async)
    monkeypatch.setattr(job_module, "fetch_all", spy_fetch_all)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return spies


async def history(connector: ComfyConnector) -> dict[str, Any]:
    return await connector.client.get_json("/history")


async def assert_nothing_ran(connector: ComfyConnector, spies: Spies, history_before: dict[str, Any],
                             folders_before: dict[str, list[str]], scratch_dir: Path) -> None:
    assert spies.queued == [], "ComfyUI accepted a prompt for a bad job"
    assert spies.placed == [], "an input was placed in ComfyUI's folders for a bad job"
    assert await history(connector) == history_before
    assert await connector.client.get_json("/queue") == {"queue_running": [], "queue_pending": []}
    assert folder_state(connector, scratch_dir) == folders_before
    assert spies.connections == [], f"a download connected to {spies.connections}"
    assert spies.blocked_lookups == [], f"DNS lookups of {spies.blocked_lookups} were attempted"
