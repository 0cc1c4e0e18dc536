"""Series roles from header facts kept in the index (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom import uid as sopuid

from service.config import ClassificationRules
from service.db.tables import SeriesRole

__all__ = ["IMAGE_SOP_CLASSES", "SeriesFacts", "choose_pipeline", "classify_series"]

#: Image storage SOP classes the pipelines can read (single-frame MR and CT).
IMAGE_SOP_CLASSES = frozenset({
    str(sopuid.MRImageStorage),
    str(sopuid.CTImageStorage),
    str(sopuid.EnhancedMRImageStorage),
    str(sopuid.EnhancedCTImageStorage),
})


@dataclass(frozen=True)
class SeriesFacts:
    series_instance_uid: str
    modality: str | None
    description: str | None
    protocol_name: str | None
    sop_class_uids: frozenset[str]
    n_instances: int
    n_temporal_positions: int


def _matches(patterns: tuple[str, ...], text: str) -> bool:
    return any(re.search(p, text, flags=re.IGNORECASE) for p in patterns)


def classify_series(facts: SeriesFacts, rules: ClassificationRules) -> SeriesRole:
    """Give a series its role: DCE, T2, CT, another MR series, derived or unsupported."""
    if not facts.sop_class_uids & IMAGE_SOP_CLASSES:
        modality = (facts.modality or "").upper()
        return SeriesRole.DERIVED if modality in {"SEG", "SR", "PR", "KO", "RTSTRUCT"} \
            else SeriesRole.UNSUPPORTED
    modality = (facts.modality or "").upper()
    text = " ".join(filter(None, (facts.description, facts.protocol_name)))
    if modality == "CT":
        return SeriesRole.CT
    if modality != "MR":
        return SeriesRole.UNSUPPORTED
    if _matches(rules.exclude_patterns, text):
        return SeriesRole.OTHER_MR
    if facts.n_temporal_positions >= rules.dce_min_temporal_positions or _matches(
            rules.dce_patterns, text):
        return SeriesRole.DCE
    if _matches(rules.t2_patterns, text):
        return SeriesRole.T2
    return SeriesRole.OTHER_MR


def choose_pipeline(
    roles: Mapping[str, SeriesRole], *, mr_pipeline: str, ct_pipeline: str
) -> tuple[str | None, str]:
    """The pipeline for a study's classified series, or None and the reason why none fits.

    A study with a DCE series goes to ``mr_pipeline`` (even when it holds CT series too);
    else one with a CT series goes to ``ct_pipeline``.
    """
    present = set(roles.values())
    if SeriesRole.DCE in present:
        return mr_pipeline, "DCE series present"
    if SeriesRole.CT in present:
        return ct_pipeline, "CT series present"
    summary = ", ".join(f"{uid}={role.value}" for uid, role in sorted(roles.items())) or "none"
    return None, f"no DCE MR or CT series to segment (series: {summary})"
