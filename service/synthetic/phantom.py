"""Synthetic kidney-graft MR phantom: anatomy, tissue signals, acquisition and rendering.

Everything is defined in patient coordinates (mm, DICOM LPS: +x towards the patient's
left, +y posterior, +z superior) and sampled at voxel centres of a
:class:`VolumeGeometry`, so the same seed gives the same patient in every orientation.
numpy does the maths; ``scipy.ndimage`` blurs (point-spread function) and interpolates.

What is data, not code
----------------------
- :data:`TISSUE_SIGNALS`: per tissue, the pre-contrast T1-weighted (DCE) signal, the
  signal gained at full enhancement, the T2-weighted signal, an
  :class:`EnhancementCurve` (knots, linear in between) and the relative amplitude of its
  texture. Arterial phase (20 s): the arteries outshine everything and the renal vein
  (opacified within seconds of the renal artery) is as bright as the cortex; nephrographic
  phase (60 s): the kidney is the brightest tissue; late phase (180 s): bowel walls and the
  blood pool are still enhanced, bowel loops close to the kidney's signal.
- :class:`Anatomy`: an ordered tuple of :class:`Layer` (tissue + shape + signal gain; later
  layers paint over earlier ones) and the :class:`Kidney`, painted last.
  :func:`make_anatomy` builds it: body wall, psoas and iliacus, pelvic bones, bladder, a
  dozen bowel loops of varying enhancement (enhancing wall, fluid content in 60 % of
  them), the external iliac artery and vein, the renal artery and vein from the hilum,
  and, placed against the graft's surface so that they touch it, the iliopsoas it rests
  on and one or two bowel loops in front of it (about 15-25 % of the kidney's surface
  voxels face bowel or muscle).
- :class:`ProtocolRanges` / :data:`PAPER_RANGES` and :func:`paper_protocol`: acquisition
  geometry of the MRI paper's dataset (§4), drawn reproducibly per seed as an
  :class:`AcquisitionProtocol`.
- :class:`RenderSettings`: image-formation parameters (below); ``RenderSettings.ideal()``
  renders flat tissues with sharp edges and no noise, bias or deformation.

Image formation (:func:`synthesize_mr`)
---------------------------------------
1. *Labels* at the voxel centres (the DCE ground truth: voxel centre inside the kidney).
   Shapes are culled by their bounding boxes mapped to voxel-index boxes, and everything
   is rendered in slabs of about a million voxels, in float32.
2. *Texture*: each tissue's signal is multiplied by ``1 + a_t * n_t(x)``, ``a_t`` its
   ``texture`` amplitude (a few %) and ``n_t`` a unit-variance Gaussian random field in
   patient space (white noise smoothed by a Gaussian of
   :attr:`RenderSettings.texture_correlation_mm`, 6 mm).
   The ``n_t`` are fixed mixtures of three shared fields (white noise on a 3 mm lattice,
   Gaussian-smoothed, seeded by the anatomy seed), evaluated on a lattice of about 3 mm in
   each grid and interpolated linearly: the same texture in every DCE phase and, moved with
   the patient, in the T2. Layers also carry a gain (e.g. bowel loops 0.7-1.15).
3. *Partial volume*: the DCE is blurred by a Gaussian point-spread function (sigma
   :attr:`RenderSettings.psf_sigma_in_plane` voxels in-plane and
   :attr:`RenderSettings.psf_sigma_through_plane` through-plane, the slice profile of the
   3D acquisition); the thick T2 slices average
   :attr:`RenderSettings.t2_sub_slices` sub-slice samples across their thickness (a
   rectangular slice profile) and are blurred in-plane.
4. *Bias field*: a smooth multiplicative field per series, ``exp`` of a random quadratic
   polynomial of patient position normalised so that it stays within
   ``1 / (1 + b)`` and ``1 + b`` over the whole body (``b`` =
   :attr:`RenderSettings.bias_amplitude`, 25 %): a large field of view sees all of it,
   a small one around the kidney a fraction.
5. *Rician noise*: complex Gaussian noise, then the magnitude. Its sigma is set by the
   kidney's SNR (:attr:`RenderSettings.dce_snr`: late-phase kidney signal / sigma, 20;
   :attr:`RenderSettings.t2_snr`: T2 kidney signal / sigma, 20) at a reference voxel of the
   paper's protocol (DCE 0.86 x 0.86 x 2.2 mm, T2 0.84 x 0.84 x 5.5 mm), and scales
   inversely with the voxel volume: the small default grid (2.5 x 1.5 x 1.5 mm) has an SNR
   about 3.5 times higher.

T2 misalignment
---------------
The T2 is acquired minutes before the DCE: the patient moved by a seeded
:class:`RigidMotion` (up to 3 degrees about the kidney centre and 4 mm per axis) and the
soft tissues deformed by a :class:`SmoothDeformation`, a sum of four Gaussian
displacement bumps (width 25-45 mm, centred within 50 mm of the kidney per axis) scaled
so that no point moves by more than :attr:`RenderSettings.t2_deformation_mm` (3 mm); the
rigid motion and the deformation are drawn from independent streams of the seed, so
``t2_motion`` does not depend on the deformation settings. The T2 voxel at scanner
position ``y`` shows the anatomy at DCE position
``deformation.source(motion.apply_inverse(y))`` (see :meth:`SyntheticMR.t2_source_points`);
the renderer interpolates the displacement from a 10 mm lattice (error about 0.1 mm).

Default kidney size
-------------------
A real graft (semi-axes about 55 x 30 x 25 mm) cannot fit inside the default DCE slab
(24 slices x 2.5 mm = 60 mm) in the axial, coronal *and* sagittal orientations: the
squared half-extents along three orthogonal directions add up to a² + b² + c²
whatever the rotation. The default kidney (``kidney_scale=1``) is therefore smaller,
:data:`KIDNEY_SEMI_AXES_MM`, with its long axis oblique (as grafts lie in the iliac fossa)
so it fits every orientation. :func:`paper_protocol` draws an adult graft
(``kidney_scale`` 1.3-1.6: about 125-235 ml) with the paper's 120-220 mm slabs.

Speed
-----
A paper-protocol study (4 DCE phases of 512 x 512 x 64-88 voxels and the T2) renders in
about 11 s on two CPU cores, with a peak resident memory of about 0.9 GB; the default
(24, 96, 96) study in about 0.3 s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "BODY_CENTRE_XY",
    "KIDNEY_SEMI_AXES_MM",
    "PAPER_RANGES",
    "T2_SLICE_THICKNESS_MM",
    "TISSUE_SIGNALS",
    "AcquisitionProtocol",
    "Anatomy",
    "Capsule",
    "Ellipsoid",
    "EllipticCylinder",
    "EnhancementCurve",
    "GridCentre",
    "Kidney",
    "Layer",
    "Orientation",
    "ProtocolRanges",
    "RenderSettings",
    "RigidMotion",
    "Shape",
    "SmoothDeformation",
    "SyntheticMR",
    "Tissue",
    "TissueSignal",
    "VolumeGeometry",
    "default_phase_times",
    "make_anatomy",
    "paper_protocol",
    "synthesize_mr",
]

logger = logging.getLogger(__name__)

Vector = tuple[float, float, float]
Matrix = tuple[Vector, Vector, Vector]

_IDENTITY: Matrix = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

#: Semi-axes of the default kidney (long axis, towards the hilum, thickness), mm.
KIDNEY_SEMI_AXES_MM: Vector = (38.0, 21.0, 17.0)
#: Slice thickness and spacing of the default T2-weighted series, mm.
T2_SLICE_THICKNESS_MM = 5.0
#: Axis of the body's elliptic cylinders (x, y), mm: where a large field of view is centred.
BODY_CENTRE_XY: tuple[float, float] = (0.0, 5.0)

_DEFAULT_SHAPE = (24, 96, 96)
_DEFAULT_SPACING_MM: Vector = (2.5, 1.5, 1.5)


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
    BOWEL_CONTENT = 10


_KIDNEY_TISSUES = (Tissue.CORTEX, Tissue.MEDULLA)


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
    texture : float
        Standard deviation of the tissue's smooth multiplicative texture (0.05: 5 %).
    """

    t1w: float
    t1w_gain: float
    t2w: float
    enhancement: EnhancementCurve
    texture: float = 0.0

    def dce(self, time_s: float) -> float:
        """Return the DCE signal ``time_s`` seconds after injection."""
        return self.t1w + self.t1w_gain * self.enhancement.at(time_s)


