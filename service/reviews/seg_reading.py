"""What a SEG made elsewhere (a reader's correction in OHIF or 3D Slicer) measures.

Any of the three Segmentation Types is read (PS3.3 C.8.20.2): BINARY (one bit per pixel,
frames packed back to back, also when they do not start on byte boundaries), FRACTIONAL
(a pixel is in the segment when its value is at least half the Maximum Fractional Value)
and LABELMAP (the pixel value is the segment number). Frames of one segment on the same
plane (the same Image Position along the normal) are merged, so a SEG that repeats a plane,
or one on a DCE whose phases share their planes, counts each voxel once.

Each segment is mapped to the structure the node tracks by its coded property type (and
laterality modifier), else by its label (a viewer may write generic codes and keep the
label), else, when the SEG holds one segment only and the study one structure, to that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from service.errors import KidneyNodeError
from service.pipeline.base import (
    CORTEX_LEFT,
    CORTEX_RIGHT,
    GRAFT_LEFT,
    GRAFT_RIGHT,
    KIDNEY,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    SegmentSpec,
)

__all__ = ["ForeignSegError", "SegmentMeasure", "match_structures", "measure_segments",
           "slice_step_mm"]

#: SNOMED CT laterality codes (the property type's modifier).
_SIDES = {"24028007": "right", "7771000": "left"}
_SPECS: tuple[SegmentSpec, ...] = (KIDNEY, KIDNEY_RIGHT, KIDNEY_LEFT, CORTEX_RIGHT, CORTEX_LEFT,
                                   GRAFT_RIGHT, GRAFT_LEFT)
#: Position along the plane normal is rounded to this (mm) to find frames on one plane.
_PLANE_TOLERANCE_MM = 0.01


class ForeignSegError(KidneyNodeError):
    """A SEG the node cannot measure (its reason is the message)."""


@dataclass(frozen=True)
class SegmentMeasure:
    """One segment of a SEG: how it is described and how many voxels it holds."""

    number: int
    label: str
    #: (code value, coding scheme designator) of its Segmented Property Type.
    property_type: tuple[str, str] | None
    #: "right", "left" or None (the property type's laterality modifier).
    side: str | None
    algorithm_type: str
    voxels: int
    #: Pixel area (mm^2) of its frames and the number of planes it has pixels on.
    pixel_area_mm2: float
    planes: int

    def volume_ml(self, slice_step_mm: float) -> float:
        return self.voxels * self.pixel_area_mm2 * slice_step_mm / 1000.0


def _code(item: Dataset, keyword: str) -> Dataset | None:
    sequence = item.get(keyword)
    return sequence[0] if sequence else None


def _segment_facts(item: Dataset) -> tuple[tuple[str, str] | None, str | None]:
    prop = _code(item, "SegmentedPropertyTypeCodeSequence")
    if prop is None:
        return None, None
    side = None
    modifier = _code(prop, "SegmentedPropertyTypeModifierCodeSequence")
    if modifier is not None:
        side = _SIDES.get(str(modifier.get("CodeValue", "")))
    if side is None:
        region = _code(item, "AnatomicRegionSequence")
        region_modifier = _code(region, "AnatomicRegionModifierSequence") if region else None
        if region_modifier is not None:
            side = _SIDES.get(str(region_modifier.get("CodeValue", "")))
    return (str(prop.get("CodeValue", "")), str(prop.get("CodingSchemeDesignator", ""))), side


def _functional(ds: Dataset, frame: Dataset | None, keyword: str) -> Dataset | None:
    """A functional group macro's item, per frame or else shared."""
    for holder in (frame, _code(ds, "SharedFunctionalGroupsSequence")):
        if holder is not None and holder.get(keyword):
            return holder.get(keyword)[0]
    return None


