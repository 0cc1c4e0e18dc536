"""The CT phantom patient: a seeded upper abdomen with two native kidneys.

Patient coordinates are DICOM LPS, mm: +x towards the patient's left, +y posterior, +z
superior. The left kidney's centre is at about z = 0 (L1-L2); vertebral bodies (26 mm high,
9 mm discs) run from T8 to L5 (L1 centred at z = 20). :func:`make_ct_anatomy` draws:

- the body (elliptic, 280-350 x 200-260 mm): subcutaneous fat 10-35 mm, a 10-14 mm muscle
  wall, visceral fat inside;
- the spine: vertebral bodies (cortical shell 1.5-2.5 mm over cancellous bone), discs,
  pedicles, laminae, spinous and transverse processes, the spinal canal (CSF), and the
  lower ribs (T8-T12);
- paraspinal muscles, quadratus lumborum and psoas (growing towards the pelvis);
- the aorta (left of the midline, in front of the spine), the IVC on the right, the renal
  arteries and veins (the left renal vein crossing in front of the aorta);
- the liver on the right (its lower tip reaching the right kidney), the spleen on the
  left, the pancreas, the stomach and colon with air-fluid levels, small-bowel loops;
- each kidney in perirenal fat beside the spine: length 100-130 mm (volume drawn in
  120-250 ml), upper pole medial and posterior (long axis tilted 10-20 degrees in the
  coronal and 10-25 in the sagittal plane), hilum facing antero-medially, the right one
  10-25 mm lower than the left; cortex 5-8 mm thick, 8-12 pyramids, sinus, pelvis and
  ureter.

Later layers paint over earlier ones; the kidneys are painted last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from service.synthetic.ct_shapes import HalfSpace, Intersection, RenalKidney, ZCylinder
from service.synthetic.ct_tissues import CtTissue
from service.synthetic.shapes import (
    Capsule,
    Ellipsoid,
    EllipticCylinder,
    Kidney,
    Shape,
    _as_matrix,
    _as_vector,
    _rotation,
    _unit,
)

__all__ = ["CtAnatomy", "CtLayer", "Side", "make_ct_anatomy"]

#: Vertebral levels T8..L5: centre z of each body, mm (L1 at +20, one level per 35 mm).
_LEVELS = ("T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
_LEVEL_Z = {name: 20.0 + 35.0 * (_LEVELS.index("L1") - k) for k, name in enumerate(_LEVELS)}
_BODY_HEIGHT_MM = 26.0


class Side(IntEnum):
    """Kidney side; the value is its label in the ground truth (1 = right, 2 = left)."""

    RIGHT = 1
    LEFT = 2

    @property
    def sign(self) -> float:
        """+1 on the patient's left (LPS +x), -1 on the right."""
        return 1.0 if self is Side.LEFT else -1.0


@dataclass(frozen=True)
class CtLayer:
    """One tissue region; later layers paint over earlier ones."""

    tissue: CtTissue
    shape: Shape


@dataclass(frozen=True)
class CtAnatomy:
    """The phantom patient.

    Attributes
    ----------
    layers : tuple of CtLayer
        Background tissues in painting order.
    kidneys : mapping of Side to RenalKidney
        The kidneys present (a removed kidney is absent), painted after the layers.
    kidney_z_range : tuple of float
        Lowest and highest z reached by either kidney *site* (even one left empty), mm.
    body_semi_axes : tuple of float
        Semi-axes (x, y) of the body outline, mm; it is centred on x = y = 0.
    """

    layers: tuple[CtLayer, ...]
    kidneys: Mapping[Side, RenalKidney] = field(default_factory=dict)
    kidney_z_range: tuple[float, float] = (-80.0, 80.0)
    body_semi_axes: tuple[float, float] = (160.0, 115.0)


