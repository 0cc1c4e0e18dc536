"""ORM tables (SQLAlchemy 2 typed declarative). Schema changes go through Alembic only."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql import false

from service.domain import (
    InstanceOrigin,
    JobState,
    PriorState,
    ReviewAction,
    SendState,
    SeriesRole,
)

__all__ = [
    "AccessRecord",
    "Base",
    "Instance",
    "InstanceOrigin",
    "Job",
    "JobState",
    "OutboxItem",
    "Patient",
    "PriorRequest",
    "PriorState",
    "PriorStudy",
    "Result",
    "Review",
    "ReviewAction",
    "SendState",
    "Series",
    "SeriesRole",
    "Study",
    "Worker",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now (stored as UTC everywhere)."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16,
                values_callable=lambda e: [m.value for m in e], validate_strings=True)


_TS = DateTime(timezone=True)
_PATIENT_TEXT = String(64).with_variant(Text(), "postgresql")


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patients_id_issuer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The whole Patient ID and issuer as received, however long (a sender may exceed
    # LO's 64 characters; cutting them made two patients one): TEXT on PostgreSQL, and
    # SQLite does not enforce a VARCHAR's length.
    patient_id: Mapped[str] = mapped_column(_PATIENT_TEXT)
    issuer: Mapped[str] = mapped_column(_PATIENT_TEXT, default="")
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(64))
    first_received_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    #: Time the last *new* source instance arrived; the trigger's stability clock.
    last_received_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, index=True)
    #: The ``last_received_at`` the trigger last looked at: a study is looked at again
    #: only when new instances arrived since (a resend changes nothing).
    checked_at: Mapped[dt.datetime | None] = mapped_column(_TS)
    #: The patient's baseline for volume changes (at most one per patient; else the first).
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    jobs: Mapped[list[Job]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(String(64))
    protocol_name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    #: Indexed: each sweep looks for the few received SEGs among all the images.
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    temporal_position: Mapped[int | None] = mapped_column(Integer)
    #: Path relative to ``storage.root``.
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    origin: Mapped[InstanceOrigin] = mapped_column(
        _enum(InstanceOrigin, "instance_origin"), default=InstanceOrigin.RECEIVED)
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    #: IP address of the peer that first sent it (audit; NULL before it was recorded).
    peer_address: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    #: When retention deleted its file (the row stays: who sent it, and the study's
    #: fingerprint, which must not change); NULL while the file is in the archive.
    purged_at: Mapped[dt.datetime | None] = mapped_column(_TS)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    pipeline: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.QUEUED)
    #: Hash of the source instances the job was made for: a study resent unchanged
    #: has the same fingerprint and is not processed again.
    fingerprint: Mapped[str] = mapped_column(String(64))
    #: JSON: series UID -> role, as classified when the job was made.
    series_roles: Mapped[str] = mapped_column(Text, default="{}")
    device: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    #: What a succeeded job found when it wrote no result (e.g. "no kidney in field of
    #: view (...)"); None otherwise.
    outcome: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(_TS)
    finished_at: Mapped[dt.datetime | None] = mapped_column(_TS)
    #: Seconds spent in loading, segmentation and writing (JSON object).
    timings: Mapped[str | None] = mapped_column(Text)
    #: Queued jobs run highest first, then oldest first: new studies 0, earlier studies
    #: fetched from the PACS (service/priors) below.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: With a broker (service/jobs/dispatch.py): the worker that claimed the job, the
    #: queue(s) it was published to ("gpu", "cpu", "gpu+cpu") and when it last was.
    worker: Mapped[str | None] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(16))
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(_TS)

    study: Mapped[Study] = relationship(back_populates="jobs")
    results: Mapped[list[Result]] = relationship(back_populates="job")


class Result(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    structure: Mapped[str] = mapped_column(String(64))
    volume_ml: Mapped[float] = mapped_column(Float)
    pipeline_name: Mapped[str] = mapped_column(String(64))
    pipeline_version: Mapped[str] = mapped_column(String(32))
    seg_sop_instance_uid: Mapped[str] = mapped_column(String(64))
    seg_series_instance_uid: Mapped[str] = mapped_column(String(64))
    #: The series segmented (the SEG may be on the node's copies of its phase: see
    #: service.writers.phase_series).
    source_series_instance_uid: Mapped[str] = mapped_column(String(64))
    #: JSON list of quality flags of the result (e.g. "roi-touches-edge", "dce-only").
    flags: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    #: Quality control (models/qc.py): "pass", "review" or "fail"; NULL for results
    #: written before quality control existed ("not assessed").
    qc_verdict: Mapped[str | None] = mapped_column(String(8))
    #: JSON list of the reasons of a "review" or "fail" verdict.
    qc_reasons: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    #: JSON object of the measured signals the verdict came from.
    qc_signals: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="results")


class Review(Base):
    """A person's word on a study's measurement: an automatic result accepted or rejected
    (web page, API, CLI), or a corrected volume from a SEG a reader made (OHIF, Slicer).

    A review applies to the automatic result it names (``result_pk``, the study's latest
    result of that structure when it was made; None when there was none): once the study
    is processed again, the new result stands until someone reviews it. Reviews are never
    deleted: the history keeps every one.
    """

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_study_structure", "study_pk", "structure"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    result_pk: Mapped[int | None] = mapped_column(ForeignKey("results.id"), index=True)
    #: The structure (as in ``results.structure``); "" for an ignored SEG.
    structure: Mapped[str] = mapped_column(String(64))
    action: Mapped[ReviewAction] = mapped_column(_enum(ReviewAction, "review_action"))
    #: The corrected volume (``corrected`` only).
    volume_ml: Mapped[float | None] = mapped_column(Float)
    #: Who: the SEG's Content Creator's Name, or the name given on the page or API.
    reviewer: Mapped[str] = mapped_column(String(255), default="")
    #: With what: the SEG's manufacturer, model and software; "web page", "API" or "CLI".
    device: Mapped[str] = mapped_column(String(255), default="")
    #: When the reader made it (the SEG's Content Date/Time), else when the node got it.
    reviewed_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    seg_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    seg_series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    #: Where it came from: the calling AE title of the SEG, the client address of a page.
    origin: Mapped[str | None] = mapped_column(String(255))
    comment: Mapped[str | None] = mapped_column(Text)
    #: Why an ``ignored`` SEG gave no measurement; how a segment was matched otherwise.
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class AccessRecord(Base):
    """One read of patient data through the HTTP API or pages (audit)."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_patient", "patient_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, index=True)
    #: Who: the user the reverse proxy names (``http.audit_user_header``), else "".
    user: Mapped[str] = mapped_column(String(255), default="")
    client: Mapped[str] = mapped_column(String(64), default="")
    method: Mapped[str] = mapped_column(String(8))
    #: What: the path and query read.
    path: Mapped[str] = mapped_column(Text)
    patient_id: Mapped[str | None] = mapped_column(_PATIENT_TEXT)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)


