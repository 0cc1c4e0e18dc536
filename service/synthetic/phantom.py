"""Synthetic kidney-graft MR phantom: anatomy, tissue signals and rendering (numpy only).

Everything is defined in patient coordinates (mm, DICOM LPS: +x towards the patient's
left, +y posterior, +z superior) and sampled at voxel centres of a
:class:`VolumeGeometry`, so the same seed gives the same patient in every orientation.

The parts that will be made more realistic are data, not code:

- :data:`TISSUE_SIGNALS`: per tissue, the pre-contrast T1-weighted (DCE) signal, the
  signal gained at full enhancement, the T2-weighted signal and an
  :class:`EnhancementCurve` (knots, linear in between).
- :class:`Anatomy`: an ordered tuple of :class:`Layer` (tissue + shape; later layers paint
  over earlier ones) and the :class:`Kidney`, painted last. :func:`make_anatomy` builds it.

Default kidney size
-------------------
A real graft (semi-axes about 55 x 30 x 25 mm) cannot fit inside the default DCE slab
(24 slices x 2.5 mm = 60 mm) in the axial, coronal *and* sagittal orientations: the
squared half-extents along three orthogonal directions add up to a² + b² + c²
whatever the rotation. The default kidney (``kidney_scale=1``) is therefore smaller,
:data:`KIDNEY_SEMI_AXES_MM`, with its long axis oblique (as grafts lie in the iliac fossa)
so it fits every orientation. Use ``kidney_scale`` about 1.5 with a thicker slab for an
adult-sized graft.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Protocol

import numpy as np

__all__ = [
    "KIDNEY_SEMI_AXES_MM",
    "T2_SLICE_THICKNESS_MM",
    "TISSUE_SIGNALS",
    "Anatomy",
    "Capsule",
    "Ellipsoid",
    "EllipticCylinder",
    "EnhancementCurve",
    "Kidney",
    "Layer",
    "Orientation",
    "RigidMotion",
    "Shape",
    "SyntheticMR",
    "Tissue",
    "TissueSignal",
    "VolumeGeometry",
    "default_phase_times",
    "make_anatomy",
    "synthesize_mr",
]

logger = logging.getLogger(__name__)

Vector = tuple[float, float, float]
Matrix = tuple[Vector, Vector, Vector]

_IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

#: Semi-axes of the default kidney (long axis, towards the hilum, thickness), mm.
KIDNEY_SEMI_AXES_MM: Vector = (38.0, 21.0, 17.0)
#: Slice thickness and spacing of the T2-weighted series, mm.
T2_SLICE_THICKNESS_MM = 5.0


class Tissue(IntEnum):
    """Label values of the phantom's tissues."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    BONE = 3
    BOWEL = 4
    BLADDER = 5
    ARTERY = 6
    VEIN = 7
    CORTEX = 8
    MEDULLA = 9


@dataclass(frozen=True)
class EnhancementCurve:
    """Relative contrast enhancement over time since injection, linear between knots.

    ``values`` are 0 before the bolus arrives and about 1 at a tissue's peak.
    """

    times_s: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.times_s) != len(self.values) or not self.times_s:
            raise ValueError("an enhancement curve needs as many times as values, at least one")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError(f"enhancement curve times must increase, got {self.times_s}")

    def at(self, time_s: float) -> float:
        """Return the relative enhancement at ``time_s`` seconds after injection."""
        return float(np.interp(time_s, self.times_s, self.values))


@dataclass(frozen=True)
class TissueSignal:
    """Signal of one tissue in the two synthetic sequences (arbitrary scanner units).

    Attributes
    ----------
    t1w : float
        Pre-contrast signal of the fat-saturated T1-weighted 3D gradient echo (DCE).
    t1w_gain : float
        DCE signal added at relative enhancement 1.
    t2w : float
        Signal of the T2-weighted turbo spin echo.
    enhancement : EnhancementCurve
        Relative enhancement after the contrast injection.
    """

    t1w: float
    t1w_gain: float
    t2w: float
    enhancement: EnhancementCurve

    def dce(self, time_s: float) -> float:
        """Return the DCE signal ``time_s`` seconds after injection."""
        return self.t1w + self.t1w_gain * self.enhancement.at(time_s)


