"""The running node: SCP, scheduler (trigger, job runner, sender) and HTTP API, wired."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from service.api.app import create_app
from service.config import Settings
from service.cortex.installed import installed_ensemble
from service.db import make_engine, make_sessionmaker, upgrade
from service.db.locks import Chore, one_at_a_time
from service.dicom.incoming import install as install_incoming
from service.dicom.net import configure_reception
from service.dicom.scp import StorageSCP
from service.errors import ConfigError, ModelFilesError, PipelineError
from service.jobs.broker import (
    BROKER_ERRORS,
    RUN_JOB,
    broker_label,
    make_celery,
    message_priority,
    queue_name,
)
from service.jobs.device import resolve_device
from service.jobs.dispatch import dispatch_pending, reap_lost_workers
from service.jobs.runner import JobRunner, recover_interrupted_jobs
from service.metrics import NodeMetrics
from service.outbox.sender import drain_outbox
from service.pipeline.registry import get_pipeline
from service.priors.backfill import PriorFetcher, recover_interrupted_retrievals
from service.reviews.corrections import examine_corrections
from service.scheduler.sweep import sweep
from service.storage import InstanceStore
from service.storage.retention import purge_sources
from service.storage.space import StorageHealth
from service.trends import AlertRules

__all__ = ["Node"]

logger = logging.getLogger(__name__)


class Node:
    """Everything the node runs, built from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _check_pipelines(settings)
        configure_reception()  # the process-wide DICOM settings, in one place
        self.engine = make_engine(settings.database.url)
        self.sessions = make_sessionmaker(self.engine)
        try:
            self.store = InstanceStore(settings.storage.root, self.sessions,
                                       shared=settings.broker.url is not None)
        except OSError as exc:
            raise ConfigError(f"storage.root: cannot use {settings.storage.root}: {exc}") \
                from exc
        self.device = resolve_device(settings.processing.device)
        self.storage_health = StorageHealth(self.store.incoming,
                                            min_free_mb=settings.storage.min_free_mb)
        self.metrics = NodeMetrics()
        self.metrics.watch_index(
            self.sessions, self.store.root,
            heartbeat_timeout_s=settings.broker.heartbeat_timeout_seconds)
        self.runner = JobRunner(settings=settings, sessions=self.sessions, store=self.store,
                                device=self.device, storage_health=self.storage_health,
                                metrics=self.metrics)
        #: With ``broker.url``: jobs go to ``kidney-node worker`` processes (issue 21).
        self.celery = None if settings.broker.url is None else make_celery(settings.broker)
        self.scp = StorageSCP(settings.dicom, self.store, self.storage_health, self.metrics)
        self.priors = None if settings.prior_studies.pacs is None else PriorFetcher(
            settings, self.sessions, store=self.scp.handle_store,
            prepare=lambda ae: install_incoming(ae, self.scp.incoming))
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        self._http: uvicorn.Server | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Check the installed models, migrate the database, requeue interrupted jobs,
        then open the ports.

        Raises
        ------
        ModelFilesError
            The configured cortex model folder differs from its manifest (logged too).
        """
        self._check_models()
        try:
            upgrade(self.settings.database.url)
            with self.sessions.begin() as session:
                if self.celery is None:  # else the workers' heartbeats say (dispatch_once)
                    recover_interrupted_jobs(
                        session, max_attempts=self.settings.scheduler.max_attempts)
                recover_interrupted_retrievals(session)
        except SQLAlchemyError as exc:
            where = self.engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise ConfigError(f"database.url: cannot open the database at {where}: {reason}") \
                from exc
        self.store.discard_incoming()
        http_socket = self._bind_http() if self.settings.http.enabled else None
        try:
            self.dicom_port = self.scp.start()
        except OSError as exc:
            if http_socket is not None:
                http_socket.close()
            dicom = self.settings.dicom
            raise ConfigError(f"dicom.port: cannot listen on {dicom.host}:{dicom.port}: {exc}") \
                from exc
        sched = self.settings.scheduler
        self.scheduler.add_job(self.sweep_once, "interval", id="sweep",
                               seconds=sched.sweep_interval_seconds)
        if self.celery is None:
            self.scheduler.add_job(self.runner.run_pending, "interval", id=self._jobs_id,
                                   seconds=1.0)
        else:
            self.scheduler.add_job(self.dispatch_once, "interval", id=self._jobs_id,
                                   seconds=2.0)
        self.scheduler.add_job(self.send_once, "interval", id="sender",
                               seconds=self.settings.sender.poll_interval_seconds)
        if self.priors is not None:
            self.scheduler.add_job(self.fetch_priors_once, "interval", id="priors",
                                   seconds=self.settings.prior_studies.poll_interval_seconds)
            self._warn_priors()
        retention = self.settings.storage.retention
        if retention.source_days is not None:
            self.scheduler.add_job(self.purge_once, "interval", id="retention",
                                   hours=retention.interval_hours, next_run_time=_now())
        self.scheduler.start()
        if http_socket is not None:
            self._start_http(http_socket)
        broker = self.settings.broker
        jobs = f"device {self.device}" if self.celery is None else \
            f"jobs to the workers of {queue_name(broker, broker.queue)} via {broker_label(broker)}"
        logger.info("kidney-node started: AE %s on port %s, %s, database %s",
                    self.settings.dicom.ae_title, self.dicom_port, jobs,
                    self.engine.url.render_as_string(hide_password=True))

    @property
    def _jobs_id(self) -> str:
        return f"runner-{self.device}" if self.celery is None else "dispatch"

    def dispatch_once(self) -> int:
        """Scaled out: workers that missed their heartbeats lose their jobs to the queue,
        then queued jobs are published; the number of messages sent."""
        broker = self.settings.broker
        try:
            with self.sessions.begin() as session:
                reap_lost_workers(session, broker,
                                  max_attempts=self.settings.scheduler.max_attempts)
            with self.sessions.begin() as session:
                return dispatch_pending(session, self._publish, broker)
        except BROKER_ERRORS as exc:
            logger.error("cannot publish jobs to the broker %s: %s; trying again",
                         broker_label(broker), exc)
            return 0

    def _publish(self, job_id: int, kind: str, priority: int) -> None:
        assert self.celery is not None
        name = queue_name(self.settings.broker, kind)
        self.celery.send_task(RUN_JOB, args=[job_id], queue=name, routing_key=name,
                              priority=message_priority(priority))

    def _warn_priors(self) -> None:
        """Say where the PACS's C-STOREs would be refused by the SCP's own checks."""
        priors = self.settings.prior_studies
        allowed = self.settings.dicom.allowed_calling_aets
        assert priors.pacs is not None
        logger.info("prior studies: asked of %s, retrieved by C-%s, at most %d at once and "
                    "%d per hour", priors.pacs.label, priors.retrieve.upper(),
                    priors.max_concurrent_retrievals, priors.max_studies_per_hour)
        if priors.retrieve == "move" and allowed and priors.pacs.ae_title not in allowed:
            logger.warning("prior studies: the PACS's AE title %s is not in "
                           "dicom.allowed_calling_aets: its C-STOREs of a C-MOVE will be "
                           "refused unless it calls with another allowed title",
                           priors.pacs.ae_title)

    def _check_models(self) -> None:
        """Load the cortex ensemble once (every file checked) or say there is none."""
        ct = self.settings.processing.ct
        if ct.cortex_models_dir is None:
            logger.info("CT: no cortex ensemble configured (processing.ct.cortex_models_dir): "
                        "CT studies get their kidneys segmented, no renal cortex")
            return
        try:
            ensemble = installed_ensemble(ct.cortex_models_dir, device=self.device)
        except ModelFilesError as exc:
            logger.error("refusing to start: processing.ct.cortex_models_dir: %s", exc)
            raise
        logger.info("CT: cortex ensemble of %d networks at %s, every weight file's sha256 "
                    "matches its manifest", len(ensemble.models), ct.cortex_models_dir)

    def sweep_once(self) -> int:
        with self.sessions.begin() as session:
            jobs = sweep(session, stable_age_seconds=self.settings.scheduler.stable_age_seconds,
                         rules=self.settings.classification,
                         mr_pipeline=self.settings.processing.mr_pipeline,
                         ct_pipeline=self.settings.processing.ct_pipeline,
                         mr_nocontrast_pipeline=self.settings.processing.mr_nocontrast_pipeline)
        if jobs:
            self.scheduler.modify_job(self._jobs_id, next_run_time=_now())
        with one_at_a_time(self.engine, Chore.CORRECTIONS) as mine:
            if mine:  # readers' SEGs: reviews, never a job; one receiver at a time
                with self.sessions.begin() as session:
                    examine_corrections(session, self.store.root)
        return len(jobs)

    def fetch_priors_once(self) -> None:
        """Earlier studies from the PACS: one receiver at a time asks and retrieves."""
        assert self.priors is not None
        with one_at_a_time(self.engine, Chore.PRIOR_STUDIES) as mine:
            if mine:
                self.priors.run_once()

    def purge_once(self) -> int:
        """Retention (``storage.retention``): source images of old studies purged, or,
        dry, logged; the number of instances."""
        retention = self.settings.storage.retention
        if retention.source_days is None:
            return 0
        with one_at_a_time(self.engine, Chore.RETENTION) as mine:
            if not mine:
                return 0
            return purge_sources(self.sessions, self.store.root,
                                 older_than_days=retention.source_days,
                                 dry_run=retention.dry_run).instances

    def send_once(self) -> int:
        return drain_outbox(self.sessions, storage_root=self.store.root,
                            settings=self.settings.sender,
                            calling_aet=self.settings.sender.ae_title
                            or self.settings.dicom.ae_title,
                            destinations=self.settings.destinations)

    def _bind_http(self) -> socket.socket:
        """The API's listening socket, bound before anything else listens: a port in use
        stops the start (uvicorn binding it in its thread left the node without an API)."""
        http = self.settings.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((http.host, http.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"http.port: cannot listen on {http.host}:{http.port}: {exc}") \
                from exc
        sock.set_inheritable(True)
        return sock

    def _start_http(self, sock: socket.socket) -> None:
        app = create_app(self.sessions, rules=AlertRules.from_settings(self.settings.trends),
                         storage_root=self.store.root, token=self.settings.http.token,
                         storage_health=self.storage_health, metrics=self.metrics,
                         audit_reads=self.settings.http.audit_reads,
                         audit_user_header=self.settings.http.audit_user_header,
                         pacs=None if self.settings.prior_studies.pacs is None
                         else self.settings.prior_studies.pacs.label,
                         heartbeat_timeout_s=self.settings.broker.heartbeat_timeout_seconds)
        config = uvicorn.Config(app, log_config=None, access_log=False)
        self._http = uvicorn.Server(config)
        threading.Thread(target=self._http.run, kwargs={"sockets": [sock]}, name="http",
                         daemon=True).start()

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        self.scp.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._http is not None:
            self._http.should_exit = True
        self.engine.dispose()
        self._stopped.set()


def _check_pipelines(settings: Settings) -> None:
    """Every configured pipeline name exists (else every job would fail later)."""
    processing = settings.processing
    for key in ("mr_pipeline", "ct_pipeline", "mr_nocontrast_pipeline"):
        try:
            get_pipeline(getattr(processing, key))
        except PipelineError as exc:
            raise ConfigError(f"processing.{key}: {exc}") from None


def _now():  # noqa: ANN202
    from datetime import datetime

    return datetime.now().astimezone()
