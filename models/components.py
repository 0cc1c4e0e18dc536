"""Shared binary-mask maths: connected components, hole filling, spherical morphology.

All arrays are numpy in (z, y, x) order, as returned by ``SimpleITK.GetArrayFromImage``.

Connectivity
------------
Connected components use **6-connectivity** (voxels sharing a face). DCE volumes have
slices 2-3 times thicker than their pixels, so a diagonal neighbour across slices can be
2.7 mm away; face connectivity is the conservative choice that keeps a kidney and a vessel
touching it only at a corner apart. Hole filling uses the same face-connected structure for
the background, so a cavity that reaches the outside only through a diagonal gap still
counts as a hole and is filled.

Spherical morphology
--------------------
Dilation and erosion by a ball are computed exactly from Euclidean distance transforms
(``dist <= r`` / ``dist > r``, ITK's Maurer transform), which costs O(N) whatever the
radius, instead of one pass per structuring-element voxel. The ball is ``{o : |o| <= r}``,
the same set as :func:`ball`. When a spacing is given the ball is a sphere in millimetres
whose radius is ``r`` voxels of the finest axis, so it spans fewer slices along a coarse
axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

__all__ = [
    "FACE_CONNECTIVITY",
    "ball",
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_opening",
    "box_around",
    "close_in_background",
    "dilate_by",
    "erode_by",
    "fill_holes",
    "label_components",
    "largest_component",
]

FACE_CONNECTIVITY: np.ndarray = ndi.generate_binary_structure(3, 1)
"""3x3x3 structuring element of the 6-connectivity used for all components."""
FACE_CONNECTIVITY.setflags(write=False)


def _as_mask(mask: np.ndarray, name: str = "mask", *, ndim: int | None = 3) -> np.ndarray:
    """Return ``mask`` as a boolean array, refusing anything that is not clearly binary.

    Integer arrays holding only 0 and 1 are accepted and converted; floats are refused so a
    probability map is never thresholded silently at 0.5.
    """
    arr = np.asarray(mask)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}D (z, y, x) array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(f"{name} must be a boolean mask, got dtype {arr.dtype}")


def _as_spacing(spacing_zyx: Sequence[float]) -> tuple[float, float, float]:
    """Validate a (z, y, x) voxel spacing in mm and return it as a tuple of floats."""
    try:
        values = tuple(float(s) for s in spacing_zyx)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing_zyx must be 3 numbers in mm, got {spacing_zyx!r}") from exc
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing_zyx must be 3 positive finite mm values, got {spacing_zyx!r}")
    return values[0], values[1], values[2]


def _check_radius(radius_vox: float) -> float:
    radius = float(radius_vox)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius_vox must be a finite number >= 0, got {radius_vox!r}")
    return radius


def _relative_sampling(spacing_zyx: Sequence[float] | None) -> tuple[float, float, float]:
    """Spacing divided by the finest spacing: 1 along the finest axis, >= 1 elsewhere."""
    if spacing_zyx is None:
        return (1.0, 1.0, 1.0)
    spacing = _as_spacing(spacing_zyx)
    finest = min(spacing)
    return (spacing[0] / finest, spacing[1] / finest, spacing[2] / finest)


def _squared_distance_to(mask: np.ndarray, sampling: tuple[float, float, float]) -> np.ndarray:
    """Squared Euclidean distance from every voxel to the nearest True voxel of ``mask``.

    ITK's Maurer transform is exact and several times faster than
    ``scipy.ndimage.distance_transform_edt`` on a full DCE volume. Distances are 0 on the
    mask itself; the outside of the array is ignored.
    """
    image = sitk.GetImageFromArray(mask.view(np.uint8))
    image.SetSpacing((sampling[2], sampling[1], sampling[0]))  # SimpleITK wants (x, y, z)
    distance = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=True, useImageSpacing=True
    )
    squared = sitk.GetArrayFromImage(distance)
    squared[mask] = 0.0  # inside values are negative distances to the contour
    return squared


def ball(radius_vox: int) -> np.ndarray:
    """Spherical structuring element in voxel units.

    Parameters
    ----------
    radius_vox : int
        Radius in voxels, ``>= 0``. ``0`` gives a single voxel.

    Returns
    -------
    numpy.ndarray
        Boolean array of shape ``(2r+1, 2r+1, 2r+1)``, True where ``z² + y² + x² <= r²``.

    Raises
    ------
    ValueError
        If ``radius_vox`` is negative or not an integer.
    """
    if isinstance(radius_vox, bool) or int(radius_vox) != radius_vox or radius_vox < 0:
        raise ValueError(f"radius_vox must be an integer >= 0, got {radius_vox!r}")
    r = int(radius_vox)
    z, y, x = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (z * z + y * y + x * x) <= r * r


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 6-connected components of a 3D mask.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.

    Returns
    -------
    labels : numpy.ndarray
        int32 array, 0 for background and 1..n for the components.
    n : int
        Number of components.

    Raises
    ------
    ValueError
        If ``mask`` is not a 3D boolean mask.
    """
    arr = _as_mask(mask)
    labels, n = ndi.label(arr, structure=FACE_CONNECTIVITY, output=np.int32)
    return labels, int(n)


