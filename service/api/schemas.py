"""Response models of the HTTP API: the OpenAPI schema at ``/openapi.json`` types every
answer. Strict (``extra="forbid"``): a field the queries add must be declared here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from service.db.queries import JobRow

__all__ = ["AccessRead", "HealthAnswer", "HistoryEvent", "PatientOut",
           "ReceivedInstance", "ReviewOut", "SendOut", "SentObject", "StudyOut",
           "TrendRow"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageStatus(_Out):
    free_mb: float | None
    min_free_mb: int
    read_only: bool | None
    problems: list[str]


class HealthAnswer(_Out):
    status: str
    version: str
    storage: StorageStatus | None = None


class SendOut(_Out):
    id: int
    sop_instance_uid: str
    destination: str
    state: str
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    sent_at: str | None


class ReviewOut(_Out):
    id: int
    structure: str
    action: str
    volume_ml: float | None
    reviewer: str
    device: str
    reviewed_at: str | None
    result_id: int | None
    seg_sop_instance_uid: str | None
    origin: str | None
    comment: str | None
    detail: str | None
    recorded_at: str | None


class ResultOut(_Out):
    structure: str
    volume_ml: float
    pipeline: str
    pipeline_version: str
    seg_sop_instance_uid: str
    job_id: int
    flags: list[str]
    qc_verdict: str | None
    qc_reasons: list[str]
    qc_signals: dict[str, Any]


class StudyOut(_Out):
    study_instance_uid: str
    patient_id: str
    study_date: str | None
    series: int
    jobs: list[JobRow]
    baseline: bool
    results: list[ResultOut]
    sends: list[SendOut]
    reviews: list[ReviewOut]


class PatientOut(_Out):
    patient_id: str
    issuer: str
    studies: int
    last_study_date: str | None
    latest_volumes_ml: dict[str, float]
    alert: bool
    needs_review: list[str]


class TrendRow(_Out):
    """A study's reported measurement of one structure, with its changes and alert."""

    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    structure: str
    volume_ml: float
    baseline: bool
    change_from_previous_ml: float | None
    change_from_previous_pct: float | None
    change_from_baseline_ml: float | None
    change_from_baseline_pct: float | None
    alert: bool
    alert_reasons: list[str]
    qc_verdict: str | None
    qc_reasons: list[str]
    in_trend: bool
    review: str | None
    pipeline: str
    pipeline_version: str
    seg_sop_instance_uid: str
    job_id: int | None
    flags: list[str]
    measurement: str
    reviewed_by: str | None
    reviewed_at: str | None
    review_device: str | None
    automatic_volume_ml: float | None


class HistoryEvent(_Out):
    """An automatic result (``kind`` "automatic") or a review (its action)."""

    study_instance_uid: str
    study_date: str | None
    kind: str
    structure: str
    volume_ml: float | None
    recorded_at: str | None
    reported: bool
    result_id: int | None
    seg_sop_instance_uid: str | None
    # automatic results
    pipeline: str | None = None
    pipeline_version: str | None = None
    qc_verdict: str | None = None
    job_id: int | None = None
    # reviews
    id: int | None = None
    action: str | None = None
    reviewer: str | None = None
    device: str | None = None
    reviewed_at: str | None = None
    origin: str | None = None
    comment: str | None = None
    detail: str | None = None


class ReceivedInstance(_Out):
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    calling_aet: str | None
    peer_address: str | None
    received_at: str | None
    size_bytes: int


class SentObject(_Out):
    sop_instance_uid: str
    study_instance_uid: str | None
    destination: str
    ae_title: str
    address: str
    state: str
    attempts: int
    queued_at: str | None
    sent_at: str | None
    last_error: str | None


class AccessRead(_Out):
    at: str | None
    user: str
    client: str
    method: str
    path: str
    patient_id: str | None
    study_instance_uid: str | None
    status: int
