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
    Review,
    ReviewAction,
    Series,
    Study,
    Worker,
    utcnow,
)
from service.errors import AmbiguousPatientError
from service.trends import AlertRules, Measurement, TrendPoint, counts_in_trend, volume_trend

__all__ = [
    "JobRow",
    "ResultFiles",
    "VolumeRow",
    "WorkerRow",
    "list_jobs",
    "list_workers",
    "list_outbox",
    "list_patients",
    "patient_exists",
    "patient_history",
    "patient_issuers",
    "resolve_issuer",
    "review_dict",
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
    job_id: int | None
    flags: tuple[str, ...] = ()
    baseline: bool = False
    study_time: str | None = None
    #: "pass", "review", "fail", or None: written before quality control existed.
    qc_verdict: str | None = None
    qc_reasons: tuple[str, ...] = ()
    #: "automatic" (the node's result) or "corrected" (a reader's SEG: ``volume_ml`` is
    #: the reader's, ``automatic_volume_ml`` the node's).
    measurement: str = "automatic"
    #: The review that stands: "accepted", "rejected", "corrected", or None.
    review: str | None = None
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_device: str | None = None
    automatic_volume_ml: float | None = None
    #: The rows behind it: the automatic result and the standing review (None if none).
    result_id: int | None = None
    review_id: int | None = None

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
    #: Where it ran: "cpu" or "cuda"; with a broker, the worker and the queue(s).
    device: str | None = None
    worker: str | None = None
    queue: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkerRow:
    """A ``kidney-node worker``: "alive", "stopped", or "lost" (no heartbeat within the
    timeout, whether or not a receiver has reaped it yet)."""

    name: str
    hostname: str
    pid: int
    device: str
    queues: list[str]
    version: str
    state: str
    started_at: str | None
    heartbeat_at: str | None
    heartbeat_age_s: float
    job_id: int | None
    jobs_done: int


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def patient_volumes(session: Session, patient_id: str, issuer: str = "") -> list[VolumeRow]:
    """The reported measurement per study and structure for the patient ``patient_id`` of
    ``issuer`` ("" when the studies named none), in study date order.

    The reported measurement is the study's latest automatic result, unless a review of
    that result stands: the latest review (by the order they were recorded) among those
    naming it, or, for a structure the node did not report, the latest correction. A
    correction reports the reader's volume; an acceptance or rejection keeps the node's
    and decides whether it counts in the trend (:func:`service.trends.counts_in_trend`).

    Two indexed queries: patient by ``uq_patients_id_issuer`` (its leading column),
    studies by ``ix_studies_patient_pk``, results by ``ix_results_study_pk``; then the
    reviews by ``ix_reviews_study_structure``. The choice is made here, among the
    patient's few rows.
    """
    rows = session.execute(
        select(Study.id.label("study_pk"), Study.study_instance_uid, Study.study_date,
               Study.study_time, Study.is_baseline, Result.id.label("result_id"),
               Result.structure, Result.volume_ml, Result.pipeline_name,
               Result.pipeline_version, Result.seg_sop_instance_uid, Result.job_pk,
               Result.flags, Result.qc_verdict, Result.qc_reasons)
        .select_from(Patient)
        .join(Study, Study.patient_pk == Patient.id)
        .outerjoin(Result, Result.study_pk == Study.id)
        .where(Patient.patient_id == patient_id, Patient.issuer == issuer)).all()
    studies = {row.study_pk: row for row in rows}
    latest: dict[tuple[int, str], Any] = {}
    for row in rows:
        key = (row.study_pk, row.structure)
        if row.result_id is not None and (key not in latest
                                          or row.result_id > latest[key].result_id):
            latest[key] = row
    standing: dict[tuple[int, str], Any] = {}
    if studies:
        for review in session.execute(
                select(Review.id, Review.study_pk, Review.structure, Review.result_pk,
                       Review.action, Review.volume_ml, Review.reviewer, Review.device,
                       Review.reviewed_at, Review.seg_sop_instance_uid)
                .where(Review.study_pk.in_(studies), Review.action != ReviewAction.IGNORED)
                .order_by(Review.id)):
            key = (review.study_pk, review.structure)
            result = latest.get(key)
            if review.result_pk == (None if result is None else result.result_id):
                standing[key] = review  # in id order: the last one wins
    found = [_volume_row(studies[key[0]], key[1], latest.get(key), standing.get(key))
             for key in latest.keys() | standing.keys()]
    return sorted(found, key=lambda r: (*_study_order(r), r.structure))


def _volume_row(study: Any, structure: str, result: Any, review: Any) -> VolumeRow:
    """The reported row of ``structure`` in ``study`` from the rows of
    :func:`patient_volumes` (``result`` or ``review`` may be None, not both)."""
    corrected = review is not None and review.action is ReviewAction.CORRECTED
    volume = review.volume_ml if corrected else result.volume_ml
    reviewed = {} if review is None else dict(
        review=review.action.value, reviewed_by=review.reviewer,
        reviewed_at=_iso(review.reviewed_at), review_device=review.device,
        review_id=review.id)
    common = dict(study_time=study.study_time, baseline=bool(study.is_baseline),
                  measurement="corrected" if corrected else "automatic", **reviewed)
    if result is None:  # a structure only a reader segmented
        return VolumeRow(study.study_instance_uid, _iso(study.study_date), structure,
                         round(float(volume), 3), "reader", "",
                         review.seg_sop_instance_uid or "", None, **common)
    return VolumeRow(study.study_instance_uid, _iso(study.study_date), structure,
                     round(float(volume), 3), result.pipeline_name, result.pipeline_version,
                     result.seg_sop_instance_uid, result.job_pk,
                     tuple(json.loads(result.flags or "[]")), qc_verdict=result.qc_verdict,
                     qc_reasons=tuple(json.loads(result.qc_reasons or "[]")),
                     automatic_volume_ml=round(result.volume_ml, 3),
                     result_id=result.result_id, **common)


def review_dict(review: Review) -> dict[str, Any]:
    return {"id": review.id, "structure": review.structure, "action": review.action.value,
            "volume_ml": None if review.volume_ml is None else round(review.volume_ml, 3),
            "reviewer": review.reviewer, "device": review.device,
            "reviewed_at": _iso(review.reviewed_at), "result_id": review.result_pk,
            "seg_sop_instance_uid": review.seg_sop_instance_uid, "origin": review.origin,
            "comment": review.comment, "detail": review.detail,
            "recorded_at": _iso(review.created_at)}


def patient_history(session: Session, patient_id: str, issuer: str = ""
                    ) -> list[dict[str, Any]]:
    """Every measurement of the patient, in trend order of the studies: each automatic
    result (``kind`` "automatic") and each review (``kind`` its action: accepted, rejected,
    corrected, ignored), in the order they were recorded. ``reported`` marks those the
    trend reports (:func:`patient_volumes`)."""
    of_patient = (select(Study.id).join(Patient, Patient.id == Study.patient_pk)
                  .where(Patient.patient_id == patient_id, Patient.issuer == issuer))
    studies = {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(of_patient)))}
    reported = {(r.study_instance_uid, r.structure): r
                for r in patient_volumes(session, patient_id, issuer)}
    def event(study: Study, rank: int, record: Result | Review, **body: Any
              ) -> tuple[tuple, dict[str, Any]]:
        order = (*_study_order(study), rank, record.created_at.timestamp(), record.id)
        return order, {"study_instance_uid": study.study_instance_uid,
                       "study_date": _iso(study.study_date), **body}

    events: list[tuple[tuple, dict[str, Any]]] = []
    for result in session.scalars(select(Result).where(Result.study_pk.in_(of_patient))):
        study = studies[result.study_pk]
        row = reported.get((study.study_instance_uid, result.structure))
        events.append(event(
            study, 0, result, kind="automatic", structure=result.structure,
            volume_ml=round(result.volume_ml, 3), pipeline=result.pipeline_name,
            pipeline_version=result.pipeline_version, qc_verdict=result.qc_verdict,
            result_id=result.id, job_id=result.job_pk,
            seg_sop_instance_uid=result.seg_sop_instance_uid,
            recorded_at=_iso(result.created_at),
            reported=row is not None and row.measurement == "automatic"
            and row.result_id == result.id))
    for review in session.scalars(select(Review).where(Review.study_pk.in_(of_patient))):
        study = studies[review.study_pk]
        row = reported.get((study.study_instance_uid, review.structure))
        events.append(event(
            study, 1, review, kind=review.action.value, **review_dict(review),
            reported=row is not None and row.measurement == "corrected"
            and row.review_id == review.id))
    return [event for _key, event in sorted(events, key=lambda e: e[0])]


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
        if earlier and counts_in_trend(row.qc_verdict, row.review, verdicts):
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
                     r.study_time, name, r.volume_ml, r.baseline, r.qc_verdict, r.qc_reasons,
                     r.review)
         for (uid, name), r in latest.items()), rules)
    return [_trend_row(p, latest[(p.study_instance_uid, p.structure)]) for p in points]


