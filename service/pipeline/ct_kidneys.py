"""The ``ct-kidneys`` pipeline: the native kidneys on CT, a kidney graft in the pelvis, and
the native kidneys' cortex when configured.

The kidneys come from :func:`models.ct_kidneys.segment_ct_kidneys` (no trained weights),
on one CT series of the study (:func:`service.pipeline.ct_series.choose_ct_volume`). With
``processing.ct.search_graft`` (default) the pelvis is searched for a graft
(:func:`models.ct_graft.segment_ct_graft`, the native kidneys kept out of its zone), and a
"native kidney" that lies in the pelvis or on the graft is dropped
(:func:`models.ct_graft.separate_natives`); when a graft is found, a side without a
native kidney is searched again for a small (atrophic) one above the iliac crests
(:func:`models.ct_graft.find_atrophic_natives`); the graft is a segment of its own
(:func:`service.pipeline.base.graft_segment`: structure ``graft``, laterality by the
patient's side), flagged ``graft-touches-edge`` when it reaches the first or last slice.
With ``processing.ct.cortex_models_dir`` set, the renal-cortex ensemble
(:func:`models.cortex_ensemble.segment_cortex`) adds each native kidney's cortex as a
segment of its own, overlapping its kidney. A side that was not found is left out of the
SEG and flagged ``<side>-kidney-not-found``; with no native kidney and no graft found the
output is the finding :data:`NO_KIDNEY` with the methods' reasons (the graft search's
only when the pelvis was in view), and nothing is written. A CT without intravenous
contrast (no iodine in the blood in front of the column:
:func:`models.ct_kidneys.adapt_to_phase`) is flagged ``unenhanced``.
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
from models.ct_graft import (
    CtGraft,
    CtGraftConfig,
    FoundGraft,
    find_atrophic_natives,
    segment_ct_graft,
    separate_natives,
)
from models.ct_kidneys import CtKidneyConfig, CtKidneys, FoundKidney, segment_ct_kidneys
from models.volume import image_spacing_zyx, mask_volume_ml
from service.config import CtSettings
from service.cortex.installed import installed_ensemble, weights_id
from service.domain import SeriesRole
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
    graft_segment,
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
    """Right and left native kidney (and renal cortex) and a kidney graft in the pelvis, on
    contrast or plain CT of the abdomen and/or pelvis."""

    name: str = "ct-kidneys"
    version: str = "0.4.1"
    family: Code = codes.cid7162.MorphologicalOperations
    settings: CtSettings = field(default_factory=CtSettings)

    def configured(self, settings: CtSettings) -> CtKidneysPipeline:
        """This pipeline with the node's settings."""
        return replace(self, settings=settings)

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        """Segment the kidneys, the graft (and cortex) of the study's chosen CT series.

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
        graft: FoundGraft | None = None
        graft_reason = ""
        if self.settings.search_graft:
            graft_config = CtGraftConfig()
            search = segment_ct_graft(volume.image, graft_config, natives=kidneys)
            kidneys = separate_natives(kidneys, search, volume.image)
            kidneys = find_atrophic_natives(kidneys, search, volume.image, graft_config)
            graft = _graft_on_grid(search, volume, uid)
            graft_reason = search.reason if search.pelvis_in_view else ""
        found = _found_sides(kidneys, volume, uid)
        if not found and graft is None:
            reasons = sorted(kidneys.reasons.items())
            if graft_reason:
                reasons.append(("graft", graft_reason))
            text = "; ".join(f"{what}: {why}" for what, why in reasons)
            finding = f"{NO_KIDNEY} ({text})" if text else NO_KIDNEY
            logger.info("study %s: %s", uid, finding)
            return PipelineOutput(reference=volume, finding=finding)
        spacing = image_spacing_zyx(volume.image)
        segments: list[SegmentSpec] = []
        masks: list[np.ndarray] = []
        flags: list[str] = ["unenhanced"] if kidneys.unenhanced else []
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
        if graft is not None:
            segments.append(graft_segment(graft.side))
            masks.append(graft.mask)
            if graft.touches_edge:
                flags.append("graft-touches-edge")
            logger.info("study %s: graft in the %s iliac fossa (score %.2f)", uid, graft.side,
                        graft.score)
        elif self.settings.search_graft:
            logger.info("study %s: no graft: %s", uid, graft_reason or "no pelvis in view")
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


def _graft_on_grid(search: CtGraft, volume: LoadedVolume, study_uid: str) -> FoundGraft | None:
    """The graft found, its mask checked to lie on the CT's grid; None when empty."""
    graft = search.graft
    if graft is None:
        return None
    shape = sitk.GetArrayViewFromImage(volume.image).shape
    mask = np.asarray(graft.mask, dtype=bool)
    if mask.shape != shape:
        raise PipelineError(f"study {study_uid}: graft mask {mask.shape} is not on the CT grid "
                            f"{shape}")
    return replace(graft, mask=mask) if mask.any() else None
