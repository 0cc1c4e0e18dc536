"""The graft method without contrast (issue 16) as the ``mri-graft-nc`` pipeline.

Gadolinium is often withheld from transplant patients with poor graft function. The
image maths is :func:`models.graft_nocontrast.segment_graft_nocontrast`; this module picks
the inputs from the study's series, applies the device profile and wraps the result:

* the reference sequence, whose grid the SEG is on: the T2 series with the most slices;
  without T2, the T1 series of the "in-phase"-like image (by name), else the T1 series
  with the most slices;
* with ``GraftSettings.nocontrast_t1`` the T1 (Dixon) series are further input channels
  (early fusion), registered to the reference as one acquisition when they share a grid
  (a Dixon set), otherwise each on its own;
* the segment is the graft on the patient's side it lies on, as every MRI pipeline gives
  it (:func:`service.pipeline.graft_output.graft_output`);
* flags: ``no-contrast`` always, ``t1-only`` without T2, ``multi-contrast`` with T1
  channels, ``localisation-grown`` when no cluster held the localised kidney,
  ``roi-touches-edge``, ``not-converged``, ``not-kidney-shaped`` (T2 alone: the grown
  region looks less like a whole kidney than ``models.graft_nocontrast.KIDNEY_SHAPED``;
  quality control sends it to review).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.graft import GraftConfig
from models.graft_nocontrast import segment_graft_nocontrast
from service.config import GraftSettings
from service.domain import SeriesRole
from service.errors import PipelineError
from service.imaging.series import LoadedSeries, LoadedVolume
from service.pipeline.base import PipelineOutput, StudyInput
from service.pipeline.graft_output import graft_output
from service.pipeline.mri_graft import device_profile

__all__ = ["NoContrastGraftPipeline", "nocontrast_inputs"]

logger = logging.getLogger(__name__)

_IN_PHASE = re.compile(r"\bin\b|in[-_ ]?phase|\bip\b|_in$", re.IGNORECASE)


def _description(series: LoadedSeries) -> str:
    ds = series.volumes[0].datasets[0]
    return " ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName"))


def _slices(series: LoadedSeries) -> int:
    return len(series.volumes[0].datasets)


def nocontrast_inputs(study: StudyInput, *, with_t1: bool
                      ) -> tuple[LoadedVolume, list[list[sitk.Image]], bool]:
    """The reference volume, the groups of further channels, and whether a T2 is used.

    The reference is the T2 series with the most slices; without T2, the T1 series of the
    "in-phase"-like image (by name), else the T1 series with the most slices. The other
    T1 series are further channels, grouped by grid (a Dixon set): with a T2 only when
    ``with_t1``, without T2 always.

    Raises
    ------
    PipelineError
        Neither a T2 nor a T1 series.
    """
    t2 = list(study.series.get(SeriesRole.T2, ()))
    t1 = list(study.series.get(SeriesRole.T1, ()))
    if not t2 and not t1:
        raise PipelineError(f"study {study.study_instance_uid}: no T2 or T1 series")
    if t2:
        reference = max(t2, key=_slices)
        others = t1 if with_t1 else []
    else:
        in_phase = [s for s in t1 if _IN_PHASE.search(_description(s))]
        reference = max(in_phase or t1, key=_slices)
        others = [s for s in t1 if s is not reference]
    groups: dict[tuple, list[sitk.Image]] = {}
    for series in sorted(others, key=lambda s: (not _IN_PHASE.search(_description(s)),
                                                _description(s))):
        image = series.volumes[0].image
        key = (image.GetSize(), tuple(np.round(image.GetOrigin(), 2)),
               tuple(np.round(image.GetSpacing(), 3)))
        groups.setdefault(key, []).append(image)
    return reference.volumes[0], list(groups.values()), bool(t2)


@dataclass(frozen=True)
class NoContrastGraftPipeline:
    """Unsupervised kidney-graft segmentation from T2 (+ T1/Dixon) MRI, no contrast."""

    name: str = "mri-graft-nc"
    version: str = "0.1.0"
    family: Code = codes.cid7162.ArtificialIntelligence
    settings: GraftSettings = field(default_factory=GraftSettings)

    def configured(self, settings: GraftSettings) -> NoContrastGraftPipeline:
        """This pipeline with the node's settings."""
        return replace(self, settings=settings)

    def method_config(self, device: str) -> GraftConfig:
        """The method's settings for ``device`` (the CPU profile on ``"cpu"``)."""
        return device_profile(self.settings, cpu=device == "cpu")

    def inputs(self, study: StudyInput) -> tuple[LoadedVolume, list[list[sitk.Image]], bool]:
        """The reference volume, the groups of further channels, and whether a T2 is used
        (:func:`nocontrast_inputs`)."""
        return nocontrast_inputs(study, with_t1=self.settings.nocontrast_t1)

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        uid = study.study_instance_uid
        reference, extras, has_t2 = self.inputs(study)
        config = self.method_config(device)

        def progress(iteration: int, loss: float, n_labels: int) -> None:
            logger.info("study %s: %s iteration %d, loss %.4f, %d labels", uid, self.name,
                        iteration, loss, n_labels)

        try:
            result = segment_graft_nocontrast(reference.image, extras, config=config,
                                              reference_is_t2=has_t2, device=device,
                                              progress=progress)
        except ValueError as exc:
            raise PipelineError(f"study {uid}: {self.name}: {exc}") from exc
        c = result.clustering
        output = graft_output(reference, result.mask)
        side = "left" if output.segments[0].laterality == codes.SCT.Left else "right"
        how = ("grown from the localised region to a stable threshold" if c is None else
               f"clustered on {'x'.join(map(str, result.working_shape))} at "
               f"{max(result.working_spacing_zyx):.2f} mm, stopped by {c.stopped_by} after "
               f"{c.iterations} iterations with {c.n_labels} labels")
        logger.info(
            "study %s: %s on %s (%d channels), graft on the %s, ROI %s voxels, %s; %s", uid,
            self.name, "T2" if has_t2 else "T1", result.channels, side,
            "x".join(map(str, result.roi.shape)), how,
            ", ".join(f"{k} {v:.1f} s" for k, v in result.timings_s.items()))
        flags = tuple(f for f, on in (
            ("no-contrast", True),
            ("t1-only", not has_t2),
            ("multi-contrast", result.channels > 1),
            ("localisation-grown", not result.from_clusters),
            ("roi-touches-edge", result.roi.touches_edge),
            ("not-converged", c is not None and c.stopped_by == "max_iter")) if on)
        return replace(output, flags=flags + result.doubts())
