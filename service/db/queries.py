"""Read-side queries used by the CLI and the HTTP API. They take a session, never commit."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.tables import (
    Instance,
    Job,
    OutboxItem,
    Patient,
    Result,
    Series,
    Study,
)
from service.errors import AmbiguousPatientError
from service.trends import AlertRules, Measurement, TrendPoint, volume_trend

__all__ = [
    "JobRow",
    "ResultFiles",
    "VolumeRow",
    "list_jobs",
    "list_outbox",
    "list_patients",
    "patient_exists",
    "patient_issuers",
    "resolve_issuer",
    "patient_trend",
    "patient_volumes",
    "previous_accepted_volumes",
    "result_files",
    "study_summary",
]


@dataclass(frozen=True)
class VolumeRow:
    study_instance_uid: str
    study_date: str | None
    structure: str
    volume_ml: float
    pipeline: str
    pipeline_version: str
    seg_sop_instance_uid: str
    job_id: int
    flags: tuple[str, ...] = ()
    baseline: bool = False
    study_time: str | None = None
    #: "pass", "review", "fail", or None: written before quality control existed.
    qc_verdict: str | None = None
    qc_reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["flags"] = list(self.flags)
        row["qc_reasons"] = list(self.qc_reasons)
        return row


@dataclass(frozen=True)
class JobRow:
    id: int
    study_instance_uid: str
    pipeline: str | None
    state: str
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    timings: dict[str, float]
    error: str | None
    #: What a succeeded job found when it wrote no result (e.g. no kidney in view).
    outcome: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def patient_volumes(session: Session, patient_id: str, issuer: str = "") -> list[VolumeRow]:
    """Latest result per study and structure for the patient ``patient_id`` of
    ``issuer`` ("" when the studies named none), in study date order.

    One indexed pass: patient by ``uq_patients_id_issuer`` (its leading column), studies by
    ``ix_studies_patient_pk``, results by ``ix_results_study_pk``; the latest result per
    study and structure is picked here, among the patient's few rows.
    """
    rows = session.execute(
        select(Study.study_instance_uid, Study.study_date, Study.study_time, Study.is_baseline,
               Result.id, Result.structure, Result.volume_ml, Result.pipeline_name,
               Result.pipeline_version, Result.seg_sop_instance_uid, Result.job_pk,
               Result.flags, Result.qc_verdict, Result.qc_reasons)
        .select_from(Patient)
        .join(Study, Study.patient_pk == Patient.id)
        .join(Result, Result.study_pk == Study.id)
        .where(Patient.patient_id == patient_id, Patient.issuer == issuer)).all()
    latest: dict[tuple[str, str], Any] = {}
    for row in rows:
        key = (row.study_instance_uid, row.structure)
        if key not in latest or row.id > latest[key].id:
            latest[key] = row
    ordered = sorted(latest.values(), key=lambda r: (*_study_order(r), r.structure))
    return [VolumeRow(r.study_instance_uid, _iso(r.study_date), r.structure,
                      round(r.volume_ml, 3), r.pipeline_name, r.pipeline_version,
                      r.seg_sop_instance_uid, r.job_pk, tuple(json.loads(r.flags or "[]")),
                      bool(r.is_baseline), r.study_time, r.qc_verdict,
                      tuple(json.loads(r.qc_reasons or "[]")))
            for r in ordered]


def _study_order(row: Any) -> tuple:
    """Study date (undated last), time, UID: the trend's order (service.trends). ``row``
    holds ``study_date`` as a date or an ISO string, ``study_time``, ``study_instance_uid``."""
    date = row.study_date
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    return (date is None, date or dt.date.min, row.study_time or "", row.study_instance_uid)


def previous_accepted_volumes(session: Session, study_instance_uid: str, *,
                              verdicts: Sequence[str]) -> dict[str, float]:
    """Per structure, the volume of the patient's latest study before this one (in trend
    order) whose result has a verdict in ``verdicts`` (or was not assessed)."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        return {}
    this = _study_order(study)
    found: dict[str, float] = {}
    for row in patient_volumes(session, study.patient.patient_id, study.patient.issuer):
        earlier = _study_order(row) < this
        if earlier and (row.qc_verdict is None or row.qc_verdict in verdicts):
            found[row.structure] = row.volume_ml  # rows come in order: the last one wins
    return found


