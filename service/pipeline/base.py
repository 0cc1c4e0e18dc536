"""The pipeline interface: classified series in, a label mask on one source series out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from service.db.tables import SeriesRole
from service.errors import PipelineError
from service.imaging.series import LoadedSeries, LoadedVolume, tm_seconds

__all__ = [
    "KIDNEY",
    "KIDNEY_LEFT",
    "KIDNEY_RIGHT",
    "Pipeline",
    "PipelineOutput",
    "SegmentSpec",
    "StudyInput",
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


#: The whole kidney (graft): SCT 64033007, category Anatomical Structure (SCT 91723000).
KIDNEY = SegmentSpec(label=1, structure="kidney", text="Kidney",
                     category=codes.SCT.AnatomicalStructure, property_type=codes.SCT.Kidney)
#: Native kidneys, by the patient's side (not the image's).
KIDNEY_RIGHT = SegmentSpec(label=1, structure="kidney_right", text="Right kidney",
                           category=codes.SCT.AnatomicalStructure,
                           property_type=codes.SCT.Kidney, laterality=codes.SCT.Right)
KIDNEY_LEFT = SegmentSpec(label=2, structure="kidney_left", text="Left kidney",
                          category=codes.SCT.AnatomicalStructure,
                          property_type=codes.SCT.Kidney, laterality=codes.SCT.Left)


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


@dataclass(frozen=True)
class PipelineOutput:
    """A label mask (z, y, x) on ``reference``'s grid: z index i is ``reference.datasets[i]``."""

    reference: LoadedVolume
    labels: np.ndarray
    segments: tuple[SegmentSpec, ...]
    volumes_ml: Mapping[str, float]
    flags: tuple[str, ...] = field(default=())


class Pipeline(Protocol):
    """A segmentation method the node can run on a study."""

    name: str
    version: str
    #: Algorithm family for the SEG's Algorithm Identification (CID 7162).
    family: Code

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        """Segment ``study`` on ``device`` ("cpu", "cuda", ...)."""
        ...
