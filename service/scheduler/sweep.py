"""The trigger: find stable studies and queue a job for each new state of a study."""

from __future__ import annotations

import datetime as dt
import json
import logging

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.config import ClassificationRules
from service.db.tables import (
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    PriorStudy,
    Series,
    Study,
    utcnow,
)
from service.domain import PRIOR_JOB_PRIORITY
from service.jobs.study_plan import image_fingerprint
from service.scheduler.classify import (
    IMAGE_SOP_CLASSES,
    InstanceFacts,
    SeriesFacts,
    choose_pipeline,
    classify_series,
    series_facts,
)

__all__ = ["study_fingerprint", "sweep"]

logger = logging.getLogger(__name__)


def study_fingerprint(session: Session, study_pk: int) -> str:
    """The fingerprint (:func:`~service.jobs.study_plan.image_fingerprint`) of the study's
    received images."""
    return image_fingerprint(session.scalars(
        select(Instance.sop_instance_uid)
        .join(Series, Instance.series_pk == Series.id)
        .where(Series.study_pk == study_pk, Instance.origin == InstanceOrigin.RECEIVED,
               Instance.sop_class_uid.in_(IMAGE_SOP_CLASSES))))


def _series_facts(session: Session, study_pk: int) -> list[SeriesFacts]:
    return series_facts(
        InstanceFacts(*row) for row in session.execute(
            select(Series.series_instance_uid, Series.modality, Series.description,
                   Series.protocol_name, Instance.sop_class_uid, Instance.temporal_position)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk == study_pk, Instance.origin == InstanceOrigin.RECEIVED)
            .order_by(Instance.id)))


def sweep(
    session: Session,
    *,
    stable_age_seconds: float,
    rules: ClassificationRules,
    mr_pipeline: str,
    ct_pipeline: str,
    mr_nocontrast_pipeline: str | None = None,
    now: dt.datetime | None = None,
) -> list[Job]:
    """Queue jobs for studies that are stable and changed since they were last looked at.

    A study is stable when no new instance arrived for ``stable_age_seconds``. It is
    processed when the fingerprint of its received images differs from that of its last
    job: new series trigger a new job, a resend of the same instances does not. A study
    with no matching pipeline gets a failed job saying why. The jobs of earlier studies
    fetched from the PACS (service/priors) get a lower priority. Does not commit.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stable_age_seconds)
    studies = session.scalars(
        select(Study).where(
            Study.last_received_at <= cutoff,
            or_(Study.checked_at.is_(None), Study.checked_at < Study.last_received_at))
        .order_by(Study.last_received_at)
        # Several receivers (a scaled-out node) sweep one index: on PostgreSQL a study
        # is looked at by one of them, the others skip it until that one commits.
        .with_for_update(skip_locked=True)
    ).all()
    created: list[Job] = []
    for study in studies:
        study.checked_at = study.last_received_at
        fingerprint = study_fingerprint(session, study.id)
        last = session.scalar(select(Job).where(Job.study_pk == study.id)
                              .order_by(Job.id.desc()).limit(1))
        if last is not None and last.fingerprint == fingerprint:
            continue
        roles = {f.series_instance_uid: classify_series(f, rules)
                 for f in _series_facts(session, study.id)}
        if not any(r is not r.DERIVED for r in roles.values()):
            continue  # only derived objects (e.g. SEGs sent back to us): nothing to do
        pipeline, reason = choose_pipeline(roles, mr_pipeline=mr_pipeline,
                                           ct_pipeline=ct_pipeline,
                                           mr_nocontrast_pipeline=mr_nocontrast_pipeline)
        fetched = session.scalar(select(PriorStudy.id).where(
            PriorStudy.study_instance_uid == study.study_instance_uid)) is not None
        job = Job(study_pk=study.id, pipeline=pipeline, fingerprint=fingerprint,
                  state=JobState.QUEUED, attempts=0,
                  priority=PRIOR_JOB_PRIORITY if fetched else 0,
                  series_roles=json.dumps({k: v.value for k, v in roles.items()}))
        if pipeline is None:
            job.state = JobState.FAILED
            job.error = f"study {study.study_instance_uid}: {reason}"
            job.finished_at = now
            logger.warning("no pipeline for study %s: %s", study.study_instance_uid, reason)
        else:
            logger.info("study %s stable: queued %s (%s)%s", study.study_instance_uid,
                        pipeline, reason, ", an earlier study from the PACS: after new ones"
                        if fetched else "")
        session.add(job)
        created.append(job)
    return created
