"""Analytic shapes of the phantom's anatomy, in patient coordinates (mm, DICOM LPS).

A :class:`Shape` tells which points lie inside it and bounds itself with a box:
:class:`Ellipsoid`, :class:`EllipticCylinder` (along the head-foot axis), :class:`Capsule`
(a tube of constant radius around a segment) and the :class:`Kidney` (a bent ellipsoid
with cortex and medulla). Also the small vector helpers the other modules share
(:data:`Vector`, :data:`Matrix`, rotations, local coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.synthetic.tissues import Tissue

__all__ = [
    "Capsule",
    "Ellipsoid",
    "EllipticCylinder",
    "Kidney",
    "Matrix",
    "Shape",
    "Vector",
]


Vector = tuple[float, float, float]
Matrix = tuple[Vector, Vector, Vector]

_IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


class Shape(Protocol):
    """A region of patient space.

    Shapes may also offer ``contains_xyz(x, y, z)``, the same test on separate coordinate
    arrays (any float dtype, e.g. float32), which the renderer uses when present.
    """

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return a boolean array, ``points.shape[:-1]``, true inside the region."""
        ...

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the lowest and highest patient coordinates of the region (a box)."""
        ...


def _rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    angle = math.radians(degrees)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * cross @ cross


def _rotate(points: np.ndarray, matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Return ``points @ matrix.T`` for (N, 3) points (faster than BLAS for 3x3)."""
    m = np.asarray(matrix, dtype=float)
    return np.einsum("ij,kj->ik", points, m)


def _ellipsoid_bounds(
    centre: Sequence[float], semi_axes: Sequence[float], axes: Sequence[Sequence[float]]
) -> tuple[np.ndarray, np.ndarray]:
    half = np.sqrt(np.square(np.asarray(semi_axes)[:, None] * np.asarray(axes)).sum(axis=0))
    return np.asarray(centre) - half, np.asarray(centre) + half


def _as_matrix(matrix: np.ndarray) -> Matrix:
    first, second, third = (_as_vector(row) for row in np.asarray(matrix))
    return (first, second, third)


def _as_vector(vector: Sequence[float] | np.ndarray) -> Vector:
    x, y, z = (float(v) for v in vector)
    return (x, y, z)


def _unit(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=float)
    return v / np.linalg.norm(v)


