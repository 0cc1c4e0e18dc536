"""The node's domain vocabulary: states and roles shared by the index, the scheduler, the
pipelines and the API. Plain enums, free of the database layer (the ORM tables in
service/db/tables.py store them by value)."""

from __future__ import annotations

import enum

__all__ = ["PRIOR_JOB_PRIORITY", "InstanceOrigin", "JobState", "PriorState", "ReviewAction",
           "SendState", "SeriesRole"]

#: Priority of the jobs of earlier studies fetched from the PACS: queued jobs run highest
#: first, and a new study's are 0.
PRIOR_JOB_PRIORITY = -10


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


class PriorState(enum.StrEnum):
    """A patient's earlier study found in the PACS (service/priors)."""

    QUEUED = "queued"  # to be retrieved
    RETRIEVING = "retrieving"
    RETRIEVED = "retrieved"  # in the archive: the trigger takes it from there
    SKIPPED = "skipped"  # not fetched: already in the node, or no series for a pipeline
    FAILED = "failed"  # retrieval failed ``max_attempts`` times: needs an operator
