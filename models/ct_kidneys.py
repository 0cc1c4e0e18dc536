"""Both kidneys in an abdominal CT, without trained weights.

The method (issue 6; findings that led to it in ``docs/notes/ct-kidney-localisation.md``):

1. **Working grid.** The CT is resampled to isotropic voxels on a patient-aligned (LPS)
   grid (:func:`models.ct_body.to_working_grid`), so "right", "lateral" and "posterior"
   are array directions whatever the acquisition's orientation. Axes sampled finer than
   the grid are low-passed first, so thin-slice noise is averaged, not sampled.
2. **Search zone per side.** The vertebral column is tracked slice by slice
   (:func:`models.ct_body.spine_track`); each kidney is searched in a paravertebral box
   on its own side: ``lateral_mm`` from the column's centre, ``ap_mm`` around it, inside
   the body, outside bone (cortical bone closed and hole-filled, so the cancellous bone of
   vertebrae, ribs and iliac wings is excluded too).
3. **Candidates by intensity window.** A kidney's HU depends on the contrast phase (about
   30 unenhanced, 150–250 for the cortico-medullary cortex): rather than assume one, every
   window ``[lo, lo + w)`` of a grid of windows is tried; the voxels of the zone in the
   window are opened by one voxel (to cut thin bridges to neighbours) and split into
   connected components; components of plausible volume are candidates.
4. **Score.** Each candidate is closed (a 2-voxel ball) and hole-filled, since the renal
   sinus opens medially, then scored by how kidney-like it is, with no learned
   parameter: the share of its outer shell that differs in HU from it (a kidney is
   wrapped in perirenal fat and differs from the liver, spleen and psoas it touches),
   squared; its compactness (volume over that of the ellipsoid with its second moments),
   squared; the size of its principal semi-axes against an adult kidney's (about
   55 × 30 × 22 mm); the tilt of its long axis from the body's (kidneys 15–35°); how
   little of its shell is bone; where its centre lies beside the column
   (:func:`lateral_prior`); and zero when it runs through the whole field of view in z
   (neither pole in view: not measurable as a kidney).
5. **Merging.** The best few distinct candidates are grown by union with touching
   candidates of other windows while the score rises: an enhanced kidney is a bright
   cortex around a darker medulla, two windows' components that only together look like
   a kidney. Grown candidates whose score reaches ``min_score`` may be the side's
   kidney; a side with none has no kidney and says why. With candidates on both sides
   the pair is chosen (:func:`choose_pair`): the highest product of the two scores and
   a term asking the two centres to lie at about the same height and depth.
6. **Delineation.** The chosen region gets back the rim its opening took (within the
   zone), loses what is below the level half-way between its median HU and fat's
   (``fat_reference_hu``; the 50 % partial-volume edge, never below ``fat_hu``), which
   drops the renal sinus fat again (reference segmentations leave it out: the volume is
   parenchyma and collecting system) and the tubes hanging from it (extrarenal
   pelvis, ureter, vessels: :func:`detach_appendages`); the mask is resampled to the CT's
   grid, where its outline against fat is redrawn (:mod:`models.ct_edge`).

A field of view without kidneys yields no candidate above the score threshold on
either side: the caller reports "no kidney in field of view" rather than a volume.

Known limits (``benchmarks/results/ct_kidneys.md``):
- Added noise of σ 25 HU on the real 3 mm example loses its right kidney: the windows
  fragment it.
- Unenhanced CT (found by :func:`adapt_to_phase`) is median-filtered and scored with a
  lower contrast level; a kidney whose psoas is as dark as itself (10 HU apart) can still
  merge with it and be missed. Bowel loops that fill an empty renal fossa (after a
  nephrectomy) can score as a kidney in any phase.
- A transplanted kidney in the iliac fossa lies outside the paravertebral zone: it is
  searched for by :mod:`models.ct_graft`, which also drops a "native kidney" found in
  the pelvis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.components import (
    FACE_CONNECTIVITY,
    ball,
    close_in_background,
    dilate_by,
    erode_by,
    fill_holes,
    largest_component,
)
from models.ct_body import (
    SpineTrack,
    blood_enhanced_area_mm2,
    body_mask,
    muscle_hu,
    spine_track,
    to_working_grid,
)
from models.ct_edge import fat_level, grow_rim_by_nearest_side, redraw_fat_edge

__all__ = ["CtKidneyConfig", "CtKidneys", "FoundKidney", "segment_ct_kidneys"]

SIDES = ("right", "left")


@dataclass(frozen=True)
class CtKidneyConfig:
    """Settings of the method (defaults are the method's, not tuned per study)."""

    #: Working grid spacing in mm (the CT is resampled to it, isotropic).
    working_spacing_mm: float = 2.5
    #: Low-pass filter finer axes before resampling (see ``to_working_grid``).
    anti_alias: bool = True
    #: Typical fat HU: the kidney's outline is drawn half-way between its own median HU
    #: and this (the 50 % partial-volume level), never below ``fat_hu``. None: ``fat_hu``.
    fat_reference_hu: float | None = -100.0
    #: Redraw the outline against fat on the CT's own grid (see :mod:`models.ct_edge`).
    redraw_fat_edge: bool = True
    #: Lateral distance of the search zone from the column's centre, mm.
    lateral_mm: tuple[float, float] = (25.0, 140.0)
    #: Antero-posterior extent of the zone around the column's centre (anterior < 0), mm.
    ap_mm: tuple[float, float] = (-75.0, 60.0)
    #: Lower ends of the HU windows tried, and their widths.
    window_lows_hu: tuple[float, ...] = tuple(float(v) for v in range(-20, 260, 10))
    window_widths_hu: tuple[float, ...] = (30.0, 50.0, 80.0, 120.0, 180.0)
    #: Plausible kidney volume (ml) of a candidate before delineation.
    candidate_ml: tuple[float, float] = (25.0, 600.0)
    #: A shell voxel "differs" from the candidate by more than this many HU.
    contrast_hu: float = 25.0
    #: Adult kidney semi-axes (mm) and the log-normal spread of the shape term.
    semi_axes_mm: tuple[float, float, float] = (55.0, 30.0, 22.0)
    shape_sigma: float = 0.35
    #: Sizes the shape term accepts without cost, as factors on ``semi_axes_mm``: a
    #: candidate's semi-axes are compared with the reference scaled by the factor in this
    #: band nearest their common scale (the geometric mean of their ratios), so that only
    #: the size outside the band and the proportions cost. (1, 1): an adult kidney's size.
    semi_axes_scale: tuple[float, float] = (1.0, 1.0)
    #: Long axis tilt from the body's axis that costs nothing, and the spread beyond it.
    max_tilt_deg: float = 35.0
    tilt_sigma_deg: float = 20.0
    #: Candidates with more of their shell next to bone than this are not kidneys.
    max_bone_share: float = 0.12
    #: Candidates are closed by a ball of this many voxels and hole-filled before their
    #: shape is scored (the renal sinus opens medially: the raw component is a "C").
    score_closing_voxels: int = 2
    #: Best distinct candidates of a side that are grown by merging before the choice.
    merge_seeds: int = 4
    #: Non-fat voxels this many voxels around the chosen region are added back (the
    #: one-voxel opening of the candidates takes a rim off).
    rim_voxels: int = 1
    #: Add a rim voxel only where it is nearer in HU to the kidney than to what lies
    #: beyond it (:func:`models.ct_edge.grow_rim_by_nearest_side`), not every non-fat one.
    rim_nearest_side: bool = False
    #: With ``rim_nearest_side``, this many more layers of voxels at least as bright as
    #: the region's median follow: a cortico-medullary kidney's chosen region can hold
    #: the medulla and the inner cortex, with the bright outer cortex (2-7 mm) beyond it.
    rim_bright_layers: int = 0
    #: Widest ball (voxels) of the opening that detaches the extrarenal pelvis, ureter and
    #: vessels from the kidney, and the most of the volume that may be cut off that way.
    detach_voxels: int = 4
    detach_max_share: float = 0.15
    #: Lateral distance of a kidney's centre from the column's centre that costs nothing,
    #: and the spread of the fall-off outside it, mm.
    kidney_lateral_mm: tuple[float, float] = (45.0, 100.0)
    #: The same for the centre's antero-posterior offset from the column's centre (the
    #: median of its bone, near the pedicles; anterior < 0): kidneys lie beside the
    #: vertebral body, the gallbladder and bowel in front of it.
    kidney_ap_mm: tuple[float, float] = (-45.0, 55.0)
    lateral_sigma_mm: float = 15.0
    #: Lowest score of a kidney.
    min_score: float = 0.2
    #: Offsets of the two kidneys' centres (cranio-caudal, antero-posterior) that cost
    #: nothing when both sides have candidates, and the spread of the fall-off outside, mm
    #: (see :func:`choose_pair`).
    pair_free_mm: tuple[float, float] = (40.0, 30.0)
    pair_sigma_mm: float = 20.0
    #: Below this pair term the best pair is no pair: each side's best is taken
    #: (synthetic transplant CT seed 102: the graft, 165 mm below the left native
    #: kidney, and a fluid-filled loop 95 mm below it were the right side's candidates).
    pair_min: float = 0.5
    #: Voxels above this HU are cortical bone; below ``fat_hu`` fat.
    bone_hu: float = 300.0
    fat_hu: float = -30.0
    #: Contrast-filled blood in front of the column (mm², see
    #: :func:`models.ct_body.blood_enhanced_area_mm2`) below which the CT is unenhanced
    #: (synthetic CTs: 380 or more with contrast in any phase, 50 or less without, but a
    #: pelvic excretory CT, seed 101, gave 131 and was taken for unenhanced: its graft was
    #: then searched as plain tissue and missed).
    enhanced_blood_mm2: float = 80.0
    #: Unenhanced, a kidney (30-40 HU) differs from the psoas, liver and abdominal wall it
    #: touches by only 10-25 HU, less than the voxel noise: the working grid is smoothed
    #: (Gaussian, sigma in mm; noise and texture otherwise split the kidney between
    #: windows and fray its components into the muscle) and a shell voxel "differs" from
    #: the candidate at ``unenhanced_contrast_hu`` instead of ``contrast_hu``. Synthetic
    #: seeds 1-10 (development): 0 of 20 kidneys missed, mean Dice 0.908 (a median filter
    #: of one voxel: 1 missed); the pelvic graft search: 10 of 10 grafts (median: 8).
    unenhanced_smoothing_mm: float = 2.5
    unenhanced_contrast_hu: float = 8.0
    #: Unenhanced windows: fine steps over the plain-tissue range only (a kidney 10 HU
    #: darker than its psoas is cut by windows 10 HU apart).
    unenhanced_window_lows_hu: tuple[float, ...] = tuple(float(v) for v in range(-20, 60, 3))
    unenhanced_window_widths_hu: tuple[float, ...] = (15.0, 20.0, 25.0, 30.0, 40.0)
    #: Tissue term (None: none; the search for atrophic natives beside a graft uses it):
    #: with contrast a kidney's median HU lies at least this far above the patient's
    #: muscle (a perfused kidney enhances, bowel content and wall hardly do); unenhanced
    #: between ``plain_min_hu`` (water-like bowel content lies below) and the muscle less
    #: ``plain_below_muscle_hu``; a Gaussian fall-off of ``tissue_sigma_hu`` outside.
    enhanced_above_muscle_hu: float | None = None
    plain_min_hu: float = 22.0
    plain_below_muscle_hu: float = 5.0
    tissue_sigma_hu: float = 5.0


@dataclass(frozen=True)
class FoundKidney:
    """One kidney: a boolean ``(z, y, x)`` mask on the input CT's grid."""

    side: str  # "right" or "left": the patient's side, from the direction matrix
    mask: np.ndarray
    volume_ml: float
    #: The candidate's score in [0, 1] (how kidney-like it looked).
    score: float
    #: True when the mask touches the first or last slice (kidney may be cut off).
    touches_edge: bool


@dataclass(frozen=True)
class CtKidneys:
    """What the method found: each side's kidney, or None with the reason."""

    right: FoundKidney | None
    left: FoundKidney | None
    #: Why a side has no kidney, by side.
    reasons: dict[str, str] = field(default_factory=dict)
    #: True when the CT was found to be without intravenous contrast.
    unenhanced: bool = False

    @property
    def found(self) -> tuple[FoundKidney, ...]:
        return tuple(k for k in (self.right, self.left) if k is not None)


@dataclass(frozen=True)
class Candidate:
    """A connected component of one window, with its score terms (working grid)."""

    window: tuple[float, float]
    bbox: tuple[slice, slice, slice]
    mask: np.ndarray  # within bbox
    volume_ml: float
    contrast: float
    compactness: float
    shape: float
    bone_share: float
    #: How close the long axis is to the body's long axis (kidneys: 15–35° off it).
    upright: float
    #: 1 with no bone along the shell, falling linearly to 0 at ``max_bone_share``.
    bone_free: float
    #: 0 when the region runs through the whole field of view in z (no pole in view).
    pole_in_view: float = 1.0
    #: Lateral position prior of its centre (see :func:`lateral_prior`).
    position: float = 1.0
    #: Whether its median HU is plausible for a kidney (used by the graft search on
    #: unenhanced CT; 1 elsewhere).
    tissue: float = 1.0

    @property
    def centre(self) -> np.ndarray:
        """Its centre (z, y, x) in working-grid voxels."""
        return np.argwhere(self.mask).mean(axis=0) + [sl.start for sl in self.bbox]

    @property
    def score(self) -> float:
        return (self.contrast ** 2 * self.compactness ** 2 * self.shape * self.upright
                * self.bone_free * self.pole_in_view * self.position * self.tissue)


_BALL1 = FACE_CONNECTIVITY
#: Two face steps (a diamond of radius 2): a region's shell for its contrast.
_DIAMOND2 = ndi.iterate_structure(FACE_CONNECTIVITY, 2)


def segment_ct_kidneys(ct: sitk.Image, config: CtKidneyConfig | None = None, *,
                       sides: tuple[str, ...] = SIDES,
                       above_z_mm: float | None = None) -> CtKidneys:
    """Find and segment the right and left kidney of ``ct`` (HU, any orientation), or
    only those of ``sides`` (the others are None without a reason), searched only above
    the patient height ``above_z_mm`` (LPS z, mm) when it is given.

    Returns
    -------
    CtKidneys
        Each side's kidney on ``ct``'s grid, or None and the reason.
    """
    config = config or CtKidneyConfig()
    s = config.working_spacing_mm
    work = to_working_grid(ct, s, anti_alias=config.anti_alias)
    hu = sitk.GetArrayFromImage(work)
    body = body_mask(hu)
    spine = spine_track(hu, body, s)
    if not spine.any:
        reason = "no vertebral column found to place the kidney search"
        return CtKidneys(None, None, {side: reason for side in SIDES})
    bone = bone_mask(hu, config.bone_hu)
    work, hu, config, unenhanced = adapt_to_phase(work, hu, spine, bone, config)
    found: dict[str, FoundKidney | None] = {}
    reasons: dict[str, str] = {}
    zones: dict[str, np.ndarray] = {}
    options: dict[str, list[Candidate]] = {side: [] for side in SIDES}
    high = (_slice_heights(work) > above_z_mm)[:, None, None] if above_z_mm is not None \
        else True
    for side in sides:
        zones[side] = search_zone(body, bone, spine, side, s, config) & high
        prior = _with_tissue(lateral_prior(spine, side, s, config),
                             _tissue_range(hu, body, bone, zones[side], unenhanced, config))
        candidates = find_candidates(hu, zones[side], bone, s, config, prior)
        grown = [merge_neighbours(hu, bone, seed, candidates, s, config, prior=prior)
                 for seed in _distinct_best(candidates, config.merge_seeds)]
        best = max(grown, key=lambda c: c.score, default=None)
        options[side] = [c for c in grown if c.score >= config.min_score]
        if not options[side]:
            reasons[side] = (
                f"no kidney-like region on the {side} (best score "
                f"{0.0 if best is None else best.score:.2f} < {config.min_score})")
    for side, best in choose_pair(options["right"], options["left"], s, config).items():
        if best is None:
            found[side] = None
            continue
        mask = delineate(hu, best, zones[side], config)
        found[side] = _on_ct_grid(side, mask, work, ct, best.score, config)
    return CtKidneys(found["right"], found["left"], reasons, unenhanced)


def tissue_term(c: Candidate, hu: np.ndarray, lo: float, hi: float, sigma: float) -> float:
    """1 when the median HU of ``c`` (on ``hu``) lies in ``[lo, hi]``, a Gaussian
    fall-off of ``sigma`` outside."""
    median = float(np.median(hu[c.bbox][c.mask]))
    miss = max(0.0, lo - median, median - hi)
    return math.exp(-miss ** 2 / (2 * sigma ** 2))


def _tissue_range(hu: np.ndarray, body: np.ndarray, bone: np.ndarray, zone: np.ndarray,
                  unenhanced: bool, config: CtKidneyConfig
                  ) -> tuple[np.ndarray, float, float, float] | None:
    """The tissue term's arguments for a search in ``zone`` (see ``CtKidneyConfig``), None
    when it is off or the muscle level cannot be measured."""
    if config.enhanced_above_muscle_hu is None or not zone.any():
        return None
    z = np.nonzero(zone.any(axis=(1, 2)))[0]
    muscle = muscle_hu(hu, body, bone, slice(int(z[0]), int(z[-1]) + 1))
    if not np.isfinite(muscle):
        return None
    if unenhanced:
        return (hu, config.plain_min_hu, muscle - config.plain_below_muscle_hu,
                config.tissue_sigma_hu)
    return hu, muscle + config.enhanced_above_muscle_hu, math.inf, config.tissue_sigma_hu


def _with_tissue(prior: Callable[[Candidate], Candidate],
                 tissue: tuple[np.ndarray, float, float, float] | None
                 ) -> Callable[[Candidate], Candidate]:
    if tissue is None:
        return prior
    return lambda c: replace(prior(c), tissue=tissue_term(c, *tissue))


def _slice_heights(work: sitk.Image) -> np.ndarray:
    """Patient z (LPS, mm) of each slice of the working grid."""
    return np.array([work.TransformIndexToPhysicalPoint((0, 0, k))[2]
                     for k in range(work.GetSize()[2])])


def choose_pair(right: list[Candidate], left: list[Candidate], spacing_mm: float,
                config: CtKidneyConfig) -> dict[str, Candidate | None]:
    """Each side's kidney among its grown candidates (all above the score threshold).

    With candidates on both sides, the pair with the highest product of scores and
    :func:`pair_term` is chosen: the two kidneys lie at about the same height and depth,
    so a bowel loop far below or in front of the other side's kidney loses to a kidney
    level with it that scores a little lower (synthetic unenhanced CT, seed 211: the
    ascending colon 78 mm below and 43 mm in front of the left kidney scored 0.531, the
    right kidney 0.517). With candidates on one side only, or when even the best pair is
    not level (its term below ``pair_min``: no candidate is the other kidney's match, as
    when an atrophic native kidney is missed beside a graft), each side's best is chosen.
    """
    alone = {"right": max(right, key=lambda c: c.score, default=None),
             "left": max(left, key=lambda c: c.score, default=None)}
    if not right or not left:
        return alone
    pairs = [(a.score * b.score * pair_term(a, b, spacing_mm, config), a, b)
             for a in right for b in left]
    value, r, left_choice = max(pairs, key=lambda p: p[0])
    if value < config.pair_min * r.score * left_choice.score:
        return alone
    return {"right": r, "left": left_choice}


def pair_term(a: Candidate, b: Candidate, spacing_mm: float, config: CtKidneyConfig) -> float:
    """1 when the centres of ``a`` and ``b`` (working grid, LPS-aligned) lie within
    ``pair_free_mm`` of each other in height and in depth, a Gaussian fall-off
    (``pair_sigma_mm``) outside. The right kidney lies 1-2 cm lower than the left as a
    rule; the free band is wider than that on purpose."""
    ca, cb = a.centre, b.centre
    dz, dy = (abs(float(ca[i] - cb[i])) * spacing_mm for i in (0, 1))
    free_z, free_y = config.pair_free_mm
    off = max(0.0, dz - free_z) ** 2 + max(0.0, dy - free_y) ** 2
    return math.exp(-off / (2 * config.pair_sigma_mm ** 2))


def adapt_to_phase(work: sitk.Image, hu: np.ndarray, spine: SpineTrack, bone: np.ndarray,
                   config: CtKidneyConfig
                   ) -> tuple[sitk.Image, np.ndarray, CtKidneyConfig, bool]:
    """The working grid, its array and the settings for the CT's contrast phase, and
    whether it is unenhanced (no iodine in the blood in front of the column). Unenhanced,
    the grid is smoothed, the contrast level lowered and the windows narrowed to
    plain tissue (the ``unenhanced_*`` settings); with contrast, or without a column to
    measure in front of, everything is returned unchanged."""
    if not spine.any:
        return work, hu, config, False
    area = blood_enhanced_area_mm2(hu, spine, bone, config.working_spacing_mm)
    if area >= config.enhanced_blood_mm2:
        return work, hu, config, False
    if config.unenhanced_smoothing_mm > 0:
        work = sitk.SmoothingRecursiveGaussian(work, config.unenhanced_smoothing_mm)
        hu = sitk.GetArrayFromImage(work)
    return work, hu, replace(config, contrast_hu=config.unenhanced_contrast_hu,
                             window_lows_hu=config.unenhanced_window_lows_hu,
                             window_widths_hu=config.unenhanced_window_widths_hu), True


def _distinct_best(candidates: list[Candidate], n: int) -> list[Candidate]:
    """The ``n`` best-scoring candidates whose boxes' centres are apart (> 4 voxels)."""
    chosen: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: -c.score):
        centre = np.array([(b.start + b.stop) / 2 for b in c.bbox])
        if all(np.abs(centre - np.array([(b.start + b.stop) / 2 for b in o.bbox])).max() > 4
               for o in chosen):
            chosen.append(c)
        if len(chosen) == n:
            break
    return chosen


