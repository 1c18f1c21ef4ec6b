"""Peak memory of the worker process, its Chromium (all processes) and ComfyUI.

Chromium is many processes sharing pages; adding their RSS counts shared pages many
times over. PSS (proportional set size) splits each shared page among its users, so the
sum is what the processes really cost. Both are reported.
"""

from __future__ import annotations

import threading

import psutil

from comfy_serverless import ComfyConnector

from .common import Figure, Report

MB = 1024 * 1024


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The process and all its descendants (none when it is gone)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss_and_pss(processes: list[psutil.Process]) -> tuple[int, int]:
    rss = pss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def chromium_processes(connector: ComfyConnector) -> list[psutil.Process]:
    """The connector's Chromium processes, each once though it is in several trees."""
    return list({p.pid: p for pid in connector.frontend.chromium_pids for p in process_tree(pid)}.values())


def chromium_pss(connector: ComfyConnector) -> int:
    return rss_and_pss(chromium_processes(connector))[1]


class MemorySampler:
    """Samples every ``interval_s`` in a thread and keeps the peaks."""

    def __init__(self, connector: ComfyConnector, interval_s: float = 0.25) -> None:
        self._connector = connector
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peaks: dict[str, tuple[int, int]] = {}

    def sample(self) -> None:
        groups = {
            "worker": [psutil.Process()],
            "chromium": chromium_processes(self._connector),
            "comfyui": process_tree(self._connector.comfy.pid),
        }
        for name, processes in groups.items():
            rss, pss = rss_and_pss(processes)
            old = self.peaks.get(name, (0, 0))
            self.peaks[name] = (max(old[0], rss), max(old[1], pss))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, report: Report) -> None:
        if not self.peaks:
            return  # no sample was taken: the parts measured ran too briefly
        for name, (rss, pss) in self.peaks.items():
            report.add(Figure(f"peak memory: {name} (PSS)", pss / MB, "MB", extra={"rss_mb": rss / MB}))
        worker_and_browser = (self.peaks["worker"][1] + self.peaks["chromium"][1]) / MB
        report.add(Figure("peak memory: worker + Chromium (PSS)", worker_and_browser, "MB"))
