"""Index an instance's header into the database (patients, studies, series, instances)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from service.db.tables import Instance, InstanceOrigin, Patient, Series, Study, utcnow

__all__ = ["IndexOutcome", "InstanceHeader", "index_instance", "insert_into_known_series"]

logger = logging.getLogger(__name__)


def _clean(value: object, limit: int) -> str:
    """Text as the index keeps it: no NUL (PostgreSQL refuses it in text), at most
    ``limit`` characters."""
    return str(value).replace("\x00", "")[:limit]


def _identity(ds: Dataset, keyword: str) -> str:
    """Patient ID or issuer whole, as the index keys patients: never cut (two IDs that
    share a prefix stay two patients); several values (not allowed, VM 1, but sent)
    joined by a backslash as they are encoded; no NUL."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        value = "\\".join(str(v) for v in value)
    return str(value).replace("\x00", "")


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return _clean(value, limit) or None


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
            patient_id=_identity(ds, "PatientID"),
            issuer=_identity(ds, "IssuerOfPatientID"),
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


@dataclass(frozen=True)
class IndexOutcome:
    """What indexing did: whether the instance was new, the keys of its series, and
    where its file was before when a resend filed it under another series."""

    is_new: bool
    series_pk: int
    study_pk: int
    moved_from: str | None = None


def index_instance(
    session: Session,
    header: InstanceHeader,
    *,
    relpath: str,
    size_bytes: int,
    transfer_syntax_uid: str,
    calling_aet: str | None,
    origin: InstanceOrigin,
    peer_address: str | None = None,
) -> IndexOutcome:
    """Add or refresh one instance in the index, creating its patient, study and series
    as needed. Flushes, does not commit.

    ``is_new`` is False for a resend (idempotent: the row is refreshed and the study's
    stability clock is not restarted). A resend under another Study or Series Instance UID
    (a corrected instance) moves the row to that series, counts as new, and reports the
    old file in ``moved_from``.
    """
    existing = session.scalar(select(Instance).where(Instance.sop_instance_uid == header.sop_uid))
    if existing is not None:
        series = session.get(Series, existing.series_pk)
        old_path = existing.path
        existing.path = relpath
        existing.size_bytes = size_bytes
        existing.transfer_syntax_uid = transfer_syntax_uid
        existing.purged_at = None  # sent again after retention purged it: held again
        if series.series_instance_uid == header.series_uid:
            return IndexOutcome(False, series.id, series.study_pk)
        new_series = _get_or_create_series(session, header)
        existing.series_pk = new_series.id
        if origin is InstanceOrigin.RECEIVED:
            new_series.study.last_received_at = utcnow()
        session.flush()
        logger.warning("instance %s moved from series %s to series %s (study %s)",
                       header.sop_uid, series.series_instance_uid, header.series_uid,
                       header.study_uid)
        return IndexOutcome(True, new_series.id, new_series.study_pk,
                            moved_from=old_path if old_path != relpath else None)
    series = _get_or_create_series(session, header)
    session.add(Instance(series=series, **_instance_values(
        header, relpath=relpath, size_bytes=size_bytes, transfer_syntax_uid=transfer_syntax_uid,
        calling_aet=calling_aet, origin=origin, peer_address=peer_address)))
    if origin is InstanceOrigin.RECEIVED:
        series.study.last_received_at = utcnow()
    session.flush()
    return IndexOutcome(True, series.id, series.study.id)


def _instance_values(header: InstanceHeader, *, relpath: str, size_bytes: int,
                     transfer_syntax_uid: str, calling_aet: str | None,
                     origin: InstanceOrigin, peer_address: str | None = None
                     ) -> dict[str, object]:
    """The columns of an instance row, for the ORM path and the one-INSERT path alike."""
    return {"sop_instance_uid": header.sop_uid, "sop_class_uid": header.sop_class_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "instance_number": header.instance_number,
            "temporal_position": header.temporal_position, "path": relpath,
            "size_bytes": size_bytes, "origin": origin, "calling_aet": calling_aet,
            "peer_address": peer_address}


def _get_or_create_series(session: Session, header: InstanceHeader) -> Series:
    series = session.scalar(select(Series).where(Series.series_instance_uid == header.series_uid))
    if series is not None:
        return series
    series = Series(study=_get_or_create_study(session, header),
                    series_instance_uid=header.series_uid, modality=header.modality,
                    series_number=header.series_number, description=header.series_description,
                    protocol_name=header.protocol_name)
    session.add(series)
    session.flush()
    return series


_INSERT_INSTANCE = Instance.__table__.insert()
_TOUCH_STUDY = (Study.__table__.update().where(Study.__table__.c.id == bindparam("study_pk"))
                .values(last_received_at=bindparam("now")))


def insert_into_known_series(
    conn: Connection,
    header: InstanceHeader,
    *,
    series_pk: int,
    study_pk: int,
    relpath: str,
    size_bytes: int,
    transfer_syntax_uid: str,
    calling_aet: str | None,
    origin: InstanceOrigin,
    peer_address: str | None = None,
) -> None:
    """The fast path of :func:`index_instance` for a series already indexed: one INSERT
    and the study's stability clock, as two cached Core statements. Does not commit.

    Raises
    ------
    sqlalchemy.exc.IntegrityError
        When the SOP Instance UID is already indexed (a resend) or the series is gone;
        the caller then takes the full path.
    """
    now = utcnow()
    conn.execute(_INSERT_INSTANCE, {
        "series_pk": series_pk, "received_at": now, **_instance_values(
            header, relpath=relpath, size_bytes=size_bytes,
            transfer_syntax_uid=transfer_syntax_uid, calling_aet=calling_aet, origin=origin,
            peer_address=peer_address)})
    if origin is InstanceOrigin.RECEIVED:
        conn.execute(_TOUCH_STUDY, {"study_pk": study_pk, "now": now})