def bone_mask(hu: np.ndarray, bone_hu: float) -> np.ndarray:
    """Cortical bone, closed within each axial slice and hole-filled, so that the
    cancellous bone inside vertebrae, ribs and iliac wings counts as bone too."""
    bone = hu > bone_hu
    disc = np.ones((1, 5, 5), dtype=bool)
    bone = ndi.binary_closing(bone, structure=disc)
    for k in range(bone.shape[0]):
        bone[k] = ndi.binary_fill_holes(bone[k])
    return bone


def search_zone(body: np.ndarray, bone: np.ndarray, spine: SpineTrack, side: str,
                spacing_mm: float, config: CtKidneyConfig) -> np.ndarray:
    """The paravertebral box where ``side``'s kidney is searched (LPS working grid:
    the patient's right is the low-x side)."""
    nz, ny, nx = body.shape
    x = np.arange(nx)[None, None, :]
    y = np.arange(ny)[None, :, None]
    dx = (x - spine.x[:, None, None]) * spacing_mm
    dy = (y - spine.y[:, None, None]) * spacing_mm
    lateral = -dx if side == "right" else dx
    lo, hi = config.lateral_mm
    a0, a1 = config.ap_mm
    zone = (lateral >= lo) & (lateral <= hi) & (dy >= a0) & (dy <= a1)
    return zone & body & ~bone


