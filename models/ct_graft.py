"""A kidney graft in the iliac fossa (or anywhere in the pelvis) on CT, without weights.

Transplant recipients are followed by CT, often without contrast. The graft lies in the
right or left iliac fossa, extraperitoneal, in front of the iliacus, psoas and external
iliac vessels, under the anterior abdominal wall, its long axis oblique. The search uses
the machinery of :mod:`models.ct_kidneys` (candidates over many HU windows, scored for
kidney-likeness, merged with neighbouring windows' regions, delineated) in a zone placed
by the pelvic bones and the body outline, not by fixed coordinates:

1. **Working grid**, body and bone masks as for the native kidneys
   (:func:`models.ct_body.to_working_grid`, :func:`models.ct_kidneys.bone_mask`).
   **Unenhanced** (no iodine in the blood in front of the column) the graft (about
   30 HU) differs from the abdominal wall, iliacus and psoas it lies against (about
   45-50 HU) by less than the voxel noise: the working grid is smoothed and searched with
   the native search's unenhanced settings (:func:`models.ct_kidneys.adapt_to_phase`).
   With the earlier one-voxel median filter the best candidates frayed into the muscle
   (development seeds 1-10: 8 grafts of 10 found, compactness 0.43-0.46); smoothed, 10
   of 10, mean Dice 0.894.
2. **Hip bones.** Bone farther than ``lateral_bone_mm`` from the body's mid-line (per
   axial slice) is split into 3D components on each side; the lowest component of at least
   ``min_hip_bone_ml`` is that side's hip bone (ilium, acetabulum, pubis; a rib is a tenth
   of that volume). No hip bone on either side: no pelvis in view, no graft search.
3. **Zone per side**, slice by slice, from the bottom of the hip bones up to
   ``above_crest_mm`` above the iliac crest (the graft's upper pole may rise above it): the
   body on that side of the mid-line, outside bone, in front of the hip bone's most
   anterior point on that slice plus ``front_margin_mm`` (the iliac fossa lies in front of
   the wing, the graft in front of the iliacus and psoas; above the crest the front of
   the wing's upper half, the anterior iliac spines, is carried up), and in front of the
   vertebral column's centre (:func:`models.ct_body.spine_track`: sacrum, L5). Native
   kidneys found beforehand are taken out of the zone with a margin of
   ``native_margin_mm``, unless their centre lies below the iliac crests (then the native
   search took something in the pelvis, often the graft itself).
4. **Candidates, score, merging** as :func:`models.ct_kidneys.find_candidates` and
   :func:`models.ct_kidneys.merge_neighbours` with the graft's settings: the long axis may
   be oblique (``max_tilt_deg`` 70), the thin-appendage cut is narrower
   (``detach_voxels`` 2: the wider opening cut the poles of oblique grafts), and a
   position term favours centres ``graft_lateral_mm`` from the mid-line whose front lies
   within ``anterior_depth_mm`` of the skin in front of them (the graft lies under the
   anterior abdominal wall; the iliopsoas, iliac vessels and back muscles lie deep). No
   term asks the graft to be the brightest structure: unenhanced, the graft (about
   30 HU) is darker than the psoas. A grown region is scored on its body as well, without
   the tubes :func:`models.ct_kidneys.delineate` would cut off
   (:func:`models.ct_kidneys.score_body`): in the excretory phase the iliac veins are as
   bright as the graft and join its region (development seed 107: compactness 0.47 with
   them, 0.58 without; score 0.10 to 0.24). Only with contrast: unenhanced, the best
   regions of native-only CTs gained as much as the grafts (seed 203: 0.11 to 0.18, with
   the threshold at 0.2), so the separation did not improve.
5. **Choice.** The best grown candidate over both sides is the graft when its score
   reaches ``min_score``; its side is the zone's (the patient's side, LPS working grid).
   It is delineated as a native kidney (:func:`models.ct_kidneys.delineate`);
   unenhanced with two rim layers instead of one, none brighter than half-way from the
   graft's median towards the patient's muscle (the smoothed search draws the graft a
   layer short of its edge against fat; the ceiling keeps the rim out of the iliopsoas).

**Graft or native kidney.** Position decides, never intensity: a native kidney lies in the
paravertebral renal fossa at the level of the upper lumbar spine, above the iliac crests;
the graft lies in the pelvis, in front of the hip bone. So (a) the graft is searched only
in the pelvic zone above, which lies in front of the hip bones, while native kidneys are
posterior, beside the column; (b) the native kidneys found by
:func:`models.ct_kidneys.segment_ct_kidneys` are removed from the graft zone; (c)
:func:`separate_natives` drops a "native kidney" whose centre lies below the iliac crests
or that overlaps the graft. Known limit: an ectopic pelvic native kidney would be reported
as a graft. A transplant recipient's natives are often end-stage (30-80 ml), which the
native search, made for adult kidneys, misses: beside a graft, each side without one is
searched again for a small kidney (:func:`find_atrophic_natives`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.ct_body import body_mask, muscle_hu, spine_track, to_working_grid
from models.ct_kidneys import (
    Candidate,
    CtKidneyConfig,
    CtKidneys,
    _distinct_best,
    _on_ct_grid,
    adapt_to_phase,
    bone_mask,
    delineate,
    find_candidates,
    merge_neighbours,
    score_body,
    segment_ct_kidneys,
    tissue_term,
)

__all__ = [
    "CtGraft",
    "CtGraftConfig",
    "FoundGraft",
    "find_atrophic_natives",
    "segment_ct_graft",
    "separate_natives",
]

SIDES = ("right", "left")


def _graft_kidney_config() -> CtKidneyConfig:
    return CtKidneyConfig(max_tilt_deg=70.0, candidate_ml=(40.0, 600.0), detach_voxels=2,
                          rim_nearest_side=True, rim_bright_layers=2)


def _atrophic_kidney_config() -> CtKidneyConfig:
    return CtKidneyConfig(semi_axes_scale=(0.55, 1.0), candidate_ml=(10.0, 600.0),
                          enhanced_above_muscle_hu=15.0, kidney_ap_mm=(-20.0, 55.0),
                          min_score=0.4)


@dataclass(frozen=True)
class CtGraftConfig:
    """Settings of the graft search (defaults are the method's, not tuned per study)."""

    #: Candidate, score, merge and delineation settings (see :class:`CtKidneyConfig`);
    #: its working spacing, anti-aliasing and bone level are used here too. The rim
    #: added back around the chosen region takes only voxels nearer in HU to the graft
    #: than to what lies beyond (``rim_nearest_side``): a graft lies against the
    #: iliopsoas, and with contrast a plain rim put 4-6 % of the graft's volume in muscle
    #: (synthetic seeds 141, 147 and 149, nephrographic: volumes 11-14 % high, 6-10 %
    #: with it). Two more layers of voxels at least as bright as the region's median
    #: follow (``rim_bright_layers``): a cortico-medullary graft's chosen region can hold
    #: its medulla and inner cortex, the bright outer cortex beyond it (seeds 148 and
    #: 160: -21 % and -19 %; -5 % and -10 % with them). Unenhanced, see
    #: ``unenhanced_rim_voxels``.
    kidney: CtKidneyConfig = field(default_factory=_graft_kidney_config)
    #: Bone farther than this from the body's mid-line is hip bone (or rib), mm.
    lateral_bone_mm: float = 40.0
    #: Smallest hip bone component, ml (a rib holds about 20 ml).
    min_hip_bone_ml: float = 80.0
    #: The zone reaches this far above the iliac crest, mm.
    above_crest_mm: float = 40.0
    #: The zone's posterior limit: the hip bone's most anterior point plus this, mm.
    front_margin_mm: float = 25.0
    #: Lateral distance of the graft's centre from the mid-line that costs nothing, mm,
    #: and the spread of the fall-off outside it.
    graft_lateral_mm: tuple[float, float] = (25.0, 110.0)
    position_sigma_mm: float = 20.0
    #: Depth of the graft's front below the skin in front of it that costs nothing, mm
    #: (subcutaneous fat and the abdominal wall's muscles).
    anterior_depth_mm: float = 60.0
    #: Native kidneys are taken out of the zone with this margin, mm.
    native_margin_mm: float = 10.0
    #: Unenhanced, the share of a candidate's outline on its zone's cut faces that costs
    #: nothing, and the share at which its position term reaches 0. (With contrast the
    #: enhancing hilar and iliac vessels carry a graft's region through the zone's back:
    #: development seed 10, cortico-medullary, Dice 0.92 without the term, 0.82 with.)
    cut_share: tuple[float, float] = (0.02, 0.12)
    #: Unenhanced, a graft's median HU (smoothed grid) lies between water-like fluid
    #: (urine, lymphocele, bowel content: this many HU or less) and the patient's muscle
    #: less ``below_muscle_hu`` (parenchyma is darker than muscle without contrast); a
    #: Gaussian fall-off of ``tissue_sigma_hu`` outside.
    unenhanced_min_hu: float = 15.0
    below_muscle_hu: float = 8.0
    tissue_sigma_hu: float = 5.0
    #: With contrast, a graft's median HU lies at least this far above the patient's
    #: muscle (a perfused graft enhances, muscle and bowel content hardly do), a Gaussian
    #: fall-off of ``enhanced_sigma_hu`` below: a fluid-filled bowel loop with its wall
    #: (38 HU) was reported as a graft on a native-only cortico-medullary CT (seed 224).
    enhanced_above_muscle_hu: float = 15.0
    enhanced_sigma_hu: float = 10.0
    #: Lowest score of a graft (below the native kidneys' 0.2: the zone and the position
    #: term already exclude most look-alikes; the real native-only CT's best pelvic
    #: region scores 0.117 since it is scored on its body too, 0.087 before: a thin
    #: margin; synthetic native-only cortico-medullary CTs 212-240: 0.02 at most).
    min_score: float = 0.12
    #: Unenhanced, the lowest score of a graft: the smoothed search scores grafts higher
    #: and look-alikes too (development seeds 1-10: grafts 0.33-0.69; native-only CTs
    #: 201-208, best pelvic region 0.01-0.11).
    unenhanced_min_score: float = 0.2
    #: Unenhanced, layers (working voxels) added back around the chosen region, and how
    #: far from its median HU towards the patient's muscle they may be bright (0.5:
    #: half-way). The search on the smoothed grid draws an unenhanced graft a layer short
    #: of its edge against fat (seeds 121 and 127: 17 % and 16 % small with one layer,
    #: 6 % and 5 % with two); without the ceiling the second layer also climbs into the
    #: iliopsoas and bowel the graft lies against. (The nearest-side rim of the contrast
    #: phases, tried here, drew seed 121 17 % small again: on the smoothed grid the
    #: graft's outer layer is half-way to fat.)
    unenhanced_rim_voxels: int = 2
    unenhanced_rim_towards_muscle: float = 0.5
    #: The native kidneys of a transplant recipient are often end-stage: 30-80 ml, a
    #: kidney's shape at 55-80 % of its length, which the native search's shape term
    #: (an adult kidney's size) scores near 0 (synthetic seed 134: best scores 0.14 and
    #: 0.20, both natives missed). When a graft is found, a side without a native kidney,
    #: or with one scoring under this config's ``min_score``, is searched again with these
    #: settings (see :func:`find_atrophic_natives`): the
    #: shape term forgives 55-100 % of an adult kidney's size, the centre lies at most
    #: 20 mm in front of the column's centre (the renal fossa), the tissue term keeps
    #: fluid-filled bowel out (on CTs whose natives had been removed, seeds 132-138,
    #: bowel loops scored 0.22-0.38 as small kidneys without these), and a second look
    #: needs a score of 0.4: unenhanced, bowel, spleen and liver tips in emptied renal
    #: fossae still scored 0.22-0.35 (seeds 2, 6, 10, 132), the atrophic natives of
    #: seeds 132, 134 and 136 0.54-0.64. None: not searched.
    atrophic_natives: CtKidneyConfig | None = field(default_factory=_atrophic_kidney_config)
    #: That search runs this far above the iliac crests and higher only, mm (a native
    #: kidney's lower pole lies about at L3; bowel loops 20-40 mm above the crests scored
    #: as small kidneys on CTs whose natives had been removed, seeds 132-138).
    natives_above_crest_mm: float = 40.0


@dataclass(frozen=True)
class FoundGraft:
    """The graft: a boolean ``(z, y, x)`` mask on the input CT's grid."""

    side: str  # "right" or "left": the patient's side of the iliac fossa
    mask: np.ndarray
    volume_ml: float
    score: float
    #: True when the mask touches the first or last slice (graft may be cut off).
    touches_edge: bool


@dataclass(frozen=True)
class CtGraft:
    """What the graft search found: the graft, or None and the reason.

    ``crest_z_mm`` is the patient z (mm, LPS) of the highest iliac crest found, None when
    no hip bone is in view: native kidneys lie above it.
    """

    graft: FoundGraft | None
    reason: str = ""
    crest_z_mm: float | None = None

    @property
    def pelvis_in_view(self) -> bool:
        """Whether hip bones were found, so that the pelvis was searched."""
        return self.crest_z_mm is not None


def segment_ct_graft(ct: sitk.Image, config: CtGraftConfig | None = None, *,
                     natives: CtKidneys | None = None) -> CtGraft:
    """Find and segment a kidney graft in the pelvis of ``ct`` (HU, any orientation).

    Parameters
    ----------
    ct : SimpleITK.Image
        The CT, in HU.
    config : CtGraftConfig, optional
        The method's settings.
    natives : CtKidneys, optional
        Native kidneys found beforehand (on ``ct``'s grid): kept out of the search.

    Returns
    -------
    CtGraft
        The graft on ``ct``'s grid, or None with the reason.
    """
    config = config or CtGraftConfig()
    kc = config.kidney
    s = kc.working_spacing_mm
    work = to_working_grid(ct, s, anti_alias=kc.anti_alias)
    hu = sitk.GetArrayFromImage(work)
    body = body_mask(hu)
    if not body.any():
        return CtGraft(None, "no body in view")
    bone = bone_mask(hu, kc.bone_hu)
    mid = _mid_line(body)
    hips = _hip_bones(bone, body, mid, s, config)
    spine = spine_track(hu, body, s)
    spine_y = spine.y if spine.any else None
    if not hips:
        return CtGraft(None, "no hip bone in view: no pelvis to search")
    pelvis_z = slice(min(h[1].start for h in hips.values()),
                     max(h[1].stop for h in hips.values()))
    min_score = config.min_score
    work, hu, kc, unenhanced = adapt_to_phase(work, hu, spine, bone, kc)
    # The pelvis's muscle: glutei, iliopsoas, abdominal wall.
    muscle = muscle_hu(hu, body, bone, pelvis_z)
    tissue = None
    if unenhanced:
        hi = muscle - config.below_muscle_hu if np.isfinite(muscle) else math.inf
        tissue = (hu, config.unenhanced_min_hu, hi, config.tissue_sigma_hu)
        min_score = config.unenhanced_min_score
    elif np.isfinite(muscle):
        tissue = (hu, muscle + config.enhanced_above_muscle_hu, math.inf,
                  config.enhanced_sigma_hu)
    crest = pelvis_z.stop - 1
    crest_z = float(work.TransformIndexToPhysicalPoint((0, 0, int(crest)))[2])
    exclude = _natives_on(work, ct, natives, config.native_margin_mm / s, crest_z)
    best: Candidate | None = None
    best_side = best_zone = None
    for side in SIDES:
        hip = hips.get(side) or hips[_other(side)]
        zone = _zone(body, bone, mid, hip, side, s, config, spine_y) & ~exclude
        if not zone.any():
            continue
        prior = _graft_prior(mid, body, zone, side, s, config, tissue, cut_faces=unenhanced)
        candidates = find_candidates(hu, zone, bone, s, kc, prior)
        for seed in _distinct_best(candidates, kc.merge_seeds):
            grown = merge_neighbours(hu, bone, seed, candidates, s, kc, prior=prior)
            if not unenhanced:
                grown = score_body(hu, bone, grown, s, kc, prior)
            if best is None or grown.score > best.score:
                best, best_side, best_zone = grown, side, zone
    if best is None or best.score < min_score:
        return CtGraft(None, f"no graft-like region in the pelvis (best score "
                             f"{0.0 if best is None else best.score:.2f} < {min_score})",
                       crest_z)
    rim: dict[str, float] = {}
    if unenhanced and np.isfinite(muscle):
        inside = float(np.median(hu[best.bbox][best.mask]))
        rim = {"rim_voxels": config.unenhanced_rim_voxels, "rim_nearest_side": False,
               "rim_ceiling_hu": inside + config.unenhanced_rim_towards_muscle * (muscle - inside)}
    mask = delineate(hu, best, best_zone, kc, **rim)
    found = _on_ct_grid(best_side, mask, work, ct, best.score, kc, record=FoundGraft)
    return CtGraft(found, "", crest_z)


def separate_natives(kidneys: CtKidneys, graft: CtGraft, ct: sitk.Image) -> CtKidneys:
    """``kidneys`` without what cannot be a native kidney: a region whose centre lies
    below the iliac crests (in the pelvis) or that overlaps the graft.

    Parameters
    ----------
    kidneys : CtKidneys
        The native kidneys found on ``ct``.
    graft : CtGraft
        The graft search's result on the same CT.
    ct : SimpleITK.Image
        The CT both masks lie on.

    Returns
    -------
    CtKidneys
        The native kidneys kept, with a reason for each side dropped.
    """
    found = {"right": kidneys.right, "left": kidneys.left}
    reasons = dict(kidneys.reasons)
    for side, kidney in found.items():
        if kidney is None:
            continue
        why = None
        if graft.graft is not None and (kidney.mask & graft.graft.mask).any():
            why = f"the region found on the {side} overlaps the graft"
        elif graft.crest_z_mm is not None:
            k, j, i = np.argwhere(kidney.mask).mean(axis=0)
            z = ct.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))[2]
            if z < graft.crest_z_mm:
                why = (f"the region found on the {side} lies below the iliac crests "
                       f"(in the pelvis): not a native kidney")
        if why is not None:
            found[side] = None
            reasons[side] = why
    return replace(kidneys, right=found["right"], left=found["left"], reasons=reasons)


