"""Where an instance lives on disk: ``<root>/<study>/<series>/<sop>.dcm``, sanitised."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["INCOMING_DIR", "instance_relpath", "safe_component"]

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: Temporary files live under the storage root so the final move is an atomic rename.
INCOMING_DIR = ".incoming"


def safe_component(uid: str) -> str:
    """A file-name-safe component for ``uid``.

    A well-formed UID (digits and dots, at most 64 characters) is used as it is;
    anything else (path separators, ``..``, spaces, overlong values) is replaced
    by ``x-`` and a SHA-256 prefix of the value, so it can never leave its folder.
    """
    if len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    return "x-" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def instance_relpath(study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Relative path of an instance under the storage root."""
    return Path(safe_component(study_uid), safe_component(series_uid),
                safe_component(sop_uid) + ".dcm")
