"""The MRI paper's method (``../shared/seeds/000_…``) as the ``mri-graft`` pipelines.

The image maths is :func:`models.graft.segment_graft`; this module picks the inputs from
the study's series, applies the device profile, logs progress and wraps the result:

* ``mri-graft``: 3D network, DCE + T2 (early fusion); without a T2 series in the study it
  runs the DCE-only variant and flags the result ``dce-only``;
* ``mri-graft-dce``: 3D network, DCE only, even when a T2 series is there;
* ``mri-graft-2d`` and ``mri-graft-2d-dce``: the slice-wise variants of Table 1 (the 2D
  method of [12]: one network fitted per slice, the kidney chosen on every slice).

Device profiles: on CUDA the clustering runs on the ROI at native resolution with the
paper's stopping rule; on the CPU the ROI is resampled to at most
``GraftSettings.cpu_working_voxels`` voxels and the iteration guard is
``GraftSettings.cpu_max_iterations`` (see :mod:`models.graft`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.dce import DceVolume, combine_phases, network_inputs
from models.graft import GraftConfig, segment_graft
from service.config import GraftSettings
from service.domain import SeriesRole
from service.errors import PipelineError
from service.pipeline.base import PipelineOutput, StudyInput
from service.pipeline.graft_output import graft_output

__all__ = ["GRAFT_PIPELINES", "GraftPipeline", "device_profile"]

logger = logging.getLogger(__name__)



def device_profile(settings: GraftSettings, *, cpu: bool, spatial_dims: int = 3) -> GraftConfig:
    """The method's settings: the paper's, with the CPU profile's grid cap and guard."""
    base = GraftConfig()
    clustering = replace(
        base.clustering, spatial_dims=spatial_dims,
        max_iter=settings.cpu_max_iterations if cpu else settings.max_iterations)
    return replace(base, clustering=clustering,
                   working_voxels=settings.cpu_working_voxels if cpu else None)


@dataclass(frozen=True)
class GraftPipeline:
    """Unsupervised kidney-graft segmentation from DCE (+ T2) MRI."""

    name: str = "mri-graft"
    version: str = "0.2.0"
    family: Code = codes.cid7162.ArtificialIntelligence
    use_t2: bool = True
    spatial_dims: int = 3
    settings: GraftSettings = field(default_factory=GraftSettings)

    def configured(self, settings: GraftSettings) -> GraftPipeline:
        """This pipeline with the node's settings."""
        return replace(self, settings=settings)

    def method_config(self, device: str) -> GraftConfig:
        """The method's settings for ``device`` (the CPU profile on ``"cpu"``)."""
        return device_profile(self.settings, cpu=device == "cpu", spatial_dims=self.spatial_dims)

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        uid = study.study_instance_uid
        phases = study.dce_phases()
        reference = phases[-1]
        arrays = [sitk.GetArrayViewFromImage(p.image) for p in phases]
        how = DceVolume(self.settings.dce_volume)
        dce = sitk.GetImageFromArray(combine_phases(arrays, how=how))
        dce.CopyInformation(reference.image)
        extra = [phases[i].image for i in network_inputs(len(phases), how=how)]
        t2 = self._t2(study) if self.use_t2 else None
        if self.use_t2 and t2 is None:
            logger.info("study %s: no T2 series: DCE-only variant", uid)
        config = self.method_config(device)

        def progress(iteration: int, loss: float, n_labels: int) -> None:
            logger.info("study %s: %s iteration %d, loss %.4f, %d labels", uid, self.name,
                        iteration, loss, n_labels)

        try:
            result = segment_graft(dce, t2, extra_phases=extra, config=config, device=device,
                                   progress=progress)
        except ValueError as exc:
            raise PipelineError(f"study {uid}: {self.name}: {exc}") from exc
        c = result.clustering
        logger.info(
            "study %s: %s ROI %s voxels, clustered on %s at %.2f mm, stopped by %s after %d "
            "iterations with %d labels; %s", uid, self.name, "x".join(map(str, result.roi.shape)),
            "x".join(map(str, result.working_shape)), max(result.working_spacing_zyx),
            c.stopped_by, c.iterations, c.n_labels,
            ", ".join(f"{k} {v:.1f} s" for k, v in result.timings_s.items()))
        flags = tuple(f for f, on in (("roi-touches-edge", result.roi.touches_edge),
                                      ("dce-only", t2 is None),
                                      ("not-converged", c.stopped_by == "max_iter")) if on)
        return graft_output(reference, result.mask, flags=flags)

    @staticmethod
    def _t2(study: StudyInput) -> sitk.Image | None:
        """The T2 volume with the most slices, or None."""
        volumes = [s.volumes[0] for s in study.series.get(SeriesRole.T2, ())]
        if not volumes:
            return None
        return max(volumes, key=lambda v: len(v.datasets)).image


GRAFT_PIPELINES: tuple[GraftPipeline, ...] = (
    GraftPipeline(),
    GraftPipeline(name="mri-graft-dce", use_t2=False),
    GraftPipeline(name="mri-graft-2d", spatial_dims=2),
    GraftPipeline(name="mri-graft-2d-dce", use_t2=False, spatial_dims=2),
)

