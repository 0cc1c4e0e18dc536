"""Ensemble inference of the renal-cortex paper: largest component per model, then median.

The paper: "for each image at test time, we thus obtained seven segmentation masks taking
pixel values in [0, 1]. In each mask we only kept the largest connected component [...].
Finally, we aggregated the results by taking the median value for each pixel". Here each
model's probability map is thresholded, its largest connected component found, the
probabilities outside that component set to 0, the median taken pixelwise over the
models, and the median thresholded (strictly above ``threshold``, so with an even number
of models a tie is not cortex).

2D components (the default)
---------------------------
The paper's images were single coronal slices, so its components were 2D; the models
are 2D and see one slice at a time, so the component is taken per model and per slice,
with 8-connectivity (the cortex is a band a few pixels wide, and a diagonal contact
should not split it). A 3D component over the stack of slices (``per_slice=False``,
face-connected) would keep cortex islands that are legitimately separate within a slice
(poles, columns cut tangentially) but is not what the paper measured.

Back to the CT
--------------
:func:`segment_cortex` crops every coronal slice through each kidney
(:mod:`models.cortex_data`), runs every model, aggregates, brings the median probability
back onto the CT grid by linear interpolation, thresholds it there and keeps it within
``kidney_margin_mm`` of that kidney's mask (a crop of 192 mm can show part of the other
kidney).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi
from torch import nn

from models.components import largest_component
from models.cortex_data import (
    crop_around,
    kidney_regions,
    normalise_hu,
    physical_bounds,
    resample_to_crop,
    uncrop,
)
from models.cortex_unet import cortex_probability

__all__ = [
    "aggregate",
    "keep_largest_component",
    "median_of_models",
    "predict_slices",
    "segment_cortex",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def keep_largest_component(prob: np.ndarray, *, threshold: float = 0.5,
                           per_slice: bool = True) -> np.ndarray:
    """Zero a probability map outside the largest component of ``prob > threshold``.

    Parameters
    ----------
    prob : numpy.ndarray
        ``(H, W)`` slice or ``(S, H, W)`` stack of probabilities.
    threshold : float
        Foreground is ``prob > threshold``.
    per_slice : bool
        True: 2D, 8-connected components per slice (the paper). False: one 3D,
        face-connected component over the stack.

    Returns
    -------
    numpy.ndarray
        float32 copy of ``prob``, 0 outside the kept component (all 0 where nothing
        exceeds the threshold).
    """
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim not in (2, 3):
        raise ValueError(f"prob must be 2D or 3D, got shape {p.shape}")
    fg = p > threshold
    if p.ndim == 2:
        keep = largest_component(fg, structure=_EIGHT)
    elif per_slice:
        keep = np.stack([largest_component(s, structure=_EIGHT) for s in fg])
    else:
        keep = largest_component(fg)
    return np.where(keep, p, np.float32(0.0))


def median_of_models(probs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Pixelwise median over the models (axis 0), as float32."""
    arr = np.asarray(probs, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"expected (models, ...) probabilities, got shape {arr.shape}")
    return np.median(arr, axis=0).astype(np.float32)