def patient_issuers(session: Session, patient_id: str) -> list[str]:
    """The issuers under which the node holds a patient ``patient_id`` ("" for none)."""
    return list(session.scalars(select(Patient.issuer).where(Patient.patient_id == patient_id)
                                .order_by(Patient.issuer)))


def resolve_issuer(session: Session, patient_id: str, issuer: str | None = None
                   ) -> str | None:
    """The issuer of the patient ``patient_id``: ``issuer`` when given and held, else the
    only one holding that ID; ``None`` for a patient the node does not hold.

    Raises
    ------
    AmbiguousPatientError
        No ``issuer`` given and the ID is held under several.
    """
    issuers = patient_issuers(session, patient_id)
    if issuer is None:
        if len(issuers) > 1:
            raise AmbiguousPatientError(patient_id, issuers)
        return issuers[0] if issuers else None
    return issuer if issuer in issuers else None


def patient_exists(session: Session, patient_id: str, issuer: str | None = None) -> bool:
    """Whether the node holds a patient ``patient_id`` (of ``issuer`` when given)."""
    issuers = patient_issuers(session, patient_id)
    return bool(issuers) if issuer is None else issuer in issuers


def patient_trend(session: Session, patient_id: str, issuer: str = "", *,
                  structure: str | None = None, rules: AlertRules = AlertRules()
                  ) -> list[dict[str, Any]]:
    """The patient's reported volumes with their changes and alerts (service.trends).

    One row per study and structure: the latest result of that study (a study processed
    again keeps its history; the newest result is the one reported), with the pipeline,
    SEG and job of that result.
    """
    latest = {(r.study_instance_uid, r.structure): r
              for r in patient_volumes(session, patient_id, issuer)
              if structure is None or r.structure == structure}
    points = volume_trend(
        (Measurement(uid, dt.date.fromisoformat(r.study_date) if r.study_date else None,
                     r.study_time, name, r.volume_ml, r.baseline, r.qc_verdict, r.qc_reasons)
         for (uid, name), r in latest.items()), rules)
    return [_trend_row(p, latest[(p.study_instance_uid, p.structure)]) for p in points]


def list_patients(session: Session, *, alerts_only: bool = False,
                  rules: AlertRules = AlertRules(), limit: int = 1000) -> list[dict[str, Any]]:
    """Patients with their number of studies, last study date and latest volumes.

    ``alert`` is true when the latest study of any structure raised an alert;
    ``alerts_only`` keeps those patients only. ``latest_volumes_ml`` are the latest
    measurements in the trend (accepted by quality control); ``needs_review`` lists the
    structures whose latest measurement is not (its verdict asks for a person's look).
    Ordered by last study date, newest first.
    """
    rows = session.execute(
        select(Patient.patient_id, Patient.issuer, func.count(Study.id),
               func.max(Study.study_date))
        .join(Study, Study.patient_pk == Patient.id)
        .group_by(Patient.id, Patient.patient_id, Patient.issuer)
        .order_by(func.max(Study.study_date).desc(), Patient.patient_id)
        .limit(None if alerts_only else limit)).all()
    out = []
    for patient_id, issuer, studies, last in rows:
        trend = patient_trend(session, patient_id, issuer, rules=rules)
        latest: dict[str, dict[str, Any]] = {}
        newest: dict[str, dict[str, Any]] = {}
        for point in trend:  # ordered by structure then time: the last one wins
            newest[point["structure"]] = point
            if point["in_trend"]:
                latest[point["structure"]] = point
        alert = any(p["alert"] for p in newest.values())
        if alerts_only and not alert:
            continue
        out.append({"patient_id": patient_id, "issuer": issuer, "studies": studies,
                    "last_study_date": _iso(last),
                    "latest_volumes_ml": {k: p["volume_ml"] for k, p in latest.items()},
                    "alert": alert,
                    "needs_review": sorted(k for k, p in newest.items() if not p["in_trend"])})
        if len(out) >= limit:
            break
    return out


def _trend_row(point: TrendPoint, row: VolumeRow) -> dict[str, Any]:
    return {**point.as_dict(), "pipeline": row.pipeline,
            "pipeline_version": row.pipeline_version,
            "seg_sop_instance_uid": row.seg_sop_instance_uid, "job_id": row.job_id,
            "flags": list(row.flags)}


