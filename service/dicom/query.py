"""What C-FIND, C-GET and C-MOVE see of the archive: the index's patients, studies,
series and instances (results included; purged instances left out), with the patient
and study attributes the index does not hold read from one stored header per study."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import DataElement, Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Instance, Patient, Series, Study
from service.dicom.matching import matches

__all__ = ["LEVELS", "Matches", "QueryError", "key_text", "search"]

logger = logging.getLogger(__name__)

#: The keys each level answers, in order of the levels (PS3.4 C.6.1.1 and C.6.2.1).
LEVELS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
                "PatientSex", "NumberOfPatientRelatedStudies",
                "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"),
    "STUDY": ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
              "StudyDescription", "StudyID", "ReferringPhysicianName", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
_ORDER = tuple(LEVELS)
#: The unique key of each level.
_UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
           "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
#: Read from a stored header of the study (the index does not keep them).
_FROM_HEADER = ("PatientName", "PatientBirthDate", "PatientSex", "StudyID",
                "ReferringPhysicianName")
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"})


class QueryError(ValueError):
    """An identifier the SCP cannot answer (no or an unknown Query/Retrieve Level)."""


@dataclass
class _Row:
    """One instance with every level's attributes, as text."""

    values: dict[str, str | None]
    path: str
    transfer_syntax: str


@dataclass
class _Group:
    values: dict[str, str | None]
    rows: list[_Row] = field(default_factory=list)


def key_text(element: DataElement) -> str:
    """A query key as matching reads it: several values joined by backslashes (PS3.4
    C.2.2.2.8), an empty key as ""."""
    if element.value is None:
        return ""
    if element.VM > 1:
        return "\\".join(str(v) for v in element.value)
    return str(element.value)


def _level(identifier: Dataset) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"Query/Retrieve Level {level!r} is not one of {', '.join(LEVELS)}")
    return level


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _rows(session: Session, identifier: Dataset, root: Path) -> list[_Row]:
    """Every indexed, unpurged instance under the identifier's unique keys (narrowed in
    SQL when they are single values)."""
    query = (select(Instance, Series, Study, Patient)
             .join(Series, Series.id == Instance.series_pk)
             .join(Study, Study.id == Series.study_pk)
             .join(Patient, Patient.id == Study.patient_pk)
             .where(Instance.purged_at.is_(None)))
    columns = {"StudyInstanceUID": Study.study_instance_uid,
               "SeriesInstanceUID": Series.series_instance_uid,
               "SOPInstanceUID": Instance.sop_instance_uid, "PatientID": Patient.patient_id}
    for keyword, column in columns.items():
        key = str(identifier.get(keyword, "") or "").strip()
        if key and not any(c in key for c in "*?\\"):
            query = query.where(column == key)
    # Only a query that names one of their keys reads the headers (not C-GET or C-MOVE).
    wants_header = any(k in identifier for k in _FROM_HEADER)
    headers: dict[int, Dataset] = {}
    rows = []
    for inst, series, study, patient in session.execute(query.order_by(Instance.id)):
        if wants_header and study.id not in headers:
            headers[study.id] = _header(root / inst.path)
        header = headers.get(study.id, Dataset())
        values: dict[str, str | None] = {
            "PatientID": patient.patient_id, "IssuerOfPatientID": _text(patient.issuer),
            "StudyInstanceUID": study.study_instance_uid,
            "StudyDate": None if study.study_date is None else study.study_date.strftime(
                "%Y%m%d"),
            "StudyTime": study.study_time, "AccessionNumber": study.accession_number,
            "StudyDescription": study.description,
            "SeriesInstanceUID": series.series_instance_uid, "Modality": series.modality,
            "SeriesNumber": _text(series.series_number),
            "SeriesDescription": series.description,
            "SOPInstanceUID": inst.sop_instance_uid, "SOPClassUID": inst.sop_class_uid,
            "InstanceNumber": _text(inst.instance_number)}
        values.update({k: _text(header.get(k, None)) for k in _FROM_HEADER})
        rows.append(_Row(values, inst.path, inst.transfer_syntax_uid))
    return rows


def _header(path: Path) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=True, specific_tags=list(_FROM_HEADER))
    except (OSError, ValueError) as exc:  # pydicom's InvalidDicomError is a ValueError
        logger.warning("C-FIND: cannot read the header of %s: %s", path, exc)
        return Dataset()


