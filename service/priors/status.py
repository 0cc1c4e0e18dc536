"""What was asked of the PACS for a patient and what came of it (CLI and API)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import PriorRequest, PriorStudy

__all__ = ["prior_status"]


def _iso(value: object) -> str | None:
    return None if value is None else value.isoformat()  # type: ignore[attr-defined]


def prior_status(session: Session, patient_id: str, issuer: str) -> dict[str, Any]:
    """The patient's requests (newest first) and the earlier studies they found, oldest
    study first."""
    requests = session.scalars(select(PriorRequest).where(
        PriorRequest.patient_id == patient_id, PriorRequest.issuer == issuer)
        .order_by(PriorRequest.id.desc())).all()
    studies = session.scalars(select(PriorStudy).where(
        PriorStudy.request_pk.in_([r.id for r in requests]))
        .order_by(PriorStudy.study_date.is_(None), PriorStudy.study_date,
                  PriorStudy.id)).all()
    return {
        "patient_id": patient_id,
        "issuer": issuer,
        "requests": [{"id": r.id, "reason": r.reason, "created_at": _iso(r.created_at),
                      "queried_at": _iso(r.queried_at), "attempts": r.attempts,
                      "error": r.error, "summary": r.summary} for r in requests],
        "studies": [{"study_instance_uid": s.study_instance_uid,
                     "study_date": _iso(s.study_date), "modalities": s.modalities,
                     "description": s.description, "state": s.state.value,
                     "pipeline": s.pipeline, "series": len(json.loads(s.series_uids)),
                     "instances": s.instances_retrieved, "attempts": s.attempts,
                     "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at),
                     "detail": s.detail} for s in studies],
    }
