"""The MRI paper's method without gadolinium: T2 alone, or T2 with T1 (Dixon) channels.

:func:`segment_graft_nocontrast` is :func:`models.graft.segment_graft` with the DCE volume
replaced by the best available non-contrast sequence (the *reference*: the T2, else the
first T1 image) and the §2.1 region of interest, which needs an enhancing graft, replaced
by :func:`models.mr_localise.localise_kidneys` (shape and context, not brightness):

1. N4 bias-field correction of the reference (§3: 2 iterations, 8 fitting levels);
2. localisation of the graft on it (:mod:`models.mr_localise`); its box plus
   ``GraftConfig.roi_margin_mm`` and ``extra_margin_mm`` is the region of interest;
3. each further sequence (T1 in-phase, opposed-phase, water, fat...) N4-corrected and
   registered to the reference (rigid, affine, then B-spline inside the box, as the T2 to
   the DCE in the paper); images of one acquisition given together (a Dixon set) share
   the transform of the first;
4. the channels cropped to the box, brought to the working grid, clustered by the
   per-volume CNN (§2.2, early fusion as in the paper);
5. the kidney: among the clusters' candidates that pass the gates of
   :func:`models.kidney_cluster.rank_candidates` (the reference's intensity as the
   "enhancement": a kidney is brighter than the box's mean on T2), the one holding most of
   the localised region (its coverage) with the candidate's own score as tie-break; then,
   as in :mod:`models.graft`, tubes cut at the hilum, darker lobes dropped, back to full
   resolution, holes filled, the edge refined; the mask on the reference grid.
   When no qualifying candidate holds at least 30 % of the localised region (on a T2
   the kidney's cortex can be clustered with the fat around it), the localised region
   grown by a falling threshold until it leaks (:func:`grow_seed`) takes its place and
   the result says so (``from_clusters``).

A T2 reference (alone or with T1 channels) is corrected with a coarse (3-level) N4
field instead, before the localisation (the 8-level field absorbs the kidney's own
signal: on synthetic T2 it brought the cortex from about 1.17 times the fat around it to
1.0). On a T2 alone the localised region grown to its most stable threshold (:func:`grow_stable`),
stripped, when it is not compact, of the bowel loops the growth leaked into by an opening
of its core (:func:`cut_appendages`, the kidney's own lips around its sinus given back:
:func:`restore_lips`), then grown to the half-way level between its border
and its surroundings (:func:`grow_to_edge`), is the mask. The four
best candidates of the localisation are grown so, and the grown region most like a whole
graft (compact, a kidney's semi-axes, 100-300 ml), weighted by the square root of its
seed's score, is kept: a bowel loop or a lymphocele often outscores the kidney as a seed,
not once grown; the bladder grows as compact as a kidney, but from a mid-line seed. The
clustering runs only when no candidate grows to a region of plausible volume.

T2 with further channels: the grown region chosen so (grown to the edge) is the seed of
the clustering, in place of the localisation's best candidate (which, on a T2, is often a
bowel loop: on seeds 10-19 five of ten T2 + Dixon studies came out Dice 0.00-0.02 when
it seeded them); its box plus ``GraftConfig.roi_margin_mm`` is the region of
interest, and when no cluster holds enough of it, the grown region is the mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.components import (
    binary_closing,
    binary_dilation,
    box_around,
    fill_holes,
    largest_component,
)
from models.feature_clustering import ClusteringResult, cluster_volume
from models.graft import (
    GraftConfig,
    _crop,
    _to_grid,
    finish_kidney,
    working_spacing,
)
from models.kidney_cluster import rank_candidates
from models.mr_localise import (
    LocaliseConfig,
    LocalisedKidney,
    compactness,
    kidney_likeness,
    localise_image,
    moment_ellipsoid,
)
from models.preprocess import n4_correct, register_t2_to_dce
from models.qc import NOT_KIDNEY_SHAPED
from models.roi import RegionOfInterest
from models.timing import StepTimer
from models.volume import image_spacing_zyx

__all__ = ["KIDNEY_SHAPED", "NoContrastResult", "cut_appendages", "grow_seed", "grow_stable",
           "grow_to_edge", "restore_lips", "segment_graft_nocontrast"]

Progress = Callable[[int, float, int], None]


@dataclass(frozen=True)
class NoContrastResult:
    """Outcome of :func:`segment_graft_nocontrast`.

    Attributes
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) kidney mask on the reference grid.
    roi : RegionOfInterest
        The region of interest, in reference voxels.
    localised : LocalisedKidney
        The localisation's candidate that seeded it.
    working_spacing_zyx, working_shape
        Grid of the clustering.
    clustering : ClusteringResult or None
        Labels on the working grid, iterations, losses and stop reason; ``None`` when the
        mask is the localised region grown to a stable threshold (T2 alone).
    channels : int
        Number of input channels of the network (1: single sequence).
    from_clusters : bool
        ``False`` when no cluster held enough of the localised region and the mask is
        that region grown by threshold (:func:`grow_seed`): flagged by the pipeline.
    timings_s : dict of str to float
        Seconds per step: ``localise`` (with the reference's N4), ``n4`` (of further
        sequences), ``registration``, ``clustering``, ``selection``.
    likeness : float or None
        With a T2: :func:`models.mr_localise.kidney_likeness` of the grown region before
        its growth to the edge (the mask on a T2 alone, the clustering's seed with
        further channels); ``None`` without a T2.
    """

    mask: np.ndarray
    roi: RegionOfInterest
    localised: LocalisedKidney
    working_spacing_zyx: tuple[float, float, float]
    working_shape: tuple[int, int, int]
    clustering: ClusteringResult | None
    channels: int
    from_clusters: bool = True
    timings_s: dict[str, float] = field(default_factory=dict)
    likeness: float | None = None

    def doubts(self) -> tuple[str, ...]:
        """``("not-kidney-shaped",)`` when the grown region (T2 alone) looks less like a
        whole kidney than :data:`KIDNEY_SHAPED` (:func:`models.mr_localise.kidney_likeness`:
        a fragment of the kidney, a bowel loop); else nothing."""
        doubtful = self.likeness is not None and self.likeness < KIDNEY_SHAPED
        return (NOT_KIDNEY_SHAPED,) if doubtful else ()


def _grow_roi(roi: RegionOfInterest, *, margin_mm: float,
              spacing: tuple[float, float, float], shape: tuple[int, ...]) -> RegionOfInterest:
    pad = [int(np.ceil(margin_mm / s)) for s in spacing]
    start = tuple(max(0, a - p) for a, p in zip(roi.start, pad, strict=True))
    stop = tuple(min(n, b + p) for b, p, n in zip(roi.stop, pad, shape, strict=True))
    return RegionOfInterest(start=start, stop=stop, touches_edge=roi.touches_edge)


#: Fitting levels of the bias field of the T2-only path (see :func:`grow_stable`), and
#: with further channels (the paper's §3 setting).
_GENTLE_N4_LEVELS = 3
_FULL_N4_LEVELS = 8
#: Volumes (ml) a stable grown region may have: an adult graft, with margin.
_STABLE_VOLUME_ML = (100.0, 400.0)

#: A cluster candidate must hold at least this share of the localised region.
_MIN_COVERAGE = 0.3
#: Split needed to drop a darker lobe from the kidney (:func:`models.graft.finish_kidney`)
#: without contrast: the darker group is then no lack of enhancement, and the split stays
#: at the stricter value the T2 + Dixon path was measured with (seeds 10-19, 400-409).
_UNENHANCED_SEPARATION = 4.0


def grow_seed(seed: np.ndarray, image: np.ndarray, *, spacing: tuple[float, float, float],
              max_ml: float, reach_mm: float = 15.0) -> np.ndarray:
    """The localised region grown by lowering a threshold until it leaks.

    Thresholds fall from the seed's 25th percentile in steps of 1/20 of the seed's
    spread to the region's surroundings; at each, the component of ``image >= t`` (within
    ``reach_mm`` of the seed) holding the seed is kept while its volume grows by less
    than 30 % per step and stays under ``max_ml``.
    """
    reach = binary_dilation(seed, radius_vox=reach_mm / min(spacing), spacing_zyx=spacing)
    shell = reach & ~seed
    if not seed.any() or not shell.any():
        return seed
    high = float(np.percentile(image[seed], 25))
    low = float(np.median(image[shell]))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    region = seed
    for t in np.linspace(high, low, 21)[1:]:
        labels, _ = ndi.label(reach & (image >= t))
        hit = np.unique(labels[seed & (labels > 0)])
        grown = np.isin(labels, hit[hit > 0]) | seed
        if grown.sum() > 1.3 * region.sum() or grown.sum() * voxel_ml > max_ml:
            break
        region = grown
    return fill_holes(region)


#: A grown region less compact than this (:func:`models.mr_localise.compactness`) has its
#: appendages cut (:func:`cut_appendages`); a whole kidney is about 0.9.
_COMPACT_KIDNEY = 0.85
#: The cut stops at the first core radius (share of the region's depth) that leaves a
#: region this compact.
_COMPACT_ENOUGH = 0.9
_CORE_SHARES = (0.5, 0.6, 0.7)
#: A piece outside the opened core is an appendage (cut) when it is at least this deep
#: (mm) and this large (ml); thinner or smaller rims are the kidney's own poles and edge.
_APPENDAGE_DEPTH_MM = 6.0
_APPENDAGE_ML = 3.0


#: Rounds of :func:`restore_lips`.
_LIP_ROUNDS = 3


def _outline(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """``mask`` closed, as an object on its own, by a ball of half the radius of the
    sphere of its volume: a kidney's outline, its sinus and hilum filled."""
    radius_mm = 0.5 * (3.0 * float(np.count_nonzero(mask)) * float(np.prod(spacing))
                       / (4.0 * math.pi)) ** (1.0 / 3.0)
    return binary_closing(mask, radius_vox=radius_mm / min(spacing), spacing_zyx=spacing,
                          background_beyond=True)