def _groups(rows: list[_Row], level: str) -> list[_Group]:
    """The rows grouped into the level's entities, with their counts and modalities."""
    depth = _ORDER.index(level)
    keys = [_UNIQUE[k] for k in _ORDER[:depth + 1]]
    if level == "PATIENT":
        keys.append("IssuerOfPatientID")
    groups: dict[tuple, _Group] = {}
    for row in rows:
        ident = tuple(row.values[k] for k in keys)
        group = groups.setdefault(ident, _Group(dict(row.values)))
        group.rows.append(row)
    for group in groups.values():
        series = {r.values["SeriesInstanceUID"] for r in group.rows}
        studies = {r.values["StudyInstanceUID"] for r in group.rows}
        count = str(len(group.rows))
        group.values.update({
            "NumberOfPatientRelatedStudies": str(len(studies)),
            "NumberOfPatientRelatedSeries": str(len(series)),
            "NumberOfPatientRelatedInstances": count,
            "NumberOfStudyRelatedSeries": str(len(series)),
            "NumberOfStudyRelatedInstances": count,
            "NumberOfSeriesRelatedInstances": count,
            "ModalitiesInStudy": "\\".join(sorted({r.values["Modality"] or ""
                                                   for r in group.rows} - {""}))})
    return list(groups.values())


def _matching_groups(session: Session, identifier: Dataset, root: Path
                     ) -> tuple[str, list[_Group]]:
    level = _level(identifier)
    known = {k for keys in LEVELS.values() for k in keys}
    tests = [(e.keyword, e.VR, key_text(e)) for e in identifier if e.keyword in known]
    found = []
    for group in _groups(_rows(session, identifier, root), level):
        ok = True
        for keyword, vr, pattern in tests:
            value = group.values.get(keyword)
            if keyword == "ModalitiesInStudy":
                ok = matches(pattern, None, vr) if not value else any(
                    matches(pattern, m, vr) for m in value.split("\\"))
            else:
                ok = matches(pattern, value, vr)
            if not ok:
                break
        if ok:
            found.append(group)
    return level, found


@dataclass(frozen=True)
class Matches:
    """What an identifier matched: its level and the matching entities."""

    level: str
    groups: list[_Group]

    def answers(self, identifier: Dataset, retrieve_aet: str) -> list[Dataset]:
        """The C-FIND answers: one identifier per entity at the level, holding the keys
        asked for (filled where known, empty otherwise) and the Retrieve AE Title."""
        found = []
        for group in self.groups:
            answer = Dataset()
            answer.SpecificCharacterSet = "ISO_IR 192"  # the values are decoded text
            answer.QueryRetrieveLevel = self.level
            answer.RetrieveAETitle = retrieve_aet
            for element in identifier:
                keyword = keyword_for_tag(element.tag)
                if not keyword or keyword in _NOT_KEYS:
                    continue
                value = group.values.get(keyword)
                setattr(answer, keyword, "" if value is None else value)
            found.append(answer)
        return found

    def paths(self, root: Path) -> list[Path]:
        """The stored files under the entities (C-GET, C-MOVE)."""
        return [root / row.path for group in self.groups for row in group.rows]

    def syntaxes(self) -> dict[str, set[str]]:
        """Each SOP class under the entities, with the transfer syntaxes it is stored in
        (a C-MOVE's presentation contexts), from the index."""
        found: dict[str, set[str]] = {}
        for group in self.groups:
            for row in group.rows:
                found.setdefault(row.values["SOPClassUID"] or "", set()).add(
                    row.transfer_syntax)
        return found

    def patients(self) -> dict[str, set[str]]:
        """Each patient touched, with the studies of theirs (the audit's rows)."""
        found: dict[str, set[str]] = {}
        for group in self.groups:
            for row in group.rows:
                found.setdefault(row.values["PatientID"] or "",
                                 set()).add(row.values["StudyInstanceUID"] or "")
        return found


def search(session: Session, identifier: Dataset, root: Path) -> Matches:
    """The entities of the archive that ``identifier`` matches at its level.

    Raises
    ------
    QueryError
        The identifier has no known Query/Retrieve Level.
    """
    return Matches(*_matching_groups(session, identifier, root))
