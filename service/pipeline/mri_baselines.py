"""The two classical baselines of the MRI paper's Table 1, as selectable pipelines.

Both work on one DCE phase: the region of interest of §2.1 (high-intensity threshold,
closing r=5, opening r=4, largest component, bounding box), then Otsu thresholding or a
3D marker-controlled watershed inside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models import detect_roi, segment_otsu, segment_watershed
from models.volume import image_spacing_zyx
from service.errors import PipelineError
from service.imaging.series import LoadedVolume
from service.pipeline.base import PipelineOutput, StudyInput
from service.pipeline.graft_output import graft_output

__all__ = ["OtsuPipeline", "WatershedPipeline", "choose_dce_phase"]

logger = logging.getLogger(__name__)


def choose_dce_phase(phases: tuple[LoadedVolume, ...]) -> LoadedVolume:
    """The last phase: the late (nephrographic) phase, where the parenchyma is enhanced
    throughout and the hilar vessels no longer outshine it as in the arterial phase."""
    return phases[-1]



@dataclass(frozen=True)
class _RoiBaseline:
    name: str
    version: str
    family: Code

    def _segment(self, volume: np.ndarray, roi, spacing_zyx) -> np.ndarray:  # noqa: ANN001
        raise NotImplementedError

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        phase = choose_dce_phase(study.dce_phases())
        volume = sitk.GetArrayFromImage(phase.image).astype(np.float32)
        spacing = image_spacing_zyx(phase.image)
        try:
            roi = detect_roi(volume, spacing_zyx=spacing)
        except ValueError as exc:
            raise PipelineError(f"study {study.study_instance_uid}: no region of interest: "
                                f"{exc}") from exc
        mask = self._segment(volume, roi, spacing)
        if not mask.any():
            raise PipelineError(f"study {study.study_instance_uid}: {self.name} found no kidney")
        flags = ("roi-touches-edge",) if roi.touches_edge else ()
        logger.info("study %s: %s ROI %s voxels, mask %d voxels", study.study_instance_uid,
                    self.name, roi.shape, int(mask.sum()))
        return graft_output(phase, mask, flags=flags)


class OtsuPipeline(_RoiBaseline):
    def __init__(self) -> None:
        super().__init__(name="mri-otsu", version="1.0.0", family=codes.cid7162.HistogramAnalysis)

    def _segment(self, volume, roi, spacing_zyx):  # noqa: ANN001
        return segment_otsu(volume, roi)


class WatershedPipeline(_RoiBaseline):
    def __init__(self) -> None:
        super().__init__(name="mri-watershed", version="1.0.0",
                         family=codes.cid7162.MorphologicalOperations)

    def _segment(self, volume, roi, spacing_zyx):  # noqa: ANN001
        return segment_watershed(volume, roi, spacing_zyx=spacing_zyx)
