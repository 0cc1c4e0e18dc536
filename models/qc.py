"""Quality control of a segmentation: measurable signals of one mask and the verdict they give.

A segmentation method can pick the wrong structure (a bowel wall, a thin strip behind the
graft), lose part of the kidney at the edge of the field of view, or follow noise. None of
that shows in the volume alone, so each mask is measured on signals that a kidney has and
those failures lack (:func:`mask_signals`):

* **size**: volume in ml;
* **shape**: thickness (diameter of the largest ball inside the mask, from the Euclidean
  distance map: a kidney is 25-60 mm thick, a strip or sheet a few mm), length (longest
  principal extent), solidity (volume over the volume of its convex hull: a kidney is
  compact, a crescent or a spray of fragments is not) and the share of the largest
  connected component;
* **field of view**: the share of the mask's surface voxels that lie on the first or last
  row, column or slice of the grid (a kidney cut by the field of view is partly missing);
* **boundary**: the contrast between a band just inside the mask and a band just outside
  it, in units of their robust spread (a contrast-to-noise ratio: a mask whose border
  follows no edge has little), and the ratio of the image gradient on the mask's surface
  to the gradient inside it (a border that follows an edge has a stronger gradient than
  the parenchyma).

:func:`judge` turns the signals, and the change from the patient's previous measurement,
into ``pass``, ``review`` or ``fail`` with the reasons, against :class:`QcThresholds`.
All pure: arrays in, numbers out.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

__all__ = ["NOT_KIDNEY_SHAPED", "RESULT_DOUBTS", "MaskSignals", "QcThresholds", "QcVerdict",
           "Verdict", "judge", "mask_signals", "worst"]

#: A method's doubts about the whole result (not one side's segment) that ask for review:
#: ``not-kidney-shaped``, a T2-only graft grown into a region unlike a whole kidney
#: (:meth:`models.graft_nocontrast.NoContrastResult.doubts`).
NOT_KIDNEY_SHAPED = "not-kidney-shaped"
RESULT_DOUBTS = (NOT_KIDNEY_SHAPED,)


class Verdict(enum.StrEnum):
    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"


_RANK = {Verdict.PASS: 0, Verdict.REVIEW: 1, Verdict.FAIL: 2}


def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
    """The most severe of ``verdicts`` (``pass`` for none)."""
    return max(verdicts, key=_RANK.__getitem__, default=Verdict.PASS)


@dataclass(frozen=True)
class MaskSignals:
    """What :func:`mask_signals` measured on one mask (see the module notes)."""

    volume_ml: float
    thickness_mm: float
    length_mm: float
    solidity: float
    main_share: float
    edge_share: float
    contrast: float
    gradient_ratio: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class QcThresholds:
    """Limits of :func:`judge`. A ``(low, high)`` pair bounds a range; ``review`` limits
    are the plausible range, ``fail`` limits what no kidney can be."""

    volume_ml_review: tuple[float, float] = (40.0, 500.0)
    volume_ml_fail: tuple[float, float] = (5.0, 1000.0)
    thickness_mm_review: float = 18.0
    thickness_mm_fail: float = 8.0
    length_mm_review: tuple[float, float] = (45.0, 200.0)
    solidity_review: float = 0.70
    solidity_fail: float = 0.45
    main_share_review: float = 0.95
    edge_share_review: float = 0.03
    edge_share_fail: float = 0.15
    contrast_review: float = 1.0
    gradient_ratio_review: float = 1.2
    change_pct_review: float = 35.0


@dataclass(frozen=True)
class QcVerdict:
    """A verdict and why (``reasons`` is empty for ``pass``)."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, border_value=0)


