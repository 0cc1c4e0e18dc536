"""The pipeline interface: classified series in, segment masks on one source series out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from service.domain import SeriesRole
from service.errors import PipelineError
from service.imaging.series import LoadedSeries, LoadedVolume, tm_seconds

__all__ = [
    "CORTEX_LEFT",
    "CORTEX_RIGHT",
    "GRAFT_LEFT",
    "GRAFT_RIGHT",
    "KIDNEY",
    "KIDNEY_LEFT",
    "KIDNEY_RIGHT",
    "RENAL_CORTEX",
    "AlgorithmSpec",
    "Pipeline",
    "PipelineOutput",
    "SegmentSpec",
    "StudyInput",
    "TRANSPLANTED_KIDNEY",
    "graft_segment",
]


@dataclass(frozen=True)
class SegmentSpec:
    """One structure a pipeline segments; its codes go into the SEG (PS3.3 C.8.20.2)."""

    label: int
    structure: str  # the key volumes are stored under, e.g. "kidney"
    text: str  # Segment Label shown by viewers
    category: Code
    property_type: Code
    #: SCT 24028007 Right or 7771000 Left, for paired organs; the SEG carries it as the
    #: property type's modifier, the SR as the finding site's laterality.
    laterality: Code | None = None
    #: sRGB colour viewers are asked to show it in (the SEG's Recommended Display CIELab
    #: Value): one per structure, distinct among those that appear together.
    rgb: tuple[int, int, int] = (185, 102, 83)


#: The whole kidney (graft): SCT 64033007, category Anatomical Structure (SCT 91723000).
KIDNEY = SegmentSpec(label=1, structure="kidney", text="Kidney",
                     category=codes.SCT.AnatomicalStructure, property_type=codes.SCT.Kidney)
#: Native kidneys, by the patient's side (not the image's).
KIDNEY_RIGHT = SegmentSpec(label=1, structure="kidney_right", text="Right kidney",
                           category=codes.SCT.AnatomicalStructure,
                           property_type=codes.SCT.Kidney, laterality=codes.SCT.Right)
KIDNEY_LEFT = SegmentSpec(label=2, structure="kidney_left", text="Left kidney",
                          category=codes.SCT.AnatomicalStructure,
                          property_type=codes.SCT.Kidney, laterality=codes.SCT.Left,
                          rgb=(204, 142, 62))
#: SCT 50403003 "Structure of cortex of kidney (body structure)": the code HL7 FHIR mCODE
#: IG's TG263 -> SNOMED CT concept map gives TG263 "Kidney_Cortex". Cortex lies inside its
#: kidney, so these segments overlap the kidney segments (masks, not a label map).
RENAL_CORTEX = Code("50403003", "SCT", "Structure of cortex of kidney")
CORTEX_RIGHT = SegmentSpec(label=3, structure="cortex_right", text="Right renal cortex",
                           category=codes.SCT.AnatomicalStructure,
                           property_type=RENAL_CORTEX, laterality=codes.SCT.Right,
                           rgb=(241, 214, 145))
CORTEX_LEFT = SegmentSpec(label=4, structure="cortex_left", text="Left renal cortex",
                          category=codes.SCT.AnatomicalStructure,
                          property_type=RENAL_CORTEX, laterality=codes.SCT.Left,
                          rgb=(245, 180, 200))

#: SCT 70948008 "Structure of transplanted kidney" (body structure, under 24486003
#: "Structure of transplant"): the EU eHDSI Body Site value set (hl7-eu
#: EHDSI-Terminology-package, eHDSIBodySite 8.1.0) lists it; not in pydicom's bundled
#: DICOM code lists, so written out here. CID 7151 is extensible (PS3.3 C.8.20.2).
#: Not 737295003 "Transplanted kidney present", a finding.
TRANSPLANTED_KIDNEY = Code("70948008", "SCT", "Structure of transplanted kidney")
#: A kidney graft in the patient's right or left iliac fossa (or pelvis), by the side of the
#: patient it lies on. Its volume is the one tracked over time ("graft").
GRAFT_RIGHT = SegmentSpec(label=5, structure="graft", text="Transplanted kidney (right)",
                          category=codes.SCT.AnatomicalStructure,
                          property_type=TRANSPLANTED_KIDNEY, laterality=codes.SCT.Right,
                          rgb=(91, 170, 215))
GRAFT_LEFT = SegmentSpec(label=5, structure="graft", text="Transplanted kidney (left)",
                         category=codes.SCT.AnatomicalStructure,
                         property_type=TRANSPLANTED_KIDNEY, laterality=codes.SCT.Left,
                         rgb=(91, 170, 215))


def graft_segment(side: str) -> SegmentSpec:
    """The graft's segment on ``side`` ("right" or "left", the patient's)."""
    try:
        return {"right": GRAFT_RIGHT, "left": GRAFT_LEFT}[side]
    except KeyError:
        raise ValueError(f"graft side must be 'right' or 'left', got {side!r}") from None


@dataclass(frozen=True)
class AlgorithmSpec:
    """The algorithm of some segments when it is not the pipeline's own (e.g. a network);
    it goes into the SEG's Segmentation Algorithm Identification and the SR's groups."""

    name: str
    version: str
    #: Algorithm family (CID 7162).
    family: Code


@dataclass(frozen=True)
class StudyInput:
    """A study's series, loaded, by role (several series may share a role)."""

    study_instance_uid: str
    series: Mapping[SeriesRole, tuple[LoadedSeries, ...]]

    def dce_phases(self) -> tuple[LoadedVolume, ...]:
        """DCE phases in time order, from one multi-phase series or one series per phase.

        Raises
        ------
        PipelineError
            No DCE series, or phases on different grids.
        """
        dce = self.series.get(SeriesRole.DCE, ())
        if not dce:
            raise PipelineError(f"study {self.study_instance_uid}: no DCE series")
        multi = [s for s in dce if len(s.volumes) > 1]
        if multi:
            phases = max(multi, key=lambda s: len(s.volumes)).volumes
        else:
            phases = tuple(sorted((s.volumes[0] for s in dce), key=_phase_order))
        first = phases[0].image
        for vol in phases[1:]:
            if vol.image.GetSize() != first.GetSize() or not np.allclose(
                    vol.image.GetOrigin(), first.GetOrigin(), atol=1e-3):
                raise PipelineError(
                    f"study {self.study_instance_uid}: DCE phases are on different grids "
                    f"({first.GetSize()} vs {vol.image.GetSize()})")
        return phases