def _curve(*knots: tuple[float, float]) -> EnhancementCurve:
    return EnhancementCurve(tuple(t for t, _ in knots), tuple(v for _, v in knots))


_NO_ENHANCEMENT = _curve((0.0, 0.0))

#: Tissue signals: arterial phase (~20 s) has vessels brighter than the cortex, the
#: nephrographic phase (~60 s) the kidney brighter than everything else.
TISSUE_SIGNALS: Mapping[Tissue, TissueSignal] = MappingProxyType(
    {
        Tissue.AIR: TissueSignal(t1w=0.0, t1w_gain=0.0, t2w=0.0, enhancement=_NO_ENHANCEMENT),
        Tissue.FAT: TissueSignal(
            t1w=70.0, t1w_gain=20.0, t2w=450.0, enhancement=_curve((0, 0), (60, 0.5), (600, 1.0))
        ),
        Tissue.MUSCLE: TissueSignal(
            t1w=220.0,
            t1w_gain=200.0,
            t2w=180.0,
            enhancement=_curve((0, 0), (20, 0.1), (60, 0.5), (180, 0.8), (600, 1.0)),
        ),
        Tissue.BONE: TissueSignal(
            t1w=130.0,
            t1w_gain=100.0,
            t2w=250.0,
            enhancement=_curve((0, 0), (30, 0.2), (120, 0.7), (600, 1.0)),
        ),
        Tissue.BOWEL: TissueSignal(
            t1w=180.0,
            t1w_gain=300.0,
            t2w=600.0,
            enhancement=_curve((0, 0), (25, 0.2), (60, 0.7), (180, 0.8), (600, 0.6)),
        ),
        Tissue.BLADDER: TissueSignal(
            t1w=80.0,
            t1w_gain=600.0,
            t2w=1600.0,
            enhancement=_curve((0, 0), (120, 0.0), (180, 0.1), (600, 0.6)),
        ),
        Tissue.ARTERY: TissueSignal(
            t1w=200.0,
            t1w_gain=1500.0,
            t2w=60.0,
            enhancement=_curve(
                (0, 0), (12, 0), (20, 1.0), (30, 0.7), (60, 0.45), (180, 0.3), (600, 0.15)
            ),
        ),
        Tissue.VEIN: TissueSignal(
            t1w=190.0,
            t1w_gain=1300.0,
            t2w=80.0,
            enhancement=_curve((0, 0), (16, 0), (30, 0.85), (60, 0.55), (180, 0.32), (600, 0.15)),
        ),
        Tissue.CORTEX: TissueSignal(
            t1w=300.0,
            t1w_gain=1000.0,
            t2w=550.0,
            enhancement=_curve(
                (0, 0), (14, 0), (20, 0.35), (35, 0.95), (60, 0.9), (180, 0.7), (600, 0.45)
            ),
        ),
        Tissue.MEDULLA: TissueSignal(
            t1w=250.0,
            t1w_gain=1000.0,
            t2w=800.0,
            enhancement=_curve(
                (0, 0), (18, 0), (20, 0.05), (60, 0.85), (120, 0.9), (180, 0.8), (600, 0.55)
            ),
        ),
    }
)


def default_phase_times(phases: int) -> tuple[float, ...]:
    """Return acquisition times (s after injection) of ``phases`` DCE phases.

    The first phase is pre-contrast (0 s); the others run geometrically from 20 s
    (arterial) to 180 s (late): 4 phases give 0, 20, 60, 180 s.
    """
    if phases < 1:
        raise ValueError(f"at least one DCE phase is needed, got {phases}")
    if phases == 1:
        return (0.0,)
    if phases == 2:
        return (0.0, 60.0)
    return (0.0, *(20.0 * 9.0 ** (k / (phases - 2)) for k in range(phases - 1)))


