"""Shapes of the CT phantom, in patient coordinates (mm, DICOM LPS), on top of :mod:`shapes`.

:class:`ZCylinder` (an elliptic cylinder of finite height along the head-foot axis),
:class:`Intersection` (points inside every part) and :class:`HalfSpace` (below or above a
level along one axis: the gas above an air-fluid level), and the :class:`RenalKidney`: the
bent-ellipsoid outline of :class:`~service.synthetic.shapes.Kidney` with its inner
structure (cortex, medullary pyramids, renal sinus fat, pelvis and hilar vessels), and
the :class:`ScarredKidney`: a renal kidney with cortical scars cut out of its outline (an
atrophic, lobulated native kidney).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.synthetic.ct_tissues import CtTissue
from service.synthetic.shapes import Capsule, Kidney, Shape, Vector, _split, in_sinus

__all__ = ["HalfSpace", "Intersection", "RenalKidney", "ScarredKidney", "ZCylinder"]


@dataclass(frozen=True)
class ZCylinder:
    """Elliptic cylinder along z between ``z_range`` (a vertebral body, a disc, a canal)."""

    centre_xy: tuple[float, float]
    semi_axes_xy: tuple[float, float]
    z_range: tuple[float, float]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the cylinder."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the cylinder."""
        dx = (x - self.centre_xy[0]) * (1.0 / self.semi_axes_xy[0])
        dy = (y - self.centre_xy[1]) * (1.0 / self.semi_axes_xy[1])
        return (dx * dx + dy * dy <= 1.0) & (z >= self.z_range[0]) & (z <= self.z_range[1])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the bounding box."""
        (x, y), (a, b) = self.centre_xy, self.semi_axes_xy
        return (
            np.array([x - a, y - b, self.z_range[0]]),
            np.array([x + a, y + b, self.z_range[1]]),
        )


@dataclass(frozen=True)
class HalfSpace:
    """Points whose coordinate ``axis`` is below ``level`` (``below=True``) or above it."""

    axis: int
    level: float
    below: bool = True

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points on the chosen side of the level."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` on the chosen side of the level."""
        value = (x, y, z)[self.axis]
        return value <= self.level if self.below else value >= self.level

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the (half-infinite) bounding box."""
        low, high = np.full(3, -np.inf), np.full(3, np.inf)
        (high if self.below else low)[self.axis] = self.level
        return low, high


@dataclass(frozen=True)
class Intersection:
    """Points inside every one of ``parts`` (an organ clipped to the abdominal cavity)."""

    parts: tuple[Shape, ...]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside every part."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside every part."""
        inside = _contains_xyz(self.parts[0], x, y, z)
        for part in self.parts[1:]:
            inside &= _contains_xyz(part, x, y, z)
        return inside

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the intersection of the parts' bounding boxes."""
        boxes = [part.bounds() for part in self.parts]
        return np.max([b[0] for b in boxes], axis=0), np.min([b[1] for b in boxes], axis=0)


