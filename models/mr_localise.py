"""Finding the kidney on MRI without contrast, by shape and context rather than brightness.

The region of interest of the MRI paper (§2.1, :mod:`models.roi`) thresholds a DCE volume
at its brightest histogram peak: the enhancing graft. On a T2 (or T1) volume the kidney is
not the brightest structure: urine in the bladder, bowel content, a lymphocele, CSF and,
without fat suppression, fat are as bright or brighter. This module looks for a region
that *looks* like a kidney, in the manner of the weightless CT method
(:mod:`models.ct_kidneys`), on any MR contrast:

1. **Working grid.** The volume is low-passed and resampled to voxels of about
   ``working_mm`` in-plane (slices are kept, or merged when thinner than that), and lightly
   smoothed against noise.
2. **Body and normalisation.** The body is the largest component above the Otsu
   threshold of the volume, its holes filled slice by slice. Intensities are expressed as
   percentiles of the body's intensities (a rank normalisation: independent of the
   scanner's scale and of which tissue is brightest). The patient's axes come from the
   image direction (DICOM LPS), so "lateral" and "anterior" hold in any orientation.
3. **Candidates over many intensity windows.** For every window ``[p_lo, p_hi]`` of body
   percentiles on a grid (lower bounds every ``window_step`` from 20 to 90, widths
   ``window_widths``), the voxels of the body inside the window are opened by one voxel
   (thin bridges to neighbours are cut) and split into connected components; those of
   plausible volume are candidates. No window is assumed: a kidney darker than fat (T1
   in-phase), brighter than fat (fat-suppressed T2) or between muscle and fluid (T2)
   is found in the window that holds it.
   The brightest tissues get finer windows (lower bounds ``top_lows``, upper bounds
   ``top_highs``): fat fills most of a pelvis, so on a T2 without fat suppression the
   graft lies between the 92nd and 97th body percentiles, beside brighter bowel loops,
   a lymphocele and the bladder. In those windows a component too large or too
   irregular to be a kidney is also cut at its necks (:func:`split_necks`: the watershed
   of its distance map from the maxima deeper than ``split_h_mm``), and its pieces are
   candidates too: a graft touching bowel loops is otherwise one blob with them.
4. **Score** of a candidate (holes filled), each term in [0, 1], multiplied:

   * *size*: 1 for a volume in ``volume_ml`` (the graft, about 100-300 ml; native
     kidneys a little smaller), falling linearly to 0 at half the minimum and 1.5 times
     the maximum;
   * *shape*: compactness (volume over that of the ellipsoid of the same second moments:
     about 1 for an ellipsoid, low for branching or curved bowel and vessels), and the
     principal semi-axes within 0.5-1.6 times those of an adult kidney;
   * *contrast*: how much the candidate differs from its shell (2-6 mm outside it), the
     difference of their medians in units of the candidate's spread, capped at 1;
   * *homogeneity*: 1 - the robust coefficient of variation inside, over 0.5;
   * *position*: for a graft, the centroid in an iliac fossa (lateral, not posterior: the
     lateral offset from the body's midline 0.2-0.85 of the half width, the
     antero-posterior position in the anterior two thirds); for native kidneys in a renal
     fossa (paravertebral: lateral 0.15-0.65, in the posterior half). Soft edges;
   * *depth*: the candidate's deepest part at least 15 mm inside the body outline, none
     of it on the outline (subcutaneous fat, body wall), nor cut by the edge of the
     in-plane field of view.

5. **Result.** Candidates are ranked by score; one overlapping a better one by more than
   a third is dropped. The best one gives a box plus ``margin_mm`` on the input grid and
   its mask, the seed of the clustering's region of interest.
   Native kidneys are chosen as a *pair*, one per side, maximising the product of their
   scores and of a symmetry term ``exp(-d**2 / 2)``, where ``d`` is the difference of
   their positions (distance from the midline, antero-posterior, cranio-caudal) in units
   of ``pair_sd_mm``: the two kidneys lie mirrored beside the spine, the left one usually
   1-2 cm higher. On the abdomen the spleen and bowel loops outscore a kidney on their
   own (fat-suppressed T2: the spleen is as bright and homogeneous as the kidney); they
   do not lie where the other kidney's mirror image is. With candidates on one side only,
   the best one is returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.components import _as_spacing
from models.ct_body import largest_region_filled
from models.otsu import otsu_threshold
from models.preprocess import n4_correct
from models.roi import RegionOfInterest
from models.volume import image_spacing_zyx

__all__ = [
    "LocaliseConfig",
    "LocalisedKidney",
    "Target",
    "compactness",
    "kidney_likeness",
    "localise_image",
    "localise_kidneys",
    "moment_ellipsoid",
    "native_pairs",
    "pair_likeness",
    "patient_side",
    "split_necks",
]


class Target(StrEnum):
    """What is looked for: a graft in an iliac fossa, or native kidneys in the renal fossae."""

    GRAFT = "graft"
    NATIVE = "native"


#: Semi-axes (mm) of an adult kidney: long, width, thickness.
_KIDNEY_SEMI_AXES_MM = (55.0, 30.0, 22.0)


@dataclass(frozen=True)
class LocaliseConfig:
    """Settings of :func:`localise_kidneys`.

    Attributes
    ----------
    target : Target
        Graft (iliac fossa) or native kidneys (renal fossae).
    volume_ml : tuple of float
        Volume range scoring 1 (see the module notes).
    working_mm : float
        In-plane voxel size of the working grid (slices are never split).
    window_step : float
        Step of the windows' lower bounds, in body percentiles.
    window_widths : tuple of float
        Widths of the windows, in body percentiles.
    margin_mm : float
        Margin added around the chosen candidate's box.
    min_score : float
        Candidates scoring less are not returned.
    top_lows, top_highs : tuple of float
        Bounds of the finer windows among the brightest tissues, in body percentiles.
    split_h_mm : float
        Depth of a distance-map maximum that makes its own piece when a component of a
        top window is split at its necks; 0 turns the splitting off.
    split_max_factor : float
        Components up to this many times the largest candidate size are split.
    pair_sd_mm : tuple of float
        Native kidneys: the tolerated difference of the two kidneys' distances from the
        midline, antero-posterior and cranio-caudal positions (one unit of ``d`` in the
        module notes), mm.
    """

    target: Target = Target.GRAFT
    volume_ml: tuple[float, float] = (90.0, 320.0)
    working_mm: float = 2.5
    window_step: float = 5.0
    window_widths: tuple[float, ...] = (15.0, 25.0, 35.0, 50.0)
    margin_mm: float = 10.0
    min_score: float = 0.05
    top_lows: tuple[float, ...] = (84.0, 86.0, 88.0, 90.0, 92.0, 94.0)
    top_highs: tuple[float, ...] = (97.0, 98.0, 100.0)
    split_h_mm: float = 4.0
    split_max_factor: float = 6.0
    pair_sd_mm: tuple[float, float, float] = (30.0, 20.0, 40.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Target(self.target))
        low, high = self.volume_ml
        if not 0 < low < high:
            raise ValueError(f"volume_ml must be 0 < min < max, got {self.volume_ml!r}")
        if not self.working_mm > 0 or not self.window_step > 0:
            raise ValueError("working_mm and window_step must be positive")


@dataclass(frozen=True)
class LocalisedKidney:
    """One kidney candidate found by :func:`localise_kidneys`.

    Attributes
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) candidate on the input grid.
    roi : RegionOfInterest
        Its box plus the margin, in voxels of the input grid.
    volume_ml : float
        Volume of the candidate.
    score : float
        Product of the terms.
    terms : dict of str to float
        ``size``, ``shape``, ``contrast``, ``homogeneity``, ``position``, ``depth``.
    window : tuple of float
        The window of body percentiles it was found in.
    side : str
        The patient's side of its centroid from the body's midline: "right" or "left".
    centroid_mm : tuple of float
        Centroid in patient axes (x left, y posterior, z superior) relative to the body's
        centre on the working grid, mm.
    """

    mask: np.ndarray
    roi: RegionOfInterest
    volume_ml: float
    score: float
    terms: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)
    side: str = "right"
    centroid_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def patient_side(
    mask: np.ndarray, body: np.ndarray, *, direction: Sequence[float],
    spacing_zyx: Sequence[float],
) -> str:
    """The patient's side ("right" or "left") a mask lies on, from the body's midline.

    Parameters
    ----------
    mask, body : numpy.ndarray
        Boolean (z, y, x) masks of the structure and of the body (or of the whole field
        of view) on one grid.
    direction : sequence of float
        The grid's direction cosines as SimpleITK gives them (9 values, row-major; column
        ``i`` is the patient direction of index axis ``i`` = x, y, z), DICOM LPS.
    spacing_zyx : sequence of float
        Voxel spacing (mm) along (z, y, x).

    Returns
    -------
    str
        "left" when the mask's centroid lies towards the patient's left (+x in LPS) of
        the body's centroid, else "right".

    Raises
    ------
    ValueError
        If the mask or the body is empty.
    """
    if not np.any(mask) or not np.any(body):
        raise ValueError("the mask and the body must not be empty")
    axes = _patient_axes(direction, _as_spacing(spacing_zyx))
    offset = axes @ (_centroid(mask) - _centroid(body))
    return "left" if offset[0] > 0 else "right"


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array([ix.mean() for ix in np.nonzero(mask)])


def _patient_axes(direction: Sequence[float], spacing_zyx: tuple[float, float, float]
                  ) -> np.ndarray:
    """(3, 3) matrix taking a (z, y, x) index offset to patient mm (x, y, z, LPS)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    # Columns of d are the patient directions of index x, y, z; reorder to (z, y, x).
    return d[:, ::-1] * np.asarray(spacing_zyx)[None, :]