# --------------------------------------------------------------------------- shapes


class Shape(Protocol):
    """A region of patient space."""

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


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid; ``axes`` rows are its unit local axes in patient coordinates."""

    centre: Vector
    semi_axes: Vector
    axes: Matrix = _IDENTITY

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the ellipsoid."""
        local = _rotate(points.reshape(-1, 3) - np.asarray(self.centre), self.axes)
        local /= np.asarray(self.semi_axes)
        inside = np.einsum("ij,ij->i", local, local) <= 1.0
        return inside.reshape(points.shape[:-1])

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
        dx = (points[..., 0] - self.centre_xy[0]) / self.semi_axes_xy[0]
        dy = (points[..., 1] - self.centre_xy[1]) / self.semi_axes_xy[1]
        return dx * dx + dy * dy <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the bounding box (unbounded along z)."""
        (x, y), (a, b) = self.centre_xy, self.semi_axes_xy
        return np.array([x - a, y - b, -np.inf]), np.array([x + a, y + b, np.inf])


@dataclass(frozen=True)
class Capsule:
    """Tube of constant radius around a segment, with round ends (a vessel)."""

    start: Vector
    end: Vector
    radius_mm: float

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points within ``radius_mm`` of the segment."""
        start, end = np.asarray(self.start), np.asarray(self.end)
        axis = end - start
        relative = points.reshape(-1, 3) - start
        t = np.clip((relative @ axis) / (axis @ axis), 0.0, 1.0)
        offset = relative - t[:, None] * axis
        inside = np.einsum("ij,ij->i", offset, offset) <= self.radius_mm**2
        return inside.reshape(points.shape[:-1])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the axis-aligned bounding box."""
        ends = np.array([self.start, self.end])
        return ends.min(axis=0) - self.radius_mm, ends.max(axis=0) + self.radius_mm


@dataclass(frozen=True)
class Kidney:
    """A bean: an ellipsoid bent towards its hilum, with cortex and medulla.

    In local coordinates ``(u, v, w)`` (rows of ``axes``: long axis, towards the hilum,
    thickness) a point is inside when ``(u/a)² + ((v - bend (u/a)²)/b)² + (w/c)² <= 1``.
    The bend is a shear (determinant 1), so the volume is exactly that of the ellipsoid,
    4/3 pi a b c. Medulla: pyramids inside ``medulla_radius`` (normalised radius),
    separated by cortical columns.
    """

    centre: Vector
    semi_axes: Vector
    axes: Matrix
    bend_mm: float
    medulla_radius: float = 0.72
    pyramids: int = 7

    @property
    def analytic_volume_ml(self) -> float:
        """Exact volume of the shape, ml."""
        a, b, c = self.semi_axes
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0

    @property
    def hilum(self) -> np.ndarray:
        """Patient position of the hilum (middle of the concave border), mm."""
        return np.asarray(self.centre) + self.semi_axes[1] * np.asarray(self.axes[1])

    def _local(self, points: np.ndarray) -> np.ndarray:
        local = _rotate(points.reshape(-1, 3) - np.asarray(self.centre), self.axes)
        local /= np.asarray(self.semi_axes)
        local[:, 1] -= self.bend_mm / self.semi_axes[1] * np.square(local[:, 0])
        return local.reshape(points.shape)

    def normalised_radius(self, points: np.ndarray) -> np.ndarray:
        """Return the bent-ellipsoid radius of each point: 1 on the surface."""
        local = self._local(points)
        return np.sqrt(np.einsum("...i,...i->...", local, local))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the kidney."""
        return self.normalised_radius(points) <= 1.0

    def tissues(self, points: np.ndarray) -> np.ndarray:
        """Return CORTEX / MEDULLA labels inside the kidney, AIR (0) outside."""
        local = self._local(points)
        radius = np.sqrt(np.einsum("...i,...i->...", local, local))
        angle = np.arctan2(local[..., 2], local[..., 0])
        medulla = (radius <= self.medulla_radius) & (np.cos(self.pyramids * angle) > -0.35)
        labels = np.where(medulla, Tissue.MEDULLA, Tissue.CORTEX).astype(np.uint8)
        labels[radius > 1.0] = Tissue.AIR
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