def _in_moment_ellipsoid(points: np.ndarray, mask: np.ndarray,
                         spacing: tuple[float, float, float]) -> np.ndarray:
    """Which voxel ``points`` (n, 3) lie inside :func:`models.mr_localise.moment_ellipsoid`
    of ``mask``."""
    centre, matrix = moment_ellipsoid(mask, spacing)
    offset = points * np.asarray(spacing) - centre
    return np.einsum("ij,jk,ik->i", offset, np.linalg.inv(matrix), offset) <= 1.0


def restore_lips(region: np.ndarray, kept: np.ndarray, *,
                 spacing: tuple[float, float, float]) -> np.ndarray:
    """``kept`` (``region`` with its appendages cut) with the voxels of ``region`` that lie
    inside the moment ellipsoid of ``kept``'s outline given back, for
    :data:`_LIP_ROUNDS` rounds (the ellipsoid grows as they come back).

    Around the renal sinus the parenchyma is a shell whose anterior and posterior lips
    fall outside the opened core and were cut with the bowel loops (synthetic grafts with
    a sinus, seeds 300-309: volumes 13 % low in the median). The lips lie within the
    kidney's ellipsoid; a loop hanging off the kidney lies beyond it.
    """
    if not kept.any() or np.count_nonzero(kept) == np.count_nonzero(region):
        return kept
    box = box_around(region, margin_mm=0.0, spacing_zyx=spacing, extra_vox=1)
    sub, base = region[box], kept[box]
    points = np.argwhere(sub)
    current = base
    for _ in range(_LIP_ROUNDS):
        within = np.zeros_like(sub)
        within[tuple(points[_in_moment_ellipsoid(points, _outline(current, spacing),
                                                 spacing)].T)] = True
        grown = fill_holes(largest_component(base | within))
        if np.count_nonzero(grown) == np.count_nonzero(current):
            break
        current = grown
    out = np.zeros_like(region)
    out[box] = current
    return out


