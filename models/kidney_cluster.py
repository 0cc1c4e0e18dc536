"""Choosing the kidney among the clusters of :func:`models.feature_clustering.cluster_volume`.

The paper (§2.2) only says that "the kidney class can easily be obtained by selecting the
first connected component class". The clustering gives an unordered set of labels, so the
choice is made explicit here, on the region of interest of §2.1 (a box around the graft):

1. **Components.** Every label is split into its 6-connected components. For each
   component the number of voxel faces it shares with every other component, and with the
   border of the box, is counted.
2. **Seeds.** The largest component of each label is a seed. Seeds larger than the
   maximal expected volume are dropped (growing only adds voxels).
3. **Growing** (cortex and medulla may fall in different labels). A seed that *enhances*
   (its mean DCE intensity is at least the median of the box) grows: a component of
   another label is added to it when it is *mostly enclosed* by it (at least half of its
   boundary faces are shared with the seed; faces on the border of the box count as not
   shared), it enhances too, it is not larger than the seed, and it is not much brighter
   than the seed (its mean DCE above the box median at most 1.5 times the seed's): a dim
   partial-volume rim around the kidney encloses it but must not swallow it, while the
   cortex takes in the medulla whichever is brighter in the phase. Repeated until nothing
   changes, so a pyramid enclosed by cortex and medulla together is added too. A vessel
   touching the kidney at one end, or the background around it, is not mostly enclosed
   and is never added; a dark seed such as the background, which encloses everything,
   does not grow. A component that *enhances like the seed* (its mean DCE within
   ``_SIMILAR`` of the seed's, relative to the seed's height above the box median) and
   shares at least ``_TOUCHING_FRACTION`` of its boundary with it (a fifth: the cut
   face of a half ellipsoid is about a quarter of its boundary) is added too, though not
   enclosed: the clustering sometimes splits one tissue, the cortex, into two labels of
   equal enhancement side by side, and the kidney then came out at half its size
   (stability benchmark, seed 3019: 68 ml of 129). Then the largest component is kept and
   its holes are filled: this is the candidate.
4. **Gates.** A candidate qualifies if its volume lies in ``expected_volume_ml``, the
   mean DCE intensity of its grown components (before hole filling, which would let the
   background enclose the kidney) is above the mean of the box (the graft enhances) and
   its compactness (below) is at least 0.2.
   A qualifying candidate with at least 90 % of its voxels inside a larger qualifying
   candidate that grew over its label (the medulla inside the kidney grown from the
   cortex) is a part of it and is dropped; one that is only inside another's filled
   holes (the kidney inside a rim of partial-volume voxels) stays a rival, and so does
   one that enhances clearly more than the larger one's seed (its mean DCE above the box
   median more than ``1 + _SIMILAR`` times the seed's): the larger one is then a dimmer
   tissue wrapped around it, such as the partial-volume rim of a kidney whose renal
   sinus gives that rim as much surface as the kidney (synthetic grafts with a sinus,
   seed 3102: a rim 1.496 times dimmer than the kidney, just inside ``_MAX_BRIGHTER``,
   grew over it and hid it).
5. **Score** of a qualifying candidate, each term in [0, 1]::

       0.5 * compactness + 0.25 * centrality + 0.25 * enhancement

   * *compactness*: the fraction of the candidate's *outline* that survives a
     morphological opening by a ball (in mm) of half the radius of the sphere of the same
     volume as the candidate; the outline is the candidate closed by that ball (its
     concavities narrower than the ball filled). Scaled to the candidate's own size it
     does not depend on the anatomy's absolute size: a sphere keeps everything, an
     ellipsoid with kidney-like axes nearly everything, and a tube longer than about 5
     diameters (a vessel) nothing, closed or not. The outline, not the mask, because a
     real kidney's parenchyma wraps around its renal sinus: with the sinus fat outside
     the mask the parenchyma is a shell about 15-20 mm thick, in which no such ball fits
     (synthetic grafts with a sinus: 0.00 survived, and three of six studies were lost).
     On a single slice (the 2D variant, :func:`select_kidney_slices`) the disc of the
     same area replaces the sphere, and the mask is opened as it is. As in
     :func:`models.components.binary_erosion`, a candidate cut by the border of the box
     is not eroded from the cut;
   * *centrality*: ``1 - d`` where ``d`` is the distance of the centroid from the centre
     of the box, each axis scaled by the box's half-extent, divided by ``sqrt(3)`` (0 at
     the centre, 1 at a corner). The box of §2.1 is centred on the graft;
   * *enhancement*: ``(mean_k - mean_box) / max_c (mean_c - mean_box)`` over the
     qualifying candidates left: 1 for the brightest. Vessels are often brighter than the
     kidney, which is why this term weighs less than compactness.

The qualifying candidate with the highest score is the kidney; with none,
:func:`select_kidney` raises :class:`ValueError` listing why each was rejected.

Vessels attached to the kidney
------------------------------
The renal artery and vein at the hilum often enhance like the parenchyma and fall in the
kidney's cluster. :func:`prune_tubes` cuts them off the chosen mask: an opening by a
ball of ``radius_mm`` (default 6 mm, wider than a renal vein) removes every part thinner
than the ball, the largest component of what is left is the kidney body, and the voxels
of the mask within ``radius_mm`` of that body are given back (a geodesic reconstruction
limited to one ball, or to one voxel along an axis whose voxels are longer than the
radius, such as 7.7 mm slices), so the kidney's own border is kept and only a stub of each
vessel, at most one radius long, remains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse

from models.components import (
    _as_mask,
    _as_spacing,
    binary_closing,
    binary_dilation,
    binary_opening,
    fill_holes,
    label_components,
    largest_component,
)
from models.volume import mask_volume_ml

__all__ = [
    "KidneyCandidate",
    "prune_tubes",
    "rank_candidates",
    "select_kidney",
    "select_kidney_slices",
]

_ENCLOSED_FRACTION = 0.5
#: A component enhancing like the seed is added when it shares this much of its boundary.
_TOUCHING_FRACTION = 0.2
#: "Enhancing like the seed": mean DCE within this share of the seed's height above the
#: box median.
_SIMILAR = 0.1
#: A grown component may be at most this many times as far above the box median as the seed.
_MAX_BRIGHTER = 1.5
_CONTAINED_FRACTION = 0.9
_MIN_COMPACTNESS = 0.2
_OPENING_SCALE = 0.5
_WEIGHTS = (0.5, 0.25, 0.25)  # compactness, centrality, enhancement


@dataclass(frozen=True)
class KidneyCandidate:
    """One seed label grown into a kidney candidate, with the terms of its score.

    Attributes
    ----------
    label : int
        Cluster label of the seed component.
    merged_labels : tuple of int
        Labels of the components added while growing (sorted, without ``label``).
    mask : numpy.ndarray
        Boolean (z, y, x) mask of the candidate: grown, largest component, holes filled.
    volume_ml : float
        Volume of ``mask``.
    mean_dce : float
        Mean DCE intensity of the grown components, before hole filling.
    compactness : float
        Fraction of the volume surviving the scaled opening (see the module notes).
    centrality : float
        ``1 -`` the normalised distance of the centroid to the centre of the box.
    enhancement : float
        Mean DCE above the box mean, relative to the brightest qualifying candidate;
        0 for a rejected candidate.
    score : float
        Weighted score; 0 for a rejected candidate.
    rejected : str or None
        Why the candidate does not qualify, or None when it does.
    """

    label: int
    merged_labels: tuple[int, ...]
    mask: np.ndarray
    volume_ml: float
    mean_dce: float
    compactness: float
    centrality: float
    enhancement: float
    score: float
    rejected: str | None


@dataclass(frozen=True)
class _Components:
    """All 6-connected components of all labels, with their face contacts."""

    ids: np.ndarray  # int32 (z, y, x): component id of every voxel
    label_of: np.ndarray  # (M,) cluster label of each component
    size: np.ndarray  # (M,) voxels
    mean_dce: np.ndarray  # (M,)
    contacts: sparse.csr_matrix  # (M, M) shared faces, symmetric, zero diagonal
    boundary: np.ndarray  # (M,) faces with other components or the box border


def _components(labels: np.ndarray, dce: np.ndarray) -> _Components:
    ids = np.empty(labels.shape, dtype=np.int32)
    label_of: list[int] = []
    for value in np.unique(labels):
        comp, n = label_components(labels == value)
        inside = comp > 0
        ids[inside] = comp[inside] - 1 + len(label_of)
        label_of += [int(value)] * n
    m = len(label_of)
    flat = ids.ravel()
    size = np.bincount(flat, minlength=m).astype(np.float64)
    mean_dce = np.bincount(flat, weights=dce.ravel(), minlength=m) / size

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    border = np.zeros(m, dtype=np.float64)
    for axis in range(3):
        lo = np.take(ids, np.arange(ids.shape[axis] - 1), axis=axis)
        hi = np.take(ids, np.arange(1, ids.shape[axis]), axis=axis)
        differ = lo != hi
        rows += [lo[differ], hi[differ]]
        cols += [hi[differ], lo[differ]]
        for index in (0, ids.shape[axis] - 1):
            face = np.take(ids, index, axis=axis)
            border += np.bincount(face.ravel(), minlength=m)
    i = np.concatenate(rows)
    j = np.concatenate(cols)
    contacts = sparse.csr_matrix(
        (np.ones(i.size, dtype=np.float64), (i, j)), shape=(m, m)
    )  # duplicates are summed: face counts
    boundary = np.asarray(contacts.sum(axis=1)).ravel() + border
    return _Components(
        ids=ids,
        label_of=np.asarray(label_of, dtype=np.int64),
        size=size,
        mean_dce=mean_dce,
        contacts=contacts,
        boundary=boundary,
    )


def _grow(seed: int, comps: _Components, *, enhancing: np.ndarray, median: float) -> np.ndarray:
    """Boolean (M,) selection: the seed plus the enhancing components it mostly encloses."""
    selected = np.zeros(comps.size.size, dtype=bool)
    selected[seed] = True
    height = comps.mean_dce[seed] - median
    enhancing = enhancing & (comps.mean_dce - median <= _MAX_BRIGHTER * height)
    alike = np.abs(comps.mean_dce - comps.mean_dce[seed]) <= _SIMILAR * height
    while True:
        shared = comps.contacts @ selected.astype(np.float64)
        enclosed = shared >= _ENCLOSED_FRACTION * comps.boundary
        touching = alike & (shared >= _TOUCHING_FRACTION * comps.boundary)
        volume = comps.size[selected].sum()
        add = ~selected & (enclosed | touching) & enhancing & (comps.size <= volume)
        if not add.any():
            return selected
        selected |= add


def _box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty mask, one voxel wider where the array allows."""
    index = np.nonzero(mask)
    bounds = [
        slice(max(0, int(ix.min()) - 1), min(n, int(ix.max()) + 2))
        for ix, n in zip(index, mask.shape, strict=True)
    ]
    return bounds[0], bounds[1], bounds[2]


