"""UIDs: one function, one root."""

from __future__ import annotations

import uuid

__all__ = ["UID_ROOT", "derived_uid", "new_uid"]

#: UUID-derived UIDs (PS3.5 B.2) need no registered organisation root.
UID_ROOT = "2.25."


def new_uid() -> str:
    """Return a new globally unique DICOM UID of the form ``2.25.<uuid as integer>``."""
    return f"{UID_ROOT}{uuid.uuid4().int}"


_NAMESPACE = uuid.UUID("5b0e4a8e-6f43-4a56-9a55-6b1d2f0c6e21")


def derived_uid(*parts: str) -> str:
    """A UID determined by ``parts`` (name-based UUID, PS3.5 B.2).

    Used for the objects a job writes, so a job run again after a crash writes the same
    SOP Instance UID and a receiver sees a harmless duplicate, not a second result.
    """
    return f"{UID_ROOT}{uuid.uuid5(_NAMESPACE, '/'.join(parts)).int}"