def _job_row(job: Job, study_uid: str) -> JobRow:
    return JobRow(job.id, study_uid, job.pipeline, job.state.value, job.attempts,
                  _iso(job.created_at), _iso(job.started_at), _iso(job.finished_at),
                  json.loads(job.timings) if job.timings else {}, job.error, job.outcome)


def list_jobs(session: Session, *, limit: int = 100) -> list[JobRow]:
    """The most recent jobs, newest first."""
    rows = session.execute(select(Job, Study.study_instance_uid)
                           .join(Study, Study.id == Job.study_pk)
                           .order_by(Job.id.desc()).limit(limit)).all()
    return [_job_row(job, uid) for job, uid in rows]


def study_summary(session: Session, study_instance_uid: str) -> dict[str, Any] | None:
    """A study with its jobs, results and sends; None when unknown."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        return None
    jobs = session.scalars(select(Job).where(Job.study_pk == study.id).order_by(Job.id)).all()
    results = session.scalars(select(Result).where(Result.study_pk == study.id)
                              .order_by(Result.id)).all()
    job_ids = [j.id for j in jobs]
    sends = session.scalars(select(OutboxItem).where(OutboxItem.job_pk.in_(job_ids))
                            .order_by(OutboxItem.id)).all() if job_ids else []
    return {
        "study_instance_uid": study.study_instance_uid,
        "patient_id": study.patient.patient_id,
        "study_date": _iso(study.study_date),
        "series": len(study.series),
        "jobs": [_job_row(j, study.study_instance_uid).as_dict() for j in jobs],
        "baseline": study.is_baseline,
        "results": [{"structure": r.structure, "volume_ml": round(r.volume_ml, 3),
                     "pipeline": r.pipeline_name, "pipeline_version": r.pipeline_version,
                     "seg_sop_instance_uid": r.seg_sop_instance_uid, "job_id": r.job_pk,
                     "flags": json.loads(r.flags or "[]"), "qc_verdict": r.qc_verdict,
                     "qc_reasons": json.loads(r.qc_reasons or "[]"),
                     "qc_signals": json.loads(r.qc_signals or "{}")}
                    for r in results],
        "sends": [_send_dict(s) for s in sends],
    }


def _send_dict(item: OutboxItem) -> dict[str, Any]:
    return {"id": item.id, "sop_instance_uid": item.sop_instance_uid,
            "destination": item.destination, "state": item.state.value,
            "attempts": item.attempts, "next_attempt_at": _iso(item.next_attempt_at),
            "last_error": item.last_error, "sent_at": _iso(item.sent_at)}


def list_outbox(session: Session, *, limit: int = 200) -> list[dict[str, Any]]:
    """Outbox items, newest first."""
    items = session.scalars(select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit))
    return [_send_dict(i) for i in items]


@dataclass(frozen=True)
class ResultFiles:
    """Where the latest result of a study lies (paths relative to ``storage.root``)."""

    study_instance_uid: str
    pipeline: str
    seg_path: str
    source_paths: tuple[str, ...]
    source_series_instance_uid: str = ""


def result_files(session: Session, study_instance_uid: str) -> ResultFiles | None:
    """The stored SEG of the study's latest result and its source series; None when the
    study has no result or either is no longer indexed."""
    result = session.scalar(
        select(Result).join(Study, Study.id == Result.study_pk)
        .where(Study.study_instance_uid == study_instance_uid)
        .order_by(Result.id.desc()).limit(1))
    if result is None:
        return None
    seg_path = session.scalar(select(Instance.path).where(
        Instance.sop_instance_uid == result.seg_sop_instance_uid))
    sources = series_paths(session, result.source_series_instance_uid)
    if seg_path is None or not sources:
        return None
    return ResultFiles(study_instance_uid, result.pipeline_name, seg_path, sources,
                       result.source_series_instance_uid)


def series_paths(session: Session, series_instance_uid: str) -> tuple[str, ...]:
    """Archive paths of a series' instances (received, or written by the node: the copies
    of a segmented phase), in the order they were stored."""
    return tuple(session.scalars(
        select(Instance.path).join(Series, Series.id == Instance.series_pk)
        .where(Series.series_instance_uid == series_instance_uid)
        .order_by(Instance.id)).all())
