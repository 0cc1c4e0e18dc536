"""The audit trail (issue 19): who sent which instance, who read which patient, what was
sent where. Reads take a session and never commit; :func:`record_access` adds a row."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db.tables import (
    AccessRecord,
    Instance,
    InstanceOrigin,
    Job,
    OutboxItem,
    Series,
    Study,
)

__all__ = ["access_records", "received_instances", "record_access", "sent_objects"]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def received_instances(session: Session, *, study_instance_uid: str | None = None,
                       peer: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Instances received (not those the node wrote), newest first: of one study, and/or
    from one peer (its calling AE title or its address)."""
    query = (select(Instance, Series.series_instance_uid, Study.study_instance_uid)
             .join(Series, Series.id == Instance.series_pk)
             .join(Study, Study.id == Series.study_pk)
             .where(Instance.origin == InstanceOrigin.RECEIVED))
    if study_instance_uid is not None:
        query = query.where(Study.study_instance_uid == study_instance_uid)
    if peer is not None:
        query = query.where(or_(Instance.calling_aet == peer, Instance.peer_address == peer))
    rows = session.execute(query.order_by(Instance.id.desc()).limit(limit)).all()
    return [{"sop_instance_uid": i.sop_instance_uid, "sop_class_uid": i.sop_class_uid,
             "series_instance_uid": series, "study_instance_uid": study,
             "calling_aet": i.calling_aet, "peer_address": i.peer_address,
             "received_at": _iso(i.received_at), "size_bytes": i.size_bytes}
            for i, series, study in rows]


def sent_objects(session: Session, *, study_instance_uid: str | None = None,
                 destination: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Every result object queued for a destination, newest first, with where it went,
    when, and the outcome (sent, pending with its last error, failed)."""
    query = (select(OutboxItem, Study.study_instance_uid)
             .outerjoin(Job, Job.id == OutboxItem.job_pk)
             .outerjoin(Study, Study.id == Job.study_pk))
    if study_instance_uid is not None:
        query = query.where(Study.study_instance_uid == study_instance_uid)
    if destination is not None:
        query = query.where(OutboxItem.destination == destination)
    rows = session.execute(query.order_by(OutboxItem.id.desc()).limit(limit)).all()
    return [{"sop_instance_uid": o.sop_instance_uid, "study_instance_uid": study,
             "destination": o.destination, "ae_title": o.ae_title,
             "address": f"{o.host}:{o.port}", "state": o.state.value,
             "attempts": o.attempts, "queued_at": _iso(o.created_at),
             "sent_at": _iso(o.sent_at), "last_error": o.last_error}
            for o, study in rows]


def record_access(session: Session, *, user: str, client: str, method: str, path: str,
                  patient_id: str | None, study_instance_uid: str | None,
                  status: int) -> None:
    """Add one read of patient data to the access log. Does not commit."""
    session.add(AccessRecord(user=user[:255], client=client[:64], method=method[:8],
                             path=path, patient_id=patient_id,
                             study_instance_uid=study_instance_uid[:64] if study_instance_uid
                             else None, status=status))


def access_records(session: Session, *, patient_id: str | None = None,
                   user: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Reads of patient data, newest first: of one patient and/or by one user."""
    query = select(AccessRecord)
    if patient_id is not None:
        query = query.where(AccessRecord.patient_id == patient_id)
    if user is not None:
        query = query.where(AccessRecord.user == user)
    return [{"at": _iso(r.at), "user": r.user, "client": r.client, "method": r.method,
             "path": r.path, "patient_id": r.patient_id,
             "study_instance_uid": r.study_instance_uid, "status": r.status}
            for r in session.scalars(query.order_by(AccessRecord.id.desc()).limit(limit))]
