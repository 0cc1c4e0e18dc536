"""Small statistics shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["percentile"]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100) of an ascending sequence."""
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