def make_ct_anatomy(
    seed: int = 0, *, right_kidney_scale: float = 1.0, left_kidney_scale: float = 1.0
) -> CtAnatomy:
    """Build the seeded abdomen (see the module docstring).

    Parameters
    ----------
    seed : int
        Seeds every random choice.
    right_kidney_scale, left_kidney_scale : float
        Factor on that kidney's semi-axes (its volume scales with the cube); 0 removes it
        (its perirenal fat stays, as after a nephrectomy).

    Returns
    -------
    CtAnatomy
        Layers and kidneys.

    Raises
    ------
    ValueError
        If a scale is negative.
    """
    for name, scale in (("right", right_kidney_scale), ("left", left_kidney_scale)):
        if scale < 0:
            raise ValueError(f"{name}_kidney_scale must not be negative, got {scale}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
    body_a, body_b = float(rng.uniform(140.0, 175.0)), float(rng.uniform(100.0, 130.0))
    fat_mm, wall_mm = float(rng.uniform(10.0, 35.0)), float(rng.uniform(10.0, 14.0))
    cavity = EllipticCylinder((0.0, 0.0), (body_a - fat_mm - wall_mm, body_b - fat_mm - wall_mm))
    spine_y = body_b - fat_mm * 0.5 - 80.0  # vertebral body centre
    layers = [
        CtLayer(CtTissue.SUBCUTANEOUS_FAT, EllipticCylinder((0.0, 0.0), (body_a, body_b))),
        CtLayer(CtTissue.MUSCLE, EllipticCylinder((0.0, 0.0), (body_a - fat_mm, body_b - fat_mm))),
        CtLayer(CtTissue.FAT, cavity),
    ]
    layers += _bowel(rng, cavity, body_a, body_b, spine_y)
    layers += _organs(rng, cavity, body_a, body_b, spine_y)
    left_z = float(rng.uniform(-5.0, 5.0))
    levels = {Side.LEFT: left_z, Side.RIGHT: left_z - float(rng.uniform(10.0, 25.0))}
    kidney_sites = {
        side: _kidney_outline(rng, side, body_a=body_a, spine_y=spine_y, z=levels[side])
        for side in Side
    }
    layers += [
        CtLayer(CtTissue.FAT, _grown(outline, float(rng.uniform(8.0, 14.0))))
        for outline in kidney_sites.values()
    ]
    layers += _muscles(rng, body_a, body_b, spine_y, fat_mm)
    layers += _spine(rng, body_a, body_b, spine_y, fat_mm, wall_mm)
    aorta_xy = (float(rng.uniform(10.0, 20.0)), spine_y - 30.0)
    aorta_r = float(rng.uniform(10.0, 13.0))
    ivc_xy = (float(rng.uniform(-30.0, -22.0)), spine_y - 24.0)
    layers += [
        CtLayer(CtTissue.AORTA, Capsule((*aorta_xy, 220.0), (*aorta_xy, -125.0), aorta_r)),
        CtLayer(CtTissue.VEIN, Capsule((*ivc_xy, 220.0), (*ivc_xy, -135.0), 11.0)),
    ]
    scales = {Side.RIGHT: right_kidney_scale, Side.LEFT: left_kidney_scale}
    kidneys: dict[Side, RenalKidney] = {}
    for side, outline in kidney_sites.items():
        if scales[side] == 0:
            continue
        kidney = _renal_kidney(rng, _scaled(outline, scales[side]))
        layers += _renal_vessels(kidney, side, aorta_xy, aorta_r, ivc_xy)
        kidneys[side] = kidney
    z_low = min(float(o.surface_points()[:, 2].min()) for o in kidney_sites.values())
    z_high = max(float(o.surface_points()[:, 2].max()) for o in kidney_sites.values())
    return CtAnatomy(
        layers=tuple(layers),
        kidneys=kidneys,
        kidney_z_range=(z_low, z_high),
        body_semi_axes=(body_a, body_b),
    )


# --------------------------------------------------------------------------- kidneys


def _kidney_outline(
    rng: np.random.Generator, side: Side, *, body_a: float, spine_y: float, z: float
) -> Kidney:
    """The kidney's outline at height ``z``: size and pose (upper pole medial, posterior)."""
    s = side.sign
    length = float(rng.uniform(100.0, 130.0))
    a = length / 2.0
    b, c = float(rng.uniform(27.0, 35.0)), float(rng.uniform(19.0, 26.0))
    volume = 4.0 / 3.0 * math.pi * a * b * c / 1000.0
    target = float(np.clip(volume, 120.0, 250.0))
    factor = math.sqrt(target / volume)  # width and thickness only: the length is kept
    b, c = b * factor, c * factor
    coronal = math.radians(rng.uniform(10.0, 20.0))  # upper pole towards the midline
    sagittal = math.radians(rng.uniform(10.0, 25.0))  # upper pole backwards
    long_axis = _unit(
        [-s * math.sin(coronal), math.sin(sagittal), math.cos(coronal) * math.cos(sagittal)]
    )
    facing = math.radians(rng.uniform(25.0, 45.0))  # hilum turned forwards from medial
    hilum = np.array([-s * math.cos(facing), -math.sin(facing), 0.0])
    hilum = _unit(hilum - (hilum @ long_axis) * long_axis)
    axes = np.stack([long_axis, hilum, np.cross(long_axis, hilum)])
    centre = (
        s * (body_a * 0.47 + float(rng.uniform(-4.0, 4.0))),
        spine_y + float(rng.uniform(12.0, 22.0)),
        z,
    )
    return Kidney(
        centre=_as_vector(centre),
        semi_axes=(a, b, c),
        axes=_as_matrix(axes),
        bend_mm=0.22 * b,
    )


def _scaled(outline: Kidney, scale: float) -> Kidney:
    semi = _as_vector(np.asarray(outline.semi_axes) * scale)
    return Kidney(outline.centre, semi, outline.axes, bend_mm=outline.bend_mm * scale)


def _grown(outline: Kidney, margin_mm: float) -> Ellipsoid:
    """Perirenal fat: an ellipsoid ``margin_mm`` larger than the unbent outline."""
    centre = np.asarray(outline.centre) + 0.5 * outline.bend_mm * np.asarray(outline.axes[1])
    semi = np.asarray(outline.semi_axes) + margin_mm
    return Ellipsoid(_as_vector(centre), _as_vector(semi), outline.axes)


def _pyramid_axes(rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    """8-12 unit directions (local u, v, w) spread over the kidney, none towards the hilum."""
    n = int(rng.integers(8, 13))
    candidates = 3 * n
    k = np.arange(candidates) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / candidates)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * k + rng.uniform(0.0, 2.0 * math.pi)
    # Spread mostly in the u-w plane (a kidney is long and flat): v is the polar axis.
    directions = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.cos(polar), np.sin(polar) * np.sin(azimuth)],
        axis=-1,
    )
    directions = directions[directions[:, 1] < 0.45]
    chosen = rng.choice(len(directions), size=min(n, len(directions)), replace=False)
    picked = directions[np.sort(chosen)] + rng.normal(0.0, 0.08, size=(len(chosen), 3))
    picked /= np.linalg.norm(picked, axis=1, keepdims=True)
    return tuple(_as_vector(d) for d in picked)