def _curve(*knots: tuple[float, float]) -> EnhancementCurve:
    return EnhancementCurve(tuple(t for t, _ in knots), tuple(v for _, v in knots))


_NO_ENHANCEMENT = _curve((0.0, 0.0))

#: Tissue signals. Arterial phase (~20 s): arteries far brighter than the cortex, the
#: renal vein as bright as it; nephrographic phase (~60 s): the kidney brighter than
#: everything else; late phase (~180 s): bowel walls within about 10 % of the kidney,
#: vessels at about two thirds of it. Bowel content is fluid: dark on T1, bright on T2.
TISSUE_SIGNALS: Mapping[Tissue, TissueSignal] = MappingProxyType(
    {
        Tissue.AIR: TissueSignal(t1w=0.0, t1w_gain=0.0, t2w=0.0, enhancement=_NO_ENHANCEMENT),
        Tissue.FAT: TissueSignal(
            t1w=70.0,
            t1w_gain=20.0,
            t2w=450.0,
            enhancement=_curve((0, 0), (60, 0.5), (600, 1.0)),
            texture=0.08,
        ),
        Tissue.MUSCLE: TissueSignal(
            t1w=220.0,
            t1w_gain=200.0,
            t2w=180.0,
            enhancement=_curve((0, 0), (20, 0.1), (60, 0.5), (180, 0.8), (600, 1.0)),
            texture=0.05,
        ),
        Tissue.BONE: TissueSignal(
            t1w=130.0,
            t1w_gain=100.0,
            t2w=250.0,
            enhancement=_curve((0, 0), (30, 0.2), (120, 0.7), (600, 1.0)),
            texture=0.10,
        ),
        Tissue.BOWEL: TissueSignal(
            t1w=180.0,
            t1w_gain=800.0,
            t2w=600.0,
            enhancement=_curve((0, 0), (20, 0.1), (35, 0.45), (60, 0.75), (180, 0.95), (600, 0.75)),
            texture=0.10,
        ),
        Tissue.BOWEL_CONTENT: TissueSignal(
            t1w=60.0,
            t1w_gain=40.0,
            t2w=900.0,
            enhancement=_curve((0, 0), (600, 1.0)),
            texture=0.10,
        ),
        Tissue.BLADDER: TissueSignal(
            t1w=80.0,
            t1w_gain=600.0,
            t2w=1600.0,
            enhancement=_curve((0, 0), (120, 0.0), (180, 0.1), (600, 0.6)),
            texture=0.02,
        ),
        Tissue.ARTERY: TissueSignal(
            t1w=200.0,
            t1w_gain=1500.0,
            t2w=60.0,
            enhancement=_curve(
                (0, 0), (12, 0), (20, 1.0), (30, 0.7), (60, 0.45), (180, 0.3), (600, 0.15)
            ),
            texture=0.03,
        ),
        Tissue.VEIN: TissueSignal(
            t1w=190.0,
            t1w_gain=1300.0,
            t2w=80.0,
            enhancement=_curve(
                (0, 0), (14, 0), (22, 0.6), (30, 0.85), (60, 0.6), (180, 0.35), (600, 0.15)
            ),
            texture=0.04,
        ),
        Tissue.CORTEX: TissueSignal(
            t1w=300.0,
            t1w_gain=1000.0,
            t2w=550.0,
            enhancement=_curve(
                (0, 0), (14, 0), (20, 0.35), (35, 0.95), (60, 0.9), (180, 0.7), (600, 0.45)
            ),
            texture=0.04,
        ),
        Tissue.MEDULLA: TissueSignal(
            t1w=250.0,
            t1w_gain=1000.0,
            t2w=800.0,
            enhancement=_curve(
                (0, 0), (18, 0), (20, 0.05), (60, 0.85), (120, 0.9), (180, 0.8), (600, 0.55)
            ),
            texture=0.05,
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


@dataclass(frozen=True)
class Layer:
    """One tissue region; the anatomy paints layers in order, later over earlier.

    ``gain`` multiplies the tissue's signal in this region (e.g. a bowel loop that
    enhances more or less than the others).
    """

    tissue: Tissue
    shape: Shape
    gain: float = 1.0


@dataclass(frozen=True)
class Anatomy:
    """The phantom patient: background layers, then the kidney graft on top."""

    layers: tuple[Layer, ...]
    kidney: Kidney

    def labels(self, points: np.ndarray) -> np.ndarray:
        """Return the :class:`Tissue` label (uint8) at each point (``points.shape[:-1]``)."""
        flat = np.asarray(points, dtype=float).reshape(-1, 3)
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


def _touching_capsule(
    kidney: Kidney,
    direction: Sequence[float],
    *,
    axis_hint: Sequence[float],
    radius_mm: float,
    half_length_mm: float,
    overlap_mm: float,
) -> Capsule:
    """A tube lying against the kidney's surface on the side ``direction`` points to.

    Its axis is ``axis_hint`` made perpendicular to ``direction``; it dips ``overlap_mm``
    into the kidney (which is painted over it), so the two share a contact patch.
    """
    d = _unit(direction)
    axis = np.asarray(axis_hint, dtype=float) - (np.asarray(axis_hint) @ d) * d
    axis = _unit(axis)
    centre = kidney.support_point(d) + (radius_mm - overlap_mm) * d
    return Capsule(
        _as_vector(centre - half_length_mm * axis),
        _as_vector(centre + half_length_mm * axis),
        float(radius_mm),
    )


#: Direction of the psoas (inferior end to superior end).
_PSOAS_AXIS = (23.0, 20.0, 230.0)


def _resting_bed(kidney: Kidney, rng: np.random.Generator) -> Ellipsoid:
    """The iliopsoas the graft rests on: a flat muscle behind it, along the psoas.

    A flattened ellipsoid whose broad face dips 4-7 mm into the kidney's posterolateral
    surface (the kidney is painted over it), so the two share a wide contact patch.
    """
    d = _unit(np.array([-0.35, 1.0, -0.1]) + rng.normal(0.0, 0.1, size=3))
    along = np.asarray(_PSOAS_AXIS, dtype=float)
    along = _unit(along - (along @ d) * d)
    thickness = float(rng.uniform(14.0, 18.0))
    centre = kidney.support_point(d) + (thickness - float(rng.uniform(4.0, 7.0))) * d
    return Ellipsoid(
        _as_vector(centre),
        (thickness, float(rng.uniform(40.0, 50.0)), float(rng.uniform(60.0, 80.0))),
        _as_matrix(np.stack([d, np.cross(along, d), along])),
    )


def _contact_layers(kidney: Kidney, rng: np.random.Generator) -> tuple[Layer, ...]:
    """Iliopsoas bed behind the graft and one or two bowel loops in front of it, touching."""
    layers = [Layer(Tissue.MUSCLE, _resting_bed(kidney, rng))]
    sides = [np.array([0.55, -1.0, 0.35]), np.array([0.1, -0.6, 1.0])]
    n_loops = 1 + int(rng.uniform() < 0.8)
    for side in sides[:n_loops]:
        loop = _touching_capsule(
            kidney,
            side + rng.normal(0.0, 0.25, size=3),
            axis_hint=rng.normal(size=3),
            radius_mm=float(rng.uniform(11.0, 16.0)),
            half_length_mm=float(rng.uniform(20.0, 45.0)),
            overlap_mm=float(rng.uniform(3.0, 6.0)),
        )
        layers += _bowel_loop(loop, float(rng.uniform(0.9, 1.1)), rng)
    return tuple(layers)


#: Share of bowel loops with fluid content (the others collapsed), wall thickness range, mm.
_BOWEL_FILLED = 0.6
_BOWEL_WALL_MM = (2.5, 4.0)


def _bowel_loop(shape: Ellipsoid | Capsule, gain: float, rng: np.random.Generator) -> list[Layer]:
    """A bowel loop: its enhancing wall, and inside it fluid content unless collapsed."""
    layers = [Layer(Tissue.BOWEL, shape, gain=gain)]
    if rng.uniform() >= _BOWEL_FILLED:
        return layers
    wall = float(rng.uniform(*_BOWEL_WALL_MM))
    if isinstance(shape, Capsule):
        if shape.radius_mm > 2.0 * wall:
            layers.append(
                Layer(Tissue.BOWEL_CONTENT, Capsule(shape.start, shape.end, shape.radius_mm - wall))
            )
        return layers
    if min(shape.semi_axes) > 2.0 * wall:
        inner = _as_vector(np.asarray(shape.semi_axes) - wall)
        layers.append(Layer(Tissue.BOWEL_CONTENT, Ellipsoid(shape.centre, inner, shape.axes)))
    return layers


def _random_bowel(
    rng: np.random.Generator, count: int, low: Sequence[float], high: Sequence[float]
) -> list[Ellipsoid]:
    return [
        Ellipsoid(
            _as_vector(rng.uniform(low, high)),
            _as_vector(rng.uniform(12.0, 22.0, size=3)),
            _as_matrix(_rotation(rng.normal(size=3), float(rng.uniform(0.0, 180.0)))),
        )
        for _ in range(count)
    ]


def make_anatomy(seed: int = 0, *, kidney_scale: float = 1.0) -> Anatomy:
    """Build the phantom patient: a kidney graft in the right iliac fossa.

    Parameters
    ----------
    seed : int
        Seeds the random variations (kidney pose, bowel loops and their enhancement, the
        structures in contact with the graft).
    kidney_scale : float
        Factor on the kidney's semi-axes :data:`KIDNEY_SEMI_AXES_MM` (volume scales
        with its cube).

    Returns
    -------
    Anatomy
        Body (fat, abdominal wall, psoas, iliacus), pelvic bones, bladder, twelve bowel
        loops (gain 0.7-1.15; 60 % hold fluid inside a 2.5-4 mm wall), right external
        iliac artery and vein, renal artery and vein from the hilum to the iliac vessels,
        the iliopsoas bed the graft rests on and one or two bowel loops touching its
        anterior surface, and the kidney.
    """
    if kidney_scale <= 0:
        raise ValueError(f"kidney_scale must be positive, got {kidney_scale}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))

    # Kidney: long axis from the lower pole (inferomedial, anterior) to the upper pole
    # (superolateral, posterior); hilum facing medially and a little backwards.
    long_axis = _unit([-0.9, 1.0, 1.0])
    towards_hilum = np.array([1.0, 0.6, 0.25])
    towards_hilum = _unit(towards_hilum - (towards_hilum @ long_axis) * long_axis)
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
    # Small bowel in the pelvis, then loops filling the lower abdomen away from the graft.
    loops = _random_bowel(rng, 6, (-50.0, -85.0, -50.0), (60.0, -15.0, 70.0))
    loops += _random_bowel(rng, 6, (-20.0, -80.0, 0.0), (110.0, 20.0, 130.0))
    gains = rng.uniform(0.7, 1.15, size=len(loops))
    bowel = tuple(
        layer
        for loop, gain in zip(loops, gains, strict=True)
        for layer in _bowel_loop(loop, float(gain), rng)
    )
    bed, *contact_bowel = _contact_layers(kidney, rng)
    body = BODY_CENTRE_XY
    layers = (
        Layer(Tissue.FAT, EllipticCylinder(body, (165.0, 115.0))),
        Layer(Tissue.MUSCLE, EllipticCylinder(body, (150.0, 100.0))),
        Layer(Tissue.FAT, EllipticCylinder(body, (138.0, 90.0))),
        Layer(Tissue.MUSCLE, Capsule((-45.0, 45.0, 150.0), (-68.0, 25.0, -80.0), 18.0)),
        Layer(Tissue.MUSCLE, Capsule((45.0, 45.0, 150.0), (68.0, 25.0, -80.0), 18.0)),
        Layer(Tissue.MUSCLE, Ellipsoid((-108.0, 20.0, 5.0), (16.0, 42.0, 55.0), wing_axes)),
        Layer(Tissue.MUSCLE, Ellipsoid((108.0, 20.0, 5.0), (16.0, 42.0, 55.0), wing_axes_left)),
        bed,
        Layer(Tissue.BONE, Ellipsoid((-125.0, 30.0, 5.0), (8.0, 48.0, 55.0), wing_axes)),
        Layer(Tissue.BONE, Ellipsoid((125.0, 30.0, 5.0), (8.0, 48.0, 55.0), wing_axes_left)),
        Layer(Tissue.BONE, Ellipsoid((0.0, 85.0, 10.0), (45.0, 18.0, 55.0), sacrum_axes)),
        Layer(Tissue.BONE, Ellipsoid((-95.0, 5.0, -100.0), (24.0, 24.0, 24.0))),
        Layer(Tissue.BONE, Ellipsoid((95.0, 5.0, -100.0), (24.0, 24.0, 24.0))),
        *bowel,
        *contact_bowel,
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


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class ProtocolRanges:
    """Acquisition ranges of a dataset, from which :func:`paper_protocol` draws.

    Defaults: the MRI paper's dataset (§4): DCE 512 x 512 x [64-88] voxels of 0.78-0.94 mm
    in-plane and 1.9-2.5 mm slices; T2 512 x 512 x [25-36] voxels of 0.70-0.98 mm in-plane
    and 5.0-6.0 mm slices; adult grafts (``kidney_scale`` 1.3-1.6, about 125-235 ml).
    """

    matrix: int = 512
    dce_slices: tuple[int, int] = (64, 88)
    dce_pixel_mm: tuple[float, float] = (0.78, 0.94)
    dce_slice_mm: tuple[float, float] = (1.9, 2.5)
    t2_slices: tuple[int, int] = (25, 36)
    t2_pixel_mm: tuple[float, float] = (0.70, 0.98)
    t2_slice_mm: tuple[float, float] = (5.0, 6.0)
    kidney_scale: tuple[float, float] = (1.3, 1.6)


#: Acquisition ranges of the MRI paper's dataset (32 grafts, 12 months after transplant).
PAPER_RANGES = ProtocolRanges()


def _positive_shape(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise ValueError(f"{name} must be 3 positive sizes, got {tuple(shape)}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _positive_spacing(spacing: Sequence[float], name: str) -> Vector:
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"{name} must be 3 positive spacings, got {tuple(spacing)}")
    return _as_vector(spacing)


@dataclass(frozen=True)
class AcquisitionProtocol:
    """Grids of the DCE and T2 series and the graft size of one synthetic study.

    Attributes
    ----------
    dce_shape, t2_shape : tuple of int
        (slices, rows, columns).
    dce_spacing_mm, t2_spacing_mm : tuple of float
        (slice step = slice thickness, row spacing, column spacing), mm.
    kidney_scale : float
        Factor on :data:`KIDNEY_SEMI_AXES_MM`.
    """

    dce_shape: tuple[int, int, int]
    dce_spacing_mm: Vector
    t2_shape: tuple[int, int, int]
    t2_spacing_mm: Vector
    kidney_scale: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "dce_shape", _positive_shape(self.dce_shape, "dce_shape"))
        object.__setattr__(self, "t2_shape", _positive_shape(self.t2_shape, "t2_shape"))
        for name in ("dce_spacing_mm", "t2_spacing_mm"):
            object.__setattr__(self, name, _positive_spacing(getattr(self, name), name))
        if not self.kidney_scale > 0:
            raise ValueError(f"kidney_scale must be positive, got {self.kidney_scale}")

    @property
    def dce_slab_mm(self) -> float:
        """Thickness covered by the DCE slices, mm."""
        return self.dce_shape[0] * self.dce_spacing_mm[0]

    @property
    def t2_slab_mm(self) -> float:
        """Thickness covered by the T2 slices, mm."""
        return self.t2_shape[0] * self.t2_spacing_mm[0]


def _t2_slices_covering(
    slab_mm: float, thickness_mm: float, drawn: int, ranges: ProtocolRanges
) -> tuple[int, float]:
    """T2 slice count and thickness whose slab covers ``slab_mm``.

    The drawn count is raised to the number needed; past the range's maximum the
    thickness is first raised (up to the range's maximum), then the count exceeds the range.
    """
    needed = math.ceil(slab_mm / thickness_mm - 1e-9)
    most = ranges.t2_slices[1]
    if needed > most:
        thickness_mm = min(ranges.t2_slice_mm[1], math.ceil(slab_mm / most * 100.0) / 100.0)
        needed = math.ceil(slab_mm / thickness_mm - 1e-9)
    return max(drawn, needed), thickness_mm


def paper_protocol(seed: int = 0, *, ranges: ProtocolRanges = PAPER_RANGES) -> AcquisitionProtocol:
    """Draw the acquisition of one study of the MRI paper's dataset (§4), reproducibly.

    Every value is uniform in its range of ``ranges``: DCE slice count, in-plane spacing
    (square pixels, rounded to 1e-4 mm) and slice spacing (0.01 mm); T2 in-plane spacing,
    slice thickness and count; ``kidney_scale``. Both matrices are ``ranges.matrix``
    squared. The T2 slab must cover the DCE slab (both are centred alike): the drawn T2
    count is raised to the number of slices needed, and where that exceeds the range
    (a DCE slab above 36 x 6 mm = 216 mm) the T2 slices are thickened to at most 6 mm and
    the count goes just beyond the range (at most 37 for the paper's ranges).

    Parameters
    ----------
    seed : int
        Seeds the draw (independently of the anatomy and noise of the same seed).
    ranges : ProtocolRanges
        Ranges to draw from; default :data:`PAPER_RANGES`.

    Returns
    -------
    AcquisitionProtocol
        For :func:`synthesize_mr` / ``write_mr_study`` (``protocol=``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    dce_slices = int(rng.integers(ranges.dce_slices[0], ranges.dce_slices[1] + 1))
    dce_pixel = round(float(rng.uniform(*ranges.dce_pixel_mm)), 4)
    dce_step = round(float(rng.uniform(*ranges.dce_slice_mm)), 2)
    t2_pixel = round(float(rng.uniform(*ranges.t2_pixel_mm)), 4)
    t2_thickness = round(float(rng.uniform(*ranges.t2_slice_mm)), 2)
    t2_drawn = int(rng.integers(ranges.t2_slices[0], ranges.t2_slices[1] + 1))
    kidney_scale = round(float(rng.uniform(*ranges.kidney_scale)), 3)
    t2_slices, t2_thickness = _t2_slices_covering(
        dce_slices * dce_step, t2_thickness, t2_drawn, ranges
    )
    n = ranges.matrix
    return AcquisitionProtocol(
        dce_shape=(dce_slices, n, n),
        dce_spacing_mm=(dce_step, dce_pixel, dce_pixel),
        t2_shape=(t2_slices, n, n),
        t2_spacing_mm=(t2_thickness, t2_pixel, t2_pixel),
        kidney_scale=kidney_scale,
    )


@dataclass(frozen=True)
class RenderSettings:
    """Image-formation parameters of :func:`synthesize_mr` (defaults: realistic).

    Attributes
    ----------
    psf_sigma_in_plane : float
        Gaussian point-spread function in-plane, sigma in voxels (0: none).
    psf_sigma_through_plane : float
        Slice profile of the 3D DCE, sigma in slices (0: none).
    t2_sub_slices : int
        Samples averaged across each T2 slice's thickness (1: the slice centre only).
    texture_scale : float
        Factor on every tissue's ``texture`` amplitude (0: flat tissues).
    texture_correlation_mm : float
        Smoothing (Gaussian sigma) of the texture's white noise, mm.
    bias_amplitude : float
        Bias fields stay within ``1 / (1 + b)`` and ``1 + b`` over the body (0: none).
    dce_snr, t2_snr : float or None
        Kidney SNR (late-phase DCE / T2 signal over the noise sigma) at the reference
        voxel of the paper's protocol; ``None``: no noise.
    t2_deformation_mm : float
        Largest displacement of the T2's smooth deformation, mm (0: rigid motion only).
    """

    psf_sigma_in_plane: float = 0.5
    psf_sigma_through_plane: float = 0.5
    t2_sub_slices: int = 5
    texture_scale: float = 1.0
    texture_correlation_mm: float = 6.0
    bias_amplitude: float = 0.25
    dce_snr: float | None = 20.0
    t2_snr: float | None = 20.0
    t2_deformation_mm: float = 3.0

    def __post_init__(self) -> None:
        if self.t2_sub_slices < 1:
            raise ValueError(f"t2_sub_slices must be at least 1, got {self.t2_sub_slices}")
        for name in ("dce_snr", "t2_snr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        for name in (
            "psf_sigma_in_plane",
            "psf_sigma_through_plane",
            "texture_scale",
            "bias_amplitude",
            "t2_deformation_mm",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.texture_correlation_mm > 0:
            raise ValueError("texture_correlation_mm must be positive")

    @classmethod
    def ideal(cls) -> RenderSettings:
        """Flat tissues, sharp edges, no bias, noise or deformation: labels made images."""
        return cls(
            psf_sigma_in_plane=0.0,
            psf_sigma_through_plane=0.0,
            t2_sub_slices=1,
            texture_scale=0.0,
            bias_amplitude=0.0,
            dce_snr=None,
            t2_snr=None,
            t2_deformation_mm=0.0,
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


def _chunks(
    n_slices: int, slice_voxels: int, *, multiple: int = 1, target: int = 1 << 20
) -> Iterator[tuple[int, int]]:
    """Slice ranges of about ``target`` voxels, a whole ``multiple`` of slices each."""
    per_chunk = max(1, target // max(1, slice_voxels) // multiple) * multiple
    for start in range(0, n_slices, per_chunk):
        yield start, min(n_slices, start + per_chunk)


def _linear_weights(n: int, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positions 0..n-1: index of the node below and the weight of the node above."""
    positions = np.arange(n, dtype=float)
    below = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, len(nodes) - 2)
    gap = np.maximum(nodes[below + 1] - nodes[below], 1e-9)
    above = np.clip((positions - nodes[below]) / gap, 0.0, 1.0).astype(np.float32)
    return below, above


def _interpolate_axis(
    values: np.ndarray, axis: int, below: np.ndarray, above: np.ndarray
) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` (fine positions of ``below``)."""
    lower = np.take(values, below, axis=axis)
    upper = np.take(values, below + 1, axis=axis)
    shape = [1] * values.ndim
    shape[axis] = len(below)
    weight = above.reshape(shape)
    return lower + (upper - lower) * weight


@dataclass(frozen=True)
class _GridField:
    """A smooth field sampled on a coarse lattice of a grid, interpolated linearly.

    ``values`` (channels, a, b, c) are the field at lattice nodes; ``weights`` the
    interpolation (node below, weight above) of each grid axis.
    """

    values: np.ndarray
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def sample(
        cls,
        grid: _SampleGrid,
        function: Callable[[np.ndarray], np.ndarray],
        node_spacing_mm: float,
    ) -> _GridField:
        """Evaluate ``function`` (positions (..., 3) -> (..., channels)) on the lattice."""
        nodes = []
        for axis, n in enumerate(grid.shape):
            length = float(np.linalg.norm(grid.steps[axis])) * max(n - 1, 0)
            count = max(2, math.ceil(length / node_spacing_mm) + 1)
            nodes.append(np.linspace(0.0, n - 1, count))
        values = function(grid.positions(*nodes))
        values = np.moveaxis(np.asarray(values, dtype=np.float32), -1, 0)
        weights = tuple(_linear_weights(n, node) for n, node in zip(grid.shape, nodes, strict=True))
        return cls(np.ascontiguousarray(values), weights)

    def block(self, k0: int, k1: int) -> np.ndarray:
        """The field on slices ``k0:k1``, (channels, K, J, I) float32."""
        below, above = self.weights[0]
        out = _interpolate_axis(self.values, 1, below[k0:k1], above[k0:k1])
        out = _interpolate_axis(out, 2, *self.weights[1])
        return _interpolate_axis(out, 3, *self.weights[2])


# --------------------------------------------------------------------------- fields


#: Spacing of the texture's white-noise lattice and of its sampling in a grid, mm.
_TEXTURE_LATTICE_MM = 3.0
#: Half-extent of the texture lattice around (body axis, kidney height), mm.
_TEXTURE_HALF_EXTENT_MM = (185.0, 130.0, 200.0)


@dataclass(frozen=True)
class _Texture:
    """Per-tissue multiplicative texture ``1 + sum_c weights[c][tissue] * field_c(x)``.

    ``fields`` are three unit-variance smooth random fields on a lattice in patient space
    (``origin``, ``spacing_mm``); ``weights`` (3, tissues) give each tissue a unit mixture of
    them scaled by its texture amplitude.
    """

    fields: np.ndarray
    origin: np.ndarray
    spacing_mm: float
    weights: np.ndarray

    @classmethod
    def generate(cls, seed: int, anatomy: Anatomy, settings: RenderSettings) -> _Texture | None:
        amplitudes = np.array(
            [TISSUE_SIGNALS[t].texture * settings.texture_scale for t in Tissue], dtype=float
        )
        if not np.any(amplitudes > 0):
            return None
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
        mixtures = rng.normal(size=(len(Tissue), 3))
        mixtures /= np.linalg.norm(mixtures, axis=1, keepdims=True)
        weights = (mixtures * amplitudes[:, None]).T.astype(np.float32)
        half = np.asarray(_TEXTURE_HALF_EXTENT_MM)
        centre = np.array([*BODY_CENTRE_XY, anatomy.kidney.centre[2]])
        origin = centre - half
        shape = tuple(int(n) for n in np.ceil(2 * half / _TEXTURE_LATTICE_MM) + 1)
        sigma = settings.texture_correlation_mm / _TEXTURE_LATTICE_MM
        fields = np.empty((3, *shape), dtype=np.float32)
        for c in range(3):
            noise = rng.standard_normal(shape, dtype=np.float32)
            smooth = ndi.gaussian_filter(noise, sigma, mode="wrap", truncate=3.0)
            fields[c] = smooth / smooth.std()
        return cls(fields, origin, _TEXTURE_LATTICE_MM, weights)

    def at(self, points: np.ndarray) -> np.ndarray:
        """The three fields at patient ``points`` (..., 3), shape (..., 3)."""
        index = (np.asarray(points, dtype=float) - self.origin) / self.spacing_mm
        coordinates = np.moveaxis(index, -1, 0)
        return np.stack(
            [
                ndi.map_coordinates(f, coordinates, order=1, mode="nearest", output=np.float32)
                for f in self.fields
            ],
            axis=-1,
        )

    def factors(self, labels: np.ndarray, fields: np.ndarray) -> np.ndarray:
        """Texture factor of each voxel given its tissue and the fields (3, ...) there."""
        out = self.weights[0][labels] * fields[0]
        out += self.weights[1][labels] * fields[1]
        out += self.weights[2][labels] * fields[2]
        out += np.float32(1.0)
        return np.maximum(out, np.float32(0.2), out=out)


#: Half-extent of the region over which a bias field is normalised, around the body axis
#: at the kidney's height, mm.
_BIAS_HALF_EXTENT_MM = (165.0, 115.0, 150.0)


def _bias_function(
    rng: np.random.Generator, kidney_centre: Sequence[float], amplitude: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``exp`` of a random quadratic polynomial, within ``1/(1+a), 1+a`` over the body."""
    centre = np.array([*BODY_CENTRE_XY, kidney_centre[2]])
    half = np.asarray(_BIAS_HALF_EXTENT_MM)
    coefficients = rng.uniform(-1.0, 1.0, size=9)

    def polynomial(points: np.ndarray) -> np.ndarray:
        x, y, z = np.moveaxis((np.asarray(points, dtype=float) - centre) / half, -1, 0)
        terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
        return sum(c * t for c, t in zip(coefficients, terms, strict=True))

    axes = [np.linspace(-h, h, 9) for h in half]
    lattice = centre + np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    largest = float(np.abs(polynomial(lattice)).max())
    scale = math.log1p(amplitude) / largest if largest > 0 else 0.0

    def bias(points: np.ndarray) -> np.ndarray:
        return np.exp(scale * polynomial(points))[..., None]

    return bias


def _blur(volume: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur (sigma in voxels per axis) of a float32 volume, in place."""
    for axis, sigma in enumerate(sigmas):
        if sigma > 0 and volume.shape[axis] > 1:
            ndi.gaussian_filter1d(
                volume, sigma, axis=axis, mode="nearest", truncate=3.0, output=volume
            )
    return volume


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician distributed), float32."""
    real = rng.standard_normal(signal.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += signal
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary *= np.float32(sigma)
    return np.hypot(real, imaginary, out=real)


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _lookup(values: Mapping[Tissue, float]) -> np.ndarray:
    table = np.zeros(max(Tissue) + 1, dtype=np.float32)
    for tissue, value in values.items():
        table[tissue] = value
    return table


#: Reference voxels (slice, row, column mm) at which the SNR settings hold: the middle of
#: the paper's DCE and T2 protocols.
_DCE_REFERENCE_VOXEL_MM = (2.2, 0.86, 0.86)
_T2_REFERENCE_VOXEL_MM = (5.5, 0.84, 0.84)
#: Phase (s after injection) whose kidney signal defines the DCE SNR.
_SNR_PHASE_S = 180.0


def _noise_sigma(
    snr: float | None, kidney_signal: float, reference_mm: Sequence[float], spacing_mm: Vector
) -> float:
    """Noise sigma giving ``snr`` at the reference voxel, inversely to the voxel volume."""
    if snr is None:
        return 0.0
    return kidney_signal / snr * float(np.prod(reference_mm)) / float(np.prod(spacing_mm))


def _kidney_signal(signal: Callable[[TissueSignal], float]) -> float:
    return float(np.mean([signal(TISSUE_SIGNALS[t]) for t in _KIDNEY_TISSUES]))


# --------------------------------------------------------------------------- painting


def _shape_test(shape: Shape, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    fast = getattr(shape, "contains_xyz", None)
    if fast is not None:
        return fast(x, y, z)
    return shape.contains(np.stack([x, y, z], axis=-1))


class _Painter:
    """Paints an :class:`Anatomy` on a :class:`_SampleGrid`, slab by slab.

    Each voxel gets a region id: 0 for air, ``n`` for ``layers[n - 1]``, then cortex and
    medulla; :attr:`tissues` and :attr:`gains` map ids to labels and signal gains.
    """

    def __init__(self, anatomy: Anatomy, grid: _SampleGrid, margin_mm: float = 0.0) -> None:
        self.anatomy = anatomy
        self.boxes = [grid.index_box(*layer.shape.bounds(), margin_mm) for layer in anatomy.layers]
        self.kidney_box = grid.index_box(*anatomy.kidney.bounds(), margin_mm)
        n = len(anatomy.layers)
        if n + 3 > 256:
            raise ValueError(f"at most 253 layers can be painted, got {n}")
        self.cortex, self.medulla = n + 1, n + 2
        self.tissues = np.array(
            [Tissue.AIR, *(layer.tissue for layer in anatomy.layers), *_KIDNEY_TISSUES],
            dtype=np.uint8,
        )
        self.gains = np.array(
            [1.0, *(layer.gain for layer in anatomy.layers), 1.0, 1.0], dtype=np.float32
        )

    @staticmethod
    def _within(
        box: tuple[slice, slice, slice] | None, k0: int, k1: int
    ) -> tuple[slice, slice, slice] | None:
        if box is None or box[0].stop <= k0 or box[0].start >= k1:
            return None
        slices = slice(max(box[0].start, k0) - k0, min(box[0].stop, k1) - k0)
        return (slices, box[1], box[2])

    def paint(self, xyz: Sequence[np.ndarray], k0: int) -> np.ndarray:
        """Region ids (uint8) of the slab starting at slice ``k0`` with coordinates ``xyz``."""
        x, y, z = xyz
        k1 = k0 + x.shape[0]
        ids = np.zeros(x.shape, dtype=np.uint8)
        for n, (layer, box) in enumerate(zip(self.anatomy.layers, self.boxes, strict=True), 1):
            sub = self._within(box, k0, k1)
            if sub is None:
                continue
            inside = _shape_test(layer.shape, x[sub], y[sub], z[sub])
            ids[sub][inside] = n
        sub = self._within(self.kidney_box, k0, k1)
        if sub is not None:
            kidney = self.anatomy.kidney.tissues_xyz(x[sub], y[sub], z[sub])
            region = ids[sub]
            region[kidney == Tissue.CORTEX] = self.cortex
            region[kidney == Tissue.MEDULLA] = self.medulla
        return ids


@dataclass
class _Rendered:
    """Labels and texture-and-gain factors of a grid, before any signal is chosen."""

    labels: np.ndarray
    factors: np.ndarray


def _paint_grid(
    anatomy: Anatomy,
    grid: _SampleGrid,
    texture: _Texture | None,
    displacement: _GridField | None = None,
    margin_mm: float = 0.0,
    texture_source: Callable[[np.ndarray], np.ndarray] | None = None,
    multiple: int = 1,
) -> Iterator[tuple[int, int, _Rendered]]:
    """Yield ``(k0, k1, rendered)`` slabs of ``grid``, whole multiples of ``multiple`` slices.

    ``displacement`` (3 channels, mm) is added to the voxel positions; the texture is
    sampled at ``texture_source`` of the lattice positions (default: as they are).
    """
    painter = _Painter(anatomy, grid, margin_mm)
    texture_field = None
    if texture is not None:
        source = texture_source or (lambda p: p)
        texture_field = _GridField.sample(
            grid, lambda p: texture.at(source(p)), _TEXTURE_LATTICE_MM
        )
    slice_voxels = grid.shape[1] * grid.shape[2]
    for k0, k1 in _chunks(grid.shape[0], slice_voxels, multiple=multiple):
        xyz = grid.coordinates(k0, k1)
        if displacement is not None:
            shift = displacement.block(k0, k1)
            for c in range(3):
                xyz[c] += shift[c]
        ids = painter.paint(xyz, k0)
        labels = painter.tissues[ids]
        factors = painter.gains[ids]
        if texture is not None and texture_field is not None:
            factors *= texture.factors(labels, texture_field.block(k0, k1))
        yield k0, k1, _Rendered(labels, factors)


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
        uint8 :class:`Tissue` label of each DCE voxel (at its centre).
    kidney_mask : numpy.ndarray
        uint8 kidney mask in the DCE grid (voxel centres inside the kidney).
    t2_geometry, t2, t2_motion
        Grid, uint16 image (slices, rows, columns) and the rigid patient motion relative
        to the DCE of the T2 series; ``None`` without T2.
    t2_deformation : SmoothDeformation or None
        Non-rigid part of the T2 misalignment (see :meth:`t2_source_points`); ``None``
        without T2 or with ``t2_deformation_mm=0``.
    protocol : AcquisitionProtocol or None
        The acquisition rendered (grids and kidney scale).
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
    t2_deformation: SmoothDeformation | None = None
    protocol: AcquisitionProtocol | None = field(default=None, repr=False)

    @property
    def truth_volume_ml(self) -> float:
        """Volume of the voxelised kidney mask, ml."""
        return float(self.kidney_mask.sum()) * self.dce_geometry.voxel_volume_ml

    @property
    def analytic_volume_ml(self) -> float:
        """Exact kidney volume of the analytic shape, ml."""
        return self.anatomy.kidney.analytic_volume_ml

    def t2_source_points(self, points: np.ndarray) -> np.ndarray:
        """DCE-frame positions of the anatomy seen at T2-frame ``points`` (..., 3)."""
        if self.t2_motion is None:
            raise ValueError("this phantom has no T2 series")
        unmoved = self.t2_motion.apply_inverse(np.asarray(points, dtype=float))
        if self.t2_deformation is None:
            return unmoved
        return self.t2_deformation.source(unmoved)

    def dce_to_t2(self, points: np.ndarray) -> np.ndarray:
        """Where the anatomy at DCE-frame ``points`` appears in the T2 (inverse of the above)."""
        if self.t2_motion is None:
            raise ValueError("this phantom has no T2 series")
        p = np.asarray(points, dtype=float)
        if self.t2_deformation is not None:
            p = self.t2_deformation.inverse_source(p)
        return self.t2_motion.apply(p)


def _render_dce(
    anatomy: Anatomy,
    geometry: VolumeGeometry,
    times: Sequence[float],
    texture: _Texture | None,
    settings: RenderSettings,
    bias_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """DCE phases (uint16) and voxel-centre labels."""
    grid = _SampleGrid.of(geometry)
    labels = np.empty(geometry.shape, dtype=np.uint8)
    factors = np.empty(geometry.shape, dtype=np.float32)
    for k0, k1, slab in _paint_grid(anatomy, grid, texture):
        labels[k0:k1] = slab.labels
        factors[k0:k1] = slab.factors
    bias = _bias_function(bias_rng, anatomy.kidney.centre, settings.bias_amplitude)
    bias_field = None
    if settings.bias_amplitude > 0:
        bias_field = _GridField.sample(grid, bias, 20.0).block(0, geometry.shape[0])[0]
    sigma = _noise_sigma(
        settings.dce_snr,
        _kidney_signal(lambda s: s.dce(_SNR_PHASE_S)),
        _DCE_REFERENCE_VOXEL_MM,
        geometry.spacing_mm,
    )
    psf = (
        settings.psf_sigma_through_plane,
        settings.psf_sigma_in_plane,
        settings.psf_sigma_in_plane,
    )
    dce = np.empty((len(times), *geometry.shape), dtype=np.uint16)
    for p, time_s in enumerate(times):
        table = _lookup({t: s.dce(time_s) for t, s in TISSUE_SIGNALS.items()})
        image = table[labels]
        image *= factors
        _blur(image, psf)
        if bias_field is not None:
            image *= bias_field
        dce[p] = _to_uint16(_rician(image, sigma, noise_rng) if sigma > 0 else image)
    return dce, labels


def _render_t2(
    anatomy: Anatomy,
    geometry: VolumeGeometry,
    motion: RigidMotion,
    deformation: SmoothDeformation | None,
    texture: _Texture | None,
    settings: RenderSettings,
    bias_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    """The T2 image (uint16): sub-slices through the motion and deformation, averaged."""
    n_sub = settings.t2_sub_slices
    scanner = _SampleGrid.of(geometry)
    fine = scanner.sub_slices(n_sub).seen_through(motion)
    displacement = margin = source = None
    if deformation is not None:
        displacement = _GridField.sample(fine, deformation.displacement, 10.0)
        margin, source = deformation.bound_mm, deformation.source
    table = _lookup({t: s.t2w for t, s in TISSUE_SIGNALS.items()})
    clean = np.empty(geometry.shape, dtype=np.float32)
    rows, columns = geometry.shape[1:]
    slabs = _paint_grid(anatomy, fine, texture, displacement, margin or 0.0, source, multiple=n_sub)
    for k0, k1, slab in slabs:
        signal = table[slab.labels] * slab.factors
        clean[k0 // n_sub : k1 // n_sub] = signal.reshape(-1, n_sub, rows, columns).mean(axis=1)
    _blur(clean, (0.0, settings.psf_sigma_in_plane, settings.psf_sigma_in_plane))
    bias = _bias_function(bias_rng, anatomy.kidney.centre, settings.bias_amplitude)
    if settings.bias_amplitude > 0:
        clean *= _GridField.sample(scanner, bias, 20.0).block(0, geometry.shape[0])[0]
    sigma = _noise_sigma(
        settings.t2_snr,
        _kidney_signal(lambda s: s.t2w),
        _T2_REFERENCE_VOXEL_MM,
        geometry.spacing_mm,
    )
    return _to_uint16(_rician(clean, sigma, noise_rng) if sigma > 0 else clean)


def _acquisition(
    protocol: AcquisitionProtocol | None,
    *,
    shape: tuple[int, int, int] | None,
    spacing_mm: tuple[float, float, float] | None,
    kidney_scale: float | None,
    t2_shape: tuple[int, int, int] | None,
    t2_spacing_mm: tuple[float, float, float] | None,
) -> AcquisitionProtocol:
    """The protocol given, or one built from the explicit arguments and defaults."""
    if protocol is not None:
        given = [
            name
            for name, value in (
                ("shape", shape),
                ("spacing_mm", spacing_mm),
                ("kidney_scale", kidney_scale),
                ("t2_shape", t2_shape),
                ("t2_spacing_mm", t2_spacing_mm),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"protocol= already sets {', '.join(given)}; give one or the other")
        return protocol
    shape = _positive_shape(shape or _DEFAULT_SHAPE, "shape")
    spacing = _positive_spacing(spacing_mm or _DEFAULT_SPACING_MM, "spacing_mm")
    t2_spacing = _positive_spacing(
        t2_spacing_mm or (T2_SLICE_THICKNESS_MM, spacing[1], spacing[2]), "t2_spacing_mm"
    )
    if t2_shape is None:
        t2_slices = max(3, math.ceil(shape[0] * spacing[0] / t2_spacing[0]) + 2)
        t2_shape = (t2_slices, shape[1], shape[2])
    return AcquisitionProtocol(
        dce_shape=shape,
        dce_spacing_mm=spacing,
        t2_shape=t2_shape,
        t2_spacing_mm=t2_spacing,
        kidney_scale=1.0 if kidney_scale is None else float(kidney_scale),
    )


def _random_motion(rng: np.random.Generator, centre: Sequence[float]) -> RigidMotion:
    """Up to 3 degrees about ``centre`` and 4 mm per axis."""
    return RigidMotion(
        rotation=_as_matrix(_rotation(rng.normal(size=3), float(rng.uniform(-3.0, 3.0)))),
        translation_mm=_as_vector(rng.uniform(-4.0, 4.0, size=3)),
        centre=_as_vector(centre),
    )


def synthesize_mr(
    *,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    orientation: Orientation | str = Orientation.AXIAL,
    phases: int = 4,
    phase_times_s: Sequence[float] | None = None,
    include_t2: bool = True,
    kidney_scale: float | None = None,
    protocol: AcquisitionProtocol | None = None,
    t2_shape: tuple[int, int, int] | None = None,
    t2_spacing_mm: tuple[float, float, float] | None = None,
    grid_centre: GridCentre | str | None = None,
    settings: RenderSettings | None = None,
) -> SyntheticMR:
    """Render the DCE phases (and a T2 image) of a synthetic kidney-graft study.

    Parameters
    ----------
    seed : int
        Seeds anatomy variations, texture, bias fields, noise and the T2 motion and
        deformation independently.
    shape : tuple of int, optional
        DCE (slices, rows, columns); default (24, 96, 96).
    spacing_mm : tuple of float, optional
        DCE (slice step, row spacing, column spacing), mm; default (2.5, 1.5, 1.5).
    orientation : Orientation or str
        Slice orientation of both series.
    phases : int
        Number of DCE phases; ignored when ``phase_times_s`` is given.
    phase_times_s : sequence of float, optional
        Seconds after injection of each phase; default :func:`default_phase_times`.
    include_t2 : bool
        Also render the T2 series (centred like the DCE, the patient moved by a seeded
        rigid motion of up to 3 degrees and 4 mm per axis and a smooth deformation).
    kidney_scale : float, optional
        Factor on the kidney's semi-axes; default 1.
    protocol : AcquisitionProtocol, optional
        Grids of both series and kidney scale, e.g. from :func:`paper_protocol`; then
        ``shape``, ``spacing_mm``, ``kidney_scale``, ``t2_shape`` and ``t2_spacing_mm``
        must be left out.
    t2_shape : tuple of int, optional
        T2 (slices, rows, columns); default: the DCE's rows and columns and enough
        slices to cover the DCE slab plus one slice on each side.
    t2_spacing_mm : tuple of float, optional
        T2 (slice thickness, row spacing, column spacing); default
        (:data:`T2_SLICE_THICKNESS_MM`, DCE row spacing, DCE column spacing).
    grid_centre : GridCentre or str, optional
        ``"kidney"`` or ``"body"``; default ``"body"`` with a protocol (clinical field of
        view), ``"kidney"`` otherwise.
    settings : RenderSettings, optional
        Image formation (texture, point-spread function, bias, noise, deformation);
        default ``RenderSettings()``.

    Returns
    -------
    SyntheticMR
        Images (uint16), labels, kidney mask and geometry.

    Raises
    ------
    ValueError
        For an unknown orientation or grid centre, fewer than one phase, invalid sizes, or
        grid arguments given together with a protocol.
    """
    orientation = Orientation(orientation)
    settings = settings or RenderSettings()
    acquisition = _acquisition(
        protocol,
        shape=shape,
        spacing_mm=spacing_mm,
        kidney_scale=kidney_scale,
        t2_shape=t2_shape,
        t2_spacing_mm=t2_spacing_mm,
    )
    centring = GridCentre(grid_centre or (GridCentre.BODY if protocol else GridCentre.KIDNEY))
    times = tuple(float(t) for t in (phase_times_s or default_phase_times(phases)))
    bias_seed, noise_seed, motion_seed, deformation_seed = np.random.SeedSequence([seed, 2]).spawn(
        4
    )
    anatomy = make_anatomy(seed, kidney_scale=acquisition.kidney_scale)
    kidney = anatomy.kidney
    texture = _Texture.generate(seed, anatomy, settings)
    noise_rng = np.random.default_rng(noise_seed)
    bias_rng = np.random.default_rng(bias_seed)
    in_plane_centre = (*BODY_CENTRE_XY, kidney.centre[2]) if centring is GridCentre.BODY else None

    dce_geometry = VolumeGeometry.centred(
        kidney,
        orientation=orientation,
        shape=acquisition.dce_shape,
        spacing_mm=acquisition.dce_spacing_mm,
        in_plane_centre=in_plane_centre,
    )
    dce, labels = _render_dce(anatomy, dce_geometry, times, texture, settings, bias_rng, noise_rng)
    mask = np.isin(labels, _KIDNEY_TISSUES).astype(np.uint8)

    t2_geometry = t2 = motion = deformation = None
    if include_t2:
        motion = _random_motion(np.random.default_rng(motion_seed), kidney.centre)
        if settings.t2_deformation_mm > 0:
            deformation = SmoothDeformation.random(
                np.random.default_rng(deformation_seed),
                around=kidney.centre,
                max_mm=settings.t2_deformation_mm,
            )
        t2_geometry = VolumeGeometry.centred(
            kidney,
            orientation=orientation,
            shape=acquisition.t2_shape,
            spacing_mm=acquisition.t2_spacing_mm,
            in_plane_centre=in_plane_centre,
        )
        t2 = _render_t2(
            anatomy, t2_geometry, motion, deformation, texture, settings, bias_rng, noise_rng
        )

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
        t2_deformation=deformation,
        protocol=acquisition,
    )
