"""Inputs of the cortex network: HU window, coronal crops around a kidney, augmentation.

Coronal frame
-------------
The paper's images are coronal CT slices of 192 x 192 pixels at 1 x 1 mm, cropped around
the kidney. A CT volume is brought to that frame by resampling it (SimpleITK, physical
space) onto a patient-aligned grid, so the orientation comes from the image's direction
matrix and never from the array's index order. In LPS patient coordinates the crop grid's
axes are

* columns: ``+x``, from the patient's right to their left (radiological display);
* rows: ``-z``, from head to feet;
* slices: ``+y``, from anterior to posterior (the anterior-posterior axis is the slice axis).

Arrays in that frame are ``(slice, row, column)``, as ``SimpleITK.GetArrayFromImage``
returns them. A crop is centred on the physical bounding box of a kidney mask (its centre
falls on pixel ``(96, 96)``), holds every coronal slice that crosses the box (plus a
margin), and is padded with air (-1024 HU, 0 after normalisation) and background where it
leaves the CT's field of view. :func:`uncrop` resamples values from the crop back onto the
CT grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

__all__ = [
    "CORONAL_DIRECTION",
    "HU_WINDOW",
    "AugmentConfig",
    "CoronalCrop",
    "augment_pair",
    "case_slices",
    "crop_around",
    "kidney_regions",
    "normalise_hu",
    "physical_bounds",
    "resample_to_crop",
    "uncrop",
]

HU_WINDOW: tuple[float, float] = (-150.0, 200.0)
"""The paper's intensity window in HU, rescaled to [0, 1]."""

CORONAL_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0,
                                        0.0, 0.0, 1.0,
                                        0.0, -1.0, 0.0)
"""SimpleITK direction (row-major; column j = axis j in LPS) of the coronal crop grid."""

AIR_HU = -1024.0


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """Clip HU to :data:`HU_WINDOW` and rescale to [0, 1] (float32)."""
    lo, hi = HU_WINDOW
    return ((np.clip(np.asarray(hu, dtype=np.float32), lo, hi) - lo) / (hi - lo)).astype(
        np.float32)


