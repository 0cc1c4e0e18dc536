"""A kidney-graft mask as a pipeline output: the graft segment on the side it lies on.

Every MRI pipeline of the node segments the graft, so every one reports it as the
structure ``graft`` (coded SCT 70948008 "Structure of transplanted kidney", see
:data:`service.pipeline.base.TRANSPLANTED_KIDNEY`), the name the CT pipeline's graft
has too, so one patient's trend joins its MRI and CT follow-ups.

The side is the patient's side of the body's mid-line that holds the mask's centroid
(patient x in LPS: + is the patient's left). The mid-line is the centroid of the body
in the image when the whole body width is in the field of view; a field of view
narrower than the body (a small box on the graft: the body reaches both lateral edges)
shows no mid-line, and the scanner's isocentre (x = 0), where patients lie, stands in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from models.mr_localise import patient_side
from models.otsu import otsu_threshold
from models.volume import image_spacing_zyx, mask_volume_ml
from service.imaging.series import LoadedVolume
from service.pipeline.base import PipelineOutput, graft_segment

__all__ = ["graft_output", "graft_side"]


def _x_mm(image: sitk.Image, mask: np.ndarray) -> float:
    z, y, x = np.argwhere(mask).mean(axis=0)
    return image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))[0]


def graft_side(image: sitk.Image, mask: np.ndarray) -> str:
    """"right" or "left": the patient's side of the mid-line holding ``mask`` (z, y, x)."""
    if not np.any(mask):
        raise ValueError("the graft mask is empty: no side")
    values = np.asarray(sitk.GetArrayViewFromImage(image), dtype=np.float32)
    body = values > 0.5 * otsu_threshold(values)
    # The image axis that runs most along patient x (left-right).
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lateral_index_axis = int(np.argmax(np.abs(direction[0])))  # 0 = x, 1 = y, 2 = z
    array_axis = 2 - lateral_index_axis
    edges = body.take(0, axis=array_axis).any(), body.take(-1, axis=array_axis).any()
    if body.any() and not all(edges):
        return patient_side(mask, body, direction=image.GetDirection(),
                            spacing_zyx=image_spacing_zyx(image))
    return "left" if _x_mm(image, mask) > 0.0 else "right"  # the isocentre


def graft_output(reference: LoadedVolume, mask: np.ndarray, *,
                 flags: Sequence[str] = ()) -> PipelineOutput:
    """The output of a graft mask on ``reference``'s grid: one graft segment, its volume."""
    segment = graft_segment(graft_side(reference.image, mask))
    spacing = image_spacing_zyx(reference.image)
    return PipelineOutput(
        reference=reference, labels=np.asarray(mask, dtype=np.uint8) * segment.label,
        segments=(segment,), volumes_ml={segment.structure: mask_volume_ml(mask, spacing)},
        flags=tuple(flags))
