"""Seed lists and resumable JSON-lines result files shared by the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["append_row", "load_rows", "seed_list"]


def seed_list(text: str) -> list[int]:
    """Seeds from ``"10-19"``, ``"3"`` or ``"1-3,7,9-10"``."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def load_rows(path: Path) -> list[dict]:
    """The rows already in a JSON-lines file (none when it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def append_row(path: Path, row: dict) -> None:
    """Append one row to a JSON-lines file (a long run can stop and resume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
