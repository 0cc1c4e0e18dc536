"""Which CT series of a study to segment: the one covering most of the body head to foot."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import SimpleITK as sitk

from service.errors import PipelineError
from service.imaging.series import LoadedSeries, LoadedVolume

__all__ = ["CtCandidate", "choose_ct_volume", "z_extent_mm"]

logger = logging.getLogger(__name__)


def z_extent_mm(image: sitk.Image) -> float:
    """Head-foot (patient z) extent of the volume's voxel centres, mm, any orientation."""
    size = image.GetSize()
    corners = itertools.product(*[(0, n - 1) for n in size])
    zs = [image.TransformIndexToPhysicalPoint(tuple(c))[2] for c in corners]
    return float(max(zs) - min(zs))


@dataclass(frozen=True)
class CtCandidate:
    """One CT series as the choice sees it."""

    series_instance_uid: str
    volume: LoadedVolume
    slices: int
    z_extent_mm: float

    @classmethod
    def of(cls, series: LoadedSeries) -> CtCandidate:
        volume = series.volumes[0]
        return cls(series.series_instance_uid, volume, len(volume.datasets),
                   z_extent_mm(volume.image))

    def describe(self) -> str:
        return f"{self.series_instance_uid} ({self.slices} slices, {self.z_extent_mm:.0f} mm)"


def choose_ct_volume(series: Sequence[LoadedSeries], *, min_slices: int,
                     study_uid: str) -> LoadedVolume:
    """The CT volume to segment, chosen deterministically and logged.

    Series with fewer than ``min_slices`` slices (localizers, short slabs) are skipped;
    among the others the largest head-foot extent wins, then more slices, then the
    smaller Series Instance UID. The first phase of a multi-phase series is used.

    Parameters
    ----------
    series : sequence of LoadedSeries
        The study's CT series.
    min_slices : int
        Fewest slices a series needs.
    study_uid : str
        For the log and the error message.

    Returns
    -------
    LoadedVolume
        The chosen series' volume.

    Raises
    ------
    PipelineError
        When no series has ``min_slices`` slices; the message lists the series seen.
    """
    candidates = sorted((CtCandidate.of(s) for s in series),
                        key=lambda c: (-c.z_extent_mm, -c.slices, c.series_instance_uid))
    usable = [c for c in candidates if c.slices >= min_slices]
    if not usable:
        seen = ", ".join(c.describe() for c in candidates) or "none"
        raise PipelineError(f"study {study_uid}: no CT series with at least {min_slices} "
                            f"slices (series: {seen})")
    chosen = usable[0]
    others = [c.describe() for c in candidates if c is not chosen]
    logger.info("study %s: segmenting CT series %s%s", study_uid, chosen.describe(),
                f"; not used: {', '.join(others)}" if others else "")
    return chosen.volume
