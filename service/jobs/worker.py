"""``kidney-node worker``: a process that takes job ids from the broker and runs them.

One job at a time (prefetch 1, one thread), acknowledged once it has ended: a worker
killed during a job leaves its message unacknowledged, the broker hands it on, and the
receivers' reaper queues the job again once this worker's heartbeat is missed
(:func:`service.jobs.dispatch.reap_lost_workers`). The job row decides who runs it: a
message for a job that is not queued is acknowledged and dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import select, update

from service.config import Settings
from service.db import make_engine, make_sessionmaker, upgrade
from service.db.tables import Job, JobState, Worker, utcnow
from service.jobs.broker import RUN_JOB, QueueKind, broker_label, make_celery, queue_name
from service.jobs.device import resolve_device
from service.jobs.runner import JobRunner, requeue_interrupted
from service.storage import InstanceStore
from service.storage.space import StorageHealth
from service.storage.store import process_exists

__all__ = ["WorkerProcess", "default_queues"]

logger = logging.getLogger(__name__)


def default_queues(device: str) -> tuple[QueueKind, ...]:
    """A worker with CUDA takes GPU jobs, a CPU worker CPU jobs."""
    return ("gpu",) if device.startswith("cuda") else ("cpu",)


def _version() -> str:
    try:
        return version("kidney-node")
    except PackageNotFoundError:
        return "unknown"


class WorkerProcess:
    """The job runner of one worker, its row in ``workers`` and its heartbeat."""

    def __init__(self, settings: Settings, *, queues: tuple[QueueKind, ...] | None = None,
                 name: str | None = None) -> None:
        if settings.broker.url is None:
            raise ValueError("kidney-node worker needs broker.url")
        self.settings = settings
        self.device = resolve_device(settings.processing.device)
        self.queues = queues or default_queues(self.device)
        self.hostname = socket.gethostname()
        self.name = name or f"{self.hostname}:{os.getpid()}"
        self.engine = make_engine(settings.database.url)
        self.sessions = make_sessionmaker(self.engine)
        self.store = store = InstanceStore(settings.storage.root, self.sessions, shared=True)
        self.runner = JobRunner(
            settings=settings, sessions=self.sessions, store=store, device=self.device,
            storage_health=StorageHealth(store.incoming, min_free_mb=settings.storage.min_free_mb),
            worker=self.name)
        self._stop = threading.Event()

    def register(self) -> None:
        """The worker's row (alive); rows of earlier workers on this host whose process
        is gone are marked lost at once, so their jobs need not wait for the timeout."""
        with self.sessions.begin() as session:
            for row in session.scalars(select(Worker).where(
                    Worker.hostname == self.hostname, Worker.state == "alive",
                    Worker.name != self.name)):
                if not process_exists(row.pid):
                    row.state = "lost"
                    logger.warning("worker %s on this host is gone (pid %d): lost", row.name,
                                   row.pid)
            # A worker restarted under the same name: what its earlier process was
            # running is queued again now (the reaper would take it for a live worker's).
            for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING,
                                                         Job.worker == self.name)):
                requeue_interrupted(job, max_attempts=self.settings.scheduler.max_attempts,
                                    where=f" (last on {self.name})")
                logger.warning("job %d was running on this worker's earlier process: now %s",
                               job.id, job.state.value)
            row = session.get(Worker, self.name) or Worker(name=self.name)
            row.hostname, row.pid, row.device = self.hostname, os.getpid(), self.device
            row.queues, row.version = ",".join(self.queues), _version()
            row.started_at = row.heartbeat_at = utcnow()
            row.job_pk, row.jobs_done, row.state = None, row.jobs_done or 0, "alive"
            session.add(row)

    def heartbeat(self) -> None:
        """Write the heartbeat (and the job running now); a row found ``lost`` (a pause
        longer than the timeout) becomes alive again, said in the log."""
        with self.sessions.begin() as session:
            row = session.get(Worker, self.name)
            if row is None:
                self.register()
                return
            if row.state != "alive":
                logger.warning("worker %s was marked %s; alive again", self.name, row.state)
            row.heartbeat_at = utcnow()
            row.job_pk = self.runner.current_job
            row.state = "alive"

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.broker.heartbeat_seconds):
            try:
                self.heartbeat()
            except Exception:  # noqa: BLE001 - the next beat tries again; said in the log
                logger.exception("worker %s: heartbeat failed", self.name)

    def run_job(self, job_id: int) -> None:
        state = self.runner.run_job(job_id)
        if state is None:
            logger.info("job %d is not queued (taken by another worker, or ended): message "
                        "dropped", job_id)
            return
        with self.sessions.begin() as session:
            session.execute(update(Worker).where(Worker.name == self.name)
                            .values(jobs_done=Worker.jobs_done + 1, job_pk=None))

    def run(self) -> int:
        """Migrate (a no-op once a receiver has), register, beat, and consume until a
        signal stops the Celery worker (SIGTERM: the running job is finished first)."""
        upgrade(self.settings.database.url)
        self.store.discard_incoming()
        self.register()
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        beat.start()
        app = make_celery(self.settings.broker)

        @app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
        def run_job(job_id: int) -> None:
            self.run_job(int(job_id))

        names = ",".join(queue_name(self.settings.broker, q) for q in self.queues)
        logger.info("worker %s: %s, queues %s, broker %s", self.name, self.device, names,
                    broker_label(self.settings.broker))
        try:
            app.worker_main(["worker", "--pool=threads", "--concurrency=1", "-Q", names,
                             "-n", f"kidney-node@{self.name}", "--without-gossip",
                             "--without-mingle", "--without-heartbeat",
                             f"--loglevel={self.settings.log_level}"])
        finally:
            self._stop.set()
            with self.sessions.begin() as session:
                session.execute(update(Worker).where(Worker.name == self.name)
                                .values(state="stopped", job_pk=None,
                                        heartbeat_at=utcnow()))
            logger.info("worker %s stopped", self.name)
            self.engine.dispose()
        return 0