@dataclass(frozen=True)
class Layer:
    """One tissue region; the anatomy paints layers in order, later over earlier."""

    tissue: Tissue
    shape: Shape


@dataclass(frozen=True)
class Anatomy:
    """The phantom patient: background layers, then the kidney graft on top."""

    layers: tuple[Layer, ...]
    kidney: Kidney

    def labels(self, points: np.ndarray) -> np.ndarray:
        """Return the :class:`Tissue` label (uint8) at each point (``points.shape[:-1]``)."""
        flat = points.reshape(-1, 3)
        labels = np.zeros(len(flat), dtype=np.uint8)
        for layer in self.layers:
            candidates = _in_box(flat, layer.shape)
            labels[candidates[layer.shape.contains(flat[candidates])]] = layer.tissue
        candidates = _in_box(flat, self.kidney)
        kidney = self.kidney.tissues(flat[candidates])
        inside = kidney != Tissue.AIR
        labels[candidates[inside]] = kidney[inside]
        return labels.reshape(points.shape[:-1])


def _in_box(points: np.ndarray, shape: Shape) -> np.ndarray:
    """Indices of the (N, 3) points inside ``shape``'s bounding box."""
    low, high = shape.bounds()
    indices: np.ndarray | None = None
    for axis in range(3):
        if not (np.isfinite(low[axis]) or np.isfinite(high[axis])):
            continue
        coordinates = points[:, axis] if indices is None else points[indices, axis]
        keep = (coordinates >= low[axis]) & (coordinates <= high[axis])
        indices = np.flatnonzero(keep) if indices is None else indices[keep]
    return np.arange(len(points)) if indices is None else indices