@dataclass(frozen=True)
class CoronalCrop:
    """A coronal crop grid in patient space.

    Attributes
    ----------
    origin : tuple of float
        LPS position in mm of pixel ``(0, 0)`` of slice 0.
    size : tuple of int
        ``(columns, rows, slices)``, SimpleITK order.
    spacing_mm : float
        Pixel size and slice distance in mm.
    """

    origin: tuple[float, float, float]
    size: tuple[int, int, int]
    spacing_mm: float = 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(slices, rows, columns)``."""
        return self.size[2], self.size[1], self.size[0]

    def as_dict(self) -> dict[str, object]:
        """Plain values (JSON-friendly)."""
        return {"origin": list(self.origin), "size": list(self.size),
                "spacing_mm": self.spacing_mm, "direction": list(CORONAL_DIRECTION)}


def physical_bounds(mask: sitk.Image, label: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (mm) of the voxel centres of a mask or of one label of it.

    Parameters
    ----------
    mask : SimpleITK.Image
        Integer label or binary image.
    label : int, optional
        Only this label; all non-zero voxels when omitted.

    Returns
    -------
    lo, hi : numpy.ndarray
        Smallest and largest LPS coordinates (x, y, z) of the selected voxel centres.

    Raises
    ------
    ValueError
        If no voxel is selected.
    """
    arr = sitk.GetArrayViewFromImage(mask)
    sel = arr != 0 if label is None else arr == label
    idx = np.argwhere(sel)
    if idx.size == 0:
        raise ValueError(f"mask has no voxel {'!= 0' if label is None else f'== {label}'}")
    zyx_lo, zyx_hi = idx.min(axis=0), idx.max(axis=0)
    corners = [(float(x), float(y), float(z)) for z in (zyx_lo[0], zyx_hi[0])
               for y in (zyx_lo[1], zyx_hi[1]) for x in (zyx_lo[2], zyx_hi[2])]
    points = np.array([mask.TransformContinuousIndexToPhysicalPoint(c) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def crop_around(lo: np.ndarray, hi: np.ndarray, *, size: int = 192, spacing_mm: float = 1.0,
                slice_margin_mm: float = 0.0, grid: sitk.Image | None = None) -> CoronalCrop:
    """Coronal crop of ``size`` x ``size`` pixels centred on an LPS box.

    Parameters
    ----------
    lo, hi : numpy.ndarray
        LPS corners of the box (:func:`physical_bounds`).
    size : int
        Rows and columns of each slice.
    spacing_mm : float
        Pixel size and slice distance.
    slice_margin_mm : float
        Extra anterior and posterior extent beyond the box.
    grid : SimpleITK.Image, optional
        When given, the centre is moved to the nearest voxel centre of this image, so that
        the crop's pixels fall on its voxel centres when it has 1 mm axis-aligned voxels
        (and a crop-uncrop round trip is then exact).

    Returns
    -------
    CoronalCrop
        Box centre on pixel ``(size // 2, size // 2)``; slices from the box's anterior side
        (less the margin) to its posterior side (plus the margin).
    """
    if size < 1 or spacing_mm <= 0 or slice_margin_mm < 0:
        raise ValueError(f"size >= 1, spacing_mm > 0, slice_margin_mm >= 0 expected, got "
                         f"{size}, {spacing_mm}, {slice_margin_mm}")
    centre = (np.asarray(lo, float) + np.asarray(hi, float)) / 2.0
    if grid is not None:
        index = np.round(grid.TransformPhysicalPointToContinuousIndex(centre.tolist()))
        centre = np.array(grid.TransformContinuousIndexToPhysicalPoint(index.tolist()))
    half = (size // 2) * spacing_mm
    y0 = float(lo[1]) - slice_margin_mm
    n_slices = int(math.floor((float(hi[1]) + slice_margin_mm - y0) / spacing_mm + 1e-6)) + 1
    origin = (float(centre[0]) - half, y0, float(centre[2]) + half)
    return CoronalCrop(origin=origin, size=(size, size, n_slices), spacing_mm=spacing_mm)


def _crop_reference(crop: CoronalCrop) -> sitk.Image:
    ref = sitk.Image([int(s) for s in crop.size], sitk.sitkUInt8)
    ref.SetOrigin(crop.origin)
    ref.SetSpacing((crop.spacing_mm,) * 3)
    ref.SetDirection(CORONAL_DIRECTION)
    return ref


def resample_to_crop(image: sitk.Image, crop: CoronalCrop, *, label: bool = False
                     ) -> np.ndarray:
    """Resample a CT (linear, air outside) or a mask (nearest, 0 outside) onto a crop.

    Parameters
    ----------
    image : SimpleITK.Image
        CT in HU, or an integer mask.
    crop : CoronalCrop
        Target grid.
    label : bool
        True for masks: nearest neighbour and the mask's own pixel type.

    Returns
    -------
    numpy.ndarray
        ``(slices, rows, columns)``: float32 HU, or the mask's integer type.
    """
    if label:
        out = sitk.Resample(image, _crop_reference(crop), sitk.Transform(),
                            sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    else:
        out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), _crop_reference(crop),
                            sitk.Transform(), sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def uncrop(values: np.ndarray, crop: CoronalCrop, reference: sitk.Image, *,
           label: bool = False) -> np.ndarray:
    """Bring crop-grid values back onto a CT grid (the inverse of :func:`resample_to_crop`).

    Parameters
    ----------
    values : numpy.ndarray
        ``crop.shape`` array (probabilities, or a mask when ``label``).
    crop : CoronalCrop
        The grid ``values`` lives on.
    reference : SimpleITK.Image
        The CT whose grid the result takes.
    label : bool
        Nearest neighbour (masks) instead of linear interpolation.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` array on the reference grid, 0 outside the crop; float32, or the
        input's dtype when ``label``.
    """
    arr = np.asarray(values)
    if arr.shape != crop.shape:
        raise ValueError(f"values shape {arr.shape} does not match crop shape {crop.shape}")
    src = sitk.GetImageFromArray(arr if label else arr.astype(np.float32))
    src.SetOrigin(crop.origin)
    src.SetSpacing((crop.spacing_mm,) * 3)
    src.SetDirection(CORONAL_DIRECTION)
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(src, reference, sitk.Transform(), interp, 0, src.GetPixelID())
    return sitk.GetArrayFromImage(out)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation (the paper names the kinds, not the amounts)."""

    max_shift_px: float = 10.0
    max_rotation_deg: float = 15.0
    zoom: tuple[float, float] = (0.9, 1.1)
    noise_sigma: float = 0.02
    max_brightness: float = 0.05
    contrast: tuple[float, float] = (0.9, 1.1)


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 config: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Randomly translate, rotate, zoom, add noise, shift brightness and contrast.

    The geometric transform (about the slice centre) is applied identically to the image
    (linear) and the mask (nearest); noise, brightness and contrast touch the image only,
    which is clipped back to [0, 1]. New pixels are 0 (air / background).

    Parameters
    ----------
    image : numpy.ndarray
        2D normalised slice in [0, 1].
    mask : numpy.ndarray
        2D binary mask, same shape.
    rng : numpy.random.Generator
        Source of every random draw (the result is a function of the rng's state).
    config : AugmentConfig, optional
        Ranges; the defaults when omitted.

    Returns
    -------
    image, mask : numpy.ndarray
        float32 image and uint8 mask.
    """
    cfg = config or AugmentConfig()
    img = np.asarray(image, dtype=np.float32)
    msk = np.asarray(mask)
    if img.ndim != 2 or img.shape != msk.shape:
        raise ValueError(f"image and mask must be 2D of one shape, got {img.shape}, {msk.shape}")
    angle = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    zoom = rng.uniform(*cfg.zoom)
    shift = rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, size=2)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    matrix = np.array([[cos, -sin], [sin, cos]])
    centre = (np.array(img.shape) - 1) / 2.0
    offset = centre - matrix @ centre - shift
    img = ndi.affine_transform(img, matrix, offset, order=1, mode="constant", cval=0.0)
    msk = ndi.affine_transform(msk.astype(np.uint8), matrix, offset, order=0,
                               mode="constant", cval=0)
    contrast = rng.uniform(*cfg.contrast)
    brightness = rng.uniform(-cfg.max_brightness, cfg.max_brightness)
    noise = rng.normal(0.0, cfg.noise_sigma, size=img.shape) if cfg.noise_sigma > 0 else 0.0
    mean = float(img.mean())
    img = (img - mean) * contrast + mean + brightness + noise
    return np.clip(img, 0.0, 1.0).astype(np.float32), msk.astype(np.uint8)


def kidney_regions(cortex: sitk.Image, kidneys: sitk.Image | None = None
                   ) -> list[sitk.Image]:
    """One binary image per kidney: each label of ``kidneys``, else cortex components.

    Without a kidney mask the kidneys are the 3D (face-connected) components of the cortex
    mask holding at least 10 % of the largest one's voxels, at most two, largest first.
    """
    if kidneys is not None:
        arr = sitk.GetArrayViewFromImage(kidneys)
        labels = [int(v) for v in np.unique(arr) if v != 0]
        regions = [sitk.Cast(kidneys == v, sitk.sitkUInt8) for v in labels]
    else:
        cc = sitk.ConnectedComponent(sitk.Cast(cortex != 0, sitk.sitkUInt8), False)
        cc = sitk.RelabelComponent(cc)  # 1 = largest
        sizes = np.bincount(sitk.GetArrayViewFromImage(cc).ravel())[1:]
        keep = [i + 1 for i, n in enumerate(sizes[:2]) if n >= 0.1 * sizes[0]]
        regions = [sitk.Cast(cc == v, sitk.sitkUInt8) for v in keep]
    return regions


def case_slices(ct: sitk.Image, cortex: sitk.Image, kidneys: sitk.Image | None = None, *,
                size: int = 192, spacing_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Training slices of one case: every coronal slice through each kidney.

    Parameters
    ----------
    ct : SimpleITK.Image
        CT in HU.
    cortex : SimpleITK.Image
        Cortex mask on the same physical space (non-zero = cortex).
    kidneys : SimpleITK.Image, optional
        Kidney labels (1 = right, 2 = left) used to place the crops; see
        :func:`kidney_regions` when omitted.
    size, spacing_mm : int, float
        Crop side in pixels and pixel size.

    Returns
    -------
    images, masks : numpy.ndarray
        ``(N, size, size)`` normalised float32 slices and their uint8 cortex masks (all
        the cortex in view, whichever kidney it belongs to).
    """
    images, masks = [], []
    cortex01 = sitk.Cast(cortex != 0, sitk.sitkUInt8)
    for region in kidney_regions(cortex, kidneys):
        crop = crop_around(*physical_bounds(region), size=size, spacing_mm=spacing_mm,
                           grid=ct)
        inside = resample_to_crop(region, crop, label=True).reshape(crop.shape[0], -1).any(1)
        images.append(normalise_hu(resample_to_crop(ct, crop))[inside])
        masks.append(resample_to_crop(cortex01, crop, label=True)[inside])
    if not images:
        return (np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    return np.concatenate(images), np.concatenate(masks).astype(np.uint8)
