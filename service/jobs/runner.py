"""The job runner: claim a queued job, run its pipeline, store the SEG, queue the sends."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models.qc import Verdict
from service.config import Settings
from service.db.queries import previous_accepted_volumes
from service.db.tables import (
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    Result,
    Series,
    SeriesRole,
    Study,
    utcnow,
)
from service.errors import KidneyNodeError
from service.jobs.study_plan import (
    LOADED_ROLES,
    load_study,
    result_uids,
    segmented_phase_images,
)
from service.metrics import NodeMetrics
from service.outbox.sender import enqueue
from service.pipeline.base import Pipeline, PipelineOutput, StudyInput
from service.pipeline.quality import Assessment, assess_output
from service.pipeline.registry import get_pipeline
from service.priors.backfill import request_on_first_measurement
from service.storage import InstanceStore, StoredInstance
from service.storage.space import StorageHealth, storage_fault
from service.writers.result import ResultObjects, build_result_objects

__all__ = ["JobRunner", "recover_interrupted_jobs", "requeue_interrupted"]

logger = logging.getLogger(__name__)

def requeue_interrupted(job: Job, *, max_attempts: int, where: str = "") -> bool:
    """A job whose run was cut short (a crash, a restart, a worker gone) goes back to the
    queue, to be published again with a broker, or fails after ``max_attempts``
    (``where`` names the last holder in the error). True when queued again."""
    if job.attempts >= max_attempts:
        job.state = JobState.FAILED
        job.finished_at = utcnow()
        job.error = f"interrupted {job.attempts} times{where}; giving up (max_attempts)"
        return False
    job.state = JobState.QUEUED
    job.dispatched_at = None
    return True


def recover_interrupted_jobs(session: Session, *, max_attempts: int) -> int:
    """Jobs left RUNNING by a crash or restart go back to the queue (or fail after
    ``max_attempts``). Does not commit; returns how many were requeued."""
    requeued = 0
    for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING)):
        requeued += requeue_interrupted(job, max_attempts=max_attempts)
        logger.warning("job %d of study pk %d was interrupted: now %s", job.id, job.study_pk,
                       job.state.value)
    return requeued


#: The SEG and SR of a result and where the archive stored them.
_Written = tuple[ResultObjects, list[StoredInstance]]


@dataclass
class _Work:
    job_id: int
    study_uid: str
    pipeline: str
    fingerprint: str
    paths: dict[SeriesRole, dict[str, list[Path]]]
    #: The broker queue(s) it was published to (None: run by the node itself).
    queue: str | None = None


def _with_history_flags(output: PipelineOutput, previous: Mapping[str, float],
                        study_uid: str) -> PipelineOutput:
    """``output`` flagged ``graft-not-found`` when the patient's earlier accepted results
    hold a graft and this one does not (a CT of the native kidneys only, or a graft the
    method missed): the graft's trend has no point for this study, and a person should
    know why."""
    if "graft" not in previous or any(s.structure == "graft" for s in output.segments):
        return output
    logger.warning("study %s: no graft found, though the patient's earlier studies have one "
                   "(%.0f ml)", study_uid, previous["graft"])
    return replace(output, flags=(*output.flags, "graft-not-found"))


class JobRunner:
    """Runs queued jobs one at a time on one device."""

    def __init__(self, *, settings: Settings, sessions: sessionmaker[Session],
                 store: InstanceStore, device: str,
                 storage_health: StorageHealth | None = None,
                 metrics: NodeMetrics | None = None, worker: str | None = None) -> None:
        self.settings = settings
        #: The name this runner records on the jobs it claims (a ``kidney-node worker``).
        self.worker = worker
        #: The id of the job running now, else None.
        self.current_job: int | None = None
        self.metrics = metrics or NodeMetrics()  # one of its own when the node gives none
        self.sessions = sessions
        self.store = store
        self.device = device
        self.storage_health = storage_health or StorageHealth(store.incoming, min_free_mb=0)
        self._storage_wait_until = 0.0
        self._storage_waiting: str | None = None

    def run_pending(self) -> int:
        """Run queued jobs until none is left; returns how many ran. While the archive
        cannot be written (see :meth:`_storage_blocked`) queued jobs wait."""
        count = 0
        while not self._storage_blocked() and (work := self._claim()) is not None:
            self._execute(work)
            count += 1
        return count

    def run_job(self, job_id: int) -> JobState | None:
        """Run the job ``job_id`` if it is queued (a worker's message; the job row decides:
        a job already claimed, or ended, is left alone). While the archive cannot be
        written the job waits here. Returns the job's state afterwards, or None when it
        was not queued."""
        while True:
            while self._storage_blocked():
                time.sleep(1.0)
            work = self._claim(job_id)
            if work is None:
                return None
            self.current_job = job_id
            try:
                self._execute(work)
            finally:
                self.current_job = None
            with self.sessions() as session:
                state = session.get(Job, job_id).state
            if state is not JobState.QUEUED:  # queued again: the disk refused its results
                return state

    def _storage_blocked(self) -> bool:
        if time.monotonic() < self._storage_wait_until:
            return True
        problem = self.storage_health.write_problem()
        if problem is not None and problem != self._storage_waiting:
            logger.warning("jobs wait until the archive can be written: %s", problem)
        elif problem is None and self._storage_waiting is not None:
            logger.info("the archive can be written again: queued jobs run")
        self._storage_waiting = problem
        return problem is not None

    def _claim(self, job_id: int | None = None) -> _Work | None:
        """Move ``job_id`` (else the first queued job) to running, or None."""
        with self.sessions.begin() as session:
            if job_id is None:
                job_id = session.scalar(
                    select(Job.id).where(Job.state == JobState.QUEUED)
                    .order_by(Job.priority.desc(), Job.created_at, Job.id).limit(1))
            if job_id is None:
                return None
            # Compare-and-set: only one runner can move this job to RUNNING.
            claimed = session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(state=JobState.RUNNING, started_at=utcnow(), device=self.device,
                        worker=self.worker, attempts=Job.attempts + 1, error=None,
                        outcome=None)).rowcount
            if claimed != 1:
                return None
            job = session.get(Job, job_id)
            study = session.get(Study, job.study_pk)
            roles = {uid: SeriesRole(role) for uid, role in json.loads(job.series_roles).items()}
            paths: dict[SeriesRole, dict[str, list[Path]]] = defaultdict(dict)
            rows = session.execute(
                select(Series.series_instance_uid, Instance.path)
                .join(Instance, Instance.series_pk == Series.id)
                .where(Series.study_pk == study.id, Instance.origin == InstanceOrigin.RECEIVED,
                       Instance.purged_at.is_(None))
            ).all()
            for series_uid, rel in rows:
                role = roles.get(series_uid)
                if role in LOADED_ROLES:
                    paths[role].setdefault(series_uid, []).append(self.store.path_of(rel))
            logger.info("job %d: running %s on study %s (%s%s)", job.id, job.pipeline,
                        study.study_instance_uid, self.device,
                        "" if self.worker is None else f", worker {self.worker}")
            return _Work(job.id, study.study_instance_uid, job.pipeline or "",
                         job.fingerprint, dict(paths), job.queue)

    def _execute(self, work: _Work) -> None:
        timings: dict[str, float] = {}
        written: _Written | None = None
        quality: dict[str, Assessment] = {}
        try:
            t0 = time.perf_counter()
            study = self._load(work)
            timings["load_s"] = time.perf_counter() - t0
            pipeline = get_pipeline(work.pipeline, self.settings.processing)
            t0 = time.perf_counter()
            output = pipeline.run(study, device=self.device)
            timings["segment_s"] = time.perf_counter() - t0
            if self.device == "cpu" and work.queue and "gpu" in work.queue.split("+"):
                # A GPU job taken by a CPU worker (broker.cpu_fallback_seconds): the
                # result says the CPU profile ran.
                output = replace(output, flags=(*output.flags, "cpu-profile"))
            if output.segments:
                t0 = time.perf_counter()
                previous = self._previous_volumes(work)
                output = _with_history_flags(output, previous, work.study_uid)
                quality = assess_output(output, self.settings.qc, previous_volumes_ml=previous)
                timings["qc_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                written = self._write(work, pipeline, output, quality)
                timings["write_s"] = time.perf_counter() - t0
        except (KidneyNodeError, ValueError, RuntimeError, OSError) as exc:
            if storage_fault(exc) is not None:
                self._wait_for_storage(work, exc)
                return
            # RuntimeError covers SimpleITK and torch failures; all end in the job record.
            self._finish(work.job_id, error=f"study {work.study_uid}: {exc}", timings=timings)
            logger.error("job %d failed on study %s: %s", work.job_id, work.study_uid, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not leave it RUNNING
            self._finish(work.job_id, timings=timings,
                         error=f"study {work.study_uid}: internal error {type(exc).__name__}: "
                               f"{exc}")
            logger.exception("job %d failed on study %s with an internal error", work.job_id,
                             work.study_uid)
            return
        if written is None:
            # A finding instead of segments (no kidney in view): nothing stored or sent.
            with self.sessions.begin() as session:
                job = session.get(Job, work.job_id)
                if not self._still_ours(job):
                    return
                job.outcome = output.finding
                self._set_done(job, JobState.SUCCEEDED, None, timings)
            logger.info("job %d succeeded on study %s without a result: %s", work.job_id,
                        work.study_uid, output.finding)
            return
        objects, stored = written
        seg = objects.seg
        with self.sessions.begin() as session:
            job = session.get(Job, work.job_id)
            if not self._still_ours(job):
                return
            for spec in output.segments:
                qc = quality.get(spec.structure)
                session.add(Result(
                    job_pk=job.id, study_pk=job.study_pk, structure=spec.structure,
                    volume_ml=float(output.volumes_ml[spec.structure]),
                    pipeline_name=pipeline.name, pipeline_version=pipeline.version,
                    seg_sop_instance_uid=str(seg.SOPInstanceUID),
                    seg_series_instance_uid=str(seg.SeriesInstanceUID),
                    source_series_instance_uid=str(
                        output.reference.datasets[0].SeriesInstanceUID),
                    flags=json.dumps(list(output.flags)),
                    qc_verdict=None if qc is None else qc.verdict.value,
                    qc_reasons=json.dumps([] if qc is None else list(qc.reasons)),
                    qc_signals=json.dumps({} if qc is None else dict(qc.signals))))
            for (kind, obj), where in zip(objects.in_order(), stored, strict=True):
                enqueue(session, sop_instance_uid=str(obj.SOPInstanceUID),
                        relpath=where.path.relative_to(self.store.root).as_posix(),
                        destinations=[d for d in self.settings.destinations
                                      if kind == "phase" or kind in d.outputs],
                        job_pk=job.id)
            priors = self.settings.prior_studies
            if priors.pacs is not None and priors.on_first_measurement:
                request_on_first_measurement(session, job.study_pk)
            self._set_done(job, JobState.SUCCEEDED, None, timings)
        logger.info("job %d succeeded on study %s: %s in %.1f s", work.job_id, work.study_uid,
                    ", ".join(f"{k} {v:.1f} ml" for k, v in output.volumes_ml.items()),
                    sum(timings.values()))
        for structure, qc in quality.items():
            if qc.verdict is not Verdict.PASS:
                logger.warning("job %d, study %s: %s quality control %s: %s", work.job_id,
                               work.study_uid, structure, qc.verdict.value,
                               "; ".join(qc.reasons))

    def _previous_volumes(self, work: _Work) -> dict[str, float]:
        """Each structure's volume in the patient's latest accepted study before this one."""
        with self.sessions() as session:
            return previous_accepted_volumes(
                session, work.study_uid, verdicts=self.settings.trends.verdicts_used)

    def _write(self, work: _Work, pipeline: Pipeline, output: PipelineOutput,
               quality: Mapping[str, Assessment]) -> _Written:
        """Build the result objects and store them in the archive, in sending order (the
        phase's copies, if any, then the SEG, then the SR that references it)."""
        processing = self.settings.processing
        images = segmented_phase_images(output, work.paths) if processing.phase_series else []
        objects = build_result_objects(
            output, pipeline, processing,
            result_uids(work.study_uid, work.fingerprint, pipeline,
                        self.settings.dicom.ae_title),
            quality=quality, phase_images=images,
            rtstruct=any("rtstruct" in d.outputs for d in self.settings.destinations),
            overlay=any("overlay" in d.outputs for d in self.settings.destinations))
        stored = [self.store.store_dataset(obj, origin=InstanceOrigin.GENERATED)
                  for _, obj in objects.in_order()]
        return objects, stored

    def _load(self, work: _Work) -> StudyInput:
        return load_study(work.study_uid, work.paths)

    def _wait_for_storage(self, work: _Work, exc: BaseException) -> None:
        """The disk refused the results: queue the job again (this attempt not counted)
        and hold every job for ``scheduler.storage_retry_seconds``, then until a test
        write succeeds."""
        message = f"waiting for storage: {exc}"
        with self.sessions.begin() as session:
            job = session.get(Job, work.job_id)
            if not self._still_ours(job):
                return
            job.state = JobState.QUEUED
            job.attempts = max(0, job.attempts - 1)
            job.error = message
        self.storage_health.record_fault(str(exc))
        self._storage_wait_until = (time.monotonic()
                                    + self.settings.scheduler.storage_retry_seconds)
        logger.error("job %d on study %s queued again, %s", work.job_id, work.study_uid,
                     message)

    def _finish(self, job_id: int, *, error: str, timings: dict[str, float]) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if self._still_ours(job):
                self._set_done(job, JobState.FAILED, error, timings)

    def _still_ours(self, job: Job) -> bool:
        """Whether this runner may record the job's end: a worker paused past the
        heartbeat timeout may find its job queued again and taken by another; the other
        records it (the same result UIDs), this one's outcome is dropped."""
        if self.worker is None or (job.state is JobState.RUNNING and job.worker == self.worker):
            return True
        logger.warning("job %d was taken over (now %s on %s) while worker %s ran it: this "
                       "run's outcome is not recorded", job.id, job.state.value, job.worker,
                       self.worker)
        return False

    def _set_done(self, job: Job, state: JobState, error: str | None,
                  timings: dict[str, float]) -> None:
        self.metrics.job_timings(job.pipeline or "", timings)
        job.state = state
        job.error = error
        job.finished_at = utcnow()
        job.timings = json.dumps({k: round(v, 3) for k, v in timings.items()})