def find_atrophic_natives(kidneys: CtKidneys, graft: CtGraft, ct: sitk.Image,
                          config: CtGraftConfig | None = None) -> CtKidneys:
    """``kidneys`` with each side that has none, or one scoring under the second look's
    threshold, searched again for a small native kidney (``config.atrophic_natives``),
    when ``graft`` holds a graft: a transplant recipient's native kidneys are often
    atrophic. That search keeps ``natives_above_crest_mm`` above the iliac crests, asks
    the kidney's tissue to enhance with contrast (or to be denser than fluid without) and
    drops what lies on the graft (:func:`separate_natives`); what it finds replaces a
    side's first answer only when it scores higher (seed 142: a 76 ml region of score
    0.22 was taken for the left native, the second look found the 42 ml native at
    0.62). Without a graft, with both natives scoring above the threshold, or with a
    field of view that ends below that height, ``kidneys`` is returned as it is."""
    config = config or CtGraftConfig()
    if graft.graft is None or graft.crest_z_mm is None or config.atrophic_natives is None:
        return kidneys
    floor = config.atrophic_natives.min_score
    missing = tuple(side for side in SIDES
                    if getattr(kidneys, side) is None or getattr(kidneys, side).score < floor)
    if not missing:
        return kidneys
    above = graft.crest_z_mm + config.natives_above_crest_mm
    if _top_z_mm(ct) <= above:
        return kidneys
    again = separate_natives(segment_ct_kidneys(ct, config.atrophic_natives, sides=missing,
                                                above_z_mm=above), graft, ct)
    found = {side: getattr(kidneys, side) for side in SIDES}
    reasons = dict(kidneys.reasons)
    for side in missing:
        first, second = found[side], getattr(again, side)
        if second is not None and (first is None or second.score > first.score):
            found[side] = second
            reasons.pop(side, None)
        elif first is None:
            reasons[side] = (f"{reasons.get(side, 'not found')}; searched again as an "
                             f"atrophic kidney: {again.reasons.get(side, 'not found')}")
    return replace(kidneys, right=found["right"], left=found["left"], reasons=reasons)