def _ball_dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (anisotropic spacing)."""
    distance = ndi.distance_transform_edt(~mask, sampling=spacing)
    return distance <= radius_mm


def _robust_sigma(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _solidity(points_mm: np.ndarray, volume_mm3: float) -> float:
    if len(points_mm) < 5:
        return 0.0
    try:
        hull = ConvexHull(points_mm)
    except QhullError:  # flat: all points in a plane or a line
        return 0.0
    return float(min(1.0, volume_mm3 / hull.volume)) if hull.volume > 0 else 0.0


def mask_signals(
    image: np.ndarray, mask: np.ndarray, *, spacing_zyx: tuple[float, float, float]
) -> MaskSignals:
    """Measure ``mask`` (boolean, z y x) on ``image`` (same grid) with voxel ``spacing_zyx`` mm.

    Raises
    ------
    ValueError
        The mask is empty or not on the image's grid.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise ValueError(f"mask {mask.shape} is not on the image grid {image.shape}")
    if not mask.any():
        raise ValueError("the mask is empty: nothing to assess")
    spacing = np.asarray(spacing_zyx, dtype=float)
    voxel_mm3 = float(np.prod(spacing))
    n_voxels = int(mask.sum())
    volume_ml = n_voxels * voxel_mm3 / 1000.0

    # Everything else on the mask's box grown by a margin: exact, and cheap on big grids.
    margin = np.ceil(6.0 / spacing).astype(int) + 1
    (box,) = ndi.find_objects(mask.astype(np.uint8))
    grown = tuple(slice(max(0, s.start - m), min(n, s.stop + m))
                  for s, m, n in zip(box, margin, mask.shape, strict=True))
    sub = mask[grown]
    img = np.asarray(image[grown], dtype=np.float32)

    labels, n_parts = ndi.label(sub)
    sizes = np.bincount(labels.ravel())[1:] if n_parts else np.array([n_voxels])
    main_share = float(sizes.max() / sizes.sum())

    inside = ndi.distance_transform_edt(sub, sampling=spacing)
    thickness_mm = 2.0 * float(inside.max())

    coords = np.argwhere(sub) * spacing
    centred = coords - coords.mean(axis=0)
    eigen = np.linalg.eigvalsh(np.cov(centred.T)) if len(coords) > 3 else np.zeros(3)
    length_mm = 2.0 * math.sqrt(5.0 * max(float(eigen[-1]), 0.0))

    surface = _surface(sub)
    solidity = _solidity(np.argwhere(surface) * spacing, n_voxels * voxel_mm3)

    # Surface voxels on the first/last row, column or slice of the whole grid.
    on_edge = np.zeros_like(surface)
    for axis, (piece, n) in enumerate(zip(grown, mask.shape, strict=True)):
        index = [slice(None)] * 3
        if piece.start == 0:
            index[axis] = 0
            on_edge[tuple(index)] = True
        if piece.stop == n:
            index[axis] = -1
            on_edge[tuple(index)] = True
    edge_share = float((surface & on_edge).sum() / max(1, surface.sum()))

    band_mm = max(2.0, float(spacing.max()))
    inner = sub & (inside <= band_mm)
    outer = _ball_dilate(sub, band_mm + 1.0, spacing) & ~sub
    spread = 0.5 * (_robust_sigma(img[inner]) + _robust_sigma(img[outer]))
    difference = abs(float(np.median(img[inner])) - float(np.median(img[outer]))) \
        if inner.any() and outer.any() else 0.0
    contrast = difference / spread if spread > 0 else (math.inf if difference > 0 else 0.0)

    gradient = ndi.gaussian_gradient_magnitude(img, sigma=tuple(1.0 / spacing))
    core = sub & (inside > band_mm)
    interior = float(np.median(gradient[core])) if core.any() else float(
        np.median(gradient[sub]))
    border = float(np.median(gradient[surface]))
    gradient_ratio = border / interior if interior > 0 else (math.inf if border > 0 else 0.0)

    return MaskSignals(volume_ml=volume_ml, thickness_mm=thickness_mm, length_mm=length_mm,
                       solidity=solidity, main_share=main_share, edge_share=edge_share,
                       contrast=float(contrast), gradient_ratio=float(gradient_ratio))


