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

With a :class:`Transplant` (kidney-transplant recipients, issue 16) the phantom also holds
the pelvis below L5 (the abdominal contents below the L5-S1 disc are replaced by it):

- the sacrum and coccyx, each hip bone (iliac wing from the sacro-iliac joint to the
  anterior superior iliac spine, ilium body, acetabulum, pubic rami and symphysis,
  ischium), the femoral heads, necks and upper shafts;
- psoas (passing over the pelvic brim in front of the hip), iliacus on the wing's inner
  face, gluteal muscles, obturator internus, the back muscles over the sacrum;
- the common, external and internal iliac arteries and veins from the aortic and caval
  bifurcation (L4-L5), the bladder behind the symphysis, rectum, sigmoid, caecum and
  small-bowel loops;
- a kidney graft (by default) in the right or left iliac fossa: extraperitoneal, in front
  of the iliacus, psoas and external iliac vessels, just under the anterior abdominal wall,
  long axis oblique (upper pole lateral, 25-55 degrees from the body axis), hilum facing
  medially towards the iliac vessels, volume drawn in 120-250 ml, with cortex, pyramids,
  sinus and pelvis like a native kidney; its artery and vein joined to the external iliac
  artery and vein, its ureter running to the bladder dome; optionally a lymphocele
  (fluid) and bowel loops against it;
- native kidneys that are by default atrophic (30-80 ml, thin cortex, outline lobulated
  by 2-5 cortical scars), or normal, or removed.

The transplant's random choices come from their own stream, so the abdomen above the
pelvis (body, organs, spine, native kidneys' poses) is that of the same seed without a
transplant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

import numpy as np

from service.synthetic.ct_shapes import (
    HalfSpace,
    Intersection,
    RenalKidney,
    ScarredKidney,
    ZCylinder,
)
from service.synthetic.ct_tissues import CtTissue
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

__all__ = [
    "CtAnatomy",
    "CtLayer",
    "NativeKidneys",
    "PelvisLevels",
    "Side",
    "Transplant",
    "make_ct_anatomy",
]

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


class NativeKidneys(StrEnum):
    """State of the native kidneys of a transplant recipient."""

    #: End-stage kidneys left in place: small (30-80 ml), thin cortex, scarred outline.
    ATROPHIC = "atrophic"
    #: Kidneys of normal size (the phantom's usual kidneys).
    NORMAL = "normal"
    #: Both removed (their perirenal fat stays).
    REMOVED = "removed"


@dataclass(frozen=True)
class Transplant:
    """A kidney-transplant recipient: the pelvis, a graft in an iliac fossa, the natives.

    Attributes
    ----------
    graft_side : Side, str or None
        The patient's side of the iliac fossa holding the graft; None draws it from the
        seed.
    has_graft : bool
        False draws the pelvis without a graft (a native-only abdomen-pelvis CT).
    natives : NativeKidneys
        State of the native kidneys.
    lymphocele : bool
        A fluid collection (30-150 ml, 0-15 HU) against the graft.
    bowel_against_graft : bool
        Two or three small-bowel loops touching the graft.
    """

    graft_side: Side | str | None = None
    has_graft: bool = True
    natives: NativeKidneys | str = NativeKidneys.ATROPHIC
    lymphocele: bool = False
    bowel_against_graft: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "natives", NativeKidneys(self.natives))
        side = self.graft_side
        if isinstance(side, str):
            try:
                side = Side[side.upper()]
            except KeyError:
                raise ValueError(f"graft_side must be 'right' or 'left', got {side!r}") from None
        object.__setattr__(self, "graft_side", side)