def lateral_prior(spine: SpineTrack, side: str, spacing_mm: float,
                  config: CtKidneyConfig) -> Callable[[Candidate], Candidate]:
    """A function giving a candidate its position term: 1 when its centre lies
    ``kidney_lateral_mm`` from the column's centre on ``side`` and within
    ``kidney_ap_mm`` of it front to back, a Gaussian fall-off (``lateral_sigma_mm``)
    outside. Kidney centres lie beside the psoas, 45–100 mm from the mid-line; the aorta,
    crura and bowel lie nearer, the spleen and flank further, the gallbladder in front."""
    lo, hi = config.kidney_lateral_mm
    ap_lo, ap_hi = config.kidney_ap_mm

    def apply(c: Candidate) -> Candidate:
        k, j, i = c.centre
        z = int(round(k))
        dx = (i - spine.x[z]) * spacing_mm
        dy = (j - spine.y[z]) * spacing_mm
        lateral = -dx if side == "right" else dx
        off = max(0.0, lo - lateral, lateral - hi)
        off_ap = max(0.0, ap_lo - dy, dy - ap_hi)
        return replace(c, position=math.exp(-(off ** 2 + off_ap ** 2)
                                            / (2 * config.lateral_sigma_mm ** 2)))

    return apply


def find_candidates(hu: np.ndarray, zone: np.ndarray, bone: np.ndarray, spacing_mm: float,
                    config: CtKidneyConfig,
                    prior: Callable[[Candidate], Candidate] | None = None) -> list[Candidate]:
    """Every window's connected components of plausible volume, scored (and given their
    position term by ``prior``)."""
    if not zone.any():
        return []
    bbox = ndi.find_objects(zone.astype(np.uint8))[0]
    sub = hu[bbox]
    z_in = zone[bbox]
    voxel_ml = spacing_mm ** 3 / 1000.0
    min_vox = config.candidate_ml[0] / voxel_ml
    max_vox = config.candidate_ml[1] / voxel_ml
    out: list[Candidate] = []
    for lo in config.window_lows_hu:
        for w in config.window_widths_hu:
            window = (lo, lo + w)
            m = z_in & (sub >= lo) & (sub < lo + w)
            m = dilate_by(erode_by(m, _BALL1), _BALL1)  # an opening
            labels, n = ndi.label(m)
            if n == 0:
                continue
            sizes = np.bincount(labels.ravel())
            objects = ndi.find_objects(labels)
            for lab in np.nonzero((sizes >= min_vox) & (sizes <= max_vox))[0]:
                if lab == 0:
                    continue
                obj = objects[lab - 1]
                if obj[0].start == 0 and obj[0].stop == z_in.shape[0]:
                    continue  # neither pole in view: not measurable as a kidney
                where = tuple(slice(o.start + b.start, o.stop + b.start)
                              for o, b in zip(obj, bbox, strict=True))
                c = score_region(hu, bone, where, labels[obj] == lab, window, spacing_mm,
                                 config)
                out.append(prior(c) if prior else c)
    return out


