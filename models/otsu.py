"""Otsu thresholding baseline (paper Table 1, reference [15]).

The threshold is computed on the intensities inside the region of interest only and the
voxels above it, inside the region, form the mask. As in the paper no post-processing is
applied: no largest component, no hole filling. Its false positives (vessels, any other
bright tissue in the box) are what this baseline is there to show.
"""

from __future__ import annotations

import numpy as np

from models.roi import RegionOfInterest

__all__ = ["otsu_threshold", "segment_otsu"]


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance.

    Parameters
    ----------
    values : numpy.ndarray
        Intensities, any shape; NaN and infinite values are ignored.
    bins : int
        Number of histogram bins between the minimum and the maximum.

    Returns
    -------
    float
        Threshold ``t``: the upper class is ``values > t``. It is the upper edge of the
        last bin of the lower class.

    Raises
    ------
    ValueError
        If there is no finite value, the values are constant, or ``bins < 2``.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise ValueError("cannot compute an Otsu threshold: no finite intensity")
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        raise ValueError(f"cannot compute an Otsu threshold: all intensities equal {lo:g}")
    counts, edges = np.histogram(flat, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)
    weight_high = flat.size - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    sum_high = float((counts * centres).sum()) - sum_low
    with np.errstate(divide="ignore", invalid="ignore"):
        between = weight_low * weight_high * (sum_low / weight_low - sum_high / weight_high) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    # On a plateau of equal scores take its middle, as the reference implementations do.
    best = np.flatnonzero(between == between.max())
    cut = int(best[len(best) // 2])
    return float(edges[cut + 1])


def segment_otsu(volume: np.ndarray, roi: RegionOfInterest) -> np.ndarray:
    """Segment the kidney as the voxels above Otsu's threshold inside the ROI.

    Parameters
    ----------
    volume : numpy.ndarray
        3D (z, y, x) contrast-enhanced volume.
    roi : RegionOfInterest
        Box from :func:`models.roi.detect_roi`; the threshold is computed inside it.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the shape of ``volume``, False outside the ROI.

    Raises
    ------
    ValueError
        If the ROI does not fit in the volume or its intensities are constant.
    """
    arr = np.asarray(volume)
    crop = roi.crop(arr).astype(np.float64, copy=False)
    try:
        threshold = otsu_threshold(crop)
    except ValueError as exc:
        raise ValueError(f"Otsu segmentation inside ROI {roi.start}-{roi.stop}: {exc}") from exc
    inside = np.zeros(crop.shape, dtype=bool)
    np.greater(crop, threshold, out=inside, where=np.isfinite(crop))
    return roi.embed(inside, shape=arr.shape)