def judge(
    signals: MaskSignals,
    *,
    thresholds: QcThresholds = QcThresholds(),
    shape_checks: bool = True,
    previous_volume_ml: float | None = None,
    flags: tuple[str, ...] = (),
) -> QcVerdict:
    """``pass``, ``review`` or ``fail`` for one mask, with the reasons.

    Parameters
    ----------
    signals
        The mask's measurements.
    thresholds
        The limits.
    shape_checks
        Apply the thickness, length and solidity limits (off for thin structures such as
        the renal cortex).
    previous_volume_ml
        The same structure's volume in the patient's previous accepted study, if any: a
        change larger than ``change_pct_review`` % is not plausible between follow-ups.
    flags
        The pipeline's own warnings; ``*-touches-edge``, ``*-unpaired`` (a native
        kidney whose partner does not lie mirrored to it), ``*-asymmetric`` (one
        kidney far larger than the other) and ``not-kidney-shaped`` (a T2-only graft
        grown into a region unlike a whole kidney) ask for review.
    """
    t = thresholds
    fail: list[str] = []
    review: list[str] = []
    s = signals

    def outside(value: float, bounds: tuple[float, float], what: str, unit: str,
                into: list[str]) -> bool:
        low, high = bounds
        if value < low:
            into.append(f"{what} {value:.1f} {unit} < {low:g} {unit}")
        elif value > high:
            into.append(f"{what} {value:.1f} {unit} > {high:g} {unit}")
        else:
            return False
        return True

    if not outside(s.volume_ml, t.volume_ml_fail, "volume", "ml", fail):
        outside(s.volume_ml, t.volume_ml_review, "volume", "ml", review)
    if shape_checks:
        if s.thickness_mm < t.thickness_mm_fail:
            fail.append(f"thickness {s.thickness_mm:.1f} mm < {t.thickness_mm_fail:g} mm "
                        f"(a sheet, not a kidney)")
        elif s.thickness_mm < t.thickness_mm_review:
            review.append(f"thickness {s.thickness_mm:.1f} mm < {t.thickness_mm_review:g} mm")
        outside(s.length_mm, t.length_mm_review, "length", "mm", review)
        if s.solidity < t.solidity_fail:
            fail.append(f"solidity {s.solidity:.2f} < {t.solidity_fail:g} (not compact)")
        elif s.solidity < t.solidity_review:
            review.append(f"solidity {s.solidity:.2f} < {t.solidity_review:g}")
    if s.main_share < t.main_share_review:
        review.append(f"largest part holds {100 * s.main_share:.0f} % of the mask "
                      f"(< {100 * t.main_share_review:g} %)")
    if s.edge_share > t.edge_share_fail:
        fail.append(f"{100 * s.edge_share:.0f} % of the surface on the field of view's edge "
                    f"(> {100 * t.edge_share_fail:g} %): cut off")
    elif s.edge_share > t.edge_share_review:
        review.append(f"{100 * s.edge_share:.1f} % of the surface on the field of view's edge "
                      f"(> {100 * t.edge_share_review:g} %)")
    if s.contrast < t.contrast_review:
        review.append(f"boundary contrast {s.contrast:.2f} < {t.contrast_review:g}")
    if s.gradient_ratio < t.gradient_ratio_review:
        review.append(f"boundary gradient ratio {s.gradient_ratio:.2f} < "
                      f"{t.gradient_ratio_review:g} (the border follows no edge)")
    if previous_volume_ml is not None and previous_volume_ml > 0:
        change = 100.0 * (s.volume_ml - previous_volume_ml) / previous_volume_ml
        if abs(change) > t.change_pct_review:
            review.append(f"{change:+.0f} % from the previous study ({previous_volume_ml:.0f} "
                          f"ml; > {t.change_pct_review:g} % is not plausible)")
    review.extend(f"method flag {f}" for f in flags
                  if f.endswith(("touches-edge", "unpaired", "asymmetric", *RESULT_DOUBTS)))
    if fail:
        return QcVerdict(Verdict.FAIL, tuple(fail + review))
    if review:
        return QcVerdict(Verdict.REVIEW, tuple(review))
    return QcVerdict(Verdict.PASS)