def _nearest_on_segment(point: np.ndarray, start: Vector, end: Vector) -> np.ndarray:
    a, b = np.asarray(start), np.asarray(end)
    t = float(np.clip((point - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0))
    return a + t * (b - a)


def make_anatomy(seed: int = 0, *, kidney_scale: float = 1.0) -> Anatomy:
    """Build the phantom patient: a kidney graft in the right iliac fossa.

    Parameters
    ----------
    seed : int
        Seeds the small random variations (kidney pose, bowel loops).
    kidney_scale : float
        Factor on the kidney's semi-axes :data:`KIDNEY_SEMI_AXES_MM` (volume scales
        with its cube).

    Returns
    -------
    Anatomy
        Body (fat, abdominal wall, psoas, iliacus), pelvic bones, bladder, bowel loops,
        right external iliac artery and vein, renal artery and vein from the hilum to
        the iliac vessels, and the kidney.
    """
    if kidney_scale <= 0:
        raise ValueError(f"kidney_scale must be positive, got {kidney_scale}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))

    # Kidney: long axis from the lower pole (inferomedial, anterior) to the upper pole
    # (superolateral, posterior); hilum facing medially and a little backwards.
    long_axis = np.array([-0.9, 1.0, 1.0])
    long_axis /= np.linalg.norm(long_axis)
    towards_hilum = np.array([1.0, 0.6, 0.25])
    towards_hilum -= (towards_hilum @ long_axis) * long_axis
    towards_hilum /= np.linalg.norm(towards_hilum)
    base = np.stack([long_axis, towards_hilum, np.cross(long_axis, towards_hilum)])
    jitter = _rotation(rng.normal(size=3), float(rng.uniform(-4.0, 4.0)))
    axes = base @ jitter.T
    semi_axes = tuple(s * kidney_scale for s in KIDNEY_SEMI_AXES_MM)
    centre = np.array([-75.0, -30.0, -10.0]) + rng.uniform(-3.0, 3.0, size=3)
    kidney = Kidney(
        centre=_as_vector(centre),
        semi_axes=_as_vector(semi_axes),
        axes=_as_matrix(axes),
        bend_mm=0.25 * semi_axes[1],
    )

    iliac_artery = Capsule((-25.0, 25.0, 80.0), (-85.0, -5.0, -90.0), 4.5)
    iliac_vein = Capsule((-15.0, 35.0, 80.0), (-78.0, 8.0, -90.0), 6.0)
    hilum = kidney.hilum
    lip = 0.25 * semi_axes[2] * np.asarray(axes[2])
    renal_artery = Capsule(
        _as_vector(hilum + lip),
        _as_vector(_nearest_on_segment(hilum, iliac_artery.start, iliac_artery.end)),
        3.0 * kidney_scale,
    )
    renal_vein = Capsule(
        _as_vector(hilum - lip),
        _as_vector(_nearest_on_segment(hilum, iliac_vein.start, iliac_vein.end)),
        4.0 * kidney_scale,
    )

    wing_axes = _as_matrix(_rotation((0.0, 0.0, 1.0), 35.0))
    wing_axes_left = _as_matrix(_rotation((0.0, 0.0, 1.0), -35.0))
    sacrum_axes = _as_matrix(_rotation((1.0, 0.0, 0.0), 25.0))
    bowel = tuple(
        Layer(
            Tissue.BOWEL,
            Ellipsoid(
                _as_vector(rng.uniform((-50.0, -85.0, -50.0), (60.0, -15.0, 70.0))),
                _as_vector(rng.uniform(12.0, 22.0, size=3)),
                _as_matrix(_rotation(rng.normal(size=3), float(rng.uniform(0.0, 180.0)))),
            ),
        )
        for _ in range(6)
    )
    layers = (
        Layer(Tissue.FAT, EllipticCylinder((0.0, 5.0), (165.0, 115.0))),
        Layer(Tissue.MUSCLE, EllipticCylinder((0.0, 5.0), (150.0, 100.0))),
        Layer(Tissue.FAT, EllipticCylinder((0.0, 5.0), (138.0, 90.0))),
        Layer(Tissue.MUSCLE, Capsule((-45.0, 45.0, 150.0), (-68.0, 25.0, -80.0), 18.0)),
        Layer(Tissue.MUSCLE, Capsule((45.0, 45.0, 150.0), (68.0, 25.0, -80.0), 18.0)),
        Layer(Tissue.MUSCLE, Ellipsoid((-108.0, 20.0, 5.0), (16.0, 42.0, 55.0), wing_axes)),
        Layer(Tissue.MUSCLE, Ellipsoid((108.0, 20.0, 5.0), (16.0, 42.0, 55.0), wing_axes_left)),
        Layer(Tissue.BONE, Ellipsoid((-125.0, 30.0, 5.0), (8.0, 48.0, 55.0), wing_axes)),
        Layer(Tissue.BONE, Ellipsoid((125.0, 30.0, 5.0), (8.0, 48.0, 55.0), wing_axes_left)),
        Layer(Tissue.BONE, Ellipsoid((0.0, 85.0, 10.0), (45.0, 18.0, 55.0), sacrum_axes)),
        Layer(Tissue.BONE, Ellipsoid((-95.0, 5.0, -100.0), (24.0, 24.0, 24.0))),
        Layer(Tissue.BONE, Ellipsoid((95.0, 5.0, -100.0), (24.0, 24.0, 24.0))),
        *bowel,
        Layer(Tissue.BLADDER, Ellipsoid((-5.0, -45.0, -60.0), (45.0, 35.0, 32.0))),
        Layer(Tissue.ARTERY, iliac_artery),
        Layer(Tissue.VEIN, iliac_vein),
        Layer(Tissue.ARTERY, renal_artery),
        Layer(Tissue.VEIN, renal_vein),
    )
    return Anatomy(layers=layers, kidney=kidney)


# --------------------------------------------------------------------------- geometry


class Orientation(StrEnum):
    """Slice orientations of the synthetic series."""

    AXIAL = "axial"
    AXIAL_FLIPPED = "axial-flipped"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


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
    ) -> VolumeGeometry:
        """Grid of ``orientation`` centred on the bounding box of ``extent``'s surface.

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
        for direction, half in zip((row, column, normal), half_sizes, strict=True):
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


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class SyntheticMR:
    """Synthetic DCE and T2 images of one phantom, before any DICOM encoding.

    Attributes
    ----------
    anatomy : Anatomy
        The phantom patient.
    dce_geometry : VolumeGeometry
        Grid of the DCE series.
    dce : numpy.ndarray
        uint16, (phases, slices, rows, columns).
    phase_times_s : tuple of float
        Seconds after injection of each DCE phase.
    dce_labels : numpy.ndarray
        uint8 :class:`Tissue` label of each DCE voxel.
    kidney_mask : numpy.ndarray
        uint8 kidney mask in the DCE grid (voxel centres inside the kidney).
    t2_geometry, t2, t2_motion
        Grid, uint16 image (slices, rows, columns) and the patient motion relative to the
        DCE of the T2 series; ``None`` without T2.
    """

    anatomy: Anatomy
    dce_geometry: VolumeGeometry
    dce: np.ndarray
    phase_times_s: tuple[float, ...]
    dce_labels: np.ndarray
    kidney_mask: np.ndarray
    t2_geometry: VolumeGeometry | None
    t2: np.ndarray | None
    t2_motion: RigidMotion | None

    @property
    def truth_volume_ml(self) -> float:
        """Volume of the voxelised kidney mask, ml."""
        return float(self.kidney_mask.sum()) * self.dce_geometry.voxel_volume_ml

    @property
    def analytic_volume_ml(self) -> float:
        """Exact kidney volume of the analytic shape, ml."""
        return self.anatomy.kidney.analytic_volume_ml


def _bias_field(
    points: np.ndarray, centre: np.ndarray, rng: np.random.Generator, amplitude: float
) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic polynomial, about 1 ± amplitude."""
    x, y, z = np.moveaxis((points - centre) / 150.0, -1, 0)
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    coefficients = rng.uniform(-amplitude, amplitude, size=len(terms))
    return np.exp(sum(c * t for c, t in zip(coefficients, terms, strict=True)))


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician distributed)."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape)
    imaginary = rng.normal(0.0, sigma, size=signal.shape)
    return np.hypot(real, imaginary)


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _lookup(values: Mapping[Tissue, float]) -> np.ndarray:
    table = np.zeros(max(Tissue) + 1, dtype=np.float64)
    for tissue, value in values.items():
        table[tissue] = value
    return table


