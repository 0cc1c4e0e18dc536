"""A reader's corrected SEG becomes a reviewed measurement (issue 17, item 5).

A SEG the node did not write, received (from a PACS that routes it, or straight from a
workstation) into a study the node measured, is examined once, in the scheduler's sweep:
each segment that names a structure the node tracks (:mod:`service.reviews.seg_reading`)
gives a ``corrected`` review with its volume, by the SEG's Content Creator and device. It
supersedes the study's automatic result of that structure in trends and alerts
(:mod:`service.db.queries`); no job is made. A SEG that gives no measurement (none of its
segments names a tracked structure, its pixels cannot be read, a copy of the node's own
result, a study the node never measured) gets an ``ignored`` review saying why, logged.
A SEG of a study whose job has not finished yet waits for it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import SegmentationStorage
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.db.tables import (
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    Result,
    Review,
    ReviewAction,
    Series,
    Study,
)
from service.errors import DICOM_READ_ERRORS
from service.reviews.seg_reading import (
    ForeignSegError,
    match_structures,
    measure_segments,
    slice_step_mm,
)
from service.writers.seg import MANUFACTURER

__all__ = ["SEG_SOP_CLASSES", "examine_corrections", "latest_results"]

logger = logging.getLogger(__name__)

#: Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5; what OHIF 3.13
#: stores by default).
SEG_SOP_CLASSES = (str(SegmentationStorage), "1.2.840.10008.5.1.4.1.1.66.7")
#: Values dcmjs (OHIF's writer) puts in the equipment attributes when it knows nothing.
_PLACEHOLDERS = {"", "unspecified", "0"}


def latest_results(session: Session, study_pk: int) -> dict[str, Result]:
    """The study's latest automatic result per structure."""
    found: dict[str, Result] = {}
    for result in session.scalars(select(Result).where(Result.study_pk == study_pk)
                                  .order_by(Result.id)):
        found[result.structure] = result
    return found


def examine_corrections(session: Session, storage_root: Path, *, limit: int = 50
                        ) -> list[Review]:
    """Examine up to ``limit`` received SEGs not examined yet; returns the reviews added.
    Does not commit."""
    pending = session.scalars(
        select(Instance).where(
            Instance.sop_class_uid.in_(SEG_SOP_CLASSES),
            Instance.origin == InstanceOrigin.RECEIVED,
            ~exists().where(Review.seg_sop_instance_uid == Instance.sop_instance_uid))
        .order_by(Instance.id).limit(limit)).all()
    added: list[Review] = []
    for instance in pending:
        study = instance.series.study
        results = latest_results(session, study.id)
        if not results and _job_pending(session, study.id):
            continue  # examined once the study's job has finished
        reviews = _examine(session, storage_root, instance, study, results)
        session.add_all(reviews)
        added.extend(reviews)
    return added


def _job_pending(session: Session, study_pk: int) -> bool:
    return session.scalar(select(exists().where(
        Job.study_pk == study_pk, Job.state.in_((JobState.QUEUED, JobState.RUNNING))))) \
        or False


def _examine(session: Session, root: Path, instance: Instance, study: Study,
             results: dict[str, Result]) -> list[Review]:
    # The columns every review of this SEG shares (who and when once the file is read).
    common: dict[str, object] = dict(
        study_pk=study.id, seg_sop_instance_uid=instance.sop_instance_uid,
        seg_series_instance_uid=instance.series.series_instance_uid,
        origin=instance.calling_aet, reviewed_at=instance.received_at, reviewer="", device="")
    label = f"SEG {instance.sop_instance_uid} of study {study.study_instance_uid}"
    try:
        ds = dcmread(root / instance.path)
        common.update(reviewer=_who(ds), device=_device(ds),
                      reviewed_at=_content_time(ds) or instance.received_at)
        if not results:
            raise ForeignSegError("the node has no measurement of this study")
        if _is_own(ds, results.values()):
            raise ForeignSegError("it is a copy of one of the node's own results")
        # A viewer writes every segment it holds, empty ones included: those say nothing.
        measures = [m for m in measure_segments(ds) if m.voxels]
        matched = match_structures(measures, results)
        if not matched:
            labels = ", ".join(repr(m.label) for m in measures) or "none with a pixel"
            raise ForeignSegError(f"none of its segments ({labels}) names a structure the "
                                  f"node tracks ({', '.join(sorted(results))})")
        step = _slice_step(session, root, ds)
    except (ForeignSegError, OSError, *DICOM_READ_ERRORS) as exc:
        logger.warning("%s gives no reviewed measurement: %s", label, exc)
        return [Review(**common, action=ReviewAction.IGNORED, structure="", detail=str(exc))]
    unmatched = [f"segment {m.number} {m.label!r}" for m in measures if m.number not in matched]
    reviews = []
    for m in measures:
        if m.number not in matched:
            continue
        structure, how = matched[m.number]
        result = results.get(structure)
        volume = round(m.volume_ml(step), 3)
        detail = (f"segment {m.number} {m.label!r} matched by {how}; {m.voxels} voxels on "
                  f"{m.planes} planes, step {step:.3f} mm")
        if unmatched:
            detail += f"; not used: {', '.join(unmatched)}"
        reviews.append(Review(**common, action=ReviewAction.CORRECTED, structure=structure,
                              volume_ml=volume,
                              result_pk=None if result is None else result.id, detail=detail))
        logger.info("%s: %s corrected by %r (%s) to %.1f ml (automatic %s)", label, structure,
                    common["reviewer"], common["device"], volume,
                    "none" if result is None else f"{result.volume_ml:.1f} ml")
    return reviews


