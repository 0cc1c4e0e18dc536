"""Outlines of a segment in image pixel coordinates: for the SR's spatial reference and the
RTSTRUCT's contours.

OHIF 3.13 shows a TID 1500 measurement only when its group (or a group with the same
Tracking Unique Identifier) holds a SCOORD or SCOORD3D; a volume referenced only through a
SEG segment makes its SR reader throw. :func:`largest_slice_outline` gives the closed
outline, in image pixel coordinates, of a segment where it is largest, for a TID 1410
"Image Region" beside the TID 1411 group; :func:`slice_outlines` gives every part on every
slice, for RT Structure Set contours.
"""

from __future__ import annotations

from dataclasses import dataclass

import contourpy
import numpy as np
from scipy import ndimage as ndi

__all__ = ["SliceOutline", "largest_slice_outline", "slice_outlines"]

#: At most this many points in an outline (every k-th point of the traced boundary kept).
MAX_POINTS = 256


@dataclass(frozen=True)
class SliceOutline:
    """Closed outline on slice ``z``: ``points`` is (n, 2) column, row in DICOM SCOORD
    convention ((0, 0) is the top left corner of the top left pixel, so a pixel's centre
    is at +0.5), first point repeated last."""

    z: int
    points: np.ndarray


def _outer_boundary(plane: np.ndarray) -> np.ndarray | None:
    """Closed outer boundary (column, row; pixel centres at integers) of the largest
    connected part of boolean ``plane``, traced half-way between inside and outside."""
    labels, n = ndi.label(plane)
    if n == 0:
        return None
    sizes = ndi.sum(plane, labels, np.arange(1, n + 1))
    part = labels == (int(np.argmax(sizes)) + 1)
    # One background pixel around it, so every boundary closes.
    padded = np.pad(ndi.binary_fill_holes(part), 1).astype(np.float64)
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate,
                                        ).lines(0.5)
    if not lines:
        return None
    outline = max(lines, key=len) - 1.0  # undo the padding
    if not np.allclose(outline[0], outline[-1]):
        outline = np.vstack([outline, outline[:1]])
    return outline


def _decimate(points: np.ndarray, most: int) -> np.ndarray:
    if len(points) <= most:
        return points
    step = int(np.ceil((len(points) - 1) / (most - 1)))
    kept = points[:-1:step]
    return np.vstack([kept, kept[:1]])


def slice_outlines(mask: np.ndarray, *, most: int = MAX_POINTS) -> list[SliceOutline]:
    """The outer outline of every connected part of boolean (z, y, x) ``mask`` on every
    slice (holes filled: a kidney's outline holds its sinus)."""
    found = []
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        labels, n = ndi.label(mask[z])
        for part in range(1, n + 1):
            boundary = _outer_boundary(labels == part)
            if boundary is not None and len(boundary) >= 4:
                found.append(SliceOutline(z=int(z), points=_decimate(boundary, most) + 0.5))
    return found


def largest_slice_outline(mask: np.ndarray, *, most: int = MAX_POINTS) -> SliceOutline | None:
    """The outline of boolean (z, y, x) ``mask`` on the slice where it covers most pixels;
    ``None`` for an empty mask."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    if not areas.any():
        return None
    z = int(np.argmax(areas))
    boundary = _outer_boundary(mask[z])
    if boundary is None or len(boundary) < 4:
        return None
    return SliceOutline(z=z, points=_decimate(boundary, most) + 0.5)