_DCE_NOISE_SIGMA = 12.0
_T2_NOISE_SIGMA = 10.0
_BIAS_AMPLITUDE = 0.15


def synthesize_mr(
    *,
    seed: int = 0,
    shape: tuple[int, int, int] = (24, 96, 96),
    spacing_mm: tuple[float, float, float] = (2.5, 1.5, 1.5),
    orientation: Orientation | str = Orientation.AXIAL,
    phases: int = 4,
    phase_times_s: Sequence[float] | None = None,
    include_t2: bool = True,
    kidney_scale: float = 1.0,
) -> SyntheticMR:
    """Render the DCE phases (and a T2 image) of a synthetic kidney-graft study.

    Parameters
    ----------
    seed : int
        Seeds anatomy variations, bias fields, noise and the T2 motion independently.
    shape : tuple of int
        DCE (slices, rows, columns).
    spacing_mm : tuple of float
        DCE (slice step, row spacing, column spacing), mm.
    orientation : Orientation or str
        Slice orientation of both series; the grid is centred on the kidney.
    phases : int
        Number of DCE phases; ignored when ``phase_times_s`` is given.
    phase_times_s : sequence of float, optional
        Seconds after injection of each phase; default :func:`default_phase_times`.
    include_t2 : bool
        Also render the T2 series (slices of :data:`T2_SLICE_THICKNESS_MM`, same
        orientation and in-plane grid, covering the DCE slab; the patient moved by a
        seeded rigid motion of up to 3 degrees and 4 mm per axis).
    kidney_scale : float
        Factor on the kidney's semi-axes.

    Returns
    -------
    SyntheticMR
        Images (uint16), labels, kidney mask and geometry.
    """
    orientation = Orientation(orientation)
    times = tuple(float(t) for t in (phase_times_s or default_phase_times(phases)))
    bias_seed, noise_seed, motion_seed = np.random.SeedSequence([seed, 2]).spawn(3)
    anatomy = make_anatomy(seed, kidney_scale=kidney_scale)
    kidney = anatomy.kidney
    noise_rng = np.random.default_rng(noise_seed)
    bias_rng = np.random.default_rng(bias_seed)
    centre = np.asarray(kidney.centre)

    dce_geometry = VolumeGeometry.centred(
        kidney, orientation=orientation, shape=shape, spacing_mm=spacing_mm
    )
    points = dce_geometry.points()
    labels = anatomy.labels(points)
    mask = np.isin(labels, (Tissue.CORTEX, Tissue.MEDULLA)).astype(np.uint8)
    bias = _bias_field(points, centre, bias_rng, _BIAS_AMPLITUDE)
    dce = np.empty((len(times), *dce_geometry.shape), dtype=np.uint16)
    for p, time_s in enumerate(times):
        table = _lookup({t: s.dce(time_s) for t, s in TISSUE_SIGNALS.items()})
        dce[p] = _to_uint16(_rician(table[labels] * bias, _DCE_NOISE_SIGMA, noise_rng))

    t2_geometry = t2 = motion = None
    if include_t2:
        motion_rng = np.random.default_rng(motion_seed)
        motion = RigidMotion(
            rotation=_as_matrix(
                _rotation(motion_rng.normal(size=3), float(motion_rng.uniform(-3.0, 3.0)))
            ),
            translation_mm=_as_vector(motion_rng.uniform(-4.0, 4.0, size=3)),
            centre=_as_vector(centre),
        )
        slab_mm = shape[0] * spacing_mm[0]
        t2_slices = max(3, math.ceil(slab_mm / T2_SLICE_THICKNESS_MM) + 2)
        t2_geometry = VolumeGeometry.centred(
            kidney,
            orientation=orientation,
            shape=(t2_slices, shape[1], shape[2]),
            spacing_mm=(T2_SLICE_THICKNESS_MM, spacing_mm[1], spacing_mm[2]),
        )
        t2_points = t2_geometry.points()
        t2_labels = anatomy.labels(motion.apply_inverse(t2_points))
        t2_table = _lookup({t: s.t2w for t, s in TISSUE_SIGNALS.items()})
        t2_bias = _bias_field(t2_points, centre, bias_rng, _BIAS_AMPLITUDE)
        t2 = _to_uint16(_rician(t2_table[t2_labels] * t2_bias, _T2_NOISE_SIGMA, noise_rng))

    return SyntheticMR(
        anatomy=anatomy,
        dce_geometry=dce_geometry,
        dce=dce,
        phase_times_s=times,
        dce_labels=labels,
        kidney_mask=mask,
        t2_geometry=t2_geometry,
        t2=t2,
        t2_motion=motion,
    )