def list_patients(session: Session, *, alerts_only: bool = False,
                  rules: AlertRules = AlertRules(), limit: int = 1000) -> list[dict[str, Any]]:
    """Patients with their number of studies, last study date and latest volumes.

    ``alert`` is true when the latest study of any structure raised an alert;
    ``alerts_only`` keeps those patients only. ``latest_volumes_ml`` are the latest
    measurements in the trend (accepted by quality control or a reader); ``needs_review``
    lists the structures whose latest measurement is not and that no reader has reviewed
    (its verdict asks for a person's look).
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
                    "needs_review": sorted(k for k, p in newest.items()
                                           if not p["in_trend"] and p["review"] is None)})
        if len(out) >= limit:
            break
    return out


def _trend_row(point: TrendPoint, row: VolumeRow) -> dict[str, Any]:
    return {**point.as_dict(), "pipeline": row.pipeline,
            "pipeline_version": row.pipeline_version,
            "seg_sop_instance_uid": row.seg_sop_instance_uid, "job_id": row.job_id,
            "flags": list(row.flags), "measurement": row.measurement,
            "reviewed_by": row.reviewed_by, "reviewed_at": row.reviewed_at,
            "review_device": row.review_device,
            "automatic_volume_ml": row.automatic_volume_ml}


def _job_row(job: Job, study_uid: str) -> JobRow:
    return JobRow(job.id, study_uid, job.pipeline, job.state.value, job.attempts,
                  _iso(job.created_at), _iso(job.started_at), _iso(job.finished_at),
                  json.loads(job.timings) if job.timings else {}, job.error, job.outcome,
                  job.device, job.worker, job.queue)


def list_workers(session: Session, *, heartbeat_timeout_s: float,
                 now: dt.datetime | None = None) -> list[WorkerRow]:
    """Every worker that has run, alive first, then by name."""
    now = now or utcnow()
    rows = []
    for w in session.scalars(select(Worker).order_by(Worker.name)):
        beat = w.heartbeat_at if w.heartbeat_at.tzinfo else w.heartbeat_at.replace(tzinfo=dt.UTC)
        age = max(0.0, (now - beat).total_seconds())
        state = "lost" if w.state == "alive" and age > heartbeat_timeout_s else w.state
        rows.append(WorkerRow(w.name, w.hostname, w.pid, w.device, w.queues.split(","),
                              w.version, state, _iso(w.started_at), _iso(w.heartbeat_at),
                              round(age, 1), w.job_pk, w.jobs_done))
    return sorted(rows, key=lambda r: (r.state != "alive", r.name))


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
        "reviews": [review_dict(r) for r in session.scalars(
            select(Review).where(Review.study_pk == study.id).order_by(Review.id))],
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
    of a segmented phase), in the order they were stored; purged ones (retention) left
    out."""
    return tuple(session.scalars(
        select(Instance.path).join(Series, Series.id == Instance.series_pk)
        .where(Series.series_instance_uid == series_instance_uid,
               Instance.purged_at.is_(None))
        .order_by(Instance.id)).all())
