"""Index an instance's header into the database (patients, studies, series, instances)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Instance, InstanceOrigin, Patient, Series, Study, utcnow

__all__ = ["InstanceHeader", "index_instance"]

logger = logging.getLogger(__name__)


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    raw = _text(ds, keyword)
    if not raw:
        return None
    try:
        return dt.datetime.strptime(raw[:8], "%Y%m%d").date()
    except ValueError:
        logger.warning("ignoring malformed %s %r", keyword, raw)
        return None


@dataclass(frozen=True)
class InstanceHeader:
    """What the index keeps of one instance's header."""

    patient_id: str
    issuer: str
    study_uid: str
    study_date: dt.date | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    series_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    protocol_name: str | None
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    temporal_position: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InstanceHeader:
        """Read the header fields; the caller has checked the four UIDs exist."""
        return cls(
            patient_id=str(ds.get("PatientID", "") or "")[:64],
            issuer=str(ds.get("IssuerOfPatientID", "") or "")[:64],
            study_uid=str(ds.StudyInstanceUID),
            study_date=_date(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime", 16),
            accession_number=_text(ds, "AccessionNumber", 16),
            study_description=_text(ds, "StudyDescription"),
            series_uid=str(ds.SeriesInstanceUID),
            modality=_text(ds, "Modality", 16),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            protocol_name=_text(ds, "ProtocolName"),
            sop_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            instance_number=_int(ds, "InstanceNumber"),
            temporal_position=_int(ds, "TemporalPositionIdentifier"),
        )


def _get_or_create_study(session: Session, h: InstanceHeader) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == h.study_uid))
    if study is not None:
        return study
    patient = session.scalar(
        select(Patient).where(Patient.patient_id == h.patient_id, Patient.issuer == h.issuer))
    if patient is None:
        patient = Patient(patient_id=h.patient_id, issuer=h.issuer)
        session.add(patient)
    study = Study(patient=patient, study_instance_uid=h.study_uid, study_date=h.study_date,
                  study_time=h.study_time, accession_number=h.accession_number,
                  description=h.study_description)
    session.add(study)
    return study


def index_instance(
    session: Session,
    header: InstanceHeader,
    *,
    relpath: str,
    size_bytes: int,
    transfer_syntax_uid: str,
    calling_aet: str | None,
    origin: InstanceOrigin,
) -> bool:
    """Add or refresh one instance in the index. Does not commit.

    Returns
    -------
    bool
        True when the SOP Instance UID is new; False for a resend (idempotent: the row
        is refreshed and the study's stability clock is not restarted).
    """
    existing = session.scalar(select(Instance).where(Instance.sop_instance_uid == header.sop_uid))
    if existing is not None:
        existing.path = relpath
        existing.size_bytes = size_bytes
        existing.transfer_syntax_uid = transfer_syntax_uid
        return False
    study = _get_or_create_study(session, header)
    series = session.scalar(select(Series).where(Series.series_instance_uid == header.series_uid))
    if series is None:
        series = Series(study=study, series_instance_uid=header.series_uid,
                        modality=header.modality, series_number=header.series_number,
                        description=header.series_description,
                        protocol_name=header.protocol_name)
        session.add(series)
    session.add(Instance(
        series=series, sop_instance_uid=header.sop_uid, sop_class_uid=header.sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid, instance_number=header.instance_number,
        temporal_position=header.temporal_position, path=relpath, size_bytes=size_bytes,
        origin=origin, calling_aet=calling_aet))
    if origin is InstanceOrigin.RECEIVED:
        study.last_received_at = utcnow()
    return True