class OutboxItem(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_sop_destination"),
        Index("ix_outbox_state_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    #: Path relative to ``storage.root``.
    path: Mapped[str] = mapped_column(String(512))
    destination: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[SendState] = mapped_column(
        _enum(SendState, "send_state"), default=SendState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(_TS)


class PriorRequest(Base):
    """A request to fetch a patient's earlier studies from the PACS: made by the node when
    it first measures the patient, or on demand (CLI, API)."""

    __tablename__ = "prior_requests"
    __table_args__ = (Index("ix_prior_requests_patient", "patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(_PATIENT_TEXT)
    issuer: Mapped[str] = mapped_column(_PATIENT_TEXT, default="")
    #: "first-measurement", "cli" or "api".
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    #: When the PACS answered the query (NULL: not asked yet, or to be asked again).
    queried_at: Mapped[dt.datetime | None] = mapped_column(_TS)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    #: The last failure of the query; NULL once it succeeded.
    error: Mapped[str | None] = mapped_column(Text)
    #: The query's outcome in words ("4 studies found: 3 to fetch, 1 already here").
    summary: Mapped[str | None] = mapped_column(Text)


class PriorStudy(Base):
    """One earlier study the PACS holds for a requested patient, and its retrieval. One
    row per Study Instance UID: a study is never fetched twice."""

    __tablename__ = "prior_studies"
    __table_args__ = (Index("ix_prior_studies_state_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("prior_requests.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[dt.date | None] = mapped_column(Date)
    modalities: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str | None] = mapped_column(String(64))
    #: JSON list of the Series Instance UIDs to retrieve (those the rules give a role).
    series_uids: Mapped[str] = mapped_column(Text, default="[]")
    #: The pipeline the series' roles point to (from the PACS's headers).
    pipeline: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[PriorState] = mapped_column(_enum(PriorState, "prior_state"),
                                              default=PriorState.QUEUED)
    #: Why it was skipped, why it waits (a limit), or the last retrieval failure.
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    instances_retrieved: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(_TS)
    finished_at: Mapped[dt.datetime | None] = mapped_column(_TS)


class Worker(Base):
    """A ``kidney-node worker`` process: what it runs on and its latest heartbeat."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    #: Comma-separated queue kinds it takes ("gpu", "cpu").
    queues: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    #: The job it is running now (None between jobs).
    job_pk: Mapped[int | None] = mapped_column(Integer)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    #: "alive", "stopped" (a clean exit) or "lost" (no heartbeat within the timeout).
    state: Mapped[str] = mapped_column(String(16), default="alive")