def _grow_box(box: tuple[slice, ...], pad: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(0, b.start - pad), min(n, b.stop + pad))
                 for b, n in zip(box, shape, strict=True))


def _place(mask: np.ndarray, where: tuple[slice, ...], box: tuple[slice, ...]) -> np.ndarray:
    """``mask`` (covering ``where``) as an array covering the larger ``box``."""
    out = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    out[tuple(slice(w.start - b.start, w.stop - b.start)
              for w, b in zip(where, box, strict=True))] = mask
    return out


def score_region(hu: np.ndarray, bone: np.ndarray, where: tuple[slice, ...],
                 comp: np.ndarray, window: tuple[float, float], spacing_mm: float,
                 config: CtKidneyConfig) -> Candidate:
    """Solidify a region (``comp`` covering ``where`` on the working grid) and score it."""
    box = _grow_box(where, config.score_closing_voxels + 2, hu.shape)
    inner = solidify(_place(comp, where, box), config.score_closing_voxels)
    volume_ml = float(inner.sum()) * spacing_mm ** 3 / 1000.0
    shell = dilate_by(inner, _DIAMOND2) & ~inner
    values = hu[box]
    median = float(np.median(values[inner]))
    shell_values = values[shell]
    contrast = float(np.mean(np.abs(shell_values - median) > config.contrast_hu)) \
        if shell_values.size else 0.0
    bone_share = float(np.mean(bone[box][shell])) if shell_values.size else 0.0
    pts = np.argwhere(inner).astype(float) * spacing_mm
    cov = np.cov(pts.T) if len(pts) > 3 else np.eye(3)
    eigval, eigvec = np.linalg.eigh(cov)
    semi = np.sqrt(5.0 * np.clip(eigval[::-1], 1e-6, None))  # solid ellipsoid: var = a²/5
    ellipsoid_ml = 4.0 / 3.0 * math.pi * float(np.prod(semi)) / 1000.0
    compactness = min(1.0, volume_ml / ellipsoid_ml) if ellipsoid_ml > 0 else 0.0
    tilt = math.degrees(math.acos(min(1.0, abs(float(eigvec[0, -1])))))
    excess = max(0.0, tilt - config.max_tilt_deg)
    upright = math.exp(-excess ** 2 / (2 * config.tilt_sigma_deg ** 2))
    off = np.log(semi) - np.log(np.array(config.semi_axes_mm))
    lo, hi = config.semi_axes_scale
    off -= float(np.clip(off.mean(), math.log(lo), math.log(hi)))
    shape = float(np.exp(-np.sum(off ** 2) / (2 * config.shape_sigma ** 2)))
    bone_free = max(0.0, 1.0 - bone_share / config.max_bone_share)
    through = (box[0].start == 0 and inner[0].any() and box[0].stop == hu.shape[0]
               and inner[-1].any())
    return Candidate(window=window, bbox=box, mask=inner, volume_ml=volume_ml,
                     contrast=contrast, compactness=compactness, shape=shape,
                     bone_share=bone_share, upright=upright, bone_free=bone_free,
                     pole_in_view=0.0 if through else 1.0)