def _contains_xyz(shape: Shape, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    method = getattr(shape, "contains_xyz", None)
    if method is not None:
        return np.asarray(method(x, y, z))
    return shape.contains(np.stack([x, y, z], axis=-1))


#: Renal pelvis inside the sinus, leaving through the hilum.
_PELVIS_CENTRE_V = 0.78
_PELVIS_SEMI = (0.28, 0.3, 0.2)
#: Apex of the pyramids' directions (normalised v) and their angular half-width.
_PYRAMID_APEX_V = 0.3


@dataclass(frozen=True)
class RenalKidney:
    """A kidney with cortex, medullary pyramids, renal sinus, pelvis and hilar vessels.

    The outline is ``outline`` (a bent ellipsoid; local axes: long axis, towards the hilum,
    thickness). Inside it, in the normalised bent frame ``(u, v, w)``:

    - the renal sinus (fat) is an ellipsoid towards the hilum that opens through it, holding
      the pelvis (urine) and the hilar artery and vein (``hilar_vessels``, painted only
      inside the sinus);
    - the cortex is the parenchyma within ``cortex_mm`` of the outer surface (first-order
      distance to the ellipsoid) plus the columns between the pyramids;
    - the medulla is the deeper parenchyma within ``pyramid_cos`` (cosine of the half-angle)
      of one of the ``pyramid_axes``, unit directions in millimetre-scaled local
      coordinates seen from the point ``v = 0.3`` on the hilar axis.

    The whole-kidney ground truth is the outline (parenchyma plus sinus contents within it),
    as the TotalSegmentator kidney label draws it.
    """

    outline: Kidney
    cortex_mm: float
    pyramid_axes: tuple[Vector, ...]
    pyramid_cos: float
    hilar_vessels: tuple[tuple[CtTissue, Capsule], ...] = ()

    @property
    def analytic_volume_ml(self) -> float:
        """Exact volume of the outline, ml."""
        return self.outline.analytic_volume_ml

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the outline."""
        return self.outline.contains_xyz(x, y, z)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the outline."""
        return self.outline.contains(points)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a box around the outline."""
        return self.outline.bounds()

    def tissues_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the :class:`CtTissue` of points ``(x, y, z)``, AIR (0) outside the kidney."""
        u, v, w = self.outline._local_xyz(x, y, z)
        a, b, c = self.outline.semi_axes
        radius_sq = u * u + v * v + w * w
        labels = np.zeros(np.shape(u), dtype=np.uint8)
        inside = radius_sq <= 1.0
        if not inside.any():
            return labels
        u, v, w, radius_sq = u[inside], v[inside], w[inside], radius_sq[inside]
        gradient = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
        depth_mm = (1.0 - radius_sq) / (2.0 * np.maximum(gradient, 1e-6))
        sinus = in_sinus(u, v, w)
        deep = (depth_mm >= self.cortex_mm) & ~sinus
        pu, pv, pw = u[deep] * a, (v[deep] - _PYRAMID_APEX_V) * b, w[deep] * c
        norm = np.maximum(np.sqrt(pu * pu + pv * pv + pw * pw), 1e-6)
        axes = np.asarray(self.pyramid_axes, dtype=np.float32)
        cosine = (np.outer(pu / norm, axes[:, 0]) + np.outer(pv / norm, axes[:, 1])) + np.outer(
            pw / norm, axes[:, 2]
        )
        medulla = np.zeros_like(deep)
        medulla[deep] = cosine.max(axis=1) >= self.pyramid_cos
        inner = np.full(u.shape, int(CtTissue.CORTEX), dtype=np.uint8)
        inner[medulla] = CtTissue.MEDULLA
        inner[sinus] = CtTissue.SINUS_FAT
        inner[_in_ellipsoid(u, v - _PELVIS_CENTRE_V, w, _PELVIS_SEMI)] = CtTissue.URINE
        if self.hilar_vessels and sinus.any():
            xs, ys, zs = (np.asarray(q)[inside][sinus] for q in (x, y, z))
            sinus_labels = inner[sinus]
            for tissue, vessel in self.hilar_vessels:
                sinus_labels[vessel.contains_xyz(xs, ys, zs)] = tissue
            inner[sinus] = sinus_labels
        labels[inside] = inner
        return labels

    def cortex_volume_ml(self, samples: int = 400_000, seed: int = 0) -> float:
        """Monte Carlo estimate of the cortex volume (about 0.5 % standard error), ml."""
        low, high = self.bounds()
        rng = np.random.default_rng(seed)
        points = rng.uniform(low, high, size=(samples, 3))
        labels = self.tissues_xyz(points[:, 0], points[:, 1], points[:, 2])
        box_ml = float(np.prod(high - low)) / 1000.0
        return box_ml * float(np.mean(labels == CtTissue.CORTEX))


def _in_ellipsoid(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, semi: tuple[float, float, float]
) -> np.ndarray:
    return (u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (w / semi[2]) ** 2 <= 1.0


@dataclass(frozen=True)
class ScarredKidney:
    """A :class:`RenalKidney` with scars: balls centred on its surface are cut out of it.

    An end-stage native kidney left in place after a transplant is small, its cortex thin
    and its outline lobulated by cortical scars. Each scar is ``(centre, radius_mm)``; the
    points of a scar are outside the kidney (the perirenal fat painted before shows there).
    """

    kidney: RenalKidney
    scars: tuple[tuple[Vector, float], ...] = ()

    @property
    def outline(self) -> Kidney:
        """The unscarred outline."""
        return self.kidney.outline

    @property
    def analytic_volume_ml(self) -> float:
        """Volume of the scarred shape (Monte Carlo, about 0.5 %), ml."""
        return self._monte_carlo(lambda labels: labels != 0)

    def _scarred(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(x), dtype=bool)
        for (cx, cy, cz), r in self.scars:
            dx, dy, dz = x - cx, y - cy, z - cz
            out |= dx * dx + dy * dy + dz * dz <= r * r
        return out

    def contains_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return true for points ``(x, y, z)`` inside the scarred outline."""
        return self.kidney.contains_xyz(x, y, z) & ~self._scarred(x, y, z)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return true for points inside the scarred outline."""
        return self.contains_xyz(*_split(np.asarray(points, dtype=float)))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a box around the outline."""
        return self.kidney.bounds()

    def tissues_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the :class:`CtTissue` of points ``(x, y, z)``, AIR (0) outside."""
        labels = self.kidney.tissues_xyz(x, y, z)
        labels[self._scarred(x, y, z)] = 0
        return labels

    def cortex_volume_ml(self, samples: int = 400_000, seed: int = 0) -> float:
        """Monte Carlo estimate of the cortex volume (about 0.5 % standard error), ml."""
        return self._monte_carlo(lambda labels: labels == CtTissue.CORTEX, samples, seed)

    def _monte_carlo(self, select, samples: int = 400_000, seed: int = 0) -> float:  # noqa: ANN001
        low, high = self.bounds()
        rng = np.random.default_rng(seed)
        points = rng.uniform(low, high, size=(samples, 3))
        labels = self.tissues_xyz(points[:, 0], points[:, 1], points[:, 2])
        box_ml = float(np.prod(high - low)) / 1000.0
        return box_ml * float(np.mean(select(labels)))
