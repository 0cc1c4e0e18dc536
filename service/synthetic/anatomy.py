"""The phantom patient: tissue layers around a kidney graft in the right iliac fossa.

An :class:`Anatomy` is an ordered tuple of :class:`Layer` (tissue + shape + signal gain;
later layers paint over earlier ones) and the :class:`~service.synthetic.shapes.Kidney`,
painted last. :func:`make_anatomy` builds it: body wall, psoas and iliacus, pelvic bones,
bladder, a dozen bowel loops of varying enhancement (enhancing wall, fluid content in 60 %
of them), the external iliac artery and vein, the renal artery and vein from the hilum,
and, placed against the graft's surface so that they touch it, the iliopsoas it rests on
and one or two bowel loops in front of it (about 15-25 % of the kidney's surface voxels
face bowel or muscle).

Default kidney size
-------------------
A real graft (semi-axes about 55 x 30 x 25 mm) cannot fit inside the default DCE slab
(24 slices x 2.5 mm = 60 mm) in the axial, coronal *and* sagittal orientations: the
squared half-extents along three orthogonal directions add up to a² + b² + c²
whatever the rotation. The default kidney (``kidney_scale=1``) is therefore smaller,
:data:`KIDNEY_SEMI_AXES_MM`, with its long axis oblique (as grafts lie in the iliac fossa)
so it fits every orientation. :func:`~service.synthetic.protocol.paper_protocol` draws an
adult graft (``kidney_scale`` 1.3-1.6: about 125-235 ml) with the paper's 120-220 mm slabs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.synthetic.shapes import (
    Capsule,
    Ellipsoid,
    EllipticCylinder,
    Kidney,
    Shape,
    Vector,
    _as_matrix,
    _as_vector,
    _rotation,
    _unit,
)
from service.synthetic.tissues import Tissue

__all__ = [
    "BODY_CENTRE_XY",
    "KIDNEY_SEMI_AXES_MM",
    "Anatomy",
    "Layer",
    "make_anatomy",
]


#: Semi-axes of the default kidney (long axis, towards the hilum, thickness), mm.
KIDNEY_SEMI_AXES_MM: Vector = (38.0, 21.0, 17.0)
#: Axis of the body's elliptic cylinders (x, y), mm: where a large field of view is centred.
BODY_CENTRE_XY: tuple[float, float] = (0.0, 5.0)


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


def _lymphocele(kidney: Kidney, seed: int) -> Layer:
    """A fluid collection against the graft's medial, anterior and lower surface.

    An ellipsoid of 20-30 x 17-24 x 14-20 mm semi-axes (about 20-60 ml) dipping 3-6 mm into
    the kidney (painted over it); fluid like urine (bright on T2, dark on T1). Drawn from
    its own random stream, so the rest of the anatomy of ``seed`` is unchanged.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    d = _unit(np.array([0.8, -0.4, -0.6]) + rng.normal(0.0, 0.2, size=3))
    semi = (float(rng.uniform(20.0, 30.0)), float(rng.uniform(17.0, 24.0)),
            float(rng.uniform(14.0, 20.0)))
    centre = kidney.support_point(d) + (semi[2] - float(rng.uniform(3.0, 6.0))) * d
    helper = _unit(np.cross(d, rng.normal(size=3)))
    axes = np.stack([helper, np.cross(d, helper), d])
    return Layer(Tissue.BLADDER, Ellipsoid(_as_vector(centre), _as_vector(semi), _as_matrix(axes)),
                 gain=float(rng.uniform(0.8, 0.95)))


def make_anatomy(seed: int = 0, *, kidney_scale: float = 1.0,
                 lymphocele: bool = False, renal_sinus: bool = False) -> Anatomy:
    """Build the phantom patient: a kidney graft in the right iliac fossa.

    Parameters
    ----------
    seed : int
        Seeds the random variations (kidney pose, bowel loops and their enhancement, the
        structures in contact with the graft).
    kidney_scale : float
        Factor on the kidney's semi-axes :data:`KIDNEY_SEMI_AXES_MM` (volume scales
        with its cube).
    lymphocele : bool
        Add a lymphocele (fluid collection) against the graft (see ``_lymphocele``); the
        other layers stay those of ``seed`` without it.
    renal_sinus : bool
        Give the graft its renal sinus (fat, not kidney: see
        :class:`~service.synthetic.shapes.Kidney`); the rest stays that of ``seed``.

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
        sinus=renal_sinus,
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
        *([_lymphocele(kidney, seed)] if lymphocele else []),
        Layer(Tissue.BLADDER, Ellipsoid((-5.0, -45.0, -60.0), (45.0, 35.0, 32.0))),
        Layer(Tissue.ARTERY, iliac_artery),
        Layer(Tissue.VEIN, iliac_vein),
        Layer(Tissue.ARTERY, renal_artery),
        Layer(Tissue.VEIN, renal_vein),
    )
    return Anatomy(layers=layers, kidney=kidney)