def _top_z_mm(ct: sitk.Image) -> float:
    """The highest patient z (LPS, mm) of ``ct``'s field of view."""
    size = ct.GetSize()
    return max(ct.TransformIndexToPhysicalPoint((i, j, k))[2]
               for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1))


def _other(side: str) -> str:
    return "left" if side == "right" else "right"


def _mid_line(body: np.ndarray) -> np.ndarray:
    """The body's mid-line x (voxels) per axial slice (middle of its extent), smoothed
    and interpolated over slices without body."""
    nz = body.shape[0]
    xs = np.full(nz, np.nan)
    cols = body.any(axis=1)
    for k in range(nz):
        idx = np.nonzero(cols[k])[0]
        if idx.size:
            xs[k] = 0.5 * (idx[0] + idx[-1])
    ok = ~np.isnan(xs)
    if ok.sum() >= 3:
        xs[ok] = ndi.median_filter(xs[ok], size=5, mode="nearest")
    return np.interp(np.arange(nz), np.nonzero(ok)[0], xs[ok])


def _hip_bones(bone: np.ndarray, body: np.ndarray, mid: np.ndarray, spacing_mm: float,
               config: CtGraftConfig) -> dict[str, tuple[np.ndarray, slice]]:
    """Each side's hip bone: (mask of it, its z extent), the lowest big lateral bone."""
    nx = bone.shape[2]
    dx = (np.arange(nx)[None, :] - mid[:, None]) * spacing_mm  # (z, x)
    lateral = np.abs(dx) > config.lateral_bone_mm
    out: dict[str, tuple[np.ndarray, slice]] = {}
    min_vox = config.min_hip_bone_ml * 1000.0 / spacing_mm ** 3
    for side, sign in (("right", -1.0), ("left", 1.0)):
        on_side = lateral & (np.sign(dx) == sign)
        labels, n = ndi.label(bone & body & on_side[:, None, :])
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        objects = ndi.find_objects(labels)
        big = [lab for lab in range(1, n + 1) if sizes[lab] >= min_vox]
        if not big:
            continue
        lab = min(big, key=lambda v: objects[v - 1][0].start + objects[v - 1][0].stop)
        out[side] = (labels == lab, objects[lab - 1][0])
    return out


