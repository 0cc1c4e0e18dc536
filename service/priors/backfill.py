"""Fetching a patient's earlier studies from the PACS (issue 20).

A :class:`~service.db.tables.PriorRequest` is made when the node first measures a patient
(prior_studies.on_first_measurement) or on demand (CLI, API). The scheduler then:

1. asks the PACS (study-level C-FIND by Patient ID and issuer, a date range and the
   modalities; series-level C-FIND of each study not yet in the node) and records one
   :class:`~service.db.tables.PriorStudy` per study: queued with the series a pipeline
   reads, or skipped with the reason;
2. retrieves the queued ones, oldest first, by C-MOVE to the node (or C-GET), at most
   ``max_concurrent_retrievals`` at once and ``max_studies_per_hour`` started in any
   hour; failures are retried with back-off, then failed for good (visible, and queued
   again by a new request).

What arrives is an ordinary study to the trigger, whose jobs run after new studies' jobs
(:data:`~service.domain.PRIOR_JOB_PRIORITY`). A study is never fetched twice: one row per
Study Instance UID, and a study already in the node is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.events import Event
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.config import PriorStudiesSettings, Settings
from service.db.tables import (
    Instance,
    Patient,
    PriorRequest,
    PriorState,
    PriorStudy,
    Series,
    Study,
    utcnow,
)
from service.dicom import qr_scu
from service.errors import PacsError, PriorRequestRefused
from service.priors.planning import (
    FoundSeries,
    FoundStudy,
    image_query,
    needs_temporal_positions,
    other_issuer,
    other_patient,
    plan_study,
    relevant,
    series_query,
    study_query,
    temporal_positions,
    unsafe_patient_id,
)
from service.scheduler.classify import IMAGE_SOP_CLASSES

__all__ = ["PriorFetcher", "Retriever", "recover_interrupted_retrievals", "request_priors",
           "request_on_first_measurement"]

logger = logging.getLogger(__name__)

#: Retrieves the instances of one series (study UID, series UID); returns the outcome.
Retriever = Callable[[str, str], qr_scu.RetrieveOutcome]


def request_priors(session: Session, *, patient_id: str, issuer: str, reason: str
                   ) -> PriorRequest:
    """Queue a request for the patient's earlier studies; the patient's studies whose
    retrieval failed for good are queued again. Does not commit.

    Raises
    ------
    PriorRequestRefused
        The Patient ID would match other patients at the PACS (empty, a wild card).
    """
    why = unsafe_patient_id(patient_id)
    if why is not None:
        raise PriorRequestRefused(f"earlier studies not requested: {why}")
    request = PriorRequest(patient_id=patient_id, issuer=issuer or "", reason=reason,
                           attempts=0, next_attempt_at=utcnow())
    session.add(request)
    session.flush()
    earlier = select(PriorRequest.id).where(PriorRequest.patient_id == patient_id,
                                            PriorRequest.issuer == (issuer or ""))
    for row in session.scalars(select(PriorStudy).where(
            PriorStudy.request_pk.in_(earlier), PriorStudy.state == PriorState.FAILED)):
        row.state = PriorState.QUEUED
        row.attempts = 0
        row.next_attempt_at = utcnow()
        row.detail = f"queued again by request {request.id} ({reason})"
    logger.info("prior studies of patient %r (issuer %r) requested (%s): request %d",
                patient_id, issuer or "", reason, request.id)
    return request


def request_on_first_measurement(session: Session, study_pk: int) -> PriorRequest | None:
    """A request for the patient of ``study_pk`` when none was made yet (the first time
    the node measures the patient). Does not commit."""
    patient = session.scalar(select(Patient).join(Study).where(Study.id == study_pk))
    if patient is None:
        return None
    asked = session.scalar(select(PriorRequest.id).where(
        PriorRequest.patient_id == patient.patient_id,
        PriorRequest.issuer == patient.issuer).limit(1))
    if asked is not None:
        return None
    why = unsafe_patient_id(patient.patient_id)
    if why is not None:
        logger.warning("earlier studies of the patient of study pk %d not requested: %s",
                       study_pk, why)
        return None
    return request_priors(session, patient_id=patient.patient_id, issuer=patient.issuer,
                          reason="first-measurement")


def recover_interrupted_retrievals(session: Session) -> int:
    """Retrievals left running by a stop go back to the queue. Does not commit."""
    rows = session.scalars(select(PriorStudy).where(
        PriorStudy.state == PriorState.RETRIEVING)).all()
    for row in rows:
        row.state = PriorState.QUEUED
        row.detail = "interrupted by a restart: retrieved again"
    return len(rows)


#: The wait after a permanent refusal: until a new request.
_NEVER = dt.timedelta(days=365 * 100)


def _backoff(settings: PriorStudiesSettings, attempts: int) -> dt.timedelta:
    """``retry_seconds`` doubling with each attempt, at most 6 hours."""
    return dt.timedelta(seconds=min(settings.retry_seconds * 2 ** min(max(attempts - 1, 0), 20),
                                    6 * 3600.0))


def _in_node(session: Session, study_uid: str) -> bool:
    return session.scalar(select(Instance.id).join(Series).join(Study).where(
        Study.study_instance_uid == study_uid).limit(1)) is not None


class PriorFetcher:
    """Runs the requests and retrievals (one call of :meth:`run_once` per scheduler
    tick). A series is retrieved by C-MOVE to the node's AE, or, with
    ``prior_studies.retrieve: get``, by C-GET whose C-STOREs go to ``store`` (the SCP's
    handler) on an AE set up by ``prepare``; ``retriever`` replaces both."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], *,
                 store: Callable[[Event], int] | None = None,
                 prepare: Callable[[AE], None] | None = None,
                 retriever: Retriever | None = None) -> None:
        self.settings = settings
        self.priors = settings.prior_studies
        if self.priors.pacs is None:
            raise ValueError("prior_studies.pacs is not set")
        self.pacs = self.priors.pacs
        self.sessions = sessions
        self.calling_aet = settings.sender.ae_title or settings.dicom.ae_title
        self._store = store
        self._prepare = prepare
        if retriever is None and self.priors.retrieve == "get" and store is None:
            raise ValueError("prior_studies.retrieve: get needs the SCP's C-STORE handler")
        self.retriever = retriever or (self._get if self.priors.retrieve == "get"
                                       else self._move)

    # -- queries --------------------------------------------------------------------

    def run_once(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Answer the due requests, then start the due retrievals the limits allow;
        returns (requests answered, studies retrieved)."""
        return self.query_due(now), self.retrieve_due(now)

    def _find(self, identifier: Dataset) -> list[Dataset]:
        return qr_scu.find(self.pacs, identifier, calling_aet=self.calling_aet,
                           timeout=self.priors.timeout_seconds)

    def query_due(self, now: dt.datetime | None = None) -> int:
        now = now or utcnow()
        with self.sessions() as session:
            due = session.execute(select(PriorRequest.id, PriorRequest.patient_id,
                                         PriorRequest.issuer).where(
                PriorRequest.queried_at.is_(None),
                PriorRequest.next_attempt_at <= now).order_by(PriorRequest.id)).all()
        for request_id, patient_id, issuer in due:
            self._answer(request_id, patient_id, issuer)
        return len(due)

    def _answer(self, request_id: int, patient_id: str, issuer: str) -> None:
        try:
            studies = self._studies(patient_id, issuer)
            plans = {s.study_instance_uid: self._plan(s) for s in studies
                     if not self._known(s.study_instance_uid)}
        except PacsError as exc:
            self._query_failed(request_id, patient_id, exc)
            return
        except (ValueError, TypeError) as exc:  # an answer pydicom cannot read
            self._query_failed(request_id, patient_id, PacsError(
                f"{self.pacs.label}: an answer could not be read: {exc}"))
            return
        with self.sessions.begin() as session:
            request = session.get(PriorRequest, request_id)
            counts = {"queued": 0, "skipped": 0, "known": len(studies) - len(plans)}
            for study in studies:
                if study.study_instance_uid not in plans:
                    continue
                state, series, pipeline, detail = plans[study.study_instance_uid]
                if session.scalar(select(PriorStudy.id).where(
                        PriorStudy.study_instance_uid == study.study_instance_uid)):
                    counts["known"] += 1  # found by an earlier request meanwhile
                    continue
                counts[state.value] += 1
                session.add(PriorStudy(
                    request_pk=request_id, study_instance_uid=study.study_instance_uid,
                    study_date=study.study_date, modalities="/".join(study.modalities)[:64],
                    description=(study.description or "")[:64] or None,
                    series_uids=json.dumps(list(series)), pipeline=pipeline, state=state,
                    detail=detail, attempts=0, next_attempt_at=utcnow(),
                    instances_retrieved=0))
            request.queried_at = utcnow()
            request.attempts += 1
            request.error = None
            request.summary = (f"{len(studies)} earlier studies found: {counts['queued']} to "
                               f"fetch, {counts['skipped']} skipped, {counts['known']} "
                               "already in the node or requested")
        logger.info("prior studies of patient %r: %s", patient_id, request.summary)

    def _query_failed(self, request_id: int, patient_id: str, exc: PacsError) -> None:
        """A query is asked again after a back-off, however often it failed (a PACS
        down for a day must not lose the patient's history); a permanent refusal is
        not, until a new request."""
        with self.sessions.begin() as session:
            request = session.get(PriorRequest, request_id)
            request.attempts += 1
            request.error = str(exc) + (" (given up: make a new request once fixed)"
                                        if exc.permanent else "")
            request.next_attempt_at = utcnow() + (
                _NEVER if exc.permanent else _backoff(self.priors, request.attempts))
        logger.error("prior studies of patient %r: the query failed (%s): %s", patient_id,
                     "given up" if exc.permanent else "asked again later", exc)

    def _studies(self, patient_id: str, issuer: str) -> list[FoundStudy]:
        priors = self.priors
        since = None if priors.lookback_years is None else (
            utcnow().date() - dt.timedelta(days=round(365.25 * priors.lookback_years)))
        issuer = issuer if priors.match_issuer else ""
        answers = self._find(study_query(patient_id, issuer, modalities=priors.modalities,
                                         since=since))
        found: dict[str, FoundStudy] = {}
        for answer in answers:
            study = FoundStudy.from_answer(answer)
            if study is None:
                logger.warning("%s: a C-FIND answer without Study Instance UID ignored",
                               self.pacs.label)
            elif other_patient(study, patient_id):
                logger.warning("%s: study %s is of patient %r, not %r: ignored",
                               self.pacs.label, study.study_instance_uid, study.patient_id,
                               patient_id)
            elif other_issuer(study, issuer):
                logger.warning("%s: study %s of patient %r is of issuer %r, not %r: ignored",
                               self.pacs.label, study.study_instance_uid, patient_id,
                               study.issuer, issuer)
            else:
                found.setdefault(study.study_instance_uid, study)
        return sorted(found.values(), key=lambda s: (s.study_date or dt.date.max,
                                                     s.study_instance_uid))

    def _known(self, study_uid: str) -> bool:
        with self.sessions() as session:
            return _in_node(session, study_uid) or session.scalar(
                select(PriorStudy.id).where(PriorStudy.study_instance_uid == study_uid)
            ) is not None

    def _plan(self, study: FoundStudy) -> tuple[PriorState, tuple[str, ...], str | None, str]:
        """(state, series to fetch, pipeline, detail) of one study not in the node."""
        why_not = relevant(study, self.priors.modalities)
        if why_not is not None:
            return PriorState.SKIPPED, (), None, why_not
        series = [s for a in self._find(series_query(study.study_instance_uid))
                  if (s := FoundSeries.from_answer(a)) is not None]
        rules = self.settings.classification
        dynamic = set(needs_temporal_positions(series, rules))
        if dynamic:
            series = [s if s.series_instance_uid not in dynamic else FoundSeries(
                s.series_instance_uid, s.modality, s.description, s.protocol_name,
                s.n_instances, temporal_positions(self._find(image_query(
                    study.study_instance_uid, s.series_instance_uid))))
                for s in series]
        processing = self.settings.processing
        plan = plan_study(series, rules, mr_pipeline=processing.mr_pipeline,
                          ct_pipeline=processing.ct_pipeline,
                          mr_nocontrast_pipeline=processing.mr_nocontrast_pipeline)
        if plan.pipeline is None:
            return PriorState.SKIPPED, (), None, plan.reason
        return PriorState.QUEUED, plan.series_uids, plan.pipeline, plan.reason

    # -- retrievals -----------------------------------------------------------------

    def _move(self, study_uid: str, series_uid: str) -> qr_scu.RetrieveOutcome:
        return qr_scu.move(self.pacs, _series_identifier(study_uid, series_uid),
                           calling_aet=self.calling_aet,
                           destination_aet=self.priors.move_destination
                           or self.settings.dicom.ae_title,
                           timeout=self.priors.retrieve_timeout_seconds)

    def _get(self, study_uid: str, series_uid: str) -> qr_scu.RetrieveOutcome:
        assert self._store is not None
        return qr_scu.get(self.pacs, _series_identifier(study_uid, series_uid),
                          calling_aet=self.calling_aet,
                          timeout=self.priors.retrieve_timeout_seconds,
                          sop_classes=sorted(IMAGE_SOP_CLASSES), store=self._store,
                          prepare=self._prepare)

    def retrieve_due(self, now: dt.datetime | None = None) -> int:
        """Start the queued retrievals the limits allow, oldest study first; returns how
        many were started."""
        now = now or utcnow()
        priors = self.priors
        with self.sessions.begin() as session:
            started = session.scalar(select(func.count(PriorStudy.id)).where(
                PriorStudy.started_at >= now - dt.timedelta(hours=1))) or 0
            due = session.scalars(select(PriorStudy).where(
                PriorStudy.state == PriorState.QUEUED, PriorStudy.next_attempt_at <= now)
                .order_by(PriorStudy.study_date.is_(None), PriorStudy.study_date,
                          PriorStudy.id)).all()
            room = min(priors.max_concurrent_retrievals, priors.max_studies_per_hour - started)
            chosen: list[tuple[int, str, list[str]]] = []
            for row in due:
                if _in_node(session, row.study_instance_uid):
                    row.state = PriorState.SKIPPED
                    row.detail = "arrived in the node by another way before its retrieval"
                    continue
                if len(chosen) >= max(room, 0):
                    if room <= 0:
                        earliest = session.scalar(select(func.min(PriorStudy.started_at))
                                                  .where(PriorStudy.started_at
                                                         >= now - dt.timedelta(hours=1)))
                        row.detail = (f"waiting: {priors.max_studies_per_hour} retrievals "
                                      "started in the last hour (prior_studies."
                                      "max_studies_per_hour); the next after "
                                      f"{_later(earliest):%H:%M:%S} UTC")
                    continue
                row.state = PriorState.RETRIEVING
                row.started_at = now
                row.attempts += 1
                row.detail = None
                chosen.append((row.id, row.study_instance_uid, json.loads(row.series_uids)))
        if len(chosen) > 1:
            with ThreadPoolExecutor(len(chosen), thread_name_prefix="prior") as pool:
                list(pool.map(lambda item: self._retrieve(*item, now), chosen))
        elif chosen:
            self._retrieve(*chosen[0], now)
        return len(chosen)

    def _retrieve(self, row_id: int, study_uid: str, series_uids: list[str],
                  started: dt.datetime) -> None:
        clock = time.monotonic()
        completed = failed = 0
        error: str | None = None
        try:
            for series_uid in series_uids:
                outcome = self.retriever(study_uid, series_uid)
                completed += outcome.completed
                failed += outcome.failed
                if not outcome.complete:
                    error = (f"series {series_uid}: status 0x{outcome.status:04X}, "
                             f"{outcome.failed} of {outcome.completed + outcome.failed} "
                             "instances failed")
        except PacsError as exc:
            error = str(exc)
        except (OSError, RuntimeError, ValueError) as exc:  # the association broke under us
            error = f"{self.pacs.label}: {type(exc).__name__}: {exc}"
            logger.exception("prior study %s: retrieval broke", study_uid)
        with self.sessions.begin() as session:
            arrived = session.scalar(select(func.count(Instance.id)).join(Series).where(
                Series.series_instance_uid.in_(series_uids))) or 0
            row = session.get(PriorStudy, row_id)
            row.instances_retrieved = arrived
            if error is None and arrived == 0:
                error = (f"{self.pacs.label} reports {completed} instances sent, none "
                         "arrived: does its entry for this node's AE title point to this "
                         "node's host and port?")
            if error is None:
                row.state = PriorState.RETRIEVED
                row.finished_at = utcnow()
                row.detail = f"{arrived} instances in the node"
                logger.info("prior study %s retrieved from %s: %d instances", study_uid,
                            self.pacs.label, arrived)
                return
            row.detail = error
            if row.attempts >= self.priors.max_attempts:
                row.state = PriorState.FAILED
                row.finished_at = utcnow()
            else:
                row.state = PriorState.QUEUED
                # The back-off counts from the end of this attempt, on the clock the
                # round was given (``started``), not the wall clock (they differ in tests).
                ended = started + dt.timedelta(seconds=time.monotonic() - clock)
                row.next_attempt_at = ended + _backoff(self.priors, row.attempts)
            state = row.state
        logger.error("prior study %s: retrieval %s from %s: %s", study_uid,
                     "failed for good" if state is PriorState.FAILED else "failed, retried",
                     self.pacs.label, error)


def _later(earliest: dt.datetime | None) -> dt.datetime:
    start = earliest or utcnow()
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    return start + dt.timedelta(hours=1)


def _series_identifier(study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    return ds

