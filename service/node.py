"""The running node: SCP, scheduler (trigger, job runner, sender) and HTTP API, wired."""

from __future__ import annotations

import logging
import threading

import uvicorn
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from service.api.app import create_app
from service.config import Settings
from service.cortex.installed import installed_ensemble
from service.db import make_engine, make_sessionmaker, upgrade
from service.dicom.scp import StorageSCP
from service.errors import ModelFilesError
from service.jobs.device import resolve_device
from service.jobs.runner import JobRunner, recover_interrupted_jobs
from service.outbox.sender import drain_outbox
from service.scheduler.sweep import sweep
from service.storage import InstanceStore
from service.trends import AlertRules

__all__ = ["Node"]

logger = logging.getLogger(__name__)


class Node:
    """Everything the node runs, built from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database.url)
        self.sessions = make_sessionmaker(self.engine)
        self.store = InstanceStore(settings.storage.root, self.sessions)
        self.device = resolve_device(settings.processing.device)
        self.runner = JobRunner(settings=settings, sessions=self.sessions, store=self.store,
                                device=self.device)
        self.scp = StorageSCP(settings.dicom, self.store)
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
        upgrade(self.settings.database.url)
        with self.sessions.begin() as session:
            recover_interrupted_jobs(session, max_attempts=self.settings.scheduler.max_attempts)
        self.store.discard_incoming()
        self.dicom_port = self.scp.start()
        sched = self.settings.scheduler
        self.scheduler.add_job(self.sweep_once, "interval", id="sweep",
                               seconds=sched.sweep_interval_seconds)
        self.scheduler.add_job(self.runner.run_pending, "interval", id=f"runner-{self.device}",
                               seconds=1.0)
        self.scheduler.add_job(self.send_once, "interval", id="sender",
                               seconds=self.settings.sender.poll_interval_seconds)
        self.scheduler.start()
        if self.settings.http.enabled:
            self._start_http()
        logger.info("kidney-node started: AE %s on port %s, device %s, database %s",
                    self.settings.dicom.ae_title, self.dicom_port, self.device,
                    self.engine.url.render_as_string(hide_password=True))

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
            self.scheduler.modify_job(f"runner-{self.device}", next_run_time=_now())
        return len(jobs)

    def send_once(self) -> int:
        return drain_outbox(self.sessions, storage_root=self.store.root,
                            settings=self.settings.sender,
                            calling_aet=self.settings.sender.ae_title
                            or self.settings.dicom.ae_title,
                            destinations=self.settings.destinations)

    def _start_http(self) -> None:
        app = create_app(self.sessions, rules=AlertRules.from_settings(self.settings.trends),
                         storage_root=self.store.root, token=self.settings.http.token)
        config = uvicorn.Config(app,
                                host=self.settings.http.host, port=self.settings.http.port,
                                log_config=None, access_log=False)
        self._http = uvicorn.Server(config)
        threading.Thread(target=self._http.run, name="http", daemon=True).start()

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


def _now():  # noqa: ANN202
    from datetime import datetime

    return datetime.now().astimezone()
