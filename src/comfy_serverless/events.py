"""Small event types passed between the layers (progress for RunPod, connector state)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class ConnectorState(enum.StrEnum):
    """``uninit → initializing → ready | error``; ``ready | error → killed``."""

    UNINIT = "uninit"
    INITIALIZING = "initializing"
    READY = "ready"
    ERROR = "error"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of progress of a running prompt, as ComfyUI reported it.

    ``value``/``max`` are the node's own steps (sampler steps, say); ``nodes_done``
    of ``nodes_total`` counts whole nodes, so callers can show an overall percent.
    """

    prompt_id: str
    node: str | None
    value: float
    max: float
    nodes_done: int
    nodes_total: int

    @property
    def percent(self) -> float:
        if self.nodes_total <= 0:
            return 0.0
        within = self.value / self.max if self.max else 0.0
        return round(100.0 * min(1.0, (self.nodes_done + within) / self.nodes_total), 1)


ProgressCallback = Callable[[Progress], Awaitable[None] | None]
