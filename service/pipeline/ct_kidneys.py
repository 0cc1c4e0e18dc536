"""The ``ct-kidneys`` pipeline: both native kidneys on CT, and their cortex when configured.

The kidneys come from :func:`models.ct_kidneys.segment_ct_kidneys` (no trained weights),
on one CT series of the study (:func:`service.pipeline.ct_series.choose_ct_volume`). With
``processing.ct.cortex_models_dir`` set, the renal-cortex ensemble
(:func:`models.cortex_ensemble.segment_cortex`) adds each kidney's cortex as a segment
of its own, overlapping its kidney. A side that was not found is left out of the SEG
and flagged ``<side>-kidney-not-found``; with neither side found the output is the
finding :data:`NO_KIDNEY` with the method's reasons, and nothing is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.cortex_ensemble import segment_cortex
from models.cortex_unet import ARCHITECTURE_NAME, ARCHITECTURE_VERSION
from models.ct_kidneys import CtKidneyConfig, CtKidneys, FoundKidney, segment_ct_kidneys
from models.volume import image_spacing_zyx, mask_volume_ml
from service.config import CtSettings
from service.cortex.installed import installed_ensemble, weights_id
from service.db.tables import SeriesRole
from service.errors import PipelineError
from service.imaging.series import LoadedVolume
from service.pipeline.base import (
    CORTEX_LEFT,
    CORTEX_RIGHT,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    AlgorithmSpec,
    PipelineOutput,
    SegmentSpec,
    StudyInput,
)
from service.pipeline.ct_series import choose_ct_volume

__all__ = ["NO_KIDNEY", "CtKidneysPipeline"]

logger = logging.getLogger(__name__)

#: The job outcome when neither kidney is in the CT's field of view.
NO_KIDNEY = "no kidney in field of view"

#: (side, kidney segment, cortex segment), right first.
_SIDES: tuple[tuple[str, SegmentSpec, SegmentSpec], ...] = (
    ("right", KIDNEY_RIGHT, CORTEX_RIGHT),
    ("left", KIDNEY_LEFT, CORTEX_LEFT),
)


@dataclass(frozen=True)
class CtKidneysPipeline:
    """Right and left kidney (and renal cortex) on contrast or plain abdominal CT."""

    name: str = "ct-kidneys"
    version: str = "0.1.0"
    family: Code = codes.cid7162.MorphologicalOperations
    settings: CtSettings = field(default_factory=CtSettings)

    def configured(self, settings: CtSettings) -> CtKidneysPipeline:
        """This pipeline with the node's settings."""
        return replace(self, settings=settings)

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        """Segment the kidneys (and cortex) of the study's chosen CT series.

        Raises
        ------
        PipelineError
            No usable CT series, or a mask off the CT's grid.
        ModelFilesError
            The configured cortex model folder differs from its manifest.
        """
        uid = study.study_instance_uid
        volume = choose_ct_volume(study.series.get(SeriesRole.CT, ()),
                                  min_slices=self.settings.min_slices, study_uid=uid)
        kidneys = segment_ct_kidneys(volume.image, CtKidneyConfig())
        found = _found_sides(kidneys, volume, uid)
        if not found:
            reasons = "; ".join(f"{side}: {why}" for side, why in sorted(kidneys.reasons.items()))
            finding = f"{NO_KIDNEY} ({reasons})" if reasons else NO_KIDNEY
            logger.info("study %s: %s", uid, finding)
            return PipelineOutput(reference=volume, finding=finding)
        spacing = image_spacing_zyx(volume.image)
        segments: list[SegmentSpec] = []
        masks: list[np.ndarray] = []
        flags: list[str] = []
        for side, kidney_spec, _ in _SIDES:
            if side not in found:
                flags.append(f"{side}-kidney-not-found")
                logger.info("study %s: %s kidney not found: %s", uid, side,
                            kidneys.reasons.get(side, "no reason given"))
                continue
            segments.append(kidney_spec)
            masks.append(found[side].mask)
            if found[side].touches_edge:
                flags.append(f"{side}-kidney-touches-edge")
        algorithms: dict[str, AlgorithmSpec] = {}
        if self.settings.cortex_models_dir is not None:
            cortex, algorithm = _cortex(volume, found, self.settings.cortex_models_dir,
                                        device=device)
            for side, _, cortex_spec in _SIDES:
                if side not in found:
                    continue
                if not cortex[side].any():
                    flags.append(f"{side}-cortex-not-found")
                    continue
                segments.append(cortex_spec)
                masks.append(cortex[side])
                algorithms[cortex_spec.structure] = algorithm
        volumes = {spec.structure: mask_volume_ml(mask, spacing)
                   for spec, mask in zip(segments, masks, strict=True)}
        logger.info("study %s: %s", uid, ", ".join(f"{k} {v:.1f} ml" for k, v in volumes.items()))
        return PipelineOutput(reference=volume, segments=tuple(segments), masks=tuple(masks),
                              volumes_ml=volumes, flags=tuple(flags), algorithms=algorithms)


def _cortex(volume: LoadedVolume, found: dict[str, FoundKidney], model_dir: Path, *,
            device: str) -> tuple[dict[str, np.ndarray], AlgorithmSpec]:
    """Each found kidney's cortex by the installed ensemble, and the ensemble's identity."""
    ensemble = installed_ensemble(model_dir, device=device)
    labels = np.zeros(sitk.GetArrayViewFromImage(volume.image).shape, dtype=np.uint8)
    for value, (side, *_) in enumerate(_SIDES, start=1):
        if side in found:
            labels[found[side].mask] = value
    kidney_image = sitk.GetImageFromArray(labels)
    kidney_image.CopyInformation(volume.image)
    cortex = segment_cortex(volume.image, kidney_image, ensemble.models, device=device)
    by_side = {side: cortex == value for value, (side, *_) in enumerate(_SIDES, start=1)}
    algorithm = AlgorithmSpec(
        name=f"{ARCHITECTURE_NAME} ensemble of {len(ensemble.models)}",
        version=f"{ARCHITECTURE_VERSION} weights {weights_id(ensemble)}",
        family=codes.cid7162.ArtificialIntelligence)
    return by_side, algorithm


def _found_sides(kidneys: CtKidneys, volume: LoadedVolume, study_uid: str
                 ) -> dict[str, FoundKidney]:
    """The sides with a non-empty mask on the CT's grid, by side."""
    shape = sitk.GetArrayViewFromImage(volume.image).shape
    found = {}
    for side, kidney in (("right", kidneys.right), ("left", kidneys.left)):
        if kidney is None:
            continue
        mask = np.asarray(kidney.mask, dtype=bool)
        if mask.shape != shape:
            raise PipelineError(f"study {study_uid}: {side} kidney mask {mask.shape} is not on "
                                f"the CT grid {shape}")
        if mask.any():
            found[side] = replace(kidney, mask=mask)
    return found
