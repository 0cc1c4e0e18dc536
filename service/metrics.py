"""Prometheus metrics of the node (``/metrics``, issue 19).

Two kinds: what happens in this process is counted as it happens (C-STORE answers by
DIMSE status, associations by outcome, job stage durations); what the index holds is
read from the database at each scrape (jobs by state and pipeline, quality-control
verdicts, reviews, outbox items by destination and state, archive size), with the free
space of the archive's filesystem, so those survive a restart and agree with the API.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.queries import list_workers
from service.db.tables import Instance, Job, JobState, OutboxItem, Result, Review

__all__ = ["CONTENT_TYPE", "NodeMetrics"]

logger = logging.getLogger(__name__)

#: Prometheus' text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "kidney_node"
#: Job stages last from well under a second (writing) to minutes (MRI on a CPU).
_STAGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class _IndexCollector(Collector):
    """Gauges read from the index and the archive's filesystem at each scrape."""

    def __init__(self, sessions: sessionmaker[Session], storage_root: Path,
                 heartbeat_timeout_s: float) -> None:
        self.sessions = sessions
        self.storage_root = storage_root
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def describe(self) -> list:
        """Nothing up front: without it, registering calls :meth:`collect`, which reads
        the index before the node has migrated it (an error logged on a fresh database)."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.sessions() as session:
                yield from self._from_index(session)
        except SQLAlchemyError as exc:  # the scrape says so rather than failing whole
            logger.error("metrics: cannot read the index: %s", exc)
            up = GaugeMetricFamily(f"{_PREFIX}_index_up", "Whether the index answered.")
            up.add_metric([], 0)
            yield up
        free = GaugeMetricFamily(f"{_PREFIX}_archive_free_bytes",
                                 "Free space on the archive's filesystem.")
        free.add_metric([], shutil.disk_usage(self.storage_root).free)
        yield free

    def _from_index(self, session: Session) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(f"{_PREFIX}_index_up", "Whether the index answered.")
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(f"{_PREFIX}_jobs", "Jobs by state and pipeline.",
                                 labels=["state", "pipeline"])
        for state, pipeline, count in session.execute(
                select(Job.state, Job.pipeline, func.count(Job.id))
                .group_by(Job.state, Job.pipeline)):
            jobs.add_metric([state.value, pipeline or ""], count)
        yield jobs
        verdicts = GaugeMetricFamily(
            f"{_PREFIX}_results", "Measurements by structure and quality-control verdict "
            "(\"not-assessed\": written before quality control).",
            labels=["structure", "verdict"])
        for structure, verdict, count in session.execute(
                select(Result.structure, Result.qc_verdict, func.count(Result.id))
                .group_by(Result.structure, Result.qc_verdict)):
            verdicts.add_metric([structure, verdict or "not-assessed"], count)
        yield verdicts
        reviews = GaugeMetricFamily(f"{_PREFIX}_reviews", "Readers' reviews by action.",
                                    labels=["action"])
        for action, count in session.execute(
                select(Review.action, func.count(Review.id)).group_by(Review.action)):
            reviews.add_metric([action.value], count)
        yield reviews
        depth = GaugeMetricFamily(
            f"{_PREFIX}_queue_depth", "Queued jobs by the broker queue(s) they were published "
            "to (\"local\": run by this node itself, or not published yet).",
            labels=["queue"])
        for queue, count in session.execute(
                select(Job.queue, func.count(Job.id)).where(Job.state == JobState.QUEUED)
                .group_by(Job.queue)):
            depth.add_metric([queue or "local"], count)
        yield depth
        workers = GaugeMetricFamily(f"{_PREFIX}_workers", "Workers by state (a worker "
                                    "silent past the heartbeat timeout is lost).",
                                    labels=["state"])
        ages = GaugeMetricFamily(f"{_PREFIX}_worker_heartbeat_age_seconds",
                                 "Seconds since each worker's last heartbeat.",
                                 labels=["worker", "device"])
        done = GaugeMetricFamily(f"{_PREFIX}_worker_jobs_done", "Jobs each worker has run.",
                                 labels=["worker", "device"])
        states = {"alive": 0, "stopped": 0, "lost": 0}
        for row in list_workers(session, heartbeat_timeout_s=self.heartbeat_timeout_s):
            states[row.state] = states.get(row.state, 0) + 1
            if row.state != "stopped":
                ages.add_metric([row.name, row.device], row.heartbeat_age_s)
            done.add_metric([row.name, row.device], row.jobs_done)
        for state, count in states.items():
            workers.add_metric([state], count)
        yield from (workers, ages, done)
        outbox = GaugeMetricFamily(f"{_PREFIX}_outbox_items",
                                   "Result objects to send, by destination and state.",
                                   labels=["destination", "state"])
        for destination, state, count in session.execute(
                select(OutboxItem.destination, OutboxItem.state, func.count(OutboxItem.id))
                .group_by(OutboxItem.destination, OutboxItem.state)):
            outbox.add_metric([destination, state.value], count)
        yield outbox
        count, size = session.execute(
            select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
        ).one()
        instances = GaugeMetricFamily(f"{_PREFIX}_archive_instances",
                                      "Instances in the archive (received and generated).")
        instances.add_metric([], count)
        yield instances
        archive = GaugeMetricFamily(f"{_PREFIX}_archive_bytes",
                                    "Size of the instances in the archive.")
        archive.add_metric([], int(size))
        yield archive


class NodeMetrics:
    """The node's metrics registry: its counters, and the index read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stores = Counter(
            f"{_PREFIX}_stores", "C-STORE requests answered, by DIMSE status (hex).",
            ["status"], registry=self.registry)
        self.associations = Counter(
            f"{_PREFIX}_associations", "Associations asked for, by outcome (accepted; "
            "rejected: unknown AE title or no common context; refused: peer address "
            "not allowed).", ["outcome"], registry=self.registry)
        self.job_stages = Histogram(
            f"{_PREFIX}_job_stage_seconds", "Seconds a job spent per stage (load, segment, "
            "qc, write), by pipeline.", ["pipeline", "stage"], buckets=_STAGE_BUCKETS,
            registry=self.registry)

    def watch_index(self, sessions: sessionmaker[Session], storage_root: Path, *,
                    heartbeat_timeout_s: float = 60.0) -> None:
        """Also expose what the index holds (read at each scrape)."""
        self.registry.register(_IndexCollector(sessions, storage_root, heartbeat_timeout_s))

    def store_answered(self, status: int) -> None:
        self.stores.labels(f"0x{status:04X}").inc()

    def association(self, outcome: str) -> None:
        self.associations.labels(outcome).inc()

    def job_timings(self, pipeline: str, timings: dict[str, float]) -> None:
        for key, seconds in timings.items():
            self.job_stages.labels(pipeline, key.removesuffix("_s")).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