def _phase_order(volume: LoadedVolume) -> tuple[float, int]:
    ds = volume.datasets[0]
    series_number = int(ds.get("SeriesNumber", 0) or 0)
    for keyword in ("AcquisitionTime", "SeriesTime", "ContentTime"):
        seconds = tm_seconds(ds.get(keyword))
        if seconds is not None:
            return (seconds, series_number)
    return (0.0, series_number)


@dataclass(frozen=True, kw_only=True)
class PipelineOutput:
    """Segments on ``reference``'s grid (z index i is ``reference.datasets[i]``), or a finding.

    The segments come either as a label map ``labels`` (z, y, x) holding each segment's
    :attr:`SegmentSpec.label` (segments cannot overlap), or as ``masks``: one boolean
    (z, y, x) array per segment, in ``segments`` order, which may overlap (cortex inside
    kidney). With no segment at all, ``finding`` says what was found instead (e.g. "no
    kidney in field of view"): the job succeeds with that outcome and writes nothing.
    In the SEG, segment numbers are positions in ``segments``, from 1.
    """

    reference: LoadedVolume
    segments: tuple[SegmentSpec, ...] = ()
    labels: np.ndarray | None = None
    masks: tuple[np.ndarray, ...] | None = None
    volumes_ml: Mapping[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    finding: str | None = None
    #: Algorithms of the segments not made by the pipeline's own method, by structure.
    algorithms: Mapping[str, AlgorithmSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.segments:
            if self.finding is None:
                raise ValueError("a pipeline output needs segments or a finding")
            return
        if (self.labels is None) == (self.masks is None):
            raise ValueError("give the segments as labels or as masks, not both or neither")
        if self.masks is not None and len(self.masks) != len(self.segments):
            raise ValueError(f"{len(self.masks)} masks for {len(self.segments)} segments")

    def segment_number(self, spec: SegmentSpec) -> int:
        """The SEG's Segment Number of ``spec`` (its position in ``segments``, from 1)."""
        return self.segments.index(spec) + 1

    def segment_stack(self) -> np.ndarray:
        """Boolean (z, y, x, segments) array, one channel per segment in ``segments`` order."""
        if self.masks is not None:
            return np.stack([np.asarray(m, dtype=bool) for m in self.masks], axis=-1)
        if self.labels is None:
            raise ValueError(f"no segments: {self.finding}")
        labels = np.asarray(self.labels)
        return np.stack([labels == spec.label for spec in self.segments], axis=-1)


class Pipeline(Protocol):
    """A segmentation method the node can run on a study."""

    name: str
    version: str
    #: Algorithm family for the SEG's Algorithm Identification (CID 7162).
    family: Code

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        """Segment ``study`` on ``device`` ("cpu", "cuda", ...)."""
        ...
