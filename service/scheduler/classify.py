"""Series roles from header facts kept in the index (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom import uid as sopuid

from service.config import ClassificationRules
from service.db.tables import SeriesRole

__all__ = ["IMAGE_SOP_CLASSES", "InstanceFacts", "SeriesFacts", "choose_pipeline",
           "classify_series", "series_facts"]

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


@dataclass(frozen=True)
class InstanceFacts:
    """What classification reads of one received instance (kept in the index, or read
    from the file's header offline)."""

    series_instance_uid: str
    modality: str | None
    description: str | None
    protocol_name: str | None
    sop_class_uid: str
    temporal_position: int | None


def series_facts(instances: Iterable[InstanceFacts]) -> list[SeriesFacts]:
    """The facts of each series of ``instances``: its SOP classes, number of instances,
    and distinct Temporal Position Identifiers (the most among its SOP classes). Modality,
    description and protocol are those of the series' first instance."""
    first: dict[str, InstanceFacts] = {}
    classes: dict[str, dict[str, set[int]]] = {}
    counts: dict[str, int] = {}
    for item in instances:
        uid = item.series_instance_uid
        first.setdefault(uid, item)
        positions = classes.setdefault(uid, {}).setdefault(item.sop_class_uid, set())
        if item.temporal_position is not None:
            positions.add(item.temporal_position)
        counts[uid] = counts.get(uid, 0) + 1
    return [SeriesFacts(series_instance_uid=uid, modality=head.modality,
                        description=head.description, protocol_name=head.protocol_name,
                        sop_class_uids=frozenset(classes[uid]), n_instances=counts[uid],
                        n_temporal_positions=max(len(p) for p in classes[uid].values()))
            for uid, head in first.items()]


def _matches(patterns: tuple[str, ...], text: str) -> bool:
    return any(re.search(p, text, flags=re.IGNORECASE) for p in patterns)


def classify_series(facts: SeriesFacts, rules: ClassificationRules) -> SeriesRole:
    """Give a series its role: DCE, T2, T1, CT, another MR series, derived or unsupported.

    DCE is decided first (temporal positions or name), then T2 and T1 by name; a name
    matching both the T2 and the T1 patterns is T1 only when it says "t1" and not "t2".
    """
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
    t2 = _matches(rules.t2_patterns, text)
    t1 = _matches(rules.t1_patterns, text)
    if t1 and t2:  # "t1_tse" matches "tse", "t2 fat sat" matches "fat": the weighting says
        weighted_t1 = re.search(r"t1", text, flags=re.IGNORECASE) is not None
        weighted_t2 = re.search(r"t2", text, flags=re.IGNORECASE) is not None
        return SeriesRole.T1 if weighted_t1 and not weighted_t2 else SeriesRole.T2
    if t2:
        return SeriesRole.T2
    if t1:
        return SeriesRole.T1
    return SeriesRole.OTHER_MR


def choose_pipeline(
    roles: Mapping[str, SeriesRole],
    *,
    mr_pipeline: str,
    ct_pipeline: str,
    mr_nocontrast_pipeline: str | None = None,
) -> tuple[str | None, str]:
    """The pipeline for a study's classified series, or None and the reason why none fits.

    A study with a DCE series goes to ``mr_pipeline`` (even when it holds CT series too);
    else one with a CT series goes to ``ct_pipeline``; else one with a T2 or T1 series
    (gadolinium withheld) goes to ``mr_nocontrast_pipeline`` when one is given.

    Parameters
    ----------
    roles : mapping of str to SeriesRole
        Series Instance UID -> role of every series of the study.
    mr_pipeline, ct_pipeline : str
        Pipelines of DCE studies and of CT studies.
    mr_nocontrast_pipeline : str, optional
        Pipeline of MR studies without contrast; ``None`` leaves them without a pipeline.

    Returns
    -------
    tuple
        The pipeline's name (or None) and the reason, for the log and the job's error.
    """
    present = set(roles.values())
    if SeriesRole.DCE in present:
        return mr_pipeline, "DCE series present"
    if SeriesRole.CT in present:
        return ct_pipeline, "CT series present"
    plain = sorted(r.value for r in present & {SeriesRole.T2, SeriesRole.T1})
    if plain and mr_nocontrast_pipeline is not None:
        return mr_nocontrast_pipeline, f"no DCE series: {' and '.join(plain)} without contrast"
    summary = ", ".join(f"{uid}={role.value}" for uid, role in sorted(roles.items())) or "none"
    wanted = "DCE MR or CT" if mr_nocontrast_pipeline is None else "DCE, T2 or T1 MR or CT"
    return None, f"no {wanted} series to segment (series: {summary})"