def _compactness(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    box = _box(mask)
    crop = mask[box]
    n = int(np.count_nonzero(crop))
    if mask.shape[0] == 1:  # a single slice (the 2D variant): the disc of the same area
        radius_mm = _OPENING_SCALE * math.sqrt(n * spacing[1] * spacing[2] / math.pi)
    else:
        voxel_mm3 = spacing[0] * spacing[1] * spacing[2]
        radius_mm = _OPENING_SCALE * (3.0 * n * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    radius_vox = radius_mm / min(spacing)
    if mask.shape[0] > 1:  # the outline: the candidate alone, closed by the same ball
        crop = binary_closing(crop, radius_vox=radius_vox, spacing_zyx=spacing,
                              background_beyond=True)
    opened = binary_opening(crop, radius_vox=radius_vox, spacing_zyx=spacing)
    return int(np.count_nonzero(opened)) / int(np.count_nonzero(crop))


def _centrality(mask: np.ndarray) -> float:
    shape = np.asarray(mask.shape, dtype=np.float64)
    centroid = np.array([ix.mean() for ix in np.nonzero(mask)])
    offset = (centroid - (shape - 1.0) / 2.0) / (shape / 2.0)
    return max(0.0, 1.0 - float(np.sqrt(np.sum(offset**2) / 3.0)))


def _check_inputs(
    labels: np.ndarray,
    dce: np.ndarray,
    spacing_zyx: Sequence[float],
    expected_volume_ml: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple[float, float]]:
    lab = np.asarray(labels)
    if lab.ndim != 3 or lab.size == 0 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(
            f"labels must be a non-empty 3D (z, y, x) integer array, got shape {lab.shape} "
            f"and dtype {lab.dtype}"
        )
    image = np.asarray(dce)
    if image.shape != lab.shape:
        raise ValueError(f"dce shape {image.shape} does not match labels shape {lab.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"dce must hold real intensities, got dtype {image.dtype}")
    image = image.astype(np.float64, copy=False)
    if not np.isfinite(image).all():
        raise ValueError("dce holds NaN or infinite intensities")
    spacing = _as_spacing(spacing_zyx)
    try:
        low, high = (float(v) for v in expected_volume_ml)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"expected_volume_ml must be (min, max) in ml, got {expected_volume_ml!r}"
        ) from exc
    if not (math.isfinite(high) and 0 <= low < high):
        raise ValueError(
            f"expected_volume_ml must satisfy 0 <= min < max < inf, got {expected_volume_ml!r}"
        )
    return lab, image, spacing, (low, high)


def rank_candidates(
    labels: np.ndarray,
    *,
    dce: np.ndarray,
    spacing_zyx: Sequence[float],
    expected_volume_ml: tuple[float, float] = (20.0, 600.0),
) -> list[KidneyCandidate]:
    """Grow, gate and score a kidney candidate from every label (see the module notes).

    Parameters
    ----------
    labels : numpy.ndarray
        Integer (z, y, x) cluster map of the region of interest.
    dce : numpy.ndarray
        DCE intensities of the same region, same shape.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x).
    expected_volume_ml : tuple of float
        Plausible graft volume ``(min, max)`` in ml.

    Returns
    -------
    list of KidneyCandidate
        Qualifying candidates by decreasing score, then the rejected ones by label. Seeds
        larger than ``max`` are not listed.

    Raises
    ------
    ValueError
        If the inputs are not as described.
    """
    lab, image, spacing, (low, high) = _check_inputs(labels, dce, spacing_zyx, expected_volume_ml)
    comps = _components(lab, image)
    box_mean = float(image.mean())
    median = float(np.median(image))
    enhancing = comps.mean_dce >= median
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0

    candidates: list[KidneyCandidate] = []
    seed_height: dict[int, float] = {}
    for value in np.unique(comps.label_of):
        members = np.flatnonzero(comps.label_of == value)
        seed = int(members[np.argmax(comps.size[members])])
        seed_height[int(value)] = float(comps.mean_dce[seed]) - median
        if comps.size[seed] * voxel_ml > high:
            continue
        if enhancing[seed]:
            selected = _grow(seed, comps, enhancing=enhancing, median=median)
        else:  # a dark seed (e.g. the background) would swallow what it surrounds
            selected = np.arange(comps.size.size) == seed
        grown = largest_component(selected[comps.ids])
        mask = fill_holes(grown)
        volume = mask_volume_ml(mask, spacing)
        mean = float(image[grown].mean())  # before filling, see the module notes
        compact = _compactness(mask, spacing)
        rejected = None
        if not low <= volume <= high:
            rejected = f"volume {volume:.1f} ml outside [{low:g}, {high:g}] ml"
        elif mean <= box_mean:
            rejected = f"not enhancing: mean DCE {mean:.4g} <= ROI mean {box_mean:.4g}"
        elif compact < _MIN_COMPACTNESS:
            rejected = (
                f"not compact: {compact:.2f} of its volume survives the opening "
                f"(< {_MIN_COMPACTNESS})"
            )
        merged = sorted({int(v) for v in comps.label_of[selected]} - {int(value)})
        candidates.append(
            KidneyCandidate(
                label=int(value),
                merged_labels=tuple(merged),
                mask=mask,
                volume_ml=volume,
                mean_dce=mean,
                compactness=compact,
                centrality=_centrality(mask),
                enhancement=0.0,
                score=0.0,
                rejected=rejected,
            )
        )

    # A qualifying candidate lying inside a larger qualifying one (the medulla inside the
    # kidney grown from the cortex) is a part of it, not a rival; unless it enhances
    # clearly more than the larger one's seed (a dimmer rim wrapped around it).
    qualifying = [k for k, c in enumerate(candidates) if c.rejected is None]
    for k in qualifying:
        inner = candidates[k]
        for other in (candidates[j] for j in qualifying if j != k):
            if (other.rejected is None and other.volume_ml > inner.volume_ml
                    and inner.label in other.merged_labels
                    and inner.mean_dce - median <= (1.0 + _SIMILAR) * seed_height[other.label]):
                overlap = np.count_nonzero(inner.mask & other.mask)
                if overlap >= _CONTAINED_FRACTION * np.count_nonzero(inner.mask):
                    rejected = f"inside the candidate of label {other.label}"
                    candidates[k] = replace(inner, rejected=rejected)
                    break

    brightest = max((c.mean_dce - box_mean for c in candidates if c.rejected is None), default=0.0)
    for k, c in enumerate(candidates):
        if c.rejected is None:
            enhancement = (c.mean_dce - box_mean) / brightest
            terms = (c.compactness, c.centrality, enhancement)
            score = sum(w * t for w, t in zip(_WEIGHTS, terms, strict=True))
            candidates[k] = replace(c, enhancement=enhancement, score=score)
    candidates.sort(key=lambda c: (c.rejected is not None, -c.score, c.label))
    return candidates


def prune_tubes(
    mask: np.ndarray, *, spacing_zyx: Sequence[float], radius_mm: float = 6.0
) -> np.ndarray:
    """Cut tubes thinner than ``radius_mm`` (vessels at the hilum) off a kidney mask.

    Returns the mask unchanged when the opening would leave nothing (a structure thinner
    than the ball everywhere, which then is not a kidney-sized organ anyway).
    """
    arr = _as_mask(mask)
    spacing = _as_spacing(spacing_zyx)
    if not (np.isfinite(radius_mm) and radius_mm > 0):
        raise ValueError(f"radius_mm must be a positive number, got {radius_mm!r}")
    radius_vox = radius_mm / min(spacing)
    body = binary_opening(arr, radius_vox=radius_vox, spacing_zyx=spacing)
    if not body.any():
        return arr
    body = largest_component(body)
    # Give back within one ball, but at least one voxel along every axis: on slices
    # thicker than the ball, the small pole sections of the organ would otherwise be lost.
    reach_vox = max(radius_mm, max(spacing)) / min(spacing)
    return arr & binary_dilation(body, radius_vox=reach_vox, spacing_zyx=spacing)


def select_kidney(
    labels: np.ndarray,
    *,
    dce: np.ndarray,
    spacing_zyx: Sequence[float],
    expected_volume_ml: tuple[float, float] = (20.0, 600.0),
) -> np.ndarray:
    """The kidney mask: the best-scoring qualifying candidate of :func:`rank_candidates`.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer (z, y, x) cluster map of the region of interest, e.g.
        ``ClusteringResult.labels``.
    dce : numpy.ndarray
        DCE intensities of the same region, same shape.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x).
    expected_volume_ml : tuple of float
        Plausible graft volume ``(min, max)`` in ml.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the shape of ``labels``: one 6-connected component without holes.

    Raises
    ------
    ValueError
        If the inputs are invalid or no candidate qualifies; the message lists each
        label and why it was rejected.
    """
    candidates = rank_candidates(
        labels, dce=dce, spacing_zyx=spacing_zyx, expected_volume_ml=expected_volume_ml
    )
    if candidates and candidates[0].rejected is None:
        return _as_mask(candidates[0].mask)
    reasons = "; ".join(f"label {c.label}: {c.rejected}" for c in candidates)
    if not reasons:
        reasons = f"the largest component of every label exceeds {expected_volume_ml[1]:g} ml"
    raise ValueError(f"no cluster qualifies as the kidney: {reasons}")


def select_kidney_slices(
    labels: np.ndarray,
    *,
    dce: np.ndarray,
    spacing_zyx: Sequence[float],
    min_area_mm2: float = 100.0,
) -> np.ndarray:
    """The kidney of the slice-wise 2D variant: one choice per slice, then in 3D.

    The labels of :func:`models.feature_clustering.cluster_slices` mean something only
    within their slice, so the choice of :func:`rank_candidates` is made on every slice
    alone (its components, growing, gates and score, in the plane of the slice; the
    volume gate becomes an area of at least ``min_area_mm2``). The chosen regions of all
    slices are stacked; the largest 3D component, holes filled, is the kidney.

    Raises
    ------
    ValueError
        If the inputs are invalid or no slice has a qualifying candidate.
    """
    lab = np.asarray(labels)
    spacing = _as_spacing(spacing_zyx)
    if lab.ndim != 3:
        raise ValueError(f"labels must be a 3D (z, y, x) array, got shape {lab.shape}")
    slab_ml = min_area_mm2 * spacing[0] / 1000.0
    image = np.asarray(dce)
    if image.shape != lab.shape:
        raise ValueError(f"dce shape {image.shape} does not match labels shape {lab.shape}")
    whole_slice_ml = lab.shape[1] * lab.shape[2] * math.prod(spacing) / 1000.0
    chosen = np.zeros(lab.shape, dtype=bool)
    for k in range(lab.shape[0]):
        if np.ptp(image[k]) == 0:
            continue  # nothing on this slice
        ranked = rank_candidates(lab[k:k + 1], dce=image[k:k + 1], spacing_zyx=spacing,
                                 expected_volume_ml=(slab_ml, 2.0 * whole_slice_ml))
        if ranked and ranked[0].rejected is None:
            chosen[k] = ranked[0].mask[0]
    if not chosen.any():
        raise ValueError("no slice has a cluster that qualifies as the kidney")
    return fill_holes(largest_component(chosen))