def merge_neighbours(hu: np.ndarray, bone: np.ndarray, seed: Candidate,
                     candidates: list[Candidate], spacing_mm: float, config: CtKidneyConfig,
                     *, prior: Callable[[Candidate], Candidate] | None = None,
                     rounds: int = 3) -> Candidate:
    """Grow ``seed`` by the union with touching candidates of other windows while that
    raises its score: an enhanced kidney is a bright cortex around a darker medulla, two
    windows' components that only together look like a kidney."""
    best = seed
    for _ in range(rounds):
        reach = _grow_box(best.bbox, 1, hu.shape)
        near = dilate_by(_place(best.mask, best.bbox, reach), _BALL1)
        improved = None
        seen: set[tuple] = set()
        for other in candidates:
            if not all(o.start < r.stop and r.start < o.stop
                       for o, r in zip(other.bbox, reach, strict=True)):
                continue
            box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                        for a, b in zip(reach, other.bbox, strict=True))
            mine = _place(near, reach, box)
            theirs = _place(other.mask, other.bbox, box)
            extra = theirs & ~_place(best.mask, best.bbox, box)
            if not (mine & theirs).any() or extra.sum() < 0.1 * theirs.sum():
                continue
            key = (tuple((s.start, s.stop) for s in box), int(extra.sum()))
            if key in seen:
                continue
            seen.add(key)
            union = _place(best.mask, best.bbox, box) | theirs
            merged = score_region(hu, bone, box, union, best.window, spacing_mm, config)
            merged = prior(merged) if prior else merged
            if merged.score > (improved or best).score:
                improved = merged
        if improved is None:
            break
        best = improved
    return best


