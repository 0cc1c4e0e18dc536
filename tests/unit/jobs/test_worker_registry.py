"""A worker's row: registered alive, its earlier process's job queued again, the rows of
this host's dead workers lost at once, the heartbeat kept."""

import datetime as dt
import socket
import subprocess
import sys

from service.config.settings import Settings
from service.db.tables import Job, JobState, Patient, Study, Worker, utcnow
from service.jobs.worker import WorkerProcess, default_queues


def _settings(tmp_path, database_url):
    return Settings.model_validate({
        "database": {"url": database_url}, "storage": {"root": str(tmp_path / "archive")},
        "processing": {"device": "cpu"},
        "broker": {"url": "amqp://guest:guest@127.0.0.1:5672//"}})


def test_register_requeues_its_earlier_job_and_loses_dead_neighbours(tmp_path,
                                                                      migrated_sessions,
                                                                      database_url):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    old = utcnow() - dt.timedelta(seconds=5)
    with migrated_sessions.begin() as s:
        study = Study(patient=Patient(patient_id="P", issuer=""), study_instance_uid="1.2",
                      last_received_at=old)
        s.add_all([Worker(name="w-a", hostname=socket.gethostname(), pid=dead, device="cpu",
                          queues="cpu", version="x", heartbeat_at=old),
                   Worker(name="w-b", hostname=socket.gethostname(), pid=dead, device="cpu",
                          queues="cpu", version="x", heartbeat_at=old),
                   Job(study=study, fingerprint="1", state=JobState.RUNNING, worker="w-a",
                       attempts=1)])
    worker = WorkerProcess(_settings(tmp_path, database_url), name="w-a")
    try:
        assert worker.queues == ("cpu",) == default_queues("cpu")
        worker.register()
        with migrated_sessions() as s:
            (job,) = s.query(Job).all()
            assert (job.state, job.dispatched_at) == (JobState.QUEUED, None)
            assert s.get(Worker, "w-b").state == "lost"
            row = s.get(Worker, "w-a")
            assert (row.state, row.queues, row.device) == ("alive", "cpu", "cpu")
        with migrated_sessions.begin() as s:
            s.get(Worker, "w-a").state = "lost"  # a pause past the timeout
        worker.runner.current_job = job.id
        worker.heartbeat()
        with migrated_sessions() as s:
            row = s.get(Worker, "w-a")
            assert (row.state, row.job_pk) == ("alive", job.id)
    finally:
        worker.engine.dispose()
    assert default_queues("cuda:0") == ("gpu",)


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
        tmp_path, migrated_sessions, database_url):
    """Restarted under the same name, a worker does not queue its earlier job for ever:
    as the receivers' reaper does, it fails after ``scheduler.max_attempts``."""
    with migrated_sessions.begin() as s:
        study = Study(patient=Patient(patient_id="P", issuer=""), study_instance_uid="1.3",
                      last_received_at=utcnow())
        s.add(Job(study=study, fingerprint="1", state=JobState.RUNNING, worker="w-a",
                  attempts=3))
    worker = WorkerProcess(_settings(tmp_path, database_url), name="w-a")
    try:
        worker.register()
    finally:
        worker.engine.dispose()
    with migrated_sessions() as s:
        (job,) = s.query(Job).all()
        assert job.state is JobState.FAILED
        assert job.error == "interrupted 3 times (last on w-a); giving up (max_attempts)"
