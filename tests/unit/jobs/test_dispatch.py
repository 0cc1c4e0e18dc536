"""Receiver side of a scaled-out node: publishing queued jobs and reaping lost workers."""

import datetime as dt

import pytest
from pydantic import ValidationError

from service.config.settings import BrokerSettings
from service.db.tables import Job, JobState, Patient, Study, Worker
from service.jobs.dispatch import dispatch_pending, reap_lost_workers

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
BROKER = BrokerSettings(url="amqp://guest:guest@127.0.0.1:5672//", queue="gpu",
                        republish_seconds=600, heartbeat_seconds=10,
                        heartbeat_timeout_seconds=60)


def _jobs(session, *states, worker=None):
    study = Study(patient=Patient(patient_id="P1", issuer=""), study_instance_uid="1.2.3",
                  last_received_at=T0)
    session.add(study)
    jobs = [Job(study=study, pipeline="mri-graft", fingerprint=str(i), state=state,
                attempts=1 if state is JobState.RUNNING else 0, worker=worker,
                created_at=T0 + dt.timedelta(seconds=i))
            for i, state in enumerate(states)]
    session.add_all(jobs)
    session.flush()
    return [j.id for j in jobs]


def _at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def test_queued_jobs_are_published_once_then_again_if_not_taken(migrated_sessions):
    sent = []
    with migrated_sessions.begin() as s:
        queued, running = _jobs(s, JobState.QUEUED, JobState.RUNNING)
    with migrated_sessions.begin() as s:
        assert dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(1)) == 1
    assert sent == [(queued, "gpu", 0)]
    with migrated_sessions.begin() as s:
        assert dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(500)) == 0
        job = s.get(Job, queued)
        assert job.queue == "gpu" and s.get(Job, running).queue is None
    with migrated_sessions.begin() as s:  # not taken in republish_seconds: published again
        assert dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(602)) == 1
    assert sent[-1] == (queued, "gpu", 0)


def test_a_failed_publish_leaves_the_job_to_be_published(migrated_sessions):
    with migrated_sessions.begin() as s:
        (queued,) = _jobs(s, JobState.QUEUED)

    def down(*_):
        raise ConnectionRefusedError("broker down")

    with pytest.raises(ConnectionRefusedError), migrated_sessions.begin() as s:
        dispatch_pending(s, down, BROKER, now=_at(1))
    sent = []
    with migrated_sessions.begin() as s:
        assert s.get(Job, queued).dispatched_at is None
        assert dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(2)) == 1
    assert sent == [(queued, "gpu", 0)]


def test_gpu_job_not_taken_goes_to_the_cpu_queue_only_when_configured(migrated_sessions):
    sent = []
    with migrated_sessions.begin() as s:
        (queued,) = _jobs(s, JobState.QUEUED)
        dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(0))
    with migrated_sessions.begin() as s:  # off by default
        assert dispatch_pending(s, lambda *m: sent.append(m), BROKER, now=_at(300)) == 0
    fallback = BROKER.model_copy(update={"cpu_fallback_seconds": 120.0})
    with migrated_sessions.begin() as s:
        assert dispatch_pending(s, lambda *m: sent.append(m), fallback, now=_at(301)) == 1
        assert s.get(Job, queued).queue == "gpu+cpu"
    assert sent == [(queued, "gpu", 0), (queued, "cpu", 0)]
    with migrated_sessions.begin() as s:  # republished later: to both queues
        assert dispatch_pending(s, lambda *m: sent.append(m), fallback, now=_at(1000)) == 2


def test_a_silent_worker_is_lost_and_its_job_queued_again(migrated_sessions):
    with migrated_sessions.begin() as s:
        s.add_all([Worker(name="w1", hostname="a", pid=1, device="cuda", queues="gpu",
                          version="t", heartbeat_at=_at(0)),
                   Worker(name="w2", hostname="b", pid=2, device="cpu", queues="cpu",
                          version="t", heartbeat_at=_at(55))])
        (on_w1,) = _jobs(s, JobState.RUNNING, worker="w1")
        s.add(Job(study_pk=s.get(Job, on_w1).study_pk, pipeline="x", fingerprint="w2",
                  state=JobState.RUNNING, attempts=1, worker="w2"))
    with migrated_sessions.begin() as s:  # w1 silent for 50 s: still alive
        assert reap_lost_workers(s, BROKER, max_attempts=3, now=_at(50)) == 0
    with migrated_sessions.begin() as s:
        assert reap_lost_workers(s, BROKER, max_attempts=3, now=_at(61)) == 1
    with migrated_sessions.begin() as s:
        assert s.get(Worker, "w1").state == "lost" and s.get(Worker, "w2").state == "alive"
        job = s.get(Job, on_w1)
        assert (job.state, job.dispatched_at) == (JobState.QUEUED, None)
        states = sorted(j.state for j in s.query(Job).where(Job.worker == "w2"))
        assert states == [JobState.RUNNING]


def test_a_job_interrupted_max_attempts_times_fails(migrated_sessions):
    with migrated_sessions.begin() as s:
        (job_id,) = _jobs(s, JobState.RUNNING, worker="gone")
        s.get(Job, job_id).attempts = 3
    with migrated_sessions.begin() as s:
        assert reap_lost_workers(s, BROKER, max_attempts=3, now=_at(1)) == 0
    with migrated_sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job.state is JobState.FAILED and "interrupted 3 times" in job.error


def test_two_receivers_never_publish_the_same_job_at_once(postgres_url):
    """PostgreSQL: the rows one receiver is publishing are skipped by the other."""
    from service.db import make_engine, make_sessionmaker, upgrade

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as s:
            ids = _jobs(s, JobState.QUEUED, JobState.QUEUED)
        first, second = [], []
        with sessions.begin() as a:
            assert dispatch_pending(a, lambda *m: first.append(m), BROKER, now=_at(1)) == 2
            with sessions.begin() as b:  # while a holds its rows
                assert dispatch_pending(b, lambda *m: second.append(m), BROKER,
                                        now=_at(1)) == 0
        assert [m[0] for m in first] == ids and second == []
    finally:
        engine.dispose()


def test_heartbeat_timeout_must_exceed_two_beats():
    with pytest.raises(ValidationError, match="twice heartbeat_seconds"):
        BrokerSettings(heartbeat_seconds=30, heartbeat_timeout_seconds=50)