def _working_grid(volume: np.ndarray, spacing: tuple[float, float, float], working_mm: float
                  ) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Low-passed, resampled volume; its spacing; the zoom factors (input / working)."""
    target = (max(spacing[0], working_mm), max(spacing[1], working_mm),
              max(spacing[2], working_mm))
    factors = tuple(s / t for s, t in zip(spacing, target, strict=True))
    sigmas = [0.4 / f if f < 0.99 else 0.0 for f in factors]
    smooth = ndi.gaussian_filter(volume.astype(np.float32), sigmas) if any(sigmas) else volume
    small = ndi.zoom(smooth, factors, order=1, grid_mode=True, mode="grid-constant")
    actual = tuple(s * n / m for s, n, m in zip(spacing, volume.shape, small.shape, strict=True))
    return small.astype(np.float32), (actual[0], actual[1], actual[2]), factors


def _body_mask(work: np.ndarray) -> np.ndarray:
    threshold = otsu_threshold(work[np.isfinite(work)])
    body = largest_region_filled(work > 0.5 * threshold)
    if not body.any():
        raise ValueError("no body found: the volume is empty")
    return body


def _ramp(value: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear in between, clipped."""
    if one == zero:
        return float(value >= one)
    return float(np.clip((value - zero) / (one - zero), 0.0, 1.0))


