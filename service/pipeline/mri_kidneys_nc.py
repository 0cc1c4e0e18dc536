"""Native kidneys on MRI without contrast as the ``mri-kidneys-nc`` pipeline (issue 16).

For sites whose patients' own kidneys are followed (or the native kidneys of a
recipient, on an abdominal study), set ``processing.mr_nocontrast_pipeline:
mri-kidneys-nc``: a T2 and/or T1 study without DCE then gets its right and left kidney
as segments of their own (``kidney_right``, ``kidney_left``, coded with their
laterality), not one graft. The default stays ``mri-graft-nc`` (a graft in an iliac
fossa): on MRI the node does not tell a native kidney from a graft by itself, the site
says which it follows.

The image maths is :func:`models.mr_native.segment_native_kidneys` on the reference
sequence of :func:`service.pipeline.mri_graft_nc.nocontrast_inputs` (the T2 with the most
slices, else the T1 in-phase image); further T1 channels are not used. Flags:
``no-contrast`` always, ``t1-only`` without T2, ``<side>-kidney-not-found``,
``<side>-kidney-touches-edge`` (the localised kidney reaches the field of view's edge),
``<side>-kidney-unpaired`` on both sides when the two kidneys found do not lie as a
mirrored pair (:data:`models.mr_native.UNPAIRED_BELOW`: one is probably another organ,
and which one is not known), ``<side>-kidney-asymmetric`` on both sides when one is more
than :data:`models.mr_native.ASYMMETRY_REVIEW` times the other's volume. Quality control
asks for review on the last three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from models.mr_native import segment_native_kidneys
from models.volume import image_spacing_zyx, mask_volume_ml
from service.errors import PipelineError
from service.pipeline.base import KIDNEY_LEFT, KIDNEY_RIGHT, PipelineOutput, StudyInput
from service.pipeline.mri_graft_nc import nocontrast_inputs

__all__ = ["NativeKidneysNoContrastPipeline"]

logger = logging.getLogger(__name__)

_SIDES = (("right", KIDNEY_RIGHT), ("left", KIDNEY_LEFT))


@dataclass(frozen=True)
class NativeKidneysNoContrastPipeline:
    """Right and left native kidney from T2 (or T1) MRI, no contrast."""

    name: str = "mri-kidneys-nc"
    version: str = "0.1.0"
    family: Code = codes.cid7162.MorphologicalOperations  # watershed of the gradient

    def run(self, study: StudyInput, *, device: str) -> PipelineOutput:
        """Segment both kidneys (``device`` unused: no network)."""
        uid = study.study_instance_uid
        reference, _, has_t2 = nocontrast_inputs(study, with_t1=False)
        try:
            result = segment_native_kidneys(reference.image)
        except ValueError as exc:
            raise PipelineError(f"study {uid}: {self.name}: {exc}") from exc
        spacing = image_spacing_zyx(reference.image)
        flags = ["no-contrast"] + ([] if has_t2 else ["t1-only"])
        doubts = result.doubts()
        segments, masks = [], []
        for side, spec in _SIDES:
            mask = result.masks.get(side)
            if mask is None or not mask.any():
                flags.append(f"{side}-kidney-not-found")
                continue
            segments.append(spec)
            masks.append(np.asarray(mask, dtype=bool))
            if result.localised[side].roi.touches_edge:
                flags.append(f"{side}-kidney-touches-edge")
            flags += [f"{side}-kidney-{doubt}" for doubt in doubts]
        volumes = {spec.structure: mask_volume_ml(mask, spacing)
                   for spec, mask in zip(segments, masks, strict=True)}
        logger.info("study %s: %s on %s: %s, pair likeness %s; %s", uid, self.name,
                    "T2" if has_t2 else "T1",
                    ", ".join(f"{k} {v:.1f} ml" for k, v in volumes.items()),
                    "n/a" if result.pair_likeness is None else f"{result.pair_likeness:.2f}",
                    ", ".join(f"{k} {v:.1f} s" for k, v in result.timings_s.items()))
        return PipelineOutput(reference=reference, segments=tuple(segments),
                              masks=tuple(masks), volumes_ml=volumes, flags=tuple(flags))