def largest_component(mask: np.ndarray, support: np.ndarray | None = None, *,
                      structure: np.ndarray = FACE_CONNECTIVITY) -> np.ndarray:
    """Keep the largest component of a mask (6-connected 3D by default).

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean mask with as many dimensions as ``structure``: (z, y, x) by default.
    support : numpy.ndarray, optional
        Boolean mask of the same shape. When given, components are ranked by how many
        ``support`` voxels they contain instead of by their own size (ties go to the bigger
        component). Used to rank components of a morphologically closed mask by the raw
        voxels they hold, so that a bundle of thin structures that closing merged into a
        big blob does not outrank a solid organ.

    structure : numpy.ndarray
        Connectivity (``scipy.ndimage.label``), e.g. a 3 x 3 block of ones for 8-connected
        components of a 2D slice.

    Returns
    -------
    numpy.ndarray
        New boolean mask with only the selected component; all False if ``mask`` is empty.

    Raises
    ------
    ValueError
        If the masks are not boolean masks of ``structure``'s dimension or their shapes
        differ.
    """
    arr = _as_mask(mask, ndim=structure.ndim)
    labels, n = ndi.label(arr, structure=structure, output=np.int32)
    if n == 0:
        return np.zeros_like(arr)
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    score = sizes
    if support is not None:
        sup = _as_mask(support, "support", ndim=structure.ndim)
        if sup.shape != arr.shape:
            raise ValueError(f"support shape {sup.shape} does not match mask shape {arr.shape}")
        hits = np.bincount(labels[sup], minlength=n + 1).astype(np.float64)
        # Rank by support voxels; the size only breaks ties (it is < 1 after scaling).
        score = hits + sizes / (sizes.max() + 1.0)
    score[0] = -1.0
    return labels == int(np.argmax(score))


def box_around(mask: np.ndarray, *, margin_mm: float, spacing_zyx: Sequence[float],
               extra_vox: int = 0) -> tuple[slice, ...]:
    """Slices of ``mask``'s bounding box widened by ``margin_mm`` (rounded up to whole
    voxels per axis) plus ``extra_vox`` voxels, clipped to the array. ``mask`` must not be
    empty."""
    index = np.nonzero(mask)
    return tuple(
        slice(max(0, int(ix.min()) - p), min(n, int(ix.max()) + 1 + p))
        for ix, n, p in zip(index, np.shape(mask),
                            (math.ceil(margin_mm / s) + extra_vox for s in spacing_zyx),
                            strict=True))


