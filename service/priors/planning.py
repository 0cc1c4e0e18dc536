"""What to ask the PACS and what to fetch of its answers (pure functions).

The node classifies an earlier study's series from the PACS's series-level answers
(modality, description, protocol name, number of instances), with the same rules as a
received study (service/scheduler/classify.py), and fetches only the series a pipeline
reads. The number of temporal positions, which marks an unnamed DCE series, is not a
series-level key: :func:`needs_temporal_positions` says which series are worth an
image-level query for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom import Dataset
from pydicom import uid as sopuid

from service.config import ClassificationRules
from service.domain import SeriesRole
from service.jobs.study_plan import LOADED_ROLES
from service.scheduler.classify import SeriesFacts, choose_pipeline, classify_series

__all__ = [
    "FoundSeries",
    "FoundStudy",
    "Plan",
    "image_query",
    "needs_temporal_positions",
    "other_issuer",
    "other_patient",
    "plan_study",
    "relevant",
    "series_query",
    "study_query",
    "temporal_positions",
    "unsafe_patient_id",
]

_IMAGE_CLASS = {"MR": str(sopuid.MRImageStorage), "CT": str(sopuid.CTImageStorage)}


@dataclass(frozen=True)
class FoundStudy:
    study_instance_uid: str
    study_date: dt.date | None
    modalities: tuple[str, ...]
    description: str | None
    issuer: str
    patient_id: str = ""

    @classmethod
    def from_answer(cls, answer: Dataset) -> FoundStudy | None:
        """The study of a C-FIND answer; None without a Study Instance UID."""
        uid = str(answer.get("StudyInstanceUID", "") or "").strip()
        if not uid:
            return None
        return cls(study_instance_uid=uid, study_date=_date(answer.get("StudyDate")),
                   modalities=_values(answer.get("ModalitiesInStudy")),
                   description=str(answer.get("StudyDescription", "") or "") or None,
                   issuer=str(answer.get("IssuerOfPatientID", "") or "").strip(),
                   patient_id=str(answer.get("PatientID", "") or "").strip())


@dataclass(frozen=True)
class FoundSeries:
    series_instance_uid: str
    modality: str | None
    description: str | None
    protocol_name: str | None
    n_instances: int
    n_temporal_positions: int = 0

    @classmethod
    def from_answer(cls, answer: Dataset) -> FoundSeries | None:
        uid = str(answer.get("SeriesInstanceUID", "") or "").strip()
        if not uid:
            return None
        count = str(answer.get("NumberOfSeriesRelatedInstances", "") or "0").strip()
        return cls(series_instance_uid=uid,
                   modality=str(answer.get("Modality", "") or "").upper() or None,
                   description=str(answer.get("SeriesDescription", "") or "") or None,
                   protocol_name=str(answer.get("ProtocolName", "") or "") or None,
                   n_instances=int(count) if count.isdigit() else 0)

    def facts(self) -> SeriesFacts:
        """As the trigger sees a received series: an MR or CT series is taken to hold MR
        or CT images (a SEG or SR series has its own modality)."""
        image_class = _IMAGE_CLASS.get(self.modality or "")
        return SeriesFacts(series_instance_uid=self.series_instance_uid,
                           modality=self.modality, description=self.description,
                           protocol_name=self.protocol_name,
                           sop_class_uids=frozenset({image_class} if image_class else ()),
                           n_instances=self.n_instances,
                           n_temporal_positions=self.n_temporal_positions)


@dataclass(frozen=True)
class Plan:
    """The pipeline an earlier study would go to, the series to fetch for it, and why
    (or why not: ``pipeline`` None)."""

    pipeline: str | None
    series_uids: tuple[str, ...]
    reason: str


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _values(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return tuple(str(v).strip().upper() for v in items if str(v).strip())


def study_query(patient_id: str, issuer: str, *, modalities: Sequence[str],
                since: dt.date | None) -> Dataset:
    """Study-level C-FIND identifier: the patient's studies (``since`` that date), with
    the keys the node reads. ``modalities`` go in Modalities in Study; the answers are
    filtered again (a PACS may ignore that key)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = issuer or ""
    ds.StudyInstanceUID = ""
    ds.StudyDate = "" if since is None else f"{since:%Y%m%d}-"
    ds.StudyTime = ""
    ds.StudyDescription = ""
    ds.AccessionNumber = ""
    ds.ModalitiesInStudy = list(modalities) if len(modalities) > 1 else \
        (modalities[0] if modalities else "")
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def series_query(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.SeriesNumber = ""
    ds.SeriesDescription = ""
    ds.ProtocolName = ""
    ds.NumberOfSeriesRelatedInstances = ""
    return ds


def image_query(study_uid: str, series_uid: str) -> Dataset:
    """Image-level identifier for the Temporal Position Identifier of each instance."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    ds.TemporalPositionIdentifier = ""
    return ds


def temporal_positions(answers: Iterable[Dataset]) -> int:
    """Distinct Temporal Position Identifiers among image-level answers."""
    found = set()
    for answer in answers:
        value = str(answer.get("TemporalPositionIdentifier", "") or "").strip()
        if value.isdigit():
            found.add(int(value))
    return len(found)


def unsafe_patient_id(patient_id: str) -> str | None:
    """Why ``patient_id`` cannot be sent as a C-FIND key (None: it can): empty, or
    holding a wild card, it would match other patients (PS3.4 C.2.2.2.4 has no escape)."""
    if not patient_id.strip():
        return "an empty Patient ID would match every patient"
    if "*" in patient_id or "?" in patient_id:
        return f"Patient ID {patient_id!r} holds a wild card (* or ?): it would match others"
    if "\\" in patient_id:
        return f"Patient ID {patient_id!r} holds a backslash (a list of values)"
    return None


def other_patient(study: FoundStudy, patient_id: str) -> bool:
    """The answer names another Patient ID (a PACS that matched loosely)."""
    return bool(study.patient_id) and study.patient_id != patient_id.strip()


def other_issuer(study: FoundStudy, issuer: str) -> bool:
    """The answer names an issuer of patient ID other than ``issuer``: another patient
    with the same ID. An answer without an issuer is taken as the patient's (a PACS may
    not return the key)."""
    return bool(issuer and study.issuer and study.issuer != issuer)


def relevant(study: FoundStudy, modalities: Sequence[str]) -> str | None:
    """Why a study is not worth a series query (no wanted modality); None when it is. A
    study whose answer names no modality is looked at."""
    if study.modalities and not set(study.modalities) & set(modalities):
        return f"modalities {'/'.join(study.modalities)}: none of {'/'.join(modalities)}"
    return None


def needs_temporal_positions(series: Sequence[FoundSeries], rules: ClassificationRules
                             ) -> list[str]:
    """The MR series the names leave unclassified and whose instances could hold a
    dynamic series, when no series is a DCE by its name: those worth an image-level query
    for their temporal positions."""
    roles = {s.series_instance_uid: classify_series(s.facts(), rules) for s in series}
    if SeriesRole.DCE in roles.values():
        return []
    return [s.series_instance_uid for s in series
            if roles[s.series_instance_uid] in (SeriesRole.OTHER_MR, SeriesRole.T1,
                                                SeriesRole.T2)
            and s.n_instances >= rules.dce_min_temporal_positions]


def plan_study(series: Sequence[FoundSeries], rules: ClassificationRules, *,
               mr_pipeline: str, ct_pipeline: str,
               mr_nocontrast_pipeline: str | None) -> Plan:
    """The pipeline the study's series point to and the series to fetch for it."""
    roles = {s.series_instance_uid: classify_series(s.facts(), rules) for s in series}
    pipeline, reason = choose_pipeline(roles, mr_pipeline=mr_pipeline, ct_pipeline=ct_pipeline,
                                       mr_nocontrast_pipeline=mr_nocontrast_pipeline)
    if pipeline is None:
        return Plan(None, (), reason)
    wanted = tuple(uid for uid, role in roles.items() if role in LOADED_ROLES)
    return Plan(pipeline, wanted, reason)
