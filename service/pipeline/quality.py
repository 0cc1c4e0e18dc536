"""Quality control of a pipeline's output: a verdict per segment (models/qc.py).

The signals are measured on the output's reference image (the volume the masks lie on:
the late DCE phase, the T2, the CT), the limits come from :class:`QcSettings`, chosen by
the kind of structure: a whole kidney or graft, a native kidney (small atrophic native
kidneys are expected in transplant recipients) or a renal cortex (a shell: no shape
checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np
import SimpleITK as sitk

from models.qc import RESULT_DOUBTS, QcThresholds, Verdict, judge, mask_signals, worst
from models.volume import image_spacing_zyx
from service.config import QcSettings
from service.pipeline.base import PipelineOutput

__all__ = ["Assessment", "assess_output", "description_prefix", "overall_verdict",
           "thresholds_for"]


@dataclass(frozen=True)
class Assessment:
    """The verdict of one segment, its reasons and the signals it came from."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    signals: Mapping[str, float] = field(default_factory=dict)


def thresholds_for(structure: str, settings: QcSettings, flags: tuple[str, ...] = ()
                   ) -> tuple[QcThresholds, bool]:
    """The limits for ``structure`` of a result with ``flags``, and whether its shape is
    checked (a ``no-contrast`` result has its own boundary-gradient limit)."""
    base = QcThresholds(**settings.model_dump(include={f.name for f in fields(QcThresholds)}))
    if "no-contrast" in flags:
        base = replace(base, gradient_ratio_review=settings.nocontrast_gradient_ratio_review)
    if structure.startswith("cortex"):
        return replace(base, volume_ml_review=settings.cortex_volume_ml_review), False
    if structure in ("kidney_right", "kidney_left"):
        return replace(base, volume_ml_review=settings.native_volume_ml_review), True
    return base, True


def assess_output(
    output: PipelineOutput, settings: QcSettings, *,
    previous_volumes_ml: Mapping[str, float] | None = None,
) -> dict[str, Assessment]:
    """A verdict per segment of ``output``, by structure.

    ``previous_volumes_ml`` holds each structure's volume in the patient's previous
    accepted study, when there is one (a change beyond ``change_pct_review`` asks for
    review).
    """
    previous = previous_volumes_ml or {}
    if not settings.enabled or not output.segments:
        return {}
    image = sitk.GetArrayFromImage(output.reference.image).astype(np.float32)
    spacing = image_spacing_zyx(output.reference.image)
    stack = output.segment_stack()
    found: dict[str, Assessment] = {}
    for index, spec in enumerate(output.segments):
        mask = stack[..., index]
        if not mask.any():
            found[spec.structure] = Assessment(Verdict.FAIL, ("empty mask",))
            continue
        signals = mask_signals(image, mask, spacing_zyx=spacing)
        thresholds, shape_checks = thresholds_for(spec.structure, settings, output.flags)
        side_flags = tuple(f for f in output.flags
                           if f.startswith(spec.structure.split("_")[-1] + "-")
                           or f.startswith("roi-") or f in RESULT_DOUBTS)
        verdict = judge(signals, thresholds=thresholds, shape_checks=shape_checks,
                        previous_volume_ml=previous.get(spec.structure), flags=side_flags)
        found[spec.structure] = Assessment(verdict.verdict, verdict.reasons,
                                           signals.as_dict())
    return found


def overall_verdict(assessments: Mapping[str, Assessment]) -> Verdict | None:
    """The worst verdict of a result's segments; None when none was assessed."""
    if not assessments:
        return None
    return worst([a.verdict for a in assessments.values()])


def description_prefix(assessments: Mapping[str, Assessment]) -> str:
    """``"QC REVIEW - "`` or ``"QC FAIL - "`` for the worst verdict, ``""`` when all pass
    or none was assessed: what the SEG's and the SR's Series Descriptions start with."""
    verdict = overall_verdict(assessments)
    if verdict is None or verdict is Verdict.PASS:
        return ""
    return f"QC {verdict.value.upper()} - "