def score_body(hu: np.ndarray, bone: np.ndarray, c: Candidate, spacing_mm: float,
               config: CtKidneyConfig,
               prior: Callable[[Candidate], Candidate] | None = None) -> Candidate:
    """``c`` or its main body without the tubes hanging from it, whichever scores higher.

    A region grown in one HU window can carry vessels, the ureter or a bowel loop of the
    same HU (excretory phase: the iliac veins match an enhancing graft); they lower its
    compactness and shape, though :func:`delineate` would cut them off
    (:func:`detach_appendages`, same settings). Scoring the body as well judges the
    region that would be delineated.
    """
    body = detach_appendages(c.mask, config.detach_voxels, config.detach_max_share)
    if body.sum() == c.mask.sum():
        return c
    scored = score_region(hu, bone, c.bbox, body, c.window, spacing_mm, config)
    scored = prior(scored) if prior else scored
    return scored if scored.score > c.score else c


def delineate(hu: np.ndarray, best: Candidate, zone: np.ndarray,
              config: CtKidneyConfig, *, rim_voxels: int | None = None,
              rim_ceiling_hu: float = math.inf,
              rim_nearest_side: bool | None = None) -> np.ndarray:
    """The kidney's mask on the working grid from its chosen (solidified) candidate.

    ``rim_voxels`` (default ``config.rim_voxels``) layers of the zone around it are added
    back, only voxels at most ``rim_ceiling_hu`` (a graft's caller keeps the rim from
    growing into the brighter muscle it lies against), and with ``rim_nearest_side``
    (default ``config.rim_nearest_side``) only voxels nearer in HU to the region than to
    what lies beyond them. The renal sinus fat, filled in to
    score the shape, is taken out again: the kidney's volume is its parenchyma and
    collecting system, as reference segmentations draw it. The largest remaining
    component is the kidney.
    """
    mask = np.zeros(hu.shape, dtype=bool)
    mask[best.bbox] = best.mask
    level = _fat_level(hu[best.bbox], best.mask, config)
    rim_voxels = config.rim_voxels if rim_voxels is None else rim_voxels
    if rim_nearest_side is None:
        rim_nearest_side = config.rim_nearest_side
    if rim_voxels > 0 and rim_nearest_side:
        mask = grow_rim_by_nearest_side(mask, hu, zone & (hu <= rim_ceiling_hu), rim_voxels,
                                        brighter_is_inside=True,
                                        bright_layers=config.rim_bright_layers)
    elif rim_voxels > 0:  # grown layer by layer through the allowed voxels only
        mask = ndi.binary_dilation(mask, structure=_BALL1, iterations=rim_voxels,
                                   mask=zone & (hu <= rim_ceiling_hu))
    mask &= hu > level
    return largest_component(detach_appendages(mask, config.detach_voxels, config.detach_max_share))


