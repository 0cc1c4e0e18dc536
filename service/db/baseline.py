"""Marking a patient's baseline study (the reference of the volume changes)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.tables import Study
from service.errors import KidneyNodeError

__all__ = ["UnknownStudyError", "set_baseline"]


class UnknownStudyError(KidneyNodeError):
    """The Study Instance UID is not in the index."""


def set_baseline(session: Session, study_instance_uid: str, *, baseline: bool = True) -> str:
    """Make a study its patient's only baseline, or clear its mark; returns the PatientID.

    Without a marked study the trend's baseline is the patient's first study.

    Raises
    ------
    UnknownStudyError
        If the study is not known to this node.
    """
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        raise UnknownStudyError(f"study {study_instance_uid} is not known to this node")
    if baseline:
        session.execute(update(Study).where(Study.patient_pk == study.patient_pk)
                        .values(is_baseline=False))
    study.is_baseline = baseline
    return study.patient.patient_id