def _band(value: float, low: float, high: float, soft: float) -> float:
    """1 inside [low, high], falling linearly to 0 at ``soft`` outside (a hard window for
    ``soft`` 0)."""
    if soft <= 0:
        return float(low <= value <= high)
    return min(_ramp(value, low - soft, low), _ramp(value, high + soft, high))


@dataclass
class _Context:
    work: np.ndarray
    ranks: np.ndarray
    body: np.ndarray
    depth_mm: np.ndarray
    spacing: tuple[float, float, float]
    axes: np.ndarray  # index offset -> patient mm
    centre: np.ndarray  # body centroid (index)
    half_width_mm: float
    half_depth_mm: float
    config: LocaliseConfig


def _position(ctx: _Context, offset_mm: np.ndarray) -> float:
    lateral = abs(offset_mm[0]) / ctx.half_width_mm
    ap = offset_mm[1] / ctx.half_depth_mm  # > 0 posterior
    if ctx.config.target is Target.GRAFT:
        return _band(lateral, 0.2, 0.85, 0.15) * _band(ap, -0.9, 0.25, 0.3)
    return _band(lateral, 0.15, 0.65, 0.15) * _band(ap, 0.0, 0.9, 0.3)


def moment_ellipsoid(mask: np.ndarray, spacing: Sequence[float]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Centre (mm) and matrix ``M`` of the ellipsoid with ``mask``'s second moments:
    ``x`` (mm) is inside when ``(x - c) M^-1 (x - c) <= 1``; ``M`` is 5 times the
    covariance of the voxel centres plus each voxel's own extent (a uniform ellipsoid
    has semi-axes ``sqrt(5 * eigenvalues)``)."""
    scale = np.asarray(spacing, dtype=np.float64)
    points = np.argwhere(mask).astype(np.float64) * scale
    cov = np.cov(points, rowvar=False) + np.diag(scale ** 2 / 12.0)
    return points.mean(axis=0), 5.0 * cov


def _shape(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(compactness against the moment ellipsoid, semi-axes term)."""
    n = int(np.count_nonzero(mask))
    if n < 10:
        return 0.0, 0.0
    cov = moment_ellipsoid(mask, spacing)[1] / 5.0
    eig = np.sort(np.clip(np.linalg.eigvalsh(cov), 1e-6, None))[::-1]
    semi = np.sqrt(5.0 * eig)
    ellipsoid = 4.0 / 3.0 * math.pi * float(np.prod(semi))
    compact = min(1.0, n * float(np.prod(spacing)) / ellipsoid)
    axes = min(_band(s / k, 0.35, 1.8, 0.3) for s, k in
               zip(semi, _KIDNEY_SEMI_AXES_MM, strict=True))
    return compact, axes