def _zone(body: np.ndarray, bone: np.ndarray, mid: np.ndarray,
          hip: tuple[np.ndarray, slice], side: str, spacing_mm: float,
          config: CtGraftConfig, spine_y: np.ndarray | None = None) -> np.ndarray:
    """The search zone of ``side`` (see the module docstring, step 3)."""
    nz, ny, nx = body.shape
    mask, extent = hip
    top = min(nz, extent.stop + int(round(config.above_crest_mm / spacing_mm)))
    front = np.full(nz, np.nan)
    for k in range(extent.start, extent.stop):
        rows = np.nonzero(mask[k].any(axis=1))[0]
        if rows.size:
            front[k] = rows[0]
    ok = ~np.isnan(front)
    if not ok.any():
        return np.zeros_like(body)
    idx = np.arange(nz)
    # Above the crest the front of the wing's upper half (the anterior iliac spines) is
    # carried up: the crest's own highest point lies far back.
    upper = front[(extent.start + extent.stop) // 2:extent.stop]
    front[extent.stop:] = np.nanmin(upper) if np.isfinite(upper).any() else np.nan
    ok = ~np.isnan(front)
    front = np.interp(idx, idx[ok], front[ok])
    limit = front + config.front_margin_mm / spacing_mm
    if spine_y is not None:  # and in front of the column's centre (sacrum, L5)
        limit = np.minimum(limit, spine_y)
    y = np.arange(ny)[None, :, None]
    x = np.arange(nx)[None, None, :]
    dx = (x - mid[:, None, None])
    own = dx <= 0 if side == "right" else dx >= 0
    zone = body & ~bone & own & (y <= limit[:, None, None])
    zone[:extent.start] = False
    zone[top:] = False
    return zone


def _graft_prior(mid: np.ndarray, body: np.ndarray, zone: np.ndarray, side: str,
                 spacing_mm: float, config: CtGraftConfig,
                 tissue: tuple[np.ndarray, float, float, float] | None = None, *,
                 cut_faces: bool = False) -> Callable[[Candidate], Candidate]:
    """A candidate's position and tissue terms.

    Position: 1 when its centre lies ``graft_lateral_mm`` from the mid-line and its front
    within ``anterior_depth_mm`` of the skin in front of it, a Gaussian fall-off
    (``position_sigma_mm``) outside. The bladder, rectum and sigmoid lie on the mid-line,
    the flank wall far out; the graft lies under the anterior abdominal wall, the
    iliopsoas and iliac vessels deep behind it.

    With ``cut_faces`` (unenhanced CT) the position term is also multiplied by 1 when the
    candidate's outline lies inside ``zone``, falling linearly to 0 as the share of its
    outline on the zone's cut faces goes over ``cut_share``: without contrast a region cut
    by the mid-line or the zone's back is part of something larger (the bladder, the
    psoas). ``tissue`` (the HU array, the plausible range of a graft's median HU and the
    spread of the fall-off outside it) gives the tissue term: 1 when the candidate's
    median lies in the range, a Gaussian fall-off outside.
    """
    lo, hi = config.graft_lateral_mm
    any_body = body.any(axis=1)
    skin = np.where(any_body, np.argmax(body, axis=1), 0)  # (z, x): first body row
    a, b = config.cut_share

    def apply(c: Candidate) -> Candidate:
        k, _, i = c.centre
        dx = (i - mid[int(round(k))]) * spacing_mm
        lateral = -dx if side == "right" else dx
        off = max(0.0, lo - lateral, lateral - hi)
        present = c.mask.any(axis=1)  # (z, x) columns of the candidate
        first = np.argmax(c.mask, axis=1) + c.bbox[1].start
        kk, ii = np.nonzero(present)
        front = skin[kk + c.bbox[0].start, ii + c.bbox[2].start]
        depth = float(np.min(first[kk, ii] - front)) * spacing_mm if kk.size else 0.0
        off_ant = max(0.0, depth - config.anterior_depth_mm)
        position = math.exp(-(off ** 2 + off_ant ** 2) / (2 * config.position_sigma_mm ** 2))
        if cut_faces:
            outline = ndi.binary_dilation(c.mask) & ~c.mask
            cut = float(np.mean(~zone[c.bbox][outline])) if outline.any() else 0.0
            position *= float(np.clip((b - cut) / (b - a), 0.0, 1.0))
        if tissue is None:
            return replace(c, position=position)
        return replace(c, position=position, tissue=tissue_term(c, *tissue))

    return apply


def _natives_on(work: sitk.Image, ct: sitk.Image, natives: CtKidneys | None,
                margin_voxels: float, crest_z_mm: float) -> np.ndarray:
    """The native kidneys' masks on the working grid, grown by ``margin_voxels``; a
    region whose centre lies below the iliac crests (``crest_z_mm``) is no native kidney
    (the native search may have taken the graft) and is not taken out of the zone."""
    size = work.GetSize()[::-1]
    out = np.zeros(size, dtype=bool)
    if natives is None or not natives.found:
        return out
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    for kidney in natives.found:
        mask = np.asarray(kidney.mask, dtype=bool)
        if not mask.any():
            continue
        k, j, i = np.argwhere(mask).mean(axis=0)
        z = ct.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))[2]
        if z >= crest_z_mm:
            labels[mask] = 1
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct)
    on_work = sitk.Resample(image, work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    out = sitk.GetArrayFromImage(on_work) > 0
    r = max(1, int(round(margin_voxels)))
    return ndi.binary_dilation(out, iterations=r) if out.any() else out