def _renal_kidney(rng: np.random.Generator, outline: Kidney) -> RenalKidney:
    """Inner structure of a kidney: cortex thickness, pyramids, hilar vessels."""
    axes = np.asarray(outline.axes)
    centre = np.asarray(outline.centre)
    b, c = outline.semi_axes[1], outline.semi_axes[2]
    sinus_centre = centre + 0.5 * b * axes[1]
    hilum = outline.hilum
    out = 25.0 * axes[1]
    vessels = (
        (
            CtTissue.AORTA,
            Capsule(
                _as_vector(sinus_centre + 0.3 * c * axes[2]),
                _as_vector(hilum + out + 0.3 * c * axes[2]),
                2.5,
            ),
        ),
        (
            CtTissue.RENAL_VEIN,
            Capsule(
                _as_vector(sinus_centre - 0.25 * c * axes[2]),
                _as_vector(hilum + out - 0.25 * c * axes[2]),
                4.0,
            ),
        ),
    )
    scale = outline.semi_axes[1] / 29.0
    return RenalKidney(
        outline=outline,
        cortex_mm=float(rng.uniform(5.0, 8.0)) * min(1.0, scale),
        pyramid_axes=_pyramid_axes(rng),
        pyramid_cos=math.cos(math.radians(float(rng.uniform(24.0, 30.0)))),
        hilar_vessels=vessels,
    )


def _renal_vessels(
    kidney: RenalKidney,
    side: Side,
    aorta_xy: tuple[float, float],
    aorta_r: float,
    ivc_xy: tuple[float, float],
) -> list[CtLayer]:
    """Renal artery, renal vein (the left one in front of the aorta) and the ureter."""
    axes = np.asarray(kidney.outline.axes)
    c = kidney.outline.semi_axes[2]
    hilum = kidney.outline.hilum
    z = float(hilum[2])
    artery_end = hilum + 0.3 * c * axes[2]
    vein_end = hilum - 0.25 * c * axes[2]
    layers = [
        CtLayer(
            CtTissue.AORTA,
            Capsule(_as_vector(artery_end), (aorta_xy[0], aorta_xy[1], z + 8.0), 3.0),
        )
    ]
    if side is Side.LEFT:
        crossing = (aorta_xy[0], aorta_xy[1] - aorta_r - 5.0, z + 4.0)
        layers += [
            CtLayer(CtTissue.RENAL_VEIN, Capsule(_as_vector(vein_end), crossing, 4.5)),
            CtLayer(CtTissue.RENAL_VEIN, Capsule(crossing, (ivc_xy[0], ivc_xy[1], z + 4.0), 4.5)),
        ]
    else:
        layers.append(
            CtLayer(
                CtTissue.RENAL_VEIN,
                Capsule(_as_vector(vein_end), (ivc_xy[0], ivc_xy[1], z + 2.0), 5.0),
            )
        )
    pelvis_exit = hilum + 6.0 * axes[1]
    bottom = (pelvis_exit[0] * 0.6, pelvis_exit[1] - 10.0, -180.0)
    layers.append(CtLayer(CtTissue.URINE, Capsule(_as_vector(pelvis_exit), bottom, 2.5)))
    return layers