def detach_appendages(mask: np.ndarray, max_radius: int, max_share: float) -> np.ndarray:
    """``mask`` without the tubes hanging from it (extrarenal pelvis, ureter, vessels).

    An opening by a ball cuts what is thinner than the ball; the main parts left are
    dilated back by the same ball within ``mask``, which restores their fine outline but
    not the cut tubes. The widest ball (``max_radius`` voxels down to 2) that removes at
    most ``max_share`` of the volume is used, so a thin kidney is not cut into pieces.
    """
    if max_radius < 2 or not mask.any():
        return mask
    total = int(mask.sum())
    box = _grow_box(ndi.find_objects(mask.astype(np.uint8))[0], max_radius + 1, mask.shape)
    sub = mask[box]
    for r in range(max_radius, 1, -1):
        core = _main_parts(dilate_by(erode_by(sub, ball(r)), ball(r)))  # an opening
        if not core.any():
            continue
        kept = sub & dilate_by(core, ball(r))
        if total - int(kept.sum()) <= max_share * total:
            out = np.zeros_like(mask)
            out[box] = kept
            return out
    return mask


def _main_parts(mask: np.ndarray, share: float = 0.2) -> np.ndarray:
    """The components of ``mask`` holding at least ``share`` of the largest one's voxels
    (an opening can split a kidney at its sinus into two poles; both are kept)."""
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.nonzero(sizes >= share * sizes.max())[0]
    return np.isin(labels, keep[keep > 0])