def aggregate(probs: np.ndarray | Sequence[np.ndarray], *, threshold: float = 0.5,
              per_slice: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Largest component per model, pixelwise median, threshold.

    Parameters
    ----------
    probs : numpy.ndarray
        ``(models, H, W)`` or ``(models, S, H, W)`` probabilities.
    threshold, per_slice
        See :func:`keep_largest_component`.

    Returns
    -------
    median : numpy.ndarray
        float32 median of the component-filtered maps.
    mask : numpy.ndarray
        Boolean ``median > threshold``.
    """
    arr = np.asarray(probs, dtype=np.float32)
    filtered = [keep_largest_component(p, threshold=threshold, per_slice=per_slice)
                for p in arr]
    median = median_of_models(filtered)
    return median, median > threshold


def predict_slices(models: Sequence[nn.Module], slices: np.ndarray, *,
                   batch_size: int = 8, device: str | torch.device = "cpu") -> np.ndarray:
    """Probabilities of every model on a stack of normalised slices.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        Networks returning logits (:class:`models.cortex_unet.CortexUNet`), on ``device``.
    slices : numpy.ndarray
        ``(S, H, W)`` slices in [0, 1].
    batch_size : int
        Slices per forward pass. Batches go in channels-last layout: with channels-last
        weights (:func:`service.cortex.model_files.load_cortex_ensemble`) a width-8 network
        ran 144 slices in 0.9 s on this 2-core CPU against 2.3 s contiguous in batches of 16.
    device : str or torch.device
        Where the slices are sent.

    Returns
    -------
    numpy.ndarray
        ``(models, S, H, W)`` float32 probabilities.
    """
    arr = np.asarray(slices, dtype=np.float32)
    out = np.zeros((len(models), *arr.shape), dtype=np.float32)
    for m, model in enumerate(models):
        for start in range(0, arr.shape[0], batch_size):
            batch = torch.from_numpy(arr[start:start + batch_size, None]).to(
                device, memory_format=torch.channels_last)
            out[m, start:start + batch_size] = cortex_probability(model, batch)[:, 0].cpu()
    return out


def segment_cortex(ct: sitk.Image, kidneys: sitk.Image, models: Sequence[nn.Module], *,
                   size: int = 192, spacing_mm: float = 1.0, threshold: float = 0.5,
                   kidney_margin_mm: float = 3.0, per_slice: bool = True,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Cortex of each kidney on the CT grid, by the ensemble.

    Parameters
    ----------
    ct : SimpleITK.Image
        CT in HU.
    kidneys : SimpleITK.Image
        Kidney labels on the CT grid (e.g. 1 = right, 2 = left).
    models : sequence of torch.nn.Module
        The ensemble.
    size, spacing_mm : int, float
        Crop side and pixel size the models were trained with.
    threshold, per_slice
        See :func:`aggregate`.
    kidney_margin_mm : float
        Cortex is kept within this distance of its kidney's mask.
    device : str or torch.device
        Where the models run.

    Returns
    -------
    numpy.ndarray
        uint8 ``(z, y, x)`` array on the CT grid: each kidney's cortex carries its kidney
        label, 0 elsewhere.
    """
    out = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    labels = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(kidneys)) if v != 0]
    for label, region in zip(labels, kidney_regions(kidneys, kidneys), strict=True):
        crop = crop_around(*physical_bounds(region), size=size, spacing_mm=spacing_mm,
                           grid=ct)
        slices = normalise_hu(resample_to_crop(ct, crop))
        median, _ = aggregate(predict_slices(models, slices, device=device),
                              threshold=threshold, per_slice=per_slice)
        box, near_region = _near_box(region, kidney_margin_mm)
        cortex = uncrop(median, crop, near_region) > threshold
        dist = sitk.SignedMaurerDistanceMap(near_region, insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=True)
        near = sitk.GetArrayViewFromImage(dist) <= kidney_margin_mm
        view = out[box]
        view[cortex & near & (view == 0)] = label
    return out


def _near_box(region: sitk.Image, margin_mm: float
              ) -> tuple[tuple[slice, slice, slice], sitk.Image]:
    """The part of ``region``'s grid within ``margin_mm`` of its mask's bounding box.

    Returns the ``(z, y, x)`` slices of that box in the full array and the region cut to
    it. The whole mask lies inside the box, so distances to the mask computed on the cut
    image equal those on the full grid, and every voxel left out is farther than the
    margin: the cortex step then touches a few million voxels instead of a whole
    thin-slice CT.
    """
    arr = sitk.GetArrayViewFromImage(region)
    found = ndi.find_objects(np.asarray(arr != 0, dtype=np.uint8))
    bounds = found[0] if found else tuple(slice(0, 1) for _ in arr.shape)
    pads = [int(np.ceil(margin_mm / s)) + 1 for s in reversed(region.GetSpacing())]
    box = tuple(slice(max(b.start - p, 0), min(b.stop + p, n))
                for b, p, n in zip(bounds, pads, arr.shape, strict=True))
    cut = sitk.RegionOfInterest(region, [b.stop - b.start for b in reversed(box)],
                                [b.start for b in reversed(box)])
    return box, cut
