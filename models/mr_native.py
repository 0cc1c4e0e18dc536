"""Native kidneys on MRI without contrast (T2, fat-suppressed or not, or T1).

The graft methods look for one kidney in an iliac fossa. A study of a patient's own
kidneys (or of the native kidneys of a transplant recipient) holds two, beside the spine,
next to the liver, the spleen and bowel loops that are as bright on a T2. Here:

1. N4 bias-field correction with a coarse (3-level) field, as for the T2-only graft (the
   fine field absorbs the kidney's own contrast);
2. localisation of the pair of kidneys (:func:`models.mr_localise.localise_kidneys` with
   :attr:`~models.mr_localise.Target.NATIVE`): candidates by shape and context in many
   intensity windows, the right and left ones chosen together as a mirrored pair;
3. each localised kidney, often a part of it (one window holds the cortex or the
   medulla), grown to the whole organ by a marker-controlled watershed of the gradient
   (:func:`models.watershed.grow_by_watershed`). When the best pair does not grow into a
   plausible pair (a kidney of 40-450 ml each, neither more than
   :data:`ASYMMETRY_REVIEW` times the other), the next pairs are grown in turn (up to
   :data:`_PAIRS_TRIED`), and the first plausible one is kept: the spleen, as bright as
   the kidney on a fat-suppressed T2 and often as kidney-shaped, leaks into the liver and
   stomach when grown (CHAOS case 3: 733 ml); none plausible, the best pair stays and
   the pipeline flags it.

The pair's symmetry (:func:`models.mr_localise.pair_likeness`) is kept with the result:
below :data:`UNPAIRED_BELOW` (the two positions differ by more than twice the tolerated
differences) one of the two is probably another organ, and the pipeline says so. So it
does when one kidney is more than :data:`ASYMMETRY_REVIEW` times the other's volume
(:func:`volume_asymmetry`): normal kidneys differ by a few tens of percent at most; a
larger difference is either another organ taken for a kidney or a finding a reader
should see.

Measured on the CHAOS T2-SPIR cases (``python -m benchmarks.chaos_check``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from models.mr_localise import (
    LocaliseConfig,
    LocalisedKidney,
    Target,
    localise_image,
    native_pairs,
    pair_likeness,
)
from models.timing import StepTimer
from models.volume import image_spacing_zyx
from models.watershed import grow_by_watershed

__all__ = [
    "ASYMMETRY_REVIEW",
    "NATIVE_LOCALISE",
    "UNPAIRED_BELOW",
    "NativeResult",
    "segment_native_kidneys",
    "volume_asymmetry",
]

#: Localisation of native kidneys: a kidney, or the part of it one window holds, 80-300 ml.
NATIVE_LOCALISE = LocaliseConfig(target=Target.NATIVE, volume_ml=(80.0, 300.0))
#: A pair less symmetric than this (``d`` > 2 in :func:`pair_likeness`) is doubtful.
UNPAIRED_BELOW = math.exp(-2.0)
#: One kidney more than this many times the other's volume asks for review.
ASYMMETRY_REVIEW = 1.5
#: Fitting levels of the bias field (see the module notes).
_N4_LEVELS = 3
#: Pairs of candidates grown, best first, until one grows into a plausible pair.
_PAIRS_TRIED = 4
#: Volumes (ml) a grown native kidney may have (an atrophic one to a large one).
_GROWN_ML = (40.0, 450.0)


def _plausible(masks: dict[str, np.ndarray], voxel_ml: float) -> bool:
    """Every grown kidney of a plausible volume and, for two, not asymmetric."""
    volumes = [float(np.count_nonzero(m)) * voxel_ml for m in masks.values()]
    asymmetry = volume_asymmetry(masks)
    return all(_GROWN_ML[0] <= v <= _GROWN_ML[1] for v in volumes) and (
        asymmetry is None or asymmetry <= ASYMMETRY_REVIEW)


@dataclass(frozen=True)
class NativeResult:
    """Outcome of :func:`segment_native_kidneys`.

    Attributes
    ----------
    masks : dict of str to numpy.ndarray
        Boolean (z, y, x) mask per side found ("right", "left") on the input grid.
    localised : dict of str to LocalisedKidney
        The localisation's candidate that seeded each side.
    pair_likeness : float or None
        Symmetry of the two localised kidneys (1: mirrored); ``None`` with one side.
    timings_s : dict of str to float
        Seconds per step: ``localise`` (with N4), ``grow``.
    """

    masks: dict[str, np.ndarray]
    localised: dict[str, LocalisedKidney]
    pair_likeness: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def doubts(self) -> tuple[str, ...]:
        """``"unpaired"`` and/or ``"asymmetric"`` when the pair looks doubtful (see the
        module notes); the pipeline flags both sides with them."""
        asymmetry = volume_asymmetry(self.masks)
        return tuple(name for name, doubtful in (
            ("unpaired", self.pair_likeness is not None
             and self.pair_likeness < UNPAIRED_BELOW),
            ("asymmetric", asymmetry is not None and asymmetry > ASYMMETRY_REVIEW))
            if doubtful)


def segment_native_kidneys(image: sitk.Image, *, n4: bool = True,
                           localise: LocaliseConfig = NATIVE_LOCALISE) -> NativeResult:
    """Segment the right and left native kidneys of an MR volume without contrast.

    Parameters
    ----------
    image : SimpleITK.Image
        3D MR volume (DICOM LPS direction), any contrast.
    n4 : bool
        Correct the bias field first.
    localise : LocaliseConfig
        Settings of the localisation; its target must be native kidneys.

    Returns
    -------
    NativeResult
        One mask per side found; a side with no candidate is absent.

    Raises
    ------
    ValueError
        A constant volume, a localisation not set for native kidneys, or no candidate
        at all.
    """
    if localise.target is not Target.NATIVE:
        raise ValueError("segment_native_kidneys needs a localisation for native kidneys")
    timer = StepTimer()
    fixed, found = localise_image(image, config=localise, n4_levels=_N4_LEVELS if n4 else None,
                                  ranked=True)
    if not found:
        raise ValueError("no region looks like a native kidney (localisation found none)")
    timer.lap("localise")
    spacing = image_spacing_zyx(fixed)
    arr = sitk.GetArrayFromImage(fixed)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    grown: dict[int, np.ndarray] = {}

    def grow(kidney: LocalisedKidney) -> np.ndarray:
        if id(kidney) not in grown:
            grown[id(kidney)] = grow_by_watershed(arr, kidney.mask, spacing_zyx=spacing)
        return grown[id(kidney)]

    pairs = native_pairs(found, localise.pair_sd_mm, limit=_PAIRS_TRIED)
    chosen = pairs[0]
    for pair in pairs:
        masks = {k.side: grow(k) for k in pair}
        if _plausible(masks, voxel_ml):
            chosen = pair
            break
    masks = {k.side: grow(k) for k in chosen}
    timer.lap("grow")
    localised = {k.side: k for k in chosen}
    pair = (pair_likeness(localised["right"], localised["left"], localise.pair_sd_mm)
            if len(localised) == 2 else None)
    return NativeResult(masks=masks, localised=localised, pair_likeness=pair,
                        timings_s=timer.seconds)


def volume_asymmetry(masks: dict[str, np.ndarray]) -> float | None:
    """The larger kidney's volume over the smaller's (same grid); ``None`` unless both
    sides hold a non-empty mask."""
    sizes = [int(np.count_nonzero(masks[side])) for side in ("right", "left") if side in masks]
    if len(sizes) < 2 or min(sizes) == 0:
        return None
    return max(sizes) / min(sizes)
