"""Receiver side of a scaled-out node: queued jobs published to the broker, and the jobs
of workers that stopped sending heartbeats queued again.

Every step reads and changes job rows in one transaction; rows are taken with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two receivers never publish or requeue the
same job at once (a duplicate message would still be harmless: a worker claims a job by
compare-and-set from ``queued`` to ``running``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.config.settings import BrokerSettings
from service.db.tables import Job, JobState, Worker, utcnow
from service.jobs.runner import requeue_interrupted

__all__ = ["Publish", "dispatch_pending", "reap_lost_workers"]

logger = logging.getLogger(__name__)

#: Sends one message: (job id, queue kind "gpu"/"cpu", job priority).
Publish = Callable[[int, str, int], None]


def dispatch_pending(session: Session, publish: Publish, broker: BrokerSettings, *,
                     now: dt.datetime | None = None) -> int:
    """Publish queued jobs never published, or published ``republish_seconds`` ago and
    still not taken; with ``cpu_fallback_seconds``, GPU jobs not taken that long are
    published to the CPU queue too. Returns the number of messages sent. Does not
    commit; a failed publish raises and leaves the rows as they were."""
    now = now or utcnow()
    sent = 0
    stale = now - dt.timedelta(seconds=broker.republish_seconds)
    due = session.scalars(
        select(Job).where(Job.state == JobState.QUEUED,
                          or_(Job.dispatched_at.is_(None), Job.dispatched_at < stale))
        .order_by(Job.priority.desc(), Job.created_at, Job.id)
        .with_for_update(skip_locked=True)).all()
    for job in due:
        kinds = (job.queue or broker.queue).split("+")
        for kind in kinds:
            publish(job.id, kind, job.priority)
            sent += 1
        if job.dispatched_at is not None:
            logger.warning("job %d was published at %s and not taken: published again to %s",
                           job.id, job.dispatched_at.isoformat(timespec="seconds"),
                           "+".join(kinds))
        job.queue = "+".join(kinds)
        job.dispatched_at = now
    if broker.cpu_fallback_seconds is not None:
        waited = now - dt.timedelta(seconds=broker.cpu_fallback_seconds)
        for job in session.scalars(
                select(Job).where(Job.state == JobState.QUEUED, Job.queue == "gpu",
                                  Job.dispatched_at < waited)
                .with_for_update(skip_locked=True)):
            publish(job.id, "cpu", job.priority)
            sent += 1
            job.queue = "gpu+cpu"
            logger.warning("job %d: no GPU worker took it in %.0f s; a CPU worker may run it "
                           "(CPU profile)", job.id, broker.cpu_fallback_seconds)
    return sent


def reap_lost_workers(session: Session, broker: BrokerSettings, *, max_attempts: int,
                      now: dt.datetime | None = None) -> int:
    """Workers silent for ``heartbeat_timeout_seconds`` become ``lost``; the jobs left
    running by a worker that is not alive (lost, stopped, or none: a job of the
    single-process node) go back to the queue to be published again, or fail after
    ``max_attempts``. Returns how many jobs were queued again. Does not commit."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=broker.heartbeat_timeout_seconds)
    for worker in session.scalars(
            select(Worker).where(Worker.state == "alive", Worker.heartbeat_at < cutoff)
            .with_for_update(skip_locked=True)):
        worker.state = "lost"
        logger.error("worker %s (%s, %s) sent no heartbeat since %s: lost", worker.name,
                     worker.hostname, worker.device,
                     worker.heartbeat_at.isoformat(timespec="seconds"))
    alive = select(Worker.name).where(Worker.state == "alive")
    requeued = 0
    for job in session.scalars(
            select(Job).where(Job.state == JobState.RUNNING,
                              or_(Job.worker.is_(None), Job.worker.not_in(alive)))
            .with_for_update(skip_locked=True)):
        holder = job.worker or "the single-process node"
        requeued += requeue_interrupted(job, max_attempts=max_attempts,
                                        where=f" (last on {holder})")
        logger.warning("job %d of study pk %d was running on %s, which is gone: now %s",
                       job.id, job.study_pk, holder, job.state.value)
    return requeued