def solidify(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` closed by a ball of ``radius`` voxels and hole-filled (same shape)."""
    return fill_holes(close_in_background(mask, radius))


def _fat_level(hu: np.ndarray, mask: np.ndarray, config: CtKidneyConfig) -> float:
    if config.fat_reference_hu is None:
        return config.fat_hu
    return fat_level(hu, mask, config.fat_reference_hu, config.fat_hu)


def _on_ct_grid(side: str, mask: np.ndarray, work: sitk.Image, ct: sitk.Image,
                score: float, config: CtKidneyConfig,
                record: type = FoundKidney):  # noqa: ANN202
    """The working-grid mask resampled (linear, then > 0.5) to ``ct``'s grid, its edge
    against fat redrawn there (:func:`models.ct_edge.redraw_fat_edge`, within half a
    working voxel), as a ``record`` (:class:`FoundKidney`, or the graft's record of the
    same fields)."""
    m = sitk.GetImageFromArray(mask.astype(np.float32))
    m.CopyInformation(work)
    back = sitk.Resample(m, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(back) > 0.5
    if config.redraw_fat_edge and arr.any():
        hu = sitk.GetArrayViewFromImage(ct)  # ct is the caller's: its buffer outlives this
        arr = redraw_fat_edge(arr, hu, ct.GetSpacing()[::-1], _fat_level(hu, arr, config),
                              0.5 * config.working_spacing_mm, config.bone_hu)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    z_any = arr.any(axis=(1, 2))
    touches = bool(z_any[0] or z_any[-1]) if arr.shape[0] else False
    return record(side=side, mask=arr, volume_ml=float(arr.sum()) * voxel_ml,
                  score=float(score), touches_edge=touches)
