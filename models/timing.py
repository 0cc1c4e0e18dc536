"""Seconds spent per step of a method, for its result and the benchmarks."""

from __future__ import annotations

import time

__all__ = ["StepTimer"]


class StepTimer:
    """Accumulates wall-clock seconds by step name: ``lap("n4")`` charges the time since
    the previous lap (or since the timer was made) to ``"n4"``; ``seconds`` holds them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._clock
        self._clock = now
