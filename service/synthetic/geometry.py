"""Voxel grids of the synthetic series and the patient's motion between them.

:class:`VolumeGeometry` is a series' voxel grid in patient space (mm, DICOM LPS), built for
an :class:`Orientation` and centred as :class:`GridCentre` says. :class:`RigidMotion` and
:class:`SmoothDeformation` move the patient between the T2 and the DCE (see "T2
misalignment" in :mod:`service.synthetic.phantom`). ``_SampleGrid`` tells the renderer
where a grid's voxels sample the anatomy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from service.synthetic.shapes import Kidney, Matrix, Vector, _as_vector, _rotation

__all__ = [
    "GridCentre",
    "Orientation",
    "RigidMotion",
    "SmoothDeformation",
    "VolumeGeometry",
]


class Orientation(StrEnum):
    """Slice orientations of the synthetic series."""

    AXIAL = "axial"
    AXIAL_FLIPPED = "axial-flipped"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


class GridCentre(StrEnum):
    """Where a series' grid is centred.

    ``KIDNEY``: on the kidney's bounding box along every grid axis (small fields of view).
    ``BODY``: in-plane on the body axis (:data:`BODY_CENTRE_XY`, at the kidney's height),
    along the slice normal on the kidney (a clinical field of view covering the body).
    """

    KIDNEY = "kidney"
    BODY = "body"


def _orientation_cosines(orientation: Orientation) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines (Image Orientation (Patient)) of an orientation."""
    x, y, z = np.eye(3)
    if orientation is Orientation.AXIAL:
        return x, y
    if orientation is Orientation.AXIAL_FLIPPED:
        return x, -y
    if orientation is Orientation.CORONAL:
        return x, -z
    if orientation is Orientation.SAGITTAL:
        return y, -z
    # Oblique: the axial plane turned 20 degrees about an in-plane diagonal.
    rotation = _rotation((1.0, -1.0, 0.0), 20.0)
    return rotation @ x, rotation @ y


@dataclass(frozen=True)
class VolumeGeometry:
    """Voxel grid of a series in patient space, arrays in (slice, row, column) order.

    Attributes
    ----------
    origin : tuple of float
        Patient position of the centre of voxel (0, 0, 0): the first slice's Image
        Position (Patient), mm.
    row_direction, column_direction : tuple of float
        Image Orientation (Patient): directions of increasing column and row index.
    spacing_mm : tuple of float
        (slice step, row spacing = Pixel Spacing[0], column spacing = Pixel Spacing[1]).
    shape : tuple of int
        (slices, rows, columns).
    """

    origin: Vector
    row_direction: Vector
    column_direction: Vector
    spacing_mm: Vector
    shape: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        """Slice normal, row direction x column direction (direction of increasing slice)."""
        normal = np.cross(self.row_direction, self.column_direction)
        return normal / np.linalg.norm(normal)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the row direction, column direction and normal."""
        return np.column_stack([self.row_direction, self.column_direction, self.normal])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel, ml."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def slab_mm(self) -> float:
        """Thickness covered by the slices (slices x slice step), mm."""
        return self.shape[0] * self.spacing_mm[0]

    @property
    def centre(self) -> np.ndarray:
        """Patient position of the middle of the grid, mm."""
        steps = _SampleGrid.of(self).steps
        return np.asarray(self.origin) + (np.asarray(self.shape) - 1) / 2.0 @ steps

    def slice_position(self, index: int) -> np.ndarray:
        """Image Position (Patient) of slice ``index``, mm."""
        return np.asarray(self.origin) + index * self.spacing_mm[0] * self.normal

    def points(self) -> np.ndarray:
        """Return the patient positions of all voxel centres, shape ``(*shape, 3)``."""
        slices, rows, columns = self.shape
        step, row_spacing, column_spacing = self.spacing_mm
        k = (np.arange(slices) * step)[:, None, None, None] * self.normal
        j = (np.arange(rows) * row_spacing)[None, :, None, None] * np.asarray(self.column_direction)
        i = (np.arange(columns) * column_spacing)[None, None, :, None] * np.asarray(
            self.row_direction
        )
        return np.asarray(self.origin) + k + j + i

    @classmethod
    def centred(
        cls,
        extent: Kidney,
        *,
        orientation: Orientation,
        shape: tuple[int, int, int],
        spacing_mm: Sequence[float],
        in_plane_centre: Sequence[float] | None = None,
    ) -> VolumeGeometry:
        """Grid of ``orientation`` centred on the bounding box of ``extent``'s surface.

        With ``in_plane_centre`` (a patient point), the grid is centred on that point
        in-plane and on ``extent`` only along the slice normal.
        Direction cosines are rounded to 9 decimals and the origin to 1e-4 mm, so that
        they survive being written as DICOM decimal strings.
        """
        row, column = (np.round(v, 9) for v in _orientation_cosines(orientation))
        normal = np.cross(row, column)
        normal /= np.linalg.norm(normal)
        surface = extent.surface_points()
        origin = np.zeros(3)
        half_sizes = [
            (shape[2] - 1) * spacing_mm[2] / 2.0,
            (shape[1] - 1) * spacing_mm[1] / 2.0,
            (shape[0] - 1) * spacing_mm[0] / 2.0,
        ]
        for axis, (direction, half) in enumerate(
            zip((row, column, normal), half_sizes, strict=True)
        ):
            if in_plane_centre is not None and axis < 2:
                middle = float(np.asarray(in_plane_centre, dtype=float) @ direction)
            else:
                projection = surface @ direction
                middle = (projection.min() + projection.max()) / 2.0
            origin += (middle - half) * direction
        return cls(
            origin=_as_vector(np.round(origin, 4)),
            row_direction=_as_vector(row),
            column_direction=_as_vector(column),
            spacing_mm=_as_vector(spacing_mm),
            shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        )


@dataclass(frozen=True)
class RigidMotion:
    """Patient motion between series: rotation about ``centre``, then translation."""

    rotation: Matrix
    translation_mm: Vector
    centre: Vector

    @property
    def angle_deg(self) -> float:
        """Rotation angle, degrees."""
        cosine = (np.trace(np.asarray(self.rotation)) - 1.0) / 2.0
        return math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0))))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Where anatomy at ``points`` (before the motion) lies after it."""
        centre = np.asarray(self.centre)
        moved = (points - centre) @ np.asarray(self.rotation).T
        return moved + centre + np.asarray(self.translation_mm)

    def apply_inverse(self, points: np.ndarray) -> np.ndarray:
        """Where anatomy now at ``points`` lay before the motion."""
        centre = np.asarray(self.centre)
        return (points - centre - np.asarray(self.translation_mm)) @ np.asarray(
            self.rotation
        ) + centre


@dataclass(frozen=True)
class SmoothDeformation:
    """Smooth non-rigid displacement: a sum of Gaussian-weighted bumps.

    ``displacement(p) = sum_m d_m exp(-|p - c_m|² / (2 w_m²))``. A T2 voxel at
    (rigidly un-moved) position ``p`` shows the anatomy found at ``source(p) = p +
    displacement(p)`` in the DCE frame.

    Attributes
    ----------
    centres : tuple of vectors
        Bump centres ``c_m``, patient mm.
    displacements_mm : tuple of vectors
        Displacement ``d_m`` at each centre (before the other bumps add), mm.
    widths_mm : tuple of float
        Gaussian widths ``w_m``, mm.
    """

    centres: tuple[Vector, ...]
    displacements_mm: tuple[Vector, ...]
    widths_mm: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.centres) == len(self.displacements_mm) == len(self.widths_mm):
            raise ValueError("a deformation needs as many centres, displacements and widths")
        if any(w <= 0 for w in self.widths_mm):
            raise ValueError(f"bump widths must be positive, got {self.widths_mm}")

    @property
    def bound_mm(self) -> float:
        """An upper bound of the displacement's length anywhere, mm."""
        return float(sum(np.linalg.norm(d) for d in self.displacements_mm))

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """Return the displacement (mm) at each point, shape of ``points``."""
        p = np.asarray(points, dtype=float)
        out = np.zeros_like(p)
        for centre, vector, width in zip(
            self.centres, self.displacements_mm, self.widths_mm, strict=True
        ):
            offset = p - np.asarray(centre)
            weight = np.exp(np.einsum("...i,...i->...", offset, offset) / (-2.0 * width**2))
            out += weight[..., None] * np.asarray(vector)
        return out

    def source(self, points: np.ndarray) -> np.ndarray:
        """Return ``points + displacement(points)``."""
        return np.asarray(points, dtype=float) + self.displacement(points)

    def inverse_source(self, points: np.ndarray, iterations: int = 12) -> np.ndarray:
        """Return ``p`` with ``source(p) == points`` (fixed-point iteration)."""
        target = np.asarray(points, dtype=float)
        p = target.copy()
        for _ in range(iterations):
            p = target - self.displacement(p)
        return p

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        *,
        around: Sequence[float],
        max_mm: float,
        bumps: int = 4,
        reach_mm: float = 50.0,
        widths_mm: tuple[float, float] = (25.0, 45.0),
    ) -> SmoothDeformation:
        """Draw ``bumps`` bumps centred within ``reach_mm`` of ``around`` along each axis.

        The displacements are scaled so that the largest displacement (on a 4 mm lattice
        over the region) is ``max_mm``.
        """
        centres = np.asarray(around, dtype=float) + rng.uniform(-1.0, 1.0, (bumps, 3)) * reach_mm
        directions = rng.normal(size=(bumps, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        vectors = directions * rng.uniform(0.4, 1.0, size=(bumps, 1))
        widths = rng.uniform(*widths_mm, size=bumps)
        draft = cls(
            tuple(_as_vector(c) for c in centres),
            tuple(_as_vector(v) for v in vectors),
            tuple(float(w) for w in widths),
        )
        low = centres.min(axis=0) - 2.0 * widths.max()
        high = centres.max(axis=0) + 2.0 * widths.max()
        lattice = np.stack(
            np.meshgrid(
                *(np.arange(a, b, 4.0) for a, b in zip(low, high, strict=True)), indexing="ij"
            ),
            axis=-1,
        )
        largest = float(np.linalg.norm(draft.displacement(lattice), axis=-1).max())
        scale = max_mm / largest if largest > 0 else 0.0
        return cls(
            draft.centres,
            tuple(_as_vector(np.asarray(v) * scale) for v in draft.displacements_mm),
            draft.widths_mm,
        )


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class _SampleGrid:
    """Where the voxels of a grid sample the anatomy: ``origin + index @ steps``.

    ``steps`` rows are the patient displacement per unit slice, row and column index.
    A grid seen through a rigid motion is still of this form.
    """

    origin: np.ndarray
    steps: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, geometry: VolumeGeometry) -> _SampleGrid:
        step, row_spacing, column_spacing = geometry.spacing_mm
        steps = np.stack(
            [
                step * geometry.normal,
                row_spacing * np.asarray(geometry.column_direction),
                column_spacing * np.asarray(geometry.row_direction),
            ]
        )
        return cls(np.asarray(geometry.origin, dtype=float), steps, geometry.shape)

    def sub_slices(self, n: int) -> _SampleGrid:
        """The grid with each slice split into ``n`` evenly spaced sub-slices."""
        step = self.steps[0] / n
        origin = self.origin - (n - 1) / 2.0 * step
        shape = (self.shape[0] * n, self.shape[1], self.shape[2])
        return _SampleGrid(origin, np.stack([step, self.steps[1], self.steps[2]]), shape)

    def seen_through(self, motion: RigidMotion) -> _SampleGrid:
        """Where each voxel samples the anatomy before ``motion``."""
        rotation = np.asarray(motion.rotation)
        origin = motion.apply_inverse(self.origin[None])[0]
        return _SampleGrid(origin, self.steps @ rotation, self.shape)

    def positions(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Patient positions at (fractional) indices ``k x j x i``, shape (K, J, I, 3)."""
        return (
            self.origin
            + np.asarray(k, dtype=float)[:, None, None, None] * self.steps[0]
            + np.asarray(j, dtype=float)[None, :, None, None] * self.steps[1]
            + np.asarray(i, dtype=float)[None, None, :, None] * self.steps[2]
        )

    def coordinates(self, k0: int, k1: int) -> list[np.ndarray]:
        """float32 x, y, z of the voxels of slices ``k0:k1``, each (K, J, I)."""
        k = np.arange(k0, k1, dtype=float)[:, None, None]
        j = np.arange(self.shape[1], dtype=float)[None, :, None]
        i = np.arange(self.shape[2], dtype=float)[None, None, :]
        return [
            (self.origin[c] + k * self.steps[0, c]).astype(np.float32)
            + (j * self.steps[1, c]).astype(np.float32)
            + (i * self.steps[2, c]).astype(np.float32)
            for c in range(3)
        ]

    def index_box(
        self, low: np.ndarray, high: np.ndarray, margin_mm: float = 0.0
    ) -> tuple[slice, slice, slice] | None:
        """Index box holding every voxel whose position may lie in ``[low, high]``.

        ``margin_mm`` widens the box (for positions displaced by at most that much).
        """
        corners_index = np.array(
            [
                [a, b, c]
                for a in (0, self.shape[0] - 1)
                for b in (0, self.shape[1] - 1)
                for c in (0, self.shape[2] - 1)
            ],
            dtype=float,
        )
        corners = self.origin + corners_index @ self.steps
        lo = np.maximum(np.asarray(low, dtype=float) - margin_mm, corners.min(axis=0) - margin_mm)
        hi = np.minimum(np.asarray(high, dtype=float) + margin_mm, corners.max(axis=0) + margin_mm)
        if np.any(lo > hi):
            return None
        box_corners = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        index = (box_corners - self.origin) @ np.linalg.inv(self.steps)
        first = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
        last = np.minimum(np.ceil(index.max(axis=0)).astype(int), np.asarray(self.shape) - 1)
        if np.any(first > last):
            return None
        return tuple(slice(int(a), int(b) + 1) for a, b in zip(first, last, strict=True))