def cut_appendages(region: np.ndarray, *, spacing: tuple[float, float, float]) -> np.ndarray:
    """``region`` without the bowel loops hanging off it, when it is not compact.

    On a T2 the bowel wall is as bright as the cortex and the bowel content as the
    medulla: a region grown from the kidney takes in the loops touching it, often
    through a contact too wide to be cut as a neck. (Cutting the grown region at the
    necks of its distance map and keeping the pieces lying in the localised region, as
    before, also dropped a fifth of the kidney: tuning seeds 40-59.) When the
    region's compactness is below :data:`_COMPACT_KIDNEY`, its core (voxels deeper than a
    share of its greatest depth, the largest part) is opened back to that radius (a
    morphological opening by a ball of about 13-18 mm for a graft); the pieces left
    outside that are both deep and large are cut, the thin rims (the poles and edges the
    opening rounds off) kept. Core radii of :data:`_CORE_SHARES` of the depth are tried
    in turn; the first result at least :data:`_COMPACT_ENOUGH` compact, else the most
    compact, is returned (the region itself when nothing is more compact), with the
    kidney's own lips given back (:func:`restore_lips`).
    """
    return restore_lips(region, _cut(region, spacing), spacing=spacing)


def _cut(region: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    if not region.any():
        return region
    best = (compactness(region, spacing), region)
    if best[0] >= _COMPACT_KIDNEY:
        return region
    # The depth on the tight box (one background voxel around it) is the depth on the
    # whole grid; the working box then leaves room for the opening.
    tight = box_around(region, margin_mm=0.0, spacing_zyx=spacing, extra_vox=1)
    depth_max = float(ndi.distance_transform_edt(region[tight], sampling=spacing).max())
    box = box_around(region, margin_mm=max(_CORE_SHARES) * depth_max + 2.0,
                     spacing_zyx=spacing, extra_vox=1)
    sub = region[box]
    depth = ndi.distance_transform_edt(sub, sampling=spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for share in _CORE_SHARES:
        radius = share * depth_max
        core = largest_component(depth > radius)
        if not core.any():
            break
        opened = ndi.distance_transform_edt(~core, sampling=spacing) <= radius
        residue = sub & ~opened
        labels, n = ndi.label(residue)
        if n == 0:
            continue
        index_n = np.arange(1, n + 1)
        deep = ndi.maximum(ndi.distance_transform_edt(residue, sampling=spacing), labels,
                           index_n)
        size = ndi.sum(residue, labels, index_n) * voxel_ml
        cut = index_n[(np.asarray(deep) >= _APPENDAGE_DEPTH_MM)
                      & (np.asarray(size) >= _APPENDAGE_ML)]
        if not len(cut):
            continue
        kept = np.zeros_like(region)
        kept[box] = largest_component(sub & ~np.isin(labels, cut))
        score = compactness(kept, spacing)
        if score >= _COMPACT_ENOUGH:
            return kept
        if score > best[0]:
            best = (score, kept)
    return best[1]


def grow_to_edge(region: np.ndarray, image: np.ndarray, *,
                 spacing: tuple[float, float, float], band_mm: float = 2.0,
                 smooth_mm: float = 1.5, rim_mm: float = 3.0,
                 ring_mm: tuple[float, float] = (5.0, 12.0)) -> np.ndarray:
    """``region`` grown to the half-way level between its own border and its surroundings.

    The most stable threshold of :func:`grow_stable` lies above the half-way point
    between the cortex and the fat around it, so its region stops short of the kidney's
    edge (tuning seeds 80-99: 11 of 20 volumes more than 5 % low). The image smoothed
    in-plane (``smooth_mm``), the half-way level is the mean of the median inside the
    region within ``rim_mm`` of its border and the median ``ring_mm`` outside it (the
    border of a partial-volume edge); voxels within ``band_mm`` outside the region at or
    above it are added (holes filled, largest part kept). Nothing is removed.
    """
    if not region.any():
        return region
    box = box_around(region, margin_mm=ring_mm[1] + 2.0, spacing_zyx=spacing, extra_vox=1)
    sub = region[box]
    smooth = ndi.gaussian_filter(image[box].astype(np.float32),
                                 (0.0, smooth_mm / spacing[1], smooth_mm / spacing[2]))
    inside = ndi.distance_transform_edt(sub, sampling=spacing)
    outside = ndi.distance_transform_edt(~sub, sampling=spacing)
    rim = sub & (inside <= rim_mm)
    ring = (outside >= ring_mm[0]) & (outside <= ring_mm[1])
    if not rim.any() or not ring.any():
        return region
    level = 0.5 * (float(np.median(smooth[rim])) + float(np.median(smooth[ring])))
    added = (outside > 0) & (outside <= band_mm) & (smooth >= level)
    out = np.zeros_like(region)
    out[box] = fill_holes(largest_component(sub | added))
    return out


#: A grown region less like a whole kidney than this is flagged ``not-kidney-shaped``
#: (the 58 development studies' chosen regions: 0.86 or more; a fragment of the kidney
#: grown to 60 ml, Dice 0.58: 0.19).
KIDNEY_SHAPED = 0.7
#: How many of the localisation's best candidates are grown on a T2 alone.
_GROWN_CANDIDATES = 4
#: Graft volumes (ml) scoring 1 when a grown candidate is judged; 0 at 50 ml beyond.
_GRAFT_ML = (100.0, 300.0)


def _grow_best(found: Sequence[LocalisedKidney], image: np.ndarray, *,
               spacing: tuple[float, float, float]
               ) -> tuple[LocalisedKidney, np.ndarray, float] | None:
    """Each candidate grown (:func:`grow_stable`, :func:`cut_appendages`); the one whose grown
    region looks most like a whole graft, with that region and its kidney-likeness;
    ``None`` when none grows.

    On a T2 the localisation's best candidate is often a bowel loop or a lymphocele: more
    contrasted and more homogeneous than a kidney, whose cortex is barely brighter than
    fat. Grown, such a seed stays small or spreads irregularly, while a piece of the
    kidney grows into the whole organ. The grown regions are compared by
    :func:`models.mr_localise.kidney_likeness` (ellipsoid compactness, semi-axes of a
    kidney) and a graft's volume (:data:`_GRAFT_ML`), times the square root of the
    candidate's own score (position, contrast, homogeneity): the bladder, grown, is as
    compact as a kidney and of a graft's volume, but its seed lies in the mid-line.
    """
    best: tuple[float, LocalisedKidney, np.ndarray, float] | None = None
    for candidate in found:
        grown = grow_stable(candidate.mask, image, spacing=spacing, volume_ml=_STABLE_VOLUME_ML)
        if grown is None:
            continue
        grown = cut_appendages(fill_holes(largest_component(grown)), spacing=spacing)
        likeness = kidney_likeness(grown, spacing, volume_ml=_GRAFT_ML)
        score = likeness * math.sqrt(candidate.score)
        if best is None or score > best[0]:
            best = (score, candidate, grown, likeness)
    return None if best is None else best[1:]


def _disk(radius_vox: int) -> np.ndarray:
    """In-plane disk structuring element of ``radius_vox`` voxels, shape (1, n, n)."""
    y, x = np.mgrid[-radius_vox:radius_vox + 1, -radius_vox:radius_vox + 1]
    return (x * x + y * y <= radius_vox * radius_vox + 0.5)[None]


def grow_stable(seed: np.ndarray, image: np.ndarray, *, spacing: tuple[float, float, float],
                volume_ml: tuple[float, float], margin_mm: float = 45.0, steps: int = 30,
                open_mm: float = 6.0, smooth_mm: float = 1.5) -> np.ndarray | None:
    """The localised region grown to the most stable threshold of plausible volume.

    The image is smoothed in-plane (``smooth_mm``) inside the seed's box plus
    ``margin_mm``. Lower thresholds ``t`` fall in ``steps`` from the seed's 25th percentile
    to the median of its surroundings (10-25 mm outside it: mostly fat); the upper bound
    is 1.25 times the seed's 95th percentile (urine, a lymphocele and bowel fluid are
    brighter than the kidney on T2). At each ``t`` the voxels in ``[t, upper]``, opened by
    an in-plane disk of ``open_mm`` (cutting the necks to touching bowel loops), form
    components; those meeting the seed are the region. Its volume ``V(t)`` is kept; the
    chosen ``t`` is, among those with ``V`` in ``volume_ml``, the one where ``V`` changes
    least relative to itself between the neighbouring thresholds (a maximally stable
    region: the whole kidney, before the region leaks into the fat around it).

    Parameters
    ----------
    seed : numpy.ndarray
        Boolean (z, y, x) localised region.
    image : numpy.ndarray
        The (bias-corrected) volume on the same grid.
    spacing : tuple of float
        Voxel spacing (z, y, x), mm.
    volume_ml : tuple of float
        Plausible kidney volumes.
    margin_mm, steps, open_mm, smooth_mm : float or int
        See above.

    Returns
    -------
    numpy.ndarray or None
        Boolean region (holes filled slice by slice), or ``None`` when no threshold gives a
        region of plausible volume or the seed is empty.
    """
    if not seed.any():
        return None
    box = box_around(seed, margin_mm=margin_mm, spacing_zyx=spacing)
    inside = seed[box]
    smooth = ndi.gaussian_filter(image[box].astype(np.float32),
                                 (0.0, smooth_mm / spacing[1], smooth_mm / spacing[2]))
    distance = ndi.distance_transform_edt(~inside, sampling=spacing)
    shell = (distance > 10.0) & (distance < 25.0) & (smooth > 0.3 * np.median(smooth[inside]))
    if not shell.any():
        return None
    top = float(np.percentile(smooth[inside], 25))
    low = float(np.median(smooth[shell]))
    upper = 1.25 * float(np.percentile(smooth[inside], 95))
    structure = _disk(max(1, int(round(open_mm / spacing[1]))))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volumes: list[float] = []
    regions: list[np.ndarray] = []
    for t in np.linspace(top, low, steps):
        labels, _ = ndi.label(ndi.binary_opening((smooth >= t) & (smooth <= upper),
                                                 structure=structure))
        hit = np.unique(labels[inside & (labels > 0)])
        region = np.isin(labels, hit[hit > 0])
        volumes.append(float(region.sum()) * voxel_ml)
        regions.append(region)
        if volumes[-1] > 2.0 * volume_ml[1]:
            break
    best: tuple[float, int] | None = None
    for k in range(1, len(volumes) - 1):
        if volume_ml[0] <= volumes[k] <= volume_ml[1]:
            change = (volumes[k + 1] - volumes[k - 1]) / volumes[k]
            if best is None or change < best[0]:
                best = (change, k)
    if best is None:
        return None
    chosen = regions[best[1]]
    for k in range(chosen.shape[0]):
        chosen[k] = ndi.binary_fill_holes(chosen[k])
    out = np.zeros(seed.shape, dtype=bool)
    out[box] = chosen
    return out


def _choose(labels: np.ndarray, *, reference: np.ndarray, seed: np.ndarray,
            spacing: tuple[float, float, float], expected_volume_ml: tuple[float, float]
            ) -> tuple[np.ndarray, bool]:
    """The qualifying candidate covering most of the localised region ``seed``, or the
    grown seed when none covers enough of it; and whether the clustering gave it."""
    candidates = rank_candidates(labels, dce=reference, spacing_zyx=spacing,
                                 expected_volume_ml=expected_volume_ml)
    n_seed = max(int(seed.sum()), 1)

    def coverage(c: Any) -> float:
        return float(np.count_nonzero(c.mask & seed)) / n_seed

    def key(c: Any) -> float:
        precision = float(np.count_nonzero(c.mask & seed)) / max(int(c.mask.sum()), 1)
        return coverage(c) + 0.5 * precision + 0.25 * c.score

    qualifying = [c for c in candidates if c.rejected is None and coverage(c) >= _MIN_COVERAGE]
    if qualifying:
        return max(qualifying, key=key).mask, True
    return grow_seed(seed, reference, spacing=spacing, max_ml=expected_volume_ml[1]), False


def segment_graft_nocontrast(
    reference: sitk.Image,
    extras: Sequence[Sequence[sitk.Image]] = (),
    *,
    config: GraftConfig = GraftConfig(),
    localise: LocaliseConfig = LocaliseConfig(),
    extra_margin_mm: float = 10.0,
    reference_is_t2: bool = True,
    device: str = "cpu",
    progress: Progress | None = None,
) -> NoContrastResult:
    """Segment the kidney graft on a non-contrast MR study (see the module notes).

    Parameters
    ----------
    reference : SimpleITK.Image
        The sequence whose grid the mask is on (the T2, or a T1 image without T2).
    extras : sequence of sequences of SimpleITK.Image
        Further sequences, grouped by acquisition (e.g. the four Dixon images as one
        group): each group is registered once, through its first image, to the reference.
    config : GraftConfig
        Method settings (clustering, working grid, margins, gates).
    localise : LocaliseConfig
        Settings of the localisation.
    extra_margin_mm : float
        Added to ``config.roi_margin_mm`` around the localised region, which may hold
        only part of the kidney (its medulla, on T2).
    reference_is_t2 : bool
        The reference is a T2: its localised candidates are grown and the one most like
        a whole graft is the kidney (T2 alone) or the seed of the clustering (with
        further channels). ``False`` (a T1 reference, fat brighter than the kidney): the
        localisation's best candidate seeds the clustering.
    device : str
        Torch device of the clustering.
    progress : callable, optional
        ``progress(iteration, loss, n_labels)`` during the clustering.

    Returns
    -------
    NoContrastResult
        The mask on the reference grid and what led to it.

    Raises
    ------
    ValueError
        Nothing that looks like a kidney, a constant volume, or no cluster qualifying
        as the kidney (the message says why each was rejected).
    """
    timer = StepTimer()
    lap = timer.lap
    timings = timer.seconds

    # A T2 (or a T1 alone): a coarse bias field keeps the kidney's contrast to the fat
    # around it, which the fine (8-level) field, fitted through the kidney, flattens.
    gentle = reference_is_t2 or not extras
    levels = (_GENTLE_N4_LEVELS if gentle else _FULL_N4_LEVELS) if config.n4 else None
    fixed, found = localise_image(reference, config=localise, n4_levels=levels)
    spacing = image_spacing_zyx(fixed)
    arr = sitk.GetArrayViewFromImage(fixed)
    if not found:
        raise ValueError("no region looks like a kidney graft (localisation found none)")
    margin = config.roi_margin_mm + extra_margin_mm - localise.margin_mm
    lap("localise")  # with the reference's N4
    chosen = (_grow_best(found[:_GROWN_CANDIDATES], arr, spacing=spacing)
              if reference_is_t2 or not extras else None)
    if chosen is not None:
        best, grown, likeness = chosen
        grown = grow_to_edge(grown, arr, spacing=spacing)
        box = box_around(grown | best.mask, margin_mm=config.roi_margin_mm,
                         spacing_zyx=spacing)
        roi = RegionOfInterest(start=tuple(b.start for b in box),
                               stop=tuple(b.stop for b in box),
                               touches_edge=best.roi.touches_edge)
        if not extras:
            lap("selection")
            return NoContrastResult(mask=grown, roi=roi, localised=best,
                                    working_spacing_zyx=spacing, working_shape=roi.shape,
                                    clustering=None, channels=1, from_clusters=False,
                                    timings_s=timings, likeness=likeness)
        seed_full = grown
    else:
        best, likeness = found[0], None
        roi = _grow_roi(best.roi, margin_mm=margin, spacing=spacing, shape=arr.shape)
        seed_full = best.mask
    crops = [_crop(fixed, roi)]
    for group in extras:
        first = sitk.Cast(group[0], sitk.sitkFloat32)
        moving = n4_correct(first) if config.n4 else first
        lap("n4")
        registration = register_t2_to_dce(fixed, moving, roi=roi, deformable=config.deformable)
        crops.append(_crop(registration.t2_on_dce, roi))
        for other in group[1:]:
            resampled = sitk.Resample(sitk.Cast(other, sitk.sitkFloat32), fixed,
                                      registration.transform, sitk.sitkLinear, 0.0,
                                      sitk.sitkFloat32)
            crops.append(_crop(resampled, roi))
        lap("registration")
    grid = working_spacing(roi.shape, spacing, config.working_voxels)
    coarse = [_to_grid(image, grid) for image in crops]
    channels = np.stack([sitk.GetArrayFromImage(image) for image in coarse])
    clustering = cluster_volume(channels, config=config.clustering, device=device,
                                progress=progress)
    lap("clustering")
    seed_crop = sitk.GetImageFromArray(roi.crop(seed_full).astype(np.float32))
    seed_crop.CopyInformation(crops[0])
    seed = sitk.GetArrayFromImage(_to_grid(seed_crop, grid)) >= 0.5
    kidney, from_clusters = _choose(clustering.labels, reference=channels[0], seed=seed,
                                    spacing=grid, expected_volume_ml=config.expected_volume_ml)
    if from_clusters or chosen is None:
        mask = finish_kidney(kidney, channels, coarse=coarse[0], crop=crops[0], grid=grid,
                             roi=roi, shape=arr.shape,
                             config=replace(config, foreign_separation=_UNENHANCED_SEPARATION))
    else:  # no cluster holds the grown T2 region: the region itself, as on a T2 alone
        mask = seed_full
    lap("selection")
    return NoContrastResult(mask=mask, roi=roi, localised=best, working_spacing_zyx=grid,
                            working_shape=(int(channels.shape[1]), int(channels.shape[2]),
                                           int(channels.shape[3])),
                            clustering=clustering, channels=int(channels.shape[0]),
                            from_clusters=from_clusters, timings_s=timings,
                            likeness=likeness)
