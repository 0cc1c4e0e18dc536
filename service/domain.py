"""The node's domain vocabulary: states and roles shared by the index, the scheduler, the
pipelines and the API. Plain enums, free of the database layer (the ORM tables in
service/db/tables.py store them by value)."""

from __future__ import annotations

import enum

__all__ = ["InstanceOrigin", "JobState", "ReviewAction", "SendState", "SeriesRole"]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class SendState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # permanent: needs an operator


class SeriesRole(enum.StrEnum):
    DCE = "dce"
    T2 = "t2"
    T1 = "t1"  # T1-weighted without contrast dynamics, Dixon images included
    CT = "ct"
    OTHER_MR = "other-mr"
    DERIVED = "derived"  # SEG, SR, ... (ours or anyone's)
    UNSUPPORTED = "unsupported"


class ReviewAction(enum.StrEnum):
    ACCEPTED = "accepted"  # a reader kept the automatic result
    REJECTED = "rejected"  # a reader threw it out: it leaves the trend
    CORRECTED = "corrected"  # a reader's own segmentation (a SEG sent to the node)
    IGNORED = "ignored"  # a foreign SEG that gave no measurement (``error`` says why)


class InstanceOrigin(enum.StrEnum):
    RECEIVED = "received"
    GENERATED = "generated"  # written by this node (SEG, SR)
