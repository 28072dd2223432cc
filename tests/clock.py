"""A deterministic stand-in for the ``time`` module inside the code under test.

Recorded costs (``wall_time_s``) are checked against this clock instead of the machine's: every
``perf_counter()`` call advances it by one fixed step, so a cost measured from the first call to the
last is an exact number, whatever the machine's load. Speed itself is measured in ``benchmarks/``.
"""
from __future__ import annotations

import time


class StepClock:
    def __init__(self, step: float = 0.25) -> None:
        self.step = step
        self.calls: list[float] = []

    def perf_counter(self) -> float:
        now = 1000.0 + self.step * len(self.calls)
        self.calls.append(now)
        return now

    def span(self) -> float:
        """From the first reading to the last: what a cost measured around the whole call should be."""
        return self.calls[-1] - self.calls[0]

    def __getattr__(self, name: str):  # sleep, time, ...: the real module's
        return getattr(time, name)


def install(monkeypatch, module) -> StepClock:
    """Replace ``module.time`` (only that module's view of it) with a fresh StepClock."""
    clock = StepClock()
    monkeypatch.setattr(module, "time", clock)
    return clock
