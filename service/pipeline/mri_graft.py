"""The MRI paper's method (``../shared/seeds/000_…``) as the ``mri-graft`` pipelines.

N4 bias correction of each sequence (§3), T2 registered onto the DCE grid (T2 moves, DCE
is fixed), region of interest on the DCE volume (§2.1), per-volume training of a 3D CNN
by differentiable feature clustering on the stacked ROI (§2.2, early fusion), the kidney
chosen among the clusters (:mod:`models.kidney_cluster`), largest component, holes
filled, mask put back on the full DCE grid. ``mri-graft-dce`` is the DCE-only variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models import detect_roi, mask_volume_ml
from models.feature_clustering import ClusteringConfig, cluster_volume
from models.kidney_cluster import select_kidney
from models.preprocess import n4_correct, register_t2_to_dce
from service.db.tables import SeriesRole
from service.errors import PipelineError
from service.imaging.series import LoadedVolume
from service.pipeline.base import KIDNEY, PipelineOutput, StudyInput
from service.pipeline.mri_baselines import choose_dce_phase

__all__ = ["GraftPipeline"]

logger = logging.getLogger(__name__)


def _spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    sx, sy, sz = image.GetSpacing()
    return (sz, sy, sx)


def _zscore(values: np.ndarray) -> np.ndarray:
    std = float(values.std())
    return (values - float(values.mean())) / (std if std > 0 else 1.0)


@dataclass(frozen=True)
class GraftPipeline:
    """Unsupervised 3D kidney-graft segmentation from DCE (+ T2) MRI."""

    name: str = "mri-graft"
    version: str = "0.1.0"
    family: Code = codes.cid7162.ArtificialIntelligence
    use_t2: bool = True
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    #: Coarser clustering grid on the CPU (z, y, x factors); the mask comes back at full size.
    cpu_downsample: tuple[int, int, int] = (1, 2, 2)

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        uid = study.study_instance_uid
        phase = choose_dce_phase(study.dce_phases())
        dce = n4_correct(sitk.Cast(phase.image, sitk.sitkFloat32))
        dce_arr = sitk.GetArrayFromImage(dce)
        spacing = _spacing_zyx(dce)
        try:
            roi = detect_roi(dce_arr, spacing_zyx=spacing)
        except ValueError as exc:
            raise PipelineError(f"study {uid}: no region of interest: {exc}") from exc
        channels = [_zscore(roi.crop(dce_arr))]
        t2 = self._t2_on_dce(study, dce, roi) if self.use_t2 else None
        if t2 is not None:
            channels.append(_zscore(roi.crop(sitk.GetArrayFromImage(t2))))
        config = self.clustering
        if device == "cpu" and config.downsample == (1, 1, 1):
            config = ClusteringConfig(**{**config.__dict__, "downsample": self.cpu_downsample})

        def progress(iteration: int, loss: float, n_labels: int) -> None:
            logger.info("study %s: %s iteration %d, loss %.4f, %d labels", uid, self.name,
                        iteration, loss, n_labels)

        result = cluster_volume(np.stack(channels).astype(np.float32), config=config,
                                device=device, progress=progress)
        logger.info("study %s: clustering stopped by %s after %d iterations, %d labels", uid,
                    result.stopped_by, result.iterations, result.n_labels)
        try:
            kidney = select_kidney(result.labels, dce=roi.crop(dce_arr), spacing_zyx=spacing)
        except ValueError as exc:
            raise PipelineError(f"study {uid}: no kidney among the clusters: {exc}") from exc
        mask = roi.embed(kidney, shape=dce_arr.shape)
        flags = tuple(f for f, on in (("roi-touches-edge", roi.touches_edge),
                                      ("dce-only", t2 is None)) if on)
        return PipelineOutput(
            reference=phase, labels=mask.astype(np.uint8) * KIDNEY.label, segments=(KIDNEY,),
            volumes_ml={KIDNEY.structure: mask_volume_ml(mask, spacing)}, flags=flags)

    def _t2_on_dce(self, study: StudyInput, dce: sitk.Image, roi) -> sitk.Image | None:  # noqa: ANN001
        """The first loadable T2 volume, N4-corrected and registered onto the DCE grid."""
        series = study.series.get(SeriesRole.T2, ())
        if not series:
            logger.info("study %s: no T2 series: DCE-only variant", study.study_instance_uid)
            return None
        volume: LoadedVolume = series[0].volumes[0]
        t2 = n4_correct(sitk.Cast(volume.image, sitk.sitkFloat32))
        reg = register_t2_to_dce(dce, t2, roi=roi)
        logger.info("study %s: T2 registered in %.1f s (MI %.3f -> %.3f)",
                    study.study_instance_uid, reg.seconds, reg.metric_before, reg.metric_after)
        return reg.t2_on_dce