# --------------------------------------------------------------------------- other organs


def _organs(
    rng: np.random.Generator, cavity: Shape, body_a: float, body_b: float, spine_y: float
) -> list[CtLayer]:
    """Liver (right), spleen (left, posterolateral), pancreas."""
    liver_axes = _as_matrix(_rotation((0.0, 0.0, 1.0), float(rng.uniform(-10.0, 10.0))))
    liver = Ellipsoid(
        (-body_a * 0.42, -body_b * 0.12, float(rng.uniform(85.0, 105.0))),
        (body_a * 0.62, body_b * 0.78, float(rng.uniform(115.0, 135.0))),
        liver_axes,
    )
    left_lobe = Ellipsoid((body_a * 0.1, -body_b * 0.45, 95.0), (body_a * 0.35, body_b * 0.3, 70.0))
    spleen_axes = _as_matrix(_rotation((0.0, 0.0, 1.0), float(rng.uniform(-40.0, -25.0))))
    spleen = Ellipsoid(
        (body_a * 0.55, spine_y + 10.0, float(rng.uniform(55.0, 75.0))),
        (float(rng.uniform(20.0, 26.0)), float(rng.uniform(45.0, 60.0)), 55.0),
        spleen_axes,
    )
    pancreas = Capsule(
        (-body_a * 0.12, spine_y - 50.0, 15.0), (body_a * 0.45, spine_y - 10.0, 35.0), 11.0
    )
    return [
        CtLayer(CtTissue.LIVER, Intersection((liver, cavity))),
        CtLayer(CtTissue.LIVER, Intersection((left_lobe, cavity))),
        CtLayer(CtTissue.SPLEEN, Intersection((spleen, cavity))),
        CtLayer(CtTissue.PANCREAS, pancreas),
    ]


def _hollow(
    rng: np.random.Generator, shape: Capsule | Ellipsoid, *, gas_share: float
) -> list[CtLayer]:
    """A bowel segment: wall, fluid inside, gas above an air-fluid level (supine: -y up)."""
    layers = [CtLayer(CtTissue.BOWEL_WALL, shape)]
    wall = float(rng.uniform(2.0, 3.5))
    if isinstance(shape, Capsule):
        if shape.radius_mm <= 2.0 * wall:
            return layers
        inner: Capsule | Ellipsoid = Capsule(shape.start, shape.end, shape.radius_mm - wall)
    else:
        inner = Ellipsoid(shape.centre, _as_vector(np.asarray(shape.semi_axes) - wall), shape.axes)
    layers.append(CtLayer(CtTissue.BOWEL_FLUID, inner))
    if rng.uniform() < gas_share:
        low, high = inner.bounds()
        level = float(low[1] + rng.uniform(0.3, 0.8) * (high[1] - low[1]))
        layers.append(CtLayer(CtTissue.AIR, Intersection((inner, HalfSpace(1, level)))))
    return layers


def _bowel(
    rng: np.random.Generator, cavity: Shape, body_a: float, body_b: float, spine_y: float
) -> list[CtLayer]:
    """Stomach, ascending, transverse and descending colon, and small-bowel loops."""
    front = -body_b * 0.55
    stomach = Ellipsoid(
        (body_a * 0.3, front + 10.0, 95.0),
        (45.0, 32.0, 50.0),
        _as_matrix(_rotation((0.0, 1.0, 0.0), 30.0)),
    )
    colon = [
        Capsule((-body_a * 0.6, -5.0, -160.0), (-body_a * 0.6, 0.0, 20.0), 22.0),
        Capsule((-body_a * 0.6, front, 25.0), (body_a * 0.6, front, 40.0), 20.0),
        Capsule((body_a * 0.62, spine_y - 15.0, 70.0), (body_a * 0.6, -10.0, -160.0), 17.0),
    ]
    layers = _hollow(rng, stomach, gas_share=0.9)
    for segment in colon:
        layers += _hollow(rng, segment, gas_share=0.8)
    for _ in range(int(rng.integers(12, 20))):
        start = rng.uniform((-body_a * 0.45, front - 10.0, -170.0), (body_a * 0.45, -5.0, 20.0))
        direction = _unit(rng.normal(size=3))
        end = start + float(rng.uniform(25.0, 60.0)) * direction
        loop = Capsule(_as_vector(start), _as_vector(end), float(rng.uniform(9.0, 14.0)))
        layers += _hollow(rng, loop, gas_share=0.25)
    return [CtLayer(layer.tissue, Intersection((layer.shape, cavity))) for layer in layers]


