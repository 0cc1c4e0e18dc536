"""Marker-controlled 3D watershed baseline (paper Table 1, reference [6]).

Inside the region of interest:

1. Gaussian-smoothed gradient magnitude, with sigma in mm and derivatives in mm, so thick
   slices are neither over-smoothed nor given steeper edges than they have.
2. Otsu threshold of the smoothed intensities; the largest bright component (holes
   filled) is the kidney candidate.
3. Object marker: the core of that component, the voxels at least half of its maximal
   inner distance (in mm) from its surface. Thin attached vessels have no core.
4. Background marker: the faces of the ROI, dark voxels (smoothed intensity below the mean
   of the dark Otsu class) and the other bright components (separate vessels).
5. ``SimpleITK.MorphologicalWatershedFromMarkers`` floods the gradient from both markers;
   the object basin, holes filled, is the result.

:func:`grow_by_watershed` is the same flooding from a given seed (a localised kidney,
:mod:`models.mr_localise`) instead of the brightest component.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.components import (
    _as_spacing,
    box_around,
    fill_holes,
    label_components,
    largest_component,
)
from models.otsu import otsu_threshold
from models.roi import RegionOfInterest

__all__ = ["grow_by_watershed", "segment_watershed"]

_OBJECT = 1
_BACKGROUND = 2


def _to_image(array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(reversed(spacing_zyx)))  # SimpleITK wants (x, y, z)
    return image


def _markers(smooth: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Object (1) / background (2) marker array of the ROI; 0 elsewhere."""
    bright = smooth > otsu_threshold(smooth)
    labels, n = label_components(bright)
    if n == 0:
        raise ValueError("no voxel above the Otsu threshold of the smoothed ROI")
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    kidney = fill_holes(labels == int(np.argmax(sizes)))
    depth = ndi.distance_transform_edt(kidney, sampling=spacing_zyx)
    core = depth >= 0.5 * float(depth.max())

    dark_values = smooth[~bright]
    background = bright & ~kidney  # other bright structures: separate vessels
    if dark_values.size:
        background |= smooth < float(dark_values.mean())
    background[[0, -1], :, :] = True  # the faces of the ROI
    background[:, [0, -1], :] = True
    background[:, :, [0, -1]] = True
    markers = np.zeros(smooth.shape, dtype=np.uint8)
    markers[background] = _BACKGROUND
    markers[core] = _OBJECT  # the object marker wins where they overlap
    return markers


def segment_watershed(
    volume: np.ndarray,
    roi: RegionOfInterest,
    *,
    spacing_zyx: tuple[float, float, float],
    sigma_mm: float = 1.5,
) -> np.ndarray:
    """Segment the kidney with a marker-controlled 3D watershed inside the ROI.

    Parameters
    ----------
    volume : numpy.ndarray
        3D (z, y, x) contrast-enhanced volume.
    roi : RegionOfInterest
        Box from :func:`models.roi.detect_roi`; everything happens inside it.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x).
    sigma_mm : float
        Standard deviation of the Gaussian smoothing and of the gradient, in mm.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the shape of ``volume``: the object basin with its holes filled,
        False outside the ROI.

    Raises
    ------
    ValueError
        If the ROI does not fit in the volume or is thinner than 4 voxels, the spacing or
        sigma is invalid, or the ROI intensities are constant or not finite.
    """
    spacing = _as_spacing(spacing_zyx)
    if not (np.isfinite(sigma_mm) and sigma_mm > 0):
        raise ValueError(f"sigma_mm must be a positive finite number, got {sigma_mm!r}")
    arr = np.asarray(volume)
    crop = roi.crop(arr).astype(np.float32)
    if min(crop.shape) < 4:
        raise ValueError(
            f"ROI {roi.start}-{roi.stop} is {crop.shape} voxels: the recursive Gaussian "
            "needs at least 4 voxels along every axis"
        )
    if not np.isfinite(crop).all():
        raise ValueError(f"ROI {roi.start}-{roi.stop} holds NaN or infinite intensities")
    if crop.min() == crop.max():
        raise ValueError(
            f"cannot segment ROI {roi.start}-{roi.stop}: all intensities equal {crop.min():g}"
        )
    image = _to_image(crop, spacing)
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_mm))
    gradient = sitk.GradientMagnitudeRecursiveGaussian(image, sigma_mm)
    try:
        markers = _markers(smooth, spacing)
    except ValueError as exc:
        raise ValueError(f"watershed markers in ROI {roi.start}-{roi.stop}: {exc}") from exc
    marker_image = _to_image(markers, spacing)
    basins = sitk.MorphologicalWatershedFromMarkers(
        gradient, marker_image, markWatershedLine=False, fullyConnected=False
    )
    kidney = fill_holes(sitk.GetArrayFromImage(basins) == _OBJECT)
    return roi.embed(kidney, shape=arr.shape)


