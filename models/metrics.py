"""Overlap, distance and volume metrics between a predicted and a reference mask (paper §5).

Conventions for empty masks: two empty masks agree perfectly (Dice, precision and recall
1.0, HD95 0.0); an empty prediction against a non-empty reference, or the reverse, scores
0.0 for the overlaps and ``inf`` for HD95 (there is no surface to reach). The volume
difference is undefined for an empty reference and raises.

HD95 variant
------------
The surface of a mask is its voxels with at least one of their 6 face neighbours outside
the mask (voxels on the border of the array count as surface). The distance of each
surface voxel of one mask to the nearest surface voxel of the other is taken, in mm, from
an exact Euclidean distance transform with ``sampling=spacing_zyx``; the distances of
both directions are pooled and their 95th percentile (linear interpolation,
``numpy.percentile``'s default) is the HD95. This is the definition of MedPy's ``hd95``,
common in the evaluation literature; it differs from taking the larger of the two
directed 95th percentiles (as the ``surface-distance`` package does) when the directions
disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from models.components import FACE_CONNECTIVITY, _as_mask, _as_spacing
from models.volume import mask_volume_ml

__all__ = ["dice", "hd95", "precision", "recall", "volume_difference_pct"]


def _pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    first = _as_mask(a, names[0], ndim=None)
    second = _as_mask(b, names[1], ndim=None)
    if first.shape != second.shape:
        raise ValueError(
            f"{names[0]} shape {first.shape} does not match {names[1]} shape {second.shape}"
        )
    return first, second


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient ``2|A∩B| / (|A| + |B|)``.

    Parameters
    ----------
    a, b : numpy.ndarray
        Boolean masks of the same shape (any number of dimensions).

    Returns
    -------
    float
        Value in [0, 1]; 1.0 when both masks are empty.

    Raises
    ------
    ValueError
        If a mask is not boolean or the shapes differ.
    """
    first, second = _pair(a, b, ("a", "b"))
    total = int(np.count_nonzero(first)) + int(np.count_nonzero(second))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(first & second)) / total


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Precision (positive predictive value) ``|P∩T| / |P|``.

    Parameters
    ----------
    pred : numpy.ndarray
        Predicted boolean mask.
    truth : numpy.ndarray
        Reference boolean mask of the same shape.

    Returns
    -------
    float
        Value in [0, 1]; with an empty prediction, 1.0 if ``truth`` is empty too, else 0.0.

    Raises
    ------
    ValueError
        If a mask is not boolean or the shapes differ.
    """
    p, t = _pair(pred, truth, ("pred", "truth"))
    n_pred = int(np.count_nonzero(p))
    if n_pred == 0:
        return 1.0 if not t.any() else 0.0
    return int(np.count_nonzero(p & t)) / n_pred


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Recall (sensitivity) ``|P∩T| / |T|``.

    Parameters
    ----------
    pred : numpy.ndarray
        Predicted boolean mask.
    truth : numpy.ndarray
        Reference boolean mask of the same shape.

    Returns
    -------
    float
        Value in [0, 1]; with an empty reference, 1.0 if ``pred`` is empty too, else 0.0.

    Raises
    ------
    ValueError
        If a mask is not boolean or the shapes differ.
    """
    p, t = _pair(pred, truth, ("pred", "truth"))
    n_truth = int(np.count_nonzero(t))
    if n_truth == 0:
        return 1.0 if not p.any() else 0.0
    return int(np.count_nonzero(p & t)) / n_truth


def volume_difference_pct(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing_zyx: tuple[float, float, float],
    signed: bool = False,
) -> float:
    """Percentage of kidney volume difference (PKVD) ``100 |V_pred - V_truth| / V_truth``.

    Parameters
    ----------
    pred : numpy.ndarray
        Predicted boolean (z, y, x) mask.
    truth : numpy.ndarray
        Reference boolean (z, y, x) mask of the same shape.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x), shared by both masks.
    signed : bool
        Return ``100 (V_pred - V_truth) / V_truth`` instead, positive for an
        over-segmentation. The paper reports the absolute value (the default).

    Returns
    -------
    float
        The difference in percent of the reference volume.

    Raises
    ------
    ValueError
        If a mask is not a 3D boolean mask, the shapes differ, the spacing is invalid or
        ``truth`` is empty (the percentage is undefined).
    """
    p, t = _pair(pred, truth, ("pred", "truth"))
    v_truth = mask_volume_ml(t, spacing_zyx)
    v_pred = mask_volume_ml(p, spacing_zyx)
    if v_truth == 0:
        raise ValueError("volume difference is undefined: the truth mask is empty")
    difference = 100.0 * (v_pred - v_truth) / v_truth
    return difference if signed else abs(difference)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or outside the array)."""
    eroded = ndi.binary_erosion(mask, structure=FACE_CONNECTIVITY, border_value=0)
    return mask & ~eroded


def hd95(pred: np.ndarray, truth: np.ndarray, *, spacing_zyx: Sequence[float]) -> float:
    """Hausdorff distance at the 95th percentile, in mm (see the module notes).

    Parameters
    ----------
    pred : numpy.ndarray
        Predicted boolean (z, y, x) mask.
    truth : numpy.ndarray
        Reference boolean (z, y, x) mask of the same shape.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x), shared by both masks.

    Returns
    -------
    float
        95th percentile of the pooled symmetric surface distances in mm; 0.0 when both
        masks are empty, ``math.inf`` when exactly one is.

    Raises
    ------
    ValueError
        If a mask is not a 3D boolean mask, the shapes differ or the spacing is invalid.
    """
    p, t = _pair(pred, truth, ("pred", "truth"))
    if p.ndim != 3:
        raise ValueError(f"pred and truth must be 3D (z, y, x) masks, got shape {p.shape}")
    spacing = _as_spacing(spacing_zyx)
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p or has_t):
        return 0.0
    if not (has_p and has_t):
        return math.inf
    # Distances between surface voxels only depend on the voxels of both masks: work in
    # their joint bounding box, one voxel wider (where the array allows) so that the
    # surfaces are those of the whole array.
    index = np.nonzero(p | t)
    box = tuple(slice(max(0, int(ix.min()) - 1), int(ix.max()) + 2) for ix in index)
    surface_p, surface_t = _surface(p[box]), _surface(t[box])
    to_t = ndi.distance_transform_edt(~surface_t, sampling=spacing)
    to_p = ndi.distance_transform_edt(~surface_p, sampling=spacing)
    distances = np.concatenate((to_t[surface_p], to_p[surface_t]))
    return float(np.percentile(distances, 95))