def _frames(ds: Dataset) -> np.ndarray:
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad pixel data
        raise ForeignSegError(f"its pixel data cannot be decoded: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return pixels.reshape(frames, int(ds.Rows), int(ds.Columns))


def _in_segment(frames: np.ndarray, ds: Dataset) -> np.ndarray | None:
    kind = str(ds.get("SegmentationType", "")).upper()
    if kind == "BINARY":
        return frames > 0
    if kind == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue", 255) or 255)
        return frames >= top / 2.0
    if kind == "LABELMAP":
        return None  # the value is the segment number: per segment below
    raise ForeignSegError(f"Segmentation Type {kind or '(none)'} is not one the node reads")


def measure_segments(ds: Dataset) -> list[SegmentMeasure]:
    """Every segment of the SEG ``ds`` with its voxel count on distinct planes.

    Raises
    ------
    ForeignSegError
        Its pixels, geometry or segment references cannot be read.
    """
    segments = {int(item.SegmentNumber): item for item in ds.get("SegmentSequence", [])}
    if not segments:
        raise ForeignSegError("it has no Segment Sequence")
    frames = _frames(ds)
    binary = _in_segment(frames, ds)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) != len(frames):
        raise ForeignSegError(f"{len(frames)} frames but {len(per_frame)} per-frame "
                              f"functional group items")
    orientation = _functional(ds, None, "PlaneOrientationSequence")
    if orientation is None:
        orientation = _functional(ds, per_frame[0], "PlaneOrientationSequence")
    measures = _functional(ds, per_frame[0], "PixelMeasuresSequence")
    if orientation is None or measures is None or "PixelSpacing" not in measures:
        raise ForeignSegError("it has no plane orientation or pixel spacing")
    iop = np.asarray(orientation.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    area = float(np.prod([float(v) for v in measures.PixelSpacing]))
    planes: dict[int, dict[float, np.ndarray]] = {n: {} for n in segments}
    for index, group in enumerate(per_frame):
        position = _functional(ds, group, "PlanePositionSequence")
        if position is None:
            raise ForeignSegError(f"frame {index + 1} has no plane position")
        along = round(float(np.dot(np.asarray(position.ImagePositionPatient, float), normal))
                      / _PLANE_TOLERANCE_MM)
        if binary is None:
            masks = {n: frames[index] == n for n in segments}
        else:
            # With one segment a writer may put it in the shared groups (highdicom does).
            ident = _functional(ds, group, "SegmentIdentificationSequence")
            number = int(ident.ReferencedSegmentNumber) if ident is not None else None
            if number not in segments:
                raise ForeignSegError(f"frame {index + 1} names no segment of the SEG")
            masks = {number: binary[index]}
        for number, mask in masks.items():
            held = planes[number].get(along)
            planes[number][along] = mask if held is None else held | mask
    found = []
    for number, item in sorted(segments.items()):
        prop, side = _segment_facts(item)
        voxels = sum(int(m.sum()) for m in planes[number].values())
        found.append(SegmentMeasure(
            number, str(item.get("SegmentLabel", "")), prop, side,
            str(item.get("SegmentAlgorithmType", "")), voxels, area,
            sum(1 for m in planes[number].values() if m.any())))
    return found


def slice_step_mm(headers: Iterable[Dataset]) -> float:
    """The step between the distinct planes of a series' images (median, mm).

    Raises
    ------
    ForeignSegError
        Fewer than two distinct planes, or no position and orientation.
    """
    along = []
    for ds in headers:
        try:
            iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
            along.append(float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float),
                                      np.cross(iop[:3], iop[3:]))))
        except (AttributeError, ValueError, TypeError) as exc:
            raise ForeignSegError(f"a source image has no usable position: {exc}") from exc
    distinct = np.unique(np.round(np.asarray(along) / _PLANE_TOLERANCE_MM))
    if distinct.size < 2:
        raise ForeignSegError("its source series has fewer than two planes")
    return float(np.median(np.diff(distinct)) * _PLANE_TOLERANCE_MM)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z]+", " ", text.lower()).strip()


def _structure_by_code(measure: SegmentMeasure) -> str | None:
    if measure.property_type is None:
        return None
    code = measure.property_type[0]
    for spec in _SPECS:
        side = None if spec.laterality is None else _SIDES.get(spec.laterality.value)
        if spec.property_type.value == code and (side == measure.side or spec.structure
                                                 == "graft"):
            return spec.structure
    return None


def _structure_by_label(measure: SegmentMeasure) -> str | None:
    label = _norm(measure.label)
    for spec in _SPECS:
        if label and label in (_norm(spec.text), _norm(spec.structure)):
            return spec.structure
    return None


def match_structures(measures: Iterable[SegmentMeasure], study_structures: Iterable[str]
                     ) -> Mapping[int, tuple[str, str]]:
    """Segment number -> (structure, how it was matched: "code", "label" or "only
    segment") for the segments that name a structure the node tracks; a structure named
    by two segments goes to neither (the SEG is ambiguous about it)."""
    measures = list(measures)
    found: dict[int, tuple[str, str]] = {}
    for m in measures:
        by_code = _structure_by_code(m)
        if by_code is not None:
            found[m.number] = (by_code, "code")
            continue
        by_label = _structure_by_label(m)
        if by_label is not None:
            found[m.number] = (by_label, "label")
    known = sorted(set(study_structures))
    if not found and len(measures) == 1 and len(known) == 1:
        found[measures[0].number] = (known[0], "only segment")
    counts: dict[str, int] = {}
    for structure, _how in found.values():
        counts[structure] = counts.get(structure, 0) + 1
    return {n: v for n, v in found.items() if counts[v[0]] == 1}