def grow_by_watershed(
    volume: np.ndarray,
    seed: np.ndarray,
    *,
    spacing_zyx: tuple[float, float, float],
    reach_mm: float = 60.0,
    dark_fraction: float = 0.35,
    grow_mm: float = 12.5,
    sigma_mm: float = 1.5,
) -> np.ndarray:
    """The whole organ around ``seed`` by a marker-controlled watershed of the gradient.

    A localised kidney is often only part of the organ (one intensity window: the cortex,
    or the medulla beside the sinus). Within a box of the seed plus ``reach_mm``:

    * object marker: the seed eroded by one voxel, extended to the voxels within
      ``grow_mm`` of it that are connected to it and lie in its intensity range (its 25th
      percentile to 1.3 times its 95th), so the flood starts in the parenchyma and not
      only behind the sinus's edges;
    * background marker: the faces of the box, voxels farther than ``reach_mm`` from the
      seed and voxels darker than ``dark_fraction`` times the seed's median;
    * the Gaussian gradient magnitude (``sigma_mm``) is flooded from both; the object
      basin, its largest component with holes filled slice by slice and in 3D, is the
      result.

    Parameters
    ----------
    volume : numpy.ndarray
        3D (z, y, x) image, ideally bias-field corrected.
    seed : numpy.ndarray
        Boolean mask of part of the organ, same shape.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x).

    Returns
    -------
    numpy.ndarray
        Boolean mask of the shape of ``volume``.

    Raises
    ------
    ValueError
        If the seed is empty or its shape differs from the volume's.
    """
    spacing = _as_spacing(spacing_zyx)
    arr = np.asarray(volume, dtype=np.float32)
    seed = np.asarray(seed, dtype=bool)
    if seed.shape != arr.shape or not seed.any():
        raise ValueError("the seed must be a non-empty mask of the volume's shape")
    box = box_around(seed, margin_mm=reach_mm, spacing_zyx=spacing, extra_vox=1)
    crop = arr[box]
    inside = seed[box]
    image = _to_image(np.ascontiguousarray(crop), spacing)
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_mm))
    gradient = sitk.GradientMagnitudeRecursiveGaussian(image, sigma_mm)
    core = ndi.binary_erosion(inside, structure=ndi.generate_binary_structure(3, 1))
    if not core.any():
        core = inside
    low = float(np.percentile(smooth[inside], 25))
    high = 1.3 * float(np.percentile(smooth[inside], 95))
    distance = ndi.distance_transform_edt(~inside, sampling=spacing)
    labels, _ = ndi.label(((distance <= grow_mm) & (smooth >= low) & (smooth <= high)) | core)
    hit = np.unique(labels[core])
    core = np.isin(labels, hit[hit > 0])
    background = (smooth < dark_fraction * float(np.median(smooth[inside]))) | (
        distance > reach_mm)
    for axis in range(3):
        background.swapaxes(0, axis)[[0, -1]] = True
    markers = np.zeros(crop.shape, dtype=np.uint8)
    markers[background] = _BACKGROUND
    markers[core] = _OBJECT
    basins = sitk.MorphologicalWatershedFromMarkers(
        gradient, _to_image(markers, spacing), markWatershedLine=False, fullyConnected=False)
    organ = sitk.GetArrayFromImage(basins) == _OBJECT
    organ = largest_component(organ)
    for k in range(organ.shape[0]):
        organ[k] = ndi.binary_fill_holes(organ[k])
    out = np.zeros(arr.shape, dtype=bool)
    out[box] = fill_holes(organ)
    return out