@dataclass(frozen=True)
class PelvisLevels:
    """Heights of pelvic landmarks, mm (patient z)."""

    #: Top of the iliac crests.
    iliac_crest: float
    #: Centre of the femoral heads.
    hip: float
    #: Lower end of the pubic symphysis.
    symphysis_bottom: float


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
    graft : RenalKidney or None
        The kidney graft (painted after the native kidneys), if any.
    graft_side : Side or None
        The patient's side of the iliac fossa holding it.
    pelvis : PelvisLevels or None
        Landmark heights when the pelvis is drawn (a :class:`Transplant` anatomy).
    """

    layers: tuple[CtLayer, ...]
    kidneys: Mapping[Side, RenalKidney | ScarredKidney] = field(default_factory=dict)
    kidney_z_range: tuple[float, float] = (-80.0, 80.0)
    body_semi_axes: tuple[float, float] = (160.0, 115.0)
    graft: RenalKidney | None = None
    graft_side: Side | None = None
    pelvis: PelvisLevels | None = None


def make_ct_anatomy(
    seed: int = 0,
    *,
    right_kidney_scale: float = 1.0,
    left_kidney_scale: float = 1.0,
    transplant: Transplant | None = None,
) -> CtAnatomy:
    """Build the seeded abdomen (see the module docstring).

    Parameters
    ----------
    seed : int
        Seeds every random choice.
    right_kidney_scale, left_kidney_scale : float
        Factor on that kidney's semi-axes (its volume scales with the cube); 0 removes it
        (its perirenal fat stays, as after a nephrectomy). With atrophic natives it
        applies on top of the atrophy.
    transplant : Transplant, optional
        Draw the pelvis, the graft and the natives' state of a transplant recipient.

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
    trng = np.random.default_rng(np.random.SeedSequence([seed, 16]))
    if transplant is not None and transplant.natives is NativeKidneys.REMOVED:
        scales = {side: 0.0 for side in Side}
    elif transplant is not None and transplant.natives is NativeKidneys.ATROPHIC:
        for side, outline in kidney_sites.items():
            target_ml = float(trng.uniform(30.0, 80.0))
            scales[side] *= (target_ml / outline.analytic_volume_ml) ** (1.0 / 3.0)
    kidneys: dict[Side, RenalKidney | ScarredKidney] = {}
    for side, outline in kidney_sites.items():
        if scales[side] == 0:
            continue
        kidney = _renal_kidney(rng, _scaled(outline, scales[side]))
        layers += _renal_vessels(kidney, side, aorta_xy, aorta_r, ivc_xy)
        if transplant is not None and transplant.natives is NativeKidneys.ATROPHIC:
            kidneys[side] = ScarredKidney(kidney, _scars(trng, kidney.outline))
        else:
            kidneys[side] = kidney
    z_low = min(float(o.surface_points()[:, 2].min()) for o in kidney_sites.values())
    z_high = max(float(o.surface_points()[:, 2].max()) for o in kidney_sites.values())
    graft = graft_side = levels_ = None
    if transplant is not None:
        pelvis = _Pelvis.draw(trng, body_a=body_a, body_b=body_b, fat_mm=fat_mm,
                              wall_mm=wall_mm, spine_y=spine_y)
        layers += pelvis.layers(trng, aorta_xy, ivc_xy)
        levels_ = pelvis.levels
        if transplant.has_graft:
            graft_side = transplant.graft_side or (Side.RIGHT if trng.uniform() < 0.6
                                                   else Side.LEFT)
            graft, graft_layers = _graft(trng, pelvis, graft_side, transplant)
            layers += graft_layers
    return CtAnatomy(
        layers=tuple(layers),
        kidneys=kidneys,
        kidney_z_range=(z_low, z_high),
        body_semi_axes=(body_a, body_b),
        graft=graft,
        graft_side=graft_side,
        pelvis=levels_,
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


# --------------------------------------------------------------------------- transplant


def _scars(rng: np.random.Generator, outline: Kidney) -> tuple[tuple[Vector, float], ...]:
    """2-5 cortical scars: balls on the convex surface, away from the hilum."""
    surface = outline.surface_points(600)
    hilum_dir = np.asarray(outline.axes[1])
    centre = np.asarray(outline.centre)
    away = (surface - centre) @ hilum_dir < 0.3 * outline.semi_axes[1]
    points = surface[away]
    n = int(rng.integers(2, 6))
    picks = rng.choice(len(points), size=n, replace=False)
    scale = outline.semi_axes[1]
    return tuple(
        (_as_vector(points[k]), float(rng.uniform(0.18, 0.32)) * scale) for k in picks
    )


@dataclass(frozen=True)
class _Pelvis:
    """Pelvic landmarks of one patient (patient mm) and the painting of the pelvis."""

    cavity: tuple[float, float]  # semi-axes of the abdominal cavity
    muscle: tuple[float, float]  # semi-axes of the muscle wall's outer outline
    spine_y: float
    levels: PelvisLevels
    hip_xy: tuple[float, float]  # |x| and y of the femoral heads' centres
    head_mm: float
    symphysis_z: float
    #: External iliac artery and vein of each side, as (start, end) points.
    external_artery: Mapping[Side, tuple[np.ndarray, np.ndarray]]
    external_vein: Mapping[Side, tuple[np.ndarray, np.ndarray]]
    bladder: Ellipsoid
    bone: tuple[Shape, ...]

    @classmethod
    def draw(cls, rng: np.random.Generator, *, body_a: float, body_b: float, fat_mm: float,
             wall_mm: float, spine_y: float) -> _Pelvis:
        ca, cb = body_a - fat_mm - wall_mm, body_b - fat_mm - wall_mm
        hip_z = float(rng.uniform(-252.0, -238.0))
        head = float(rng.uniform(21.0, 25.0))
        hip_xy = (max(78.0, 0.66 * ca) + float(rng.uniform(-4.0, 4.0)),
                  0.5 * (spine_y - cb) + float(rng.uniform(-6.0, 6.0)))
        symphysis_z = hip_z - float(rng.uniform(22.0, 32.0))
        crest = float(rng.uniform(-118.0, -106.0))
        arteries, veins = {}, {}
        for side in Side:
            s = side.sign
            fork = np.array([s * 38.0, spine_y - 22.0, -152.0])
            groin = np.array([s * (hip_xy[0] - 14.0), hip_xy[1] - head - 12.0, hip_z + 12.0])
            arteries[side] = (fork, groin)
            vfork = np.array([s * 34.0, spine_y - 12.0, -158.0])
            vgroin = np.array([s * (hip_xy[0] - 24.0), hip_xy[1] - head - 6.0, hip_z + 12.0])
            veins[side] = (vfork, vgroin)
        semi = (float(rng.uniform(38.0, 55.0)), float(rng.uniform(26.0, 40.0)),
                float(rng.uniform(26.0, 38.0)))
        bladder = Ellipsoid(
            (float(rng.uniform(-6.0, 6.0)), -cb + 10.0 + semi[1], symphysis_z + 0.75 * semi[2]),
            semi)
        pelvis = cls(cavity=(ca, cb), muscle=(body_a - fat_mm, body_b - fat_mm),
                     spine_y=spine_y,
                     levels=PelvisLevels(iliac_crest=crest, hip=hip_z,
                                         symphysis_bottom=symphysis_z - 14.0),
                     hip_xy=hip_xy, head_mm=head, symphysis_z=symphysis_z,
                     external_artery=arteries, external_vein=veins, bladder=bladder, bone=())
        return replace(pelvis, bone=pelvis._bones(rng))

    # ------------------------------------------------------------------ bones

    def _wing(self, side: Side) -> Ellipsoid:
        """The iliac wing: a plate from the sacro-iliac joint to the anterior spine."""
        s = side.sign
        ca, cb = self.cavity
        back = np.array([s * 40.0, self.spine_y + 20.0])
        front = np.array([s * 0.86 * ca, -0.32 * cb])
        along = _unit([*(front - back), 0.0])
        normal = _unit(np.cross([0.0, 0.0, 1.0], along))  # in-plane, across the plate
        z_low = self.levels.hip + 30.0
        z_c = 0.5 * (self.levels.iliac_crest + z_low)
        half_len = 0.5 * float(np.linalg.norm(front - back)) + 8.0
        axes = np.stack([along, normal, [0.0, 0.0, 1.0]])
        centre = (*(0.5 * (back + front)), z_c)
        height = 0.5 * (self.levels.iliac_crest - z_low)
        return Ellipsoid(_as_vector(centre), (half_len, 6.0, height), _as_matrix(axes))

    def _bones(self, rng: np.random.Generator) -> tuple[Shape, ...]:
        """Cortical outlines of the pelvic bones (their cancellous cores are painted
        inside by :meth:`layers`)."""
        hx, hy = self.hip_xy
        hz = self.levels.hip
        shapes: list[Shape] = []
        for side in Side:
            s = side.sign
            hip = np.array([s * hx, hy, hz])
            wing = self._wing(side)
            shapes += [
                wing,
                Capsule(_as_vector([s * 52.0, self.spine_y + 8.0, hz + 45.0]), _as_vector(hip),
                        14.0),  # body of the ilium
                Ellipsoid(_as_vector(hip + [s * -4.0, 0.0, 0.0]), (self.head_mm + 8.0,) * 3),
                Capsule(_as_vector(hip), (s * 12.0, -self.cavity[1] + 16.0, self.symphysis_z),
                        9.0),  # superior pubic ramus
                Capsule((s * 14.0, -self.cavity[1] + 20.0, self.symphysis_z - 10.0),
                        (s * 52.0, hy + 28.0, hz - 55.0), 9.0),  # inferior ramus
                Capsule(_as_vector(hip), (s * 55.0, hy + 30.0, hz - 55.0), 13.0),  # ischium
            ]
        return tuple(shapes)

    def layers(self, rng: np.random.Generator, aorta_xy: tuple[float, float],
               ivc_xy: tuple[float, float]) -> list[CtLayer]:
        """Everything below L5, painted over the abdomen's contents there."""
        ca, cb = self.cavity
        cavity = EllipticCylinder((0.0, 0.0), (ca, cb))
        inside_muscle = EllipticCylinder((0.0, 0.0), self.muscle)
        z_cut = -138.0
        sy = self.spine_y
        hx, hy = self.hip_xy
        hz = self.levels.hip
        layers = [CtLayer(CtTissue.FAT, Intersection((cavity, HalfSpace(2, z_cut))))]
        for side in Side:  # back muscles over the sacrum, glutei
            s = side.sign
            layers += [
                CtLayer(CtTissue.MUSCLE, ZCylinder((s * 28.0, self.muscle[1] - 28.0), (24.0, 18.0),
                                                   (-215.0, z_cut + 2.0))),
                CtLayer(CtTissue.MUSCLE, Intersection((
                    Ellipsoid((s * 0.62 * ca, sy + 45.0, hz + 5.0), (55.0, 32.0, 80.0)),
                    inside_muscle))),
                CtLayer(CtTissue.MUSCLE, Intersection((
                    Ellipsoid((s * (0.86 * ca), sy + 5.0, hz + 45.0), (22.0, 45.0, 55.0)),
                    inside_muscle))),
            ]
        layers += self._bowel(rng)
        # Bladder (wall, urine) behind the symphysis.
        b = self.bladder
        wall = float(rng.uniform(2.5, 4.0))
        layers += [
            CtLayer(CtTissue.MUSCLE,
                    Ellipsoid(b.centre, _as_vector(np.asarray(b.semi_axes) + wall))),
            CtLayer(CtTissue.URINE, b),
        ]
        for side in Side:
            s = side.sign
            wing = self._wing(side)
            hip = np.array([s * hx, hy, hz])
            normal = np.asarray(wing.axes[1])
            inward = normal if normal[1] < 0 else -normal  # antero-medial face
            iliacus = Ellipsoid(
                _as_vector(np.asarray(wing.centre) + inward * (wing.semi_axes[1] + 9.0)
                           + [0.0, 0.0, -10.0]),
                (wing.semi_axes[0] * 0.8, 11.0, wing.semi_axes[2] * 0.95), wing.axes)
            psoas = Capsule((s * 38.0, sy + 2.0, z_cut + 15.0),
                            _as_vector(hip + [-s * 10.0, -self.head_mm - 8.0, 12.0]),
                            float(rng.uniform(16.0, 20.0)))
            obturator = Ellipsoid(_as_vector(hip + [-s * 32.0, 6.0, -14.0]), (9.0, 28.0, 30.0))
            layers += [CtLayer(CtTissue.MUSCLE, m) for m in (iliacus, psoas, obturator)]
        # Iliac vessels: common from the bifurcations, external to the groin, internal.
        for side in Side:
            s = side.sign
            fork, groin = self.external_artery[side]
            vfork, vgroin = self.external_vein[side]
            layers += [
                CtLayer(CtTissue.VEIN, Capsule((ivc_xy[0], ivc_xy[1], -128.0), _as_vector(vfork),
                                               7.5)),
                CtLayer(CtTissue.VEIN, Capsule(_as_vector(vfork), _as_vector(vgroin), 6.5)),
                CtLayer(CtTissue.VEIN, Capsule(_as_vector(vfork), (s * 48.0, sy + 18.0, -210.0),
                                               5.0)),
                CtLayer(CtTissue.AORTA, Capsule((aorta_xy[0], aorta_xy[1], -118.0),
                                                _as_vector(fork), 6.0)),
                CtLayer(CtTissue.AORTA, Capsule(_as_vector(fork), _as_vector(groin), 4.5)),
                CtLayer(CtTissue.AORTA, Capsule(_as_vector(fork), (s * 52.0, sy + 12.0, -205.0),
                                                3.5)),
            ]
        # Bones: sacrum and coccyx, hip bones, femora.
        tilt = _as_matrix(_rotation((1.0, 0.0, 0.0), -float(rng.uniform(20.0, 30.0))))
        sacrum = Ellipsoid((0.0, sy + 24.0, -190.0), (46.0, 17.0, 56.0), tilt)
        layers += [
            CtLayer(CtTissue.CORTICAL_BONE, sacrum),
            CtLayer(CtTissue.CANCELLOUS_BONE, Ellipsoid(sacrum.centre, (43.0, 14.0, 53.0), tilt)),
            CtLayer(CtTissue.CORTICAL_BONE, Capsule((0.0, sy + 50.0, -240.0),
                                                    (0.0, sy + 46.0, -262.0), 6.0)),
        ]
        for shape in self.bone:
            layers.append(CtLayer(CtTissue.CORTICAL_BONE, shape))
            core = _shrunk(shape, 2.5)
            if core is not None:
                layers.append(CtLayer(CtTissue.CANCELLOUS_BONE, core))
        for side in Side:
            s = side.sign
            hip = np.array([s * hx, hy, hz])
            trochanter = hip + [s * 48.0, 4.0, -22.0]
            layers += [
                CtLayer(CtTissue.MUSCLE, Ellipsoid(_as_vector(hip), (self.head_mm + 2.0,) * 3)),
                CtLayer(CtTissue.CORTICAL_BONE, Ellipsoid(_as_vector(hip), (self.head_mm,) * 3)),
                CtLayer(CtTissue.CANCELLOUS_BONE,
                        Ellipsoid(_as_vector(hip), (self.head_mm - 2.5,) * 3)),
                CtLayer(CtTissue.CORTICAL_BONE, Capsule(_as_vector(hip), _as_vector(trochanter),
                                                        14.0)),
                CtLayer(CtTissue.CANCELLOUS_BONE, Capsule(_as_vector(hip), _as_vector(trochanter),
                                                          11.5)),
                CtLayer(CtTissue.CORTICAL_BONE, Capsule(_as_vector(trochanter),
                                                        _as_vector(trochanter + [-s * 12.0, 0.0,
                                                                                 -200.0]),
                                                        14.0)),
            ]
        layers.append(CtLayer(CtTissue.DISC, Capsule((-6.0, -cb + 16.0, self.symphysis_z),
                                                    (6.0, -cb + 16.0, self.symphysis_z), 6.0)))
        return layers

    def _bowel(self, rng: np.random.Generator) -> list[CtLayer]:
        """Rectum, sigmoid, caecum and small-bowel loops of the pelvis."""
        ca, cb = self.cavity
        sy = self.spine_y
        cavity = EllipticCylinder((0.0, 0.0), (ca, cb))
        segments: list[tuple[Capsule | Ellipsoid, float]] = [
            (Capsule((0.0, sy + 22.0, -200.0), (float(rng.uniform(-8.0, 8.0)), sy + 32.0,
                                                  self.symphysis_z - 10.0),
                     float(rng.uniform(14.0, 19.0))), 0.5),  # rectum
            (Capsule((0.45 * ca, -0.05 * cb, -140.0), (12.0, sy - 2.0, -200.0),
                     float(rng.uniform(13.0, 17.0))), 0.7),  # sigmoid
            (Ellipsoid((-0.42 * ca, -0.2 * cb, -150.0),
                       (float(rng.uniform(24.0, 30.0)), 24.0, 30.0)), 0.8),  # caecum
        ]
        for _ in range(int(rng.integers(6, 11))):
            start = rng.uniform((-0.5 * ca, -cb + 15.0, -225.0), (0.5 * ca, sy - 15.0, -140.0))
            end = start + float(rng.uniform(25.0, 55.0)) * _unit(rng.normal(size=3))
            segments.append((Capsule(_as_vector(start), _as_vector(end),
                                     float(rng.uniform(9.0, 14.0))), 0.25))
        layers: list[CtLayer] = []
        for shape, gas in segments:
            layers += _hollow(rng, shape, gas_share=gas)
        return [CtLayer(ly.tissue, Intersection((ly.shape, cavity))) for ly in layers]


def _shrunk(shape: Shape, mm: float) -> Shape | None:
    """The core of a cortical bone shape ``mm`` inside it (capsules and ellipsoids)."""
    if isinstance(shape, Capsule):
        return Capsule(shape.start, shape.end, shape.radius_mm - mm) if shape.radius_mm > mm \
            else None
    if isinstance(shape, Ellipsoid) and min(shape.semi_axes) > mm:
        return Ellipsoid(shape.centre, _as_vector(np.asarray(shape.semi_axes) - mm), shape.axes)
    return None


def _graft(rng: np.random.Generator, pelvis: _Pelvis, side: Side,
           transplant: Transplant) -> tuple[RenalKidney, list[CtLayer]]:
    """The graft in ``side``'s iliac fossa and the layers painted before it (fat around it,
    its vessels and ureter, a lymphocele, bowel loops against it)."""
    s = side.sign
    ca, cb = pelvis.cavity
    outline = None
    for attempt in range(400):
        # A small pelvis may have no room for a large graft: after 200 draws the graft is
        # shrunk by 10 % every 20 draws (seeds that found room earlier are unchanged).
        shrink = 0.9 ** max(0, (attempt - 180) // 20)
        length = float(rng.uniform(100.0, 125.0))
        a = length / 2.0
        b, c = float(rng.uniform(27.0, 35.0)), float(rng.uniform(20.0, 26.0))
        target = float(rng.uniform(120.0, 250.0))
        factor = math.sqrt(target / (4.0 / 3.0 * math.pi * a * b * c / 1000.0))
        a, b, c = a * shrink, b * factor * shrink, c * factor * shrink
        coronal = math.radians(rng.uniform(25.0, 55.0))  # upper pole lateral
        sagittal = math.radians(rng.uniform(-10.0, 25.0))  # upper pole posterior
        long_axis = _unit([s * math.sin(coronal), math.sin(sagittal),
                           math.cos(coronal) * math.cos(sagittal)])
        turn = math.radians(rng.uniform(0.0, 40.0))  # hilum turned backwards from medial
        hilum = np.array([-s * math.cos(turn), math.sin(turn), 0.0])
        hilum = _unit(hilum - (hilum @ long_axis) * long_axis)
        axes = np.stack([long_axis, hilum, np.cross(long_axis, hilum)])
        x = s * float(rng.uniform(0.36, 0.56)) * ca
        z = float(rng.uniform(-205.0, -160.0))
        probe = Kidney(centre=(x, 0.0, z), semi_axes=(a, b, c), axes=_as_matrix(axes),
                       bend_mm=0.22 * b)
        surface = probe.surface_points(800)
        # Slide it forwards until it lies just under the anterior wall.
        wall_y = -cb * np.sqrt(np.clip(1.0 - (surface[:, 0] / ca) ** 2, 0.0, None))
        gap = float(rng.uniform(1.0, 6.0))
        shift = float(np.min(surface[:, 1] - wall_y)) - gap
        centre = np.array([x, -shift, z])
        outline_try = Kidney(centre=_as_vector(centre), semi_axes=(a, b, c),
                             axes=_as_matrix(axes), bend_mm=0.22 * b)
        pts = outline_try.surface_points(800)
        if np.any((pts[:, 0] / ca) ** 2 + (pts[:, 1] / cb) ** 2 > 0.97):
            continue
        if any(np.any(_contains_shape(bone, pts)) for bone in pelvis.bone):
            continue
        if np.any(pelvis.bladder.contains(pts)):
            continue
        outline = outline_try
        break
    if outline is None:
        raise RuntimeError("no room for the graft in the iliac fossa")
    graft = _renal_kidney(rng, outline)
    layers: list[CtLayer] = []
    margin = float(rng.uniform(0.0, 6.0))
    cavity = EllipticCylinder((0.0, 0.0), (ca, cb))
    if margin > 1.5:
        layers.append(CtLayer(CtTissue.FAT, Intersection((_grown(outline, margin), cavity))))
    hilum = outline.hilum
    axes = np.asarray(outline.axes)
    fork, groin = pelvis.external_artery[side]
    vfork, vgroin = pelvis.external_vein[side]
    artery_join = _nearest_on_segment(hilum, fork, groin)
    vein_join = _nearest_on_segment(hilum, vfork, vgroin)
    c = outline.semi_axes[2]
    layers += [
        CtLayer(CtTissue.AORTA, Capsule(_as_vector(hilum + 0.3 * c * axes[2]),
                                        _as_vector(artery_join), 3.0)),
        CtLayer(CtTissue.RENAL_VEIN, Capsule(_as_vector(hilum - 0.25 * c * axes[2]),
                                             _as_vector(vein_join), 4.5)),
    ]
    dome = np.asarray(pelvis.bladder.centre) + [s * 15.0, 0.0, pelvis.bladder.semi_axes[2] * 0.7]
    layers.append(CtLayer(CtTissue.URINE, Capsule(_as_vector(hilum + 6.0 * axes[1]),
                                                  _as_vector(dome), 2.5)))
    support = _support(outline)
    if transplant.bowel_against_graft:
        for _ in range(int(rng.integers(2, 4))):
            direction = _unit([-s * rng.uniform(0.3, 1.0), rng.uniform(-1.0, 0.4),
                               rng.uniform(-0.8, 0.8)])
            r = float(rng.uniform(10.0, 14.0))
            touch = np.asarray(outline.centre) + direction * (support(direction) + r - 3.0)
            run = _unit(np.cross(direction, rng.normal(size=3)))
            half = float(rng.uniform(15.0, 30.0))
            loop = Capsule(_as_vector(touch - half * run), _as_vector(touch + half * run), r)
            layers += [CtLayer(ly.tissue, Intersection((ly.shape, cavity)))
                       for ly in _hollow(rng, loop, gas_share=0.25)]
    if transplant.lymphocele:
        direction = _unit([-s * rng.uniform(0.2, 1.0), rng.uniform(-0.2, 0.6),
                           rng.uniform(-1.0, 0.3)])
        volume = float(rng.uniform(30.0, 150.0))
        semi = np.array([1.3, 1.0, 0.8]) * (volume * 1000.0 / (4.0 / 3.0 * math.pi * 1.04)) \
            ** (1.0 / 3.0)
        rot = _as_matrix(_rotation(rng.normal(size=3), float(rng.uniform(0.0, 180.0))))
        reach = float(np.sqrt(np.square(semi[:, None] * np.asarray(rot)).sum(axis=0)) @ np.abs(
            direction))
        centre = np.asarray(outline.centre) + direction * (support(direction) + 0.6 * reach)
        layers.append(CtLayer(CtTissue.LYMPH, Intersection((
            Ellipsoid(_as_vector(centre), _as_vector(semi), rot), cavity))))
    return graft, layers


def _contains_shape(shape: Shape, points: np.ndarray) -> np.ndarray:
    return np.asarray(shape.contains(points))


def _nearest_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = float(np.clip((p - a) @ (b - a) / float((b - a) @ (b - a)), 0.0, 1.0))
    return a + t * (b - a)


def _support(outline: Kidney):  # noqa: ANN202
    """Distance from the outline's centre to its surface along a direction."""
    surface = outline.surface_points(1500) - np.asarray(outline.centre)

    def along(direction: np.ndarray) -> float:
        return float(np.max(surface @ direction))

    return along