def _muscles(
    rng: np.random.Generator, body_a: float, body_b: float, spine_y: float, fat_mm: float
) -> list[CtLayer]:
    """Erector spinae, quadratus lumborum and psoas (from T12, widening downwards)."""
    back = body_b - fat_mm
    layers = []
    for s in (-1.0, 1.0):
        layers += [
            CtLayer(
                CtTissue.MUSCLE,
                ZCylinder((s * 36.0, back - 32.0), (30.0, 26.0), (-200.0, 250.0)),
            ),
            CtLayer(
                CtTissue.MUSCLE,
                Ellipsoid((s * 62.0, spine_y + 38.0, -60.0), (20.0, 13.0, 130.0)),
            ),
            CtLayer(
                CtTissue.MUSCLE,
                Ellipsoid(
                    (s * 36.0, spine_y + 2.0, -150.0),
                    (float(rng.uniform(20.0, 26.0)), 22.0, 215.0),
                ),
            ),
        ]
    return layers


def _spine(
    rng: np.random.Generator,
    body_a: float,
    body_b: float,
    spine_y: float,
    fat_mm: float,
    wall_mm: float,
) -> list[CtLayer]:
    """Discs, vertebral bodies (shell and cancellous core), posterior elements, canal, ribs."""
    half_x, half_y = float(rng.uniform(20.0, 24.0)), float(rng.uniform(15.0, 17.0))
    shell = float(rng.uniform(1.5, 2.5))
    layers = [
        CtLayer(CtTissue.DISC, ZCylinder((0.0, spine_y), (half_x - 1.0, half_y - 1.0), (-250, 250)))
    ]
    canal_y = spine_y + half_y + 10.0
    for name, z in _LEVEL_Z.items():
        h = _BODY_HEIGHT_MM / 2.0
        size = 1.0 + 0.03 * (_LEVELS.index(name) - _LEVELS.index("L1"))  # bodies grow downwards
        ax, ay = half_x * size, half_y * size
        layers += [
            CtLayer(CtTissue.CORTICAL_BONE, ZCylinder((0.0, spine_y), (ax, ay), (z - h, z + h))),
            CtLayer(
                CtTissue.CANCELLOUS_BONE,
                ZCylinder((0.0, spine_y), (ax - shell, ay - shell), (z - h + shell, z + h - shell)),
            ),
        ]
        for s in (-1.0, 1.0):
            bone = [
                Capsule((s * 10.0, spine_y + ay - 2.0, z + 4.0), (s * 12.0, canal_y, z + 4.0), 5.0),
                Capsule((s * 12.0, canal_y, z + 2.0), (0.0, canal_y + 16.0, z - 2.0), 4.5),
                Capsule((s * 13.0, canal_y - 2.0, z + 4.0), (s * 45.0, canal_y + 2.0, z), 4.5),
            ]
            layers += [CtLayer(CtTissue.CORTICAL_BONE, shape) for shape in bone]
            if z > _LEVEL_Z["L1"]:
                layers += _rib(s, z, body_a - fat_mm - wall_mm, body_b - fat_mm - wall_mm, canal_y)
        layers.append(
            CtLayer(
                CtTissue.CORTICAL_BONE,
                Capsule((0.0, canal_y + 14.0, z - 2.0), (0.0, canal_y + 40.0, z - 14.0), 4.5),
            )
        )
    layers.append(CtLayer(CtTissue.CSF, ZCylinder((0.0, canal_y), (10.0, 8.0), (-250.0, 250.0))))
    return layers


def _rib(s: float, z: float, inner_a: float, inner_b: float, canal_y: float) -> list[CtLayer]:
    """A rib from the transverse process round the posterolateral wall, sloping down."""
    points = [np.array([s * 45.0, canal_y + 2.0, z])]
    for k, angle in enumerate(np.radians([60.0, 40.0, 20.0, 0.0, -15.0])):
        x = s * (inner_a - 8.0) * math.cos(angle)
        y = (inner_b - 8.0) * math.sin(angle)
        points.append(np.array([x, y, z - 12.0 * (k + 1)]))
    return [
        CtLayer(CtTissue.CORTICAL_BONE, Capsule(_as_vector(p), _as_vector(q), 5.0))
        for p, q in zip(points, points[1:], strict=False)
    ]
