"""C-FIND attribute matching (PS3.4 C.2.2.2): universal, single value, wild card, list of
UIDs and range matching. Pure functions."""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["matches"]

_RANGED = frozenset({"DA", "TM", "DT"})


@lru_cache(maxsize=256)
def _wildcard(pattern: str, fold: bool) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))


def _in_range(pattern: str, value: str) -> bool:
    low, _, high = pattern.partition("-")
    value = value.strip()
    width = max(len(low.strip()), len(high.strip()))
    # Times compare on the digits given (HHMM matches HHMMSS.ffffff of that minute).
    head = value[:width] if width else value
    return (not low.strip() or head >= low.strip()) and (not high.strip() or head <= high.strip())


def matches(pattern: str | None, value: str | None, vr: str) -> bool:
    """Whether ``value`` (an attribute of a stored object, None when unknown) matches the
    query key ``pattern`` of value representation ``vr``.

    An empty key matches everything (universal matching); a key of ``*`` only does too. A
    value the node does not know matches only universal keys. Person names match
    without regard to case (PS3.4 C.2.2.2.1 leaves that to the SCP; said in the
    conformance statement).
    """
    if pattern is None:
        return True
    pattern = pattern.strip()
    if pattern in ("", "*"):
        return True
    if value is None:
        return False
    value = str(value).strip()
    if vr == "UI":
        return value in {p.strip() for p in pattern.split("\\")}
    if vr in _RANGED and "-" in pattern:
        return _in_range(pattern, value)
    if "\\" in pattern:  # value multiplicity > 1 in a key: any of them (C.2.2.2.8)
        return any(matches(p, value, vr) for p in pattern.split("\\"))
    if "*" in pattern or "?" in pattern:
        return _wildcard(pattern, vr == "PN").fullmatch(value) is not None
    if vr == "PN":
        return pattern.casefold() == value.casefold()
    return pattern == value