def compactness(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Volume of ``mask`` over that of the ellipsoid with its second moments, at most 1
    (1 for an ellipsoid; a kidney about 0.9; a kidney with a bowel loop attached less)."""
    return _shape(np.asarray(mask, dtype=bool), _as_spacing(spacing_zyx))[0]


def kidney_likeness(mask: np.ndarray, spacing_zyx: Sequence[float], *,
                    volume_ml: tuple[float, float], soft_ml: float = 50.0) -> float:
    """How much a whole region looks like a kidney, in [0, 1].

    The product of its compactness against the ellipsoid of the same second moments
    (1 for an ellipsoid), the semi-axes term of the localisation (within 0.35-1.8 times an
    adult kidney's) and its volume: 1 inside ``volume_ml``, falling linearly to 0 at
    ``soft_ml`` outside.
    """
    spacing = _as_spacing(spacing_zyx)
    if not np.any(mask):
        return 0.0
    volume = float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0
    compact, axes = _shape(np.asarray(mask, dtype=bool), spacing)
    return compact * axes * _band(volume, volume_ml[0], volume_ml[1], soft_ml)


def _score(ctx: _Context, mask: np.ndarray, box: tuple[slice, ...]) -> dict[str, float] | None:
    low, high = ctx.config.volume_ml
    voxel_ml = float(np.prod(ctx.spacing)) / 1000.0
    sub = mask[box]
    sub = ndi.binary_fill_holes(sub)
    volume = float(sub.sum()) * voxel_ml
    size = 1.0 if low <= volume <= high else (
        _ramp(volume, 0.5 * low, low) if volume < low else _ramp(volume, 1.5 * high, high))
    if size <= 0:
        return None
    compact, axes = _shape(sub, ctx.spacing)
    shape = _ramp(compact, 0.2, 0.6) * axes
    if shape <= 0:
        return None
    values = ctx.work[box][sub]
    shell_outer = ndi.binary_dilation(sub, iterations=2)
    shell_inner = ndi.binary_dilation(sub, iterations=1)
    shell = shell_outer & ~shell_inner & ctx.body[box]
    if shell.sum() < 10:
        return None
    outside = ctx.work[box][shell]
    median = float(np.median(values))
    q25, q75 = np.percentile(values, [25, 75])
    spread = max(float(q75 - q25) / 1.349, 1e-6)
    contrast = _ramp(abs(median - float(np.median(outside))) / spread, 0.5, 2.0)
    homogeneity = 1.0 - _ramp(spread / max(abs(median), 1e-6), 0.1, 0.5)
    depths = ctx.depth_mm[box][sub]
    depth = _ramp(float(depths.max()), 10.0, 20.0) * _ramp(float(depths.min()), 1.0, 6.0)
    # Cut by the in-plane edge of the field of view: not measurable as a kidney.
    shape_full = ctx.work.shape
    for axis in (1, 2):
        start, stop = box[axis].start, box[axis].stop
        if (start == 0 and sub.take(0, axis=axis).any()) or (
                stop == shape_full[axis] and sub.take(-1, axis=axis).any()):
            depth = 0.0
    origin = np.array([s.start for s in box], dtype=float)
    offset = ctx.axes @ (origin + _centroid(sub) - ctx.centre)
    position = _position(ctx, offset)
    terms = {"size": size, "shape": shape, "contrast": contrast, "homogeneity": homogeneity,
             "position": position, "depth": depth, "volume_ml": volume,
             "x_mm": float(offset[0]), "y_mm": float(offset[1]), "z_mm": float(offset[2])}
    terms["score"] = size * shape * (0.3 + 0.7 * contrast) * (0.5 + 0.5 * homogeneity) \
        * position * depth
    return terms


def split_necks(mask: np.ndarray, spacing: tuple[float, float, float], h_mm: float
                 ) -> np.ndarray:
    """Labels of ``mask`` split at its necks: the watershed of its distance map (mm) from
    the maxima deeper than ``h_mm`` (blobs touching through a narrower contact part)."""
    distance = ndi.distance_transform_edt(mask, sampling=spacing).astype(np.float32)
    image = sitk.GetImageFromArray(distance)
    image.SetSpacing(spacing[::-1])
    # A copy: a view of the temporary HMaxima image would outlive its buffer (the node
    # crashed with a segfault in this subtraction; tests warned of invalid values).
    peaks = (distance - sitk.GetArrayFromImage(sitk.HMaxima(image, h_mm))) > 1e-3
    markers, n = ndi.label(peaks)
    if n < 2:
        return mask.astype(np.int32)
    flooded = sitk.MorphologicalWatershedFromMarkers(
        sitk.GetImageFromArray(-distance), sitk.GetImageFromArray(markers.astype(np.int32)),
        markWatershedLine=False, fullyConnected=True)
    return np.where(mask, sitk.GetArrayViewFromImage(flooded), 0).astype(np.int32)


def _grow(box: tuple[slice, ...], pad: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - pad), min(n, s.stop + pad))
                 for s, n in zip(box, shape, strict=True))


@dataclass
class _Found:
    mask: np.ndarray  # on the working grid
    terms: dict[str, float]
    window: tuple[float, float]


def localise_kidneys(
    volume: np.ndarray,
    *,
    spacing_zyx: Sequence[float],
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    config: LocaliseConfig = LocaliseConfig(),
    ranked: bool = False,
) -> list[LocalisedKidney]:
    """Kidney candidates of an MR volume, best first (see the module notes).

    Parameters
    ----------
    volume : numpy.ndarray
        3D (z, y, x) MR volume of any contrast, ideally bias-field corrected.
    spacing_zyx : sequence of float
        Voxel spacing in mm along (z, y, x).
    direction : sequence of float
        Direction cosines as SimpleITK gives them (9 values, row-major), DICOM LPS.
    config : LocaliseConfig
        Target and settings.
    ranked : bool
        Native kidneys: return every candidate, best first, not only the best pair
        (:func:`native_pairs` then ranks the pairs).

    Returns
    -------
    list of LocalisedKidney
        Candidates scoring at least ``config.min_score``, by decreasing score, none
        overlapping a better one by more than a third; for native kidneys, the best pair
        (one per side), or the best one when only one side has candidates. Empty when
        nothing looks like a kidney.

    Raises
    ------
    ValueError
        If the volume is not a non-empty 3D array or holds no body.
    """
    arr = np.asarray(volume)
    if arr.ndim != 3 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"expected a non-empty real 3D (z, y, x) volume, got shape {arr.shape}"
                         f" and dtype {arr.dtype}")
    spacing = _as_spacing(spacing_zyx)
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    work, wspacing, factors = _working_grid(arr, spacing, config.working_mm)
    work = ndi.gaussian_filter(work, (0.0, 0.7, 0.7))
    body = _body_mask(work)
    values = work[body]
    order = np.sort(values)
    ranks = np.zeros(work.shape, dtype=np.float32)
    ranks[body] = 100.0 * np.searchsorted(order, values, side="right") / len(order)
    depth = ndi.distance_transform_edt(body, sampling=wspacing).astype(np.float32)
    axes = _patient_axes(direction, wspacing)
    extent = (axes @ (np.argwhere(body)[:: max(1, int(body.sum()) // 20000)]
                      - _centroid(body)).T)
    ctx = _Context(work=work, ranks=ranks, body=body, depth_mm=depth, spacing=wspacing,
                   axes=axes, centre=_centroid(body),
                   half_width_mm=max(float(np.percentile(np.abs(extent[0]), 99)), 1.0),
                   half_depth_mm=max(float(np.percentile(np.abs(extent[1]), 99)), 1.0),
                   config=config)
    voxel_ml = float(np.prod(wspacing)) / 1000.0
    min_vox = 0.5 * config.volume_ml[0] / voxel_ml
    max_vox = 1.5 * config.volume_ml[1] / voxel_ml * 1.3
    structure = ndi.generate_binary_structure(3, 1)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    found: list[_Found] = []
    windows = [(float(lo), min(100.0, float(lo) + w), False)
               for lo in np.arange(20.0, 90.0 + 1e-6, config.window_step)
               for w in config.window_widths]
    windows += [(lo, hi, config.split_h_mm > 0) for lo in config.top_lows
                for hi in config.top_highs if hi > lo + 3]
    for lo, hi, split in windows:
        inside = body & (ranks >= lo) & (ranks <= hi)
        inside = ndi.binary_opening(inside, structure=in_plane)
        labels, n = ndi.label(inside, structure=structure)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        boxes = ndi.find_objects(labels)
        split_max = config.split_max_factor * max_vox if split else 0
        for index in np.flatnonzero((sizes >= min_vox) & (sizes <= max(max_vox, split_max))):
            if index == 0:
                continue
            box = _grow(boxes[index - 1], 3, work.shape)
            mask = labels[box] == index
            pieces = [mask] if sizes[index] <= max_vox else []
            if split and sizes[index] >= 2 * min_vox:
                parts = split_necks(mask, wspacing, config.split_h_mm)
                counts = np.bincount(parts.ravel())
                if len(counts) > 2:
                    pieces += [parts == k for k in np.flatnonzero(
                        (counts >= min_vox) & (counts <= max_vox)) if k > 0]
            for piece in pieces:
                full = np.zeros(work.shape, dtype=bool)
                full[box] = piece
                terms = _score(ctx, full, box)
                if terms is not None and terms["score"] >= config.min_score:
                    full[box] = ndi.binary_fill_holes(piece)
                    found.append(_Found(full, terms, (float(lo), float(hi))))
    found.sort(key=lambda f: -f.terms["score"])
    kept: list[_Found] = []
    for candidate in found:
        n = candidate.mask.sum()
        if all((candidate.mask & other.mask).sum() <= n / 3 for other in kept):
            kept.append(candidate)
    results = [_to_input(c, arr.shape, spacing, config, axes_left=c.terms["x_mm"] > 0)
               for c in kept]
    if config.target is Target.NATIVE and not ranked:
        results = _native_pair(results, config.pair_sd_mm)
    return results


def localise_image(image: sitk.Image, *, config: LocaliseConfig, n4_levels: int | None,
                   ranked: bool = False) -> tuple[sitk.Image, list[LocalisedKidney]]:
    """:func:`localise_kidneys` on an image: checked, bias-corrected with ``n4_levels``
    fitting levels (``None``: not corrected), as float32.

    Returns
    -------
    tuple
        The (corrected) image and its candidates.

    Raises
    ------
    ValueError
        A constant image or one holding NaN or infinite values.
    """
    fixed = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(fixed)
    if not np.isfinite(values).all() or float(np.ptp(values)) <= 0:
        raise ValueError("the volume is constant or holds NaN/infinite values")
    if n4_levels is not None:
        fixed = n4_correct(fixed, fitting_levels=n4_levels)
    found = localise_kidneys(sitk.GetArrayViewFromImage(fixed),
                             spacing_zyx=image_spacing_zyx(fixed),
                             direction=fixed.GetDirection(), config=config, ranked=ranked)
    return fixed, found


def pair_likeness(right: LocalisedKidney, left: LocalisedKidney,
                  sd_mm: Sequence[float]) -> float:
    """How well two candidates lie as a pair of native kidneys, in (0, 1]: ``exp(-d**2/2)``
    with ``d`` their difference in distance from the midline, antero-posterior and
    cranio-caudal position, each in units of ``sd_mm``."""
    (xr, yr, zr), (xl, yl, zl) = right.centroid_mm, left.centroid_mm
    d2 = sum((delta / sd) ** 2 for delta, sd in zip(
        (abs(xl) - abs(xr), yl - yr, zl - zr), sd_mm, strict=True))
    return math.exp(-0.5 * d2)


def native_pairs(results: Sequence[LocalisedKidney], sd_mm: Sequence[float], *,
                 limit: int = 1) -> list[list[LocalisedKidney]]:
    """Up to ``limit`` pairs (right, left) of candidates, best first by the product of their
    scores and :func:`pair_likeness` (see the module notes), each sorted by score. With
    candidates on one side only, its best ``limit`` candidates, one per entry."""
    right = [r for r in results if r.side == "right"]
    left = [r for r in results if r.side == "left"]
    if not right or not left:
        return [[r] for r in results[:limit]]
    pairs = sorted(((r, candidate) for r in right for candidate in left),
                   key=lambda p: -p[0].score * p[1].score * pair_likeness(*p, sd_mm))
    return [sorted(pair, key=lambda r: -r.score) for pair in pairs[:limit]]


def _native_pair(results: list[LocalisedKidney], sd_mm: Sequence[float]
                 ) -> list[LocalisedKidney]:
    """The right and left candidates that make the best pair (see the module notes)."""
    pairs = native_pairs(results, sd_mm)
    return pairs[0] if pairs else []


def _to_input(found: _Found, shape: tuple[int, ...], spacing: tuple[float, float, float],
              config: LocaliseConfig, *, axes_left: bool) -> LocalisedKidney:
    """The candidate on the input grid: its mask (nearest) and box plus margin."""
    zoom = [n / m for n, m in zip(shape, found.mask.shape, strict=True)]
    mask = ndi.zoom(found.mask.astype(np.float32), zoom, order=1, grid_mode=True,
                    mode="grid-constant") >= 0.5
    if mask.shape != tuple(shape):  # zoom rounding: pad or crop to the input shape
        fixed = np.zeros(shape, dtype=bool)
        common = tuple(slice(0, min(a, b)) for a, b in zip(mask.shape, shape, strict=True))
        fixed[common] = mask[common]
        mask = fixed
    if not mask.any():
        mask = np.zeros(shape, dtype=bool)
    index = np.nonzero(mask) if mask.any() else np.nonzero(np.ones((1, 1, 1)))
    margin = [math.ceil(config.margin_mm / s) for s in spacing]
    start = [max(0, int(ix.min()) - m) for ix, m in zip(index, margin, strict=True)]
    stop = [min(n, int(ix.max()) + 1 + m) for ix, m, n in zip(index, margin, shape, strict=True)]
    touches = any(int(ix.min()) == 0 for ix in index) or any(
        int(ix.max()) + 1 == n for ix, n in zip(index, shape, strict=True))
    terms = found.terms
    return LocalisedKidney(
        mask=mask,
        roi=RegionOfInterest(start=tuple(start), stop=tuple(stop), touches_edge=touches),
        volume_ml=float(terms["volume_ml"]), score=float(terms["score"]),
        terms={k: float(v) for k, v in terms.items()}, window=found.window,
        side="left" if axes_left else "right",
        centroid_mm=(terms["x_mm"], terms["y_mm"], terms["z_mm"]))
