"""Physical volume of a segmentation mask."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from models.components import _as_mask, _as_spacing

__all__ = ["image_spacing_zyx", "mask_volume_ml"]


def image_spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing of a 3D SimpleITK image in (z, y, x) order, the order of its array."""
    sx, sy, sz = image.GetSpacing()
    return (float(sz), float(sy), float(sx))


def mask_volume_ml(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """Volume of a mask in millilitres.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.
    spacing_zyx : tuple of float
        Voxel spacing in mm along (z, y, x).

    Returns
    -------
    float
        Number of True voxels times the voxel volume in mm³, divided by 1000.

    Raises
    ------
    ValueError
        If ``mask`` is not a 3D boolean mask or the spacing is not 3 positive values.
    """
    arr = _as_mask(mask)
    sz, sy, sx = _as_spacing(spacing_zyx)
    return int(np.count_nonzero(arr)) * sz * sy * sx / 1000.0