def _split(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return points[..., 0], points[..., 1], points[..., 2]


def _local_coordinates(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Vector, axes: Matrix, semi_axes: Vector
) -> list[np.ndarray]:
    """Coordinates along ``axes`` about ``centre``, divided by ``semi_axes`` (dtype kept)."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    return [
        (dx * a0 + dy * a1 + dz * a2) * (1.0 / s)
        for (a0, a1, a2), s in zip(axes, semi_axes, strict=True)
    ]


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid; ``axes`` rows are its unit local axes in patient coordinates."""

    centre: Vector
    semi_axes: Vector
    axes: Matrix = _IDENTITY

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the ellipsoid."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the ellipsoid."""
        u, v, w = _local_coordinates(x, y, z, self.centre, self.axes, self.semi_axes)
        return u * u + v * v + w * w <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the axis-aligned bounding box."""
        return _ellipsoid_bounds(self.centre, self.semi_axes, self.axes)


@dataclass(frozen=True)
class EllipticCylinder:
    """Cylinder along the patient's z (head-foot) axis with an elliptic cross-section."""

    centre_xy: tuple[float, float]
    semi_axes_xy: tuple[float, float]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the cylinder."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the cylinder (``z`` is ignored)."""
        dx = (x - self.centre_xy[0]) * (1.0 / self.semi_axes_xy[0])
        dy = (y - self.centre_xy[1]) * (1.0 / self.semi_axes_xy[1])
        return dx * dx + dy * dy <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the bounding box (unbounded along z)."""
        (x, y), (a, b) = self.centre_xy, self.semi_axes_xy
        return np.array([x - a, y - b, -np.inf]), np.array([x + a, y + b, np.inf])


@dataclass(frozen=True)
class Capsule:
    """Tube of constant radius around a segment, with round ends (a vessel, a bowel loop)."""

    start: Vector
    end: Vector
    radius_mm: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points within ``radius_mm`` of the segment."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` within ``radius_mm`` of the segment."""
        (sx, sy, sz), (ex, ey, ez) = self.start, self.end
        ax, ay, az = ex - sx, ey - sy, ez - sz
        dx, dy, dz = x - sx, y - sy, z - sz
        t = np.clip((dx * ax + dy * ay + dz * az) * (1.0 / (ax * ax + ay * ay + az * az)), 0, 1)
        ox, oy, oz = dx - t * ax, dy - t * ay, dz - t * az
        return ox * ox + oy * oy + oz * oz <= self.radius_mm**2

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the axis-aligned bounding box."""
        ends = np.array([self.start, self.end])
        return ends.min(axis=0) - self.radius_mm, ends.max(axis=0) + self.radius_mm


#: Renal sinus: ellipsoid in the kidney's normalised bent frame (centre on the hilar axis
#: ``v``, semi-axes along u, v, w); it reaches through the hilar surface (v = 1).
SINUS_CENTRE_V = 0.6
SINUS_SEMI = (0.55, 0.47, 0.42)


def in_sinus(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Whether normalised bent-frame points ``(u, v, w)`` lie in the renal sinus."""
    a, b, c = SINUS_SEMI
    return (u / a) ** 2 + ((v - SINUS_CENTRE_V) / b) ** 2 + (w / c) ** 2 <= 1.0


@dataclass(frozen=True)
class Kidney:
    """A bean: an ellipsoid bent towards its hilum, with cortex and medulla.

    In local coordinates ``(u, v, w)`` (rows of ``axes``: long axis, towards the hilum,
    thickness) a point is inside when ``(u/a)² + ((v - bend (u/a)²)/b)² + (w/c)² <= 1``.
    The bend is a shear (determinant 1), so the volume is exactly that of the ellipsoid,
    4/3 pi a b c. Medulla: pyramids inside ``medulla_radius`` (normalised radius),
    separated by cortical columns. With ``sinus`` the renal sinus (:func:`in_sinus`, open
    through the hilum; the CT phantom's, :mod:`service.synthetic.ct_shapes`) is fat
    (:attr:`Tissue.FAT`), not kidney. Volume over that of the ellipsoid of the mask's
    second moments (:func:`models.mr_localise.compactness`): plain bean 0.985, with the
    sinus 0.855, real kidneys' manual masks 0.876-0.944 (CHAOS T2-SPIR cases 1-8).
    """

    centre: Vector
    semi_axes: Vector
    axes: Matrix
    bend_mm: float
    medulla_radius: float = 0.72
    pyramids: int = 7
    sinus: bool = False

    @property
    def analytic_volume_ml(self) -> float:
        """Exact volume of the shape, ml."""
        a, b, c = self.semi_axes
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0

    @property
    def hilum(self) -> np.ndarray:
        """Patient position of the hilum (middle of the concave border), mm."""
        return np.asarray(self.centre) + self.semi_axes[1] * np.asarray(self.axes[1])

    def _local_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[np.ndarray]:
        u, v, w = _local_coordinates(x, y, z, self.centre, self.axes, self.semi_axes)
        v -= (self.bend_mm / self.semi_axes[1]) * (u * u)
        return [u, v, w]

    def normalised_radius(self, points: np.ndarray) -> np.ndarray:
        """Return the bent-ellipsoid radius of each point: 1 on the surface."""
        u, v, w = self._local_xyz(*_split(np.asarray(points, dtype=float)))
        return np.sqrt(u * u + v * v + w * w)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the kidney."""
        return self.normalised_radius(points) <= 1.0

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the kidney."""
        u, v, w = self._local_xyz(x, y, z)
        return u * u + v * v + w * w <= 1.0

    def tissues(self, points: np.ndarray) -> np.ndarray:
        """Return CORTEX / MEDULLA labels inside the kidney, AIR (0) outside."""
        return self.tissues_xyz(*_split(np.asarray(points, dtype=float)))

    def tissues_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return CORTEX / MEDULLA / AIR labels of points ``(x, y, z)``."""
        u, v, w = self._local_xyz(x, y, z)
        radius_sq = u * u + v * v + w * w
        labels = np.zeros(np.shape(radius_sq), dtype=np.uint8)
        inside = radius_sq <= 1.0
        labels[inside] = Tissue.CORTEX
        deep = radius_sq <= self.medulla_radius**2
        angle = np.arctan2(w[deep], u[deep])
        pyramid = np.cos(self.pyramids * angle) > -0.35
        deep[deep] = pyramid
        labels[deep] = Tissue.MEDULLA
        if self.sinus:
            labels[inside & in_sinus(u, v, w)] = Tissue.FAT
        return labels

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a box around the kidney: the unbent ellipsoid's, swept by the bend."""
        low, high = _ellipsoid_bounds(self.centre, self.semi_axes, self.axes)
        sweep = self.bend_mm * np.asarray(self.axes[1])
        return low + np.minimum(sweep, 0.0), high + np.maximum(sweep, 0.0)

    def surface_points(self, n: int = 4000) -> np.ndarray:
        """Return ``n`` points on the surface (Fibonacci sphere, bent), patient mm."""
        k = np.arange(n) + 0.5
        polar = np.arccos(1.0 - 2.0 * k / n)
        azimuth = math.pi * (1.0 + math.sqrt(5.0)) * k
        unit = np.stack(
            [np.cos(polar), np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth)],
            axis=-1,
        )
        a, b, c = self.semi_axes
        local = unit * np.array([a, b, c])
        local[:, 1] += self.bend_mm * unit[:, 0] ** 2
        return np.asarray(self.centre) + local @ np.asarray(self.axes)

    def support_point(self, direction: Sequence[float]) -> np.ndarray:
        """Return the surface point farthest along ``direction`` (patient mm)."""
        surface = self.surface_points()
        return surface[int(np.argmax(surface @ _unit(direction)))]