def _who(ds: Dataset) -> str:
    for keyword in ("ContentCreatorName", "OperatorsName"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value[:255]
    return ""


def _device(ds: Dataset) -> str:
    """Manufacturer, model and software; when those are placeholders (dcmjs, OHIF's
    writer, puts "Unspecified" and "0"), the segments' algorithm names ("OHIF Brush")."""
    software = ds.get("SoftwareVersions", "")
    if not isinstance(software, str):
        software = " ".join(str(v) for v in software)
    parts = [str(p or "").strip() for p in (ds.get("Manufacturer", ""),
                                             ds.get("ManufacturerModelName", ""), software)]
    known = [p for p in parts if p.lower() not in _PLACEHOLDERS]
    if not known:
        known = sorted({str(item.get("SegmentAlgorithmName", "") or "").strip()
                        for item in ds.get("SegmentSequence", [])})
    return " ".join(p for p in known if p)[:255]


def _content_time(ds: Dataset) -> dt.datetime | None:
    """Content Date and Time (local time of the creator, taken as UTC: DICOM gives no zone
    unless Timezone Offset From UTC is present)."""
    date, time = str(ds.get("ContentDate", "") or ""), str(ds.get("ContentTime", "") or "")
    try:
        day = dt.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    digits = time.split(".")[0].ljust(6, "0")[:6]
    try:
        clock = dt.datetime.strptime(digits, "%H%M%S").time()
    except ValueError:
        clock = dt.time()
    return dt.datetime.combine(day.date(), clock, tzinfo=dt.UTC)


def _is_own(ds: Dataset, results: Iterable[Result]) -> bool:
    """A copy of the node's own SEG: its UIDs (a PACS sending it back) or, under new UIDs,
    the node's manufacturer with every segment still AUTOMATIC (a reader's edit is not)."""
    uids = {str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))}
    for result in results:
        if uids & {result.seg_sop_instance_uid, result.seg_series_instance_uid}:
            return True
    algorithms = {str(item.get("SegmentAlgorithmType", ""))
                  for item in ds.get("SegmentSequence", [])}
    return str(ds.get("Manufacturer", "")) == MANUFACTURER and algorithms == {"AUTOMATIC"}


def _slice_step(session: Session, root: Path, ds: Dataset) -> float:
    """The step between planes of the series the SEG was drawn on (the archive's copy of
    it), else the SEG's own Spacing Between Slices or Slice Thickness."""
    series = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
              if "SeriesInstanceUID" in item]
    if not series:
        sources = {str(ref.ReferencedSOPInstanceUID)
                   for group in ds.get("PerFrameFunctionalGroupsSequence", [])
                   for derivation in group.get("DerivationImageSequence", [])
                   for ref in derivation.get("SourceImageSequence", [])}
        series = list(session.scalars(
            select(Series.series_instance_uid).join(Instance, Instance.series_pk == Series.id)
            .where(Instance.sop_instance_uid.in_(sources)).distinct())) if sources else []
    paths = session.scalars(
        select(Instance.path).join(Series, Series.id == Instance.series_pk)
        .where(Series.series_instance_uid.in_(series))).all() if series else []
    if len(paths) >= 2:
        return slice_step_mm(dcmread(root / p, stop_before_pixels=True) for p in paths)
    shared = ds.get("SharedFunctionalGroupsSequence")
    measures = shared[0].get("PixelMeasuresSequence") if shared else None
    if measures:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = measures[0].get(keyword)
            if value:
                return float(value)
    raise ForeignSegError("neither its source series nor its own attributes give the "
                          "slice spacing")
