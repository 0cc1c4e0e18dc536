"""Retrieval of earlier studies: order, limits, retries, never twice (the PACS replaced
by a retriever that indexes what it "sends"; the real C-MOVE and C-GET against Orthanc are
in tests/integration/test_prior_studies.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from service.config import Settings
from service.db.tables import (
    Instance,
    Job,
    JobState,
    Patient,
    PriorRequest,
    PriorState,
    PriorStudy,
    Series,
    Study,
)
from service.dicom.qr_scu import RetrieveOutcome
from service.domain import PRIOR_JOB_PRIORITY
from service.errors import PacsError
from service.priors.backfill import (
    PriorFetcher,
    recover_interrupted_retrievals,
    request_on_first_measurement,
    request_priors,
)
from tests.conftest import add_study

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _settings(**priors: object) -> Settings:
    return Settings(prior_studies={"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                            "port": 104}, "retry_seconds": 60, **priors})


class FakePacs:
    """Indexes the instances of each series it is asked for, as a C-MOVE would."""

    def __init__(self, sessions, *, fail: set[str] = frozenset(), send: bool = True) -> None:  # noqa: ANN001
        self.sessions = sessions
        self.fail = set(fail)
        self.send = send
        self.calls: list[tuple[str, str]] = []

    def __call__(self, study_uid: str, series_uid: str) -> RetrieveOutcome:
        self.calls.append((study_uid, series_uid))
        if study_uid in self.fail:
            raise PacsError("PACS unreachable")
        if self.send:
            with self.sessions.begin() as session:
                patient = session.scalar(select(Patient).where(Patient.patient_id == "P1"))
                study = Study(patient=patient, study_instance_uid=study_uid)
                series = Series(study=study, series_instance_uid=series_uid, modality="MR")
                session.add(Instance(series=series, sop_instance_uid=f"{series_uid}.1",
                                     sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                                     transfer_syntax_uid="1.2.840.10008.1.2.1",
                                     path="x.dcm", size_bytes=1))
        return RetrieveOutcome(0, 1, 0, 0)


def _queue(sessions, dates: list[dt.date | None]) -> list[str]:  # noqa: ANN001
    """Queued earlier studies of patient P1 (one series each), in the order given."""
    with sessions.begin() as session:
        session.add(Patient(patient_id="P1", issuer=""))
        request = request_priors(session, patient_id="P1", issuer="", reason="cli")
        uids = []
        for i, date in enumerate(dates):
            uid = f"9.{i}"
            session.add(PriorStudy(request_pk=request.id, study_instance_uid=uid,
                                   study_date=date, series_uids=json.dumps([f"{uid}.1"]),
                                   pipeline="mri-graft", state=PriorState.QUEUED,
                                   next_attempt_at=NOW - dt.timedelta(minutes=1)))
            uids.append(uid)
        request.queried_at = NOW
    return uids


def _rows(sessions) -> dict[str, PriorStudy]:  # noqa: ANN001
    with sessions() as session:
        return {r.study_instance_uid: r for r in session.scalars(select(PriorStudy))}


def test_oldest_first_one_at_a_time_and_no_more_per_hour_than_allowed(migrated_sessions):
    sessions = migrated_sessions
    uids = _queue(sessions, [dt.date(2024, 1, 1), None, dt.date(2020, 1, 1),
                             dt.date(2022, 1, 1)])
    pacs = FakePacs(sessions)
    fetcher = PriorFetcher(_settings(max_studies_per_hour=2), sessions, retriever=pacs)
    assert fetcher.retrieve_due(NOW) == 1
    assert fetcher.retrieve_due(NOW + dt.timedelta(minutes=1)) == 1
    assert [c[0] for c in pacs.calls] == [uids[2], uids[3]]  # 2020, then 2022
    # The hour's budget is spent: the others wait, and say so.
    assert fetcher.retrieve_due(NOW + dt.timedelta(minutes=2)) == 0
    rows = _rows(sessions)
    assert rows[uids[0]].state is PriorState.QUEUED
    assert "2 retrievals started in the last hour" in rows[uids[0]].detail
    # An hour after the first, the next (2024; the undated one last).
    assert fetcher.retrieve_due(NOW + dt.timedelta(minutes=61)) == 1
    assert fetcher.retrieve_due(NOW + dt.timedelta(minutes=62)) == 1
    assert [c[0] for c in pacs.calls] == [uids[2], uids[3], uids[0], uids[1]]
    rows = _rows(sessions)
    assert all(r.state is PriorState.RETRIEVED and r.instances_retrieved == 1
               for r in rows.values())


def test_concurrent_retrievals_up_to_the_limit(migrated_sessions):
    sessions = migrated_sessions
    _queue(sessions, [dt.date(2020, 1, d) for d in range(1, 6)])
    pacs = FakePacs(sessions)
    fetcher = PriorFetcher(_settings(max_concurrent_retrievals=3), sessions, retriever=pacs)
    assert fetcher.retrieve_due(NOW) == 3
    assert fetcher.retrieve_due(NOW) == 2


def test_a_failed_retrieval_is_retried_later_then_failed_for_good_and_queued_again(
        migrated_sessions):
    sessions = migrated_sessions
    (uid,) = _queue(sessions, [dt.date(2020, 1, 1)])
    pacs = FakePacs(sessions, fail={uid})
    fetcher = PriorFetcher(_settings(max_attempts=2, max_studies_per_hour=100), sessions,
                           retriever=pacs)
    assert fetcher.retrieve_due(NOW) == 1
    row = _rows(sessions)[uid]
    assert row.state is PriorState.QUEUED and row.detail == "PACS unreachable"
    assert fetcher.retrieve_due(NOW + dt.timedelta(seconds=30)) == 0  # back-off: 60 s
    assert fetcher.retrieve_due(NOW + dt.timedelta(seconds=61)) == 1
    row = _rows(sessions)[uid]
    assert row.state is PriorState.FAILED and row.attempts == 2
    assert fetcher.retrieve_due(NOW + dt.timedelta(days=1)) == 0
    # A new request for the patient queues it again.
    with sessions.begin() as session:
        request_priors(session, patient_id="P1", issuer="", reason="api")
    row = _rows(sessions)[uid]
    assert row.state is PriorState.QUEUED and row.attempts == 0


def test_a_pacs_that_reports_success_but_sends_nothing_is_a_failure(migrated_sessions):
    sessions = migrated_sessions
    (uid,) = _queue(sessions, [dt.date(2020, 1, 1)])
    fetcher = PriorFetcher(_settings(), sessions, retriever=FakePacs(sessions, send=False))
    fetcher.retrieve_due(NOW)
    row = _rows(sessions)[uid]
    assert row.state is PriorState.QUEUED
    assert "none arrived" in row.detail and "host and port" in row.detail


def test_a_study_that_arrived_meanwhile_is_not_fetched(migrated_sessions):
    sessions = migrated_sessions
    (uid,) = _queue(sessions, [dt.date(2020, 1, 1)])
    pacs = FakePacs(sessions)
    pacs(uid, f"{uid}.1")  # sent by the PACS's own routing
    pacs.calls.clear()
    assert PriorFetcher(_settings(), sessions, retriever=pacs).retrieve_due(NOW) == 0
    assert pacs.calls == []
    assert _rows(sessions)[uid].state is PriorState.SKIPPED


def test_an_interrupted_retrieval_is_queued_again_at_start(migrated_sessions):
    sessions = migrated_sessions
    (uid,) = _queue(sessions, [dt.date(2020, 1, 1)])
    with sessions.begin() as session:
        session.scalar(select(PriorStudy)).state = PriorState.RETRIEVING
        assert recover_interrupted_retrievals(session) == 1
    assert _rows(sessions)[uid].state is PriorState.QUEUED


def test_the_first_measurement_requests_once_per_patient(migrated_sessions):
    sessions = migrated_sessions
    with sessions.begin() as session:
        patient = Patient(patient_id="P9", issuer="HOSP")
        first = add_study(session, patient, "5.1", dt.date(2025, 1, 1), {"graft": 150.0})
        second = add_study(session, patient, "5.2", dt.date(2025, 6, 1), {"graft": 151.0})
        request = request_on_first_measurement(session, first.study_pk)
        assert request is not None
        assert (request.patient_id, request.issuer, request.reason) == \
            ("P9", "HOSP", "first-measurement")
        assert request_on_first_measurement(session, second.study_pk) is None
    with sessions() as session:
        assert len(session.scalars(select(PriorRequest)).all()) == 1


def test_jobs_of_fetched_studies_run_after_new_ones(migrated_sessions, tmp_path):
    from service.jobs.runner import JobRunner
    from service.storage import InstanceStore

    sessions = migrated_sessions
    with sessions.begin() as session:
        patient = Patient(patient_id="P7", issuer="")
        old = Study(patient=patient, study_instance_uid="7.1")
        new = Study(patient=patient, study_instance_uid="7.2")
        session.add_all([
            Job(study=old, pipeline="mri-graft", fingerprint="a", state=JobState.QUEUED,
                priority=PRIOR_JOB_PRIORITY, series_roles="{}"),
            Job(study=new, pipeline="mri-graft", fingerprint="b", state=JobState.QUEUED,
                series_roles="{}")])
    runner = JobRunner(settings=Settings(), sessions=sessions,
                       store=InstanceStore(tmp_path / "archive", sessions), device="cpu")
    assert runner._claim().study_uid == "7.2"  # noqa: SLF001
    assert runner._claim().study_uid == "7.1"  # noqa: SLF001


def test_no_pacs_no_fetcher():
    with pytest.raises(ValueError, match="prior_studies.pacs"):
        PriorFetcher(Settings(), None)  # type: ignore[arg-type]


def test_a_pacs_that_is_down_leaves_the_request_to_be_asked_again(migrated_sessions):
    from tests.conftest import free_port

    sessions = migrated_sessions
    settings = Settings(prior_studies={"pacs": {"ae_title": "PACS", "host": "127.0.0.1",
                                                "port": free_port()},
                                       "retry_seconds": 60, "timeout_seconds": 2})
    with sessions.begin() as session:
        request_id = request_priors(session, patient_id="P1", issuer="", reason="cli").id
    fetcher = PriorFetcher(settings, sessions)
    assert fetcher.query_due() == 1
    with sessions() as session:
        request = session.get(PriorRequest, request_id)
        assert request.queried_at is None and request.attempts == 1
        assert "unreachable" in request.error
    assert fetcher.query_due() == 0  # not before its back-off