def _shifts(structure: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """A symmetric structure's offsets from its centre, and its half-widths."""
    st = np.asarray(structure, dtype=bool)
    if st.ndim != 3 or any(n % 2 == 0 for n in st.shape) or not (st == st[::-1, ::-1, ::-1]).all():
        raise ValueError("structure must be a symmetric 3D array of odd sizes")
    half = tuple(n // 2 for n in st.shape)
    return np.argwhere(st) - np.array(half), half


def _combine(mask: np.ndarray, structure: np.ndarray, *, dilate: bool) -> np.ndarray:
    offsets, half = _shifts(structure)
    padded = np.pad(mask, [(h, h) for h in half], constant_values=False)
    out = np.zeros(mask.shape, dtype=bool) if dilate else np.ones(mask.shape, dtype=bool)
    for dz, dy, dx in offsets:
        view = padded[half[0] + dz:half[0] + dz + mask.shape[0],
                      half[1] + dy:half[1] + dy + mask.shape[1],
                      half[2] + dx:half[2] + dx + mask.shape[2]]
        if dilate:
            out |= view
        else:
            out &= view
    return out


def dilate_by(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_dilation(mask, structure)`` for a symmetric ``structure``, computed as
    an OR of whole-array shifts: the same voxels, several times as fast for a ball on the
    small boxes the CT searches work on by the thousand."""
    return _combine(_as_mask(mask), structure, dilate=True)


def erode_by(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``ndi.binary_erosion(mask, structure)`` (background beyond the array) for a
    symmetric ``structure``, computed as an AND of whole-array shifts."""
    return _combine(_as_mask(mask), structure, dilate=False)


def close_in_background(mask: np.ndarray, radius_vox: int) -> np.ndarray:
    """``mask`` closed by :func:`ball` (``radius_vox``) with background all around it:
    ``ndi.binary_closing`` of ``mask`` padded by ``radius_vox`` of background, cropped
    back (by :func:`dilate_by` and :func:`erode_by`)."""
    arr = _as_mask(mask)
    r = int(radius_vox)
    if r < 0:
        raise ValueError(f"radius_vox must be >= 0, got {radius_vox}")
    if r == 0 or not arr.any():
        return arr.copy()
    structure = ball(r)
    closed = erode_by(dilate_by(np.pad(arr, r), structure), structure)
    return closed[(slice(r, -r),) * 3]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the 3D holes of a mask.

    A hole is a background region that is not face-connected to the border of the array.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.

    Returns
    -------
    numpy.ndarray
        New boolean mask with its enclosed cavities set to True.

    Raises
    ------
    ValueError
        If ``mask`` is not a 3D boolean mask.
    """
    arr = _as_mask(mask)
    # The background's components by one labelling pass: twice as fast as
    # ndi.binary_fill_holes (which propagates from the border by repeated dilation) for
    # the same result.
    labels, n = ndi.label(~arr, structure=FACE_CONNECTIVITY)
    if n == 0:
        return arr.copy()
    faces = [labels[(slice(None),) * axis + (end,)] for axis in range(3) for end in (0, -1)]
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    hole[np.unique(np.concatenate([f.ravel() for f in faces]))] = False
    return arr | hole[labels]


def binary_dilation(
    mask: np.ndarray,
    *,
    radius_vox: float,
    spacing_zyx: Sequence[float] | None = None,
) -> np.ndarray:
    """Dilate a 3D mask by a ball.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.
    radius_vox : float
        Ball radius in voxels of the finest axis, ``>= 0``.
    spacing_zyx : tuple of float, optional
        Voxel spacing in mm. When given the ball is a sphere in mm (see the module notes);
        when omitted it is a ball in voxel units, identical to :func:`ball`.

    Returns
    -------
    numpy.ndarray
        New boolean mask. Nothing is added outside the array.

    Raises
    ------
    ValueError
        If the mask, radius or spacing is invalid.
    """
    arr = _as_mask(mask)
    radius = _check_radius(radius_vox)
    sampling = _relative_sampling(spacing_zyx)
    if radius == 0 or not arr.any() or arr.all():
        return arr.copy()
    return _squared_distance_to(arr, sampling) <= radius * radius


def binary_erosion(
    mask: np.ndarray,
    *,
    radius_vox: float,
    spacing_zyx: Sequence[float] | None = None,
) -> np.ndarray:
    """Erode a 3D mask by a ball, treating the outside of the array as foreground.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.
    radius_vox : float
        Ball radius in voxels of the finest axis, ``>= 0``.
    spacing_zyx : tuple of float, optional
        Voxel spacing in mm; see :func:`binary_dilation`.

    Returns
    -------
    numpy.ndarray
        New boolean mask. An object cut by the field of view is not eroded from the cut,
        only from its visible boundary.

    Raises
    ------
    ValueError
        If the mask, radius or spacing is invalid.
    """
    arr = _as_mask(mask)
    radius = _check_radius(radius_vox)
    sampling = _relative_sampling(spacing_zyx)
    if radius == 0 or not arr.any() or arr.all():
        return arr.copy()
    return _squared_distance_to(~arr, sampling) > radius * radius


def binary_closing(
    mask: np.ndarray,
    *,
    radius_vox: float,
    spacing_zyx: Sequence[float] | None = None,
    background_beyond: bool = False,
) -> np.ndarray:
    """Close a 3D mask with a ball (dilation then erosion).

    The array is first padded by the ball's extent, replicating its border voxels as if the
    anatomy went on beyond the field of view, so the closing acts next to the border as
    it does in the middle (padding with background would leave gaps open where they meet
    the border). With ``background_beyond`` it is padded with background instead: the
    mask is closed as an object on its own, not extended along the border.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.
    radius_vox : float
        Ball radius in voxels of the finest axis, ``>= 0``.
    spacing_zyx : tuple of float, optional
        Voxel spacing in mm; see :func:`binary_dilation`.

    Returns
    -------
    numpy.ndarray
        New boolean mask, a superset of ``mask``.

    Raises
    ------
    ValueError
        If the mask, radius or spacing is invalid.
    """
    arr = _as_mask(mask)
    radius = _check_radius(radius_vox)
    sampling = _relative_sampling(spacing_zyx)
    if radius == 0 or not arr.any():
        return arr.copy()
    pad = [(math.ceil(radius / s) + 1,) * 2 for s in sampling]
    padded = np.pad(arr, pad, mode="constant" if background_beyond else "edge")
    dilated = binary_dilation(padded, radius_vox=radius, spacing_zyx=sampling)
    closed = binary_erosion(dilated, radius_vox=radius, spacing_zyx=sampling)
    inner = tuple(slice(p[0], p[0] + n) for p, n in zip(pad, arr.shape, strict=True))
    return closed[inner] | arr


def binary_opening(
    mask: np.ndarray,
    *,
    radius_vox: float,
    spacing_zyx: Sequence[float] | None = None,
) -> np.ndarray:
    """Open a 3D mask with a ball (erosion then dilation).

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) mask.
    radius_vox : float
        Ball radius in voxels of the finest axis, ``>= 0``.
    spacing_zyx : tuple of float, optional
        Voxel spacing in mm; see :func:`binary_dilation`.

    Returns
    -------
    numpy.ndarray
        New boolean mask, a subset of ``mask``: parts thinner than the ball are removed.

    Raises
    ------
    ValueError
        If the mask, radius or spacing is invalid.
    """
    arr = _as_mask(mask)
    eroded = binary_erosion(arr, radius_vox=radius_vox, spacing_zyx=spacing_zyx)
    return binary_dilation(eroded, radius_vox=radius_vox, spacing_zyx=spacing_zyx) & arr
