"""MR pre-processing (paper §3): N4 bias-field correction and T2 to DCE registration.

Both functions take SimpleITK images and return new ones; nothing here reads or writes
files.

Bias-field correction
---------------------
:func:`n4_correct` runs ITK's N4 with the paper's settings (2 iterations at each of 8
fitting levels). The field is estimated on a shrunk copy of the image and evaluated on the
full-resolution grid, as recommended by the N4 authors. Two guards make the paper's
settings safe on any grid:

* an axis is shrunk only while it keeps at least 32 voxels, so a 24-slice slab keeps all
  of its slices;
* N4 starts from a B-spline mesh of one span per axis and doubles it at each fitting level,
  so level 8 has 128 spans per axis whatever the image size. ITK does not fail on a mesh
  finer than the voxels (its scattered-data fit leaves control points without data at
  zero), but such levels only model voxel-scale residual (noise and anatomy), not a
  smooth bias, and cost seconds each. The number of levels is therefore capped so that
  the finest mesh has no more spans than the shrunk image has voxels along its longest
  axis: 512 x 512 slices shrunk to 128 keep all 8 levels, a 24 x 48 x 48 test image gets 6.

With 8 levels the finest control-point spacing is about a hundredth of the field of view
(3 mm on a 410 mm field), so the "bias field" also absorbs anatomy at the centimetre
scale: contrast inside an organ is flattened and histogram peaks get sharper, which is
what the paper describes. Use ``fitting_levels=4`` for a correction of the smooth
(coil) bias alone.

Registration
------------
:func:`register_t2_to_dce` warps the T2 onto the DCE grid (DCE fixed, T2 moving) with
Mattes mutual information, in stages: rigid (Euler), affine, then a coarse cubic B-spline
(about 50 mm between control points). Choices, and why:

* the default initialisation keeps the DICOM patient frame (identity): the two series come
  from one exam, and aligning the centres of the two fields of view (``GEOMETRY``) moves
  them apart whenever the slabs are not centred alike; intensity moments (``MOMENTS``)
  are meaningless across T1/T2 contrasts;
* both images are first bin-shrunk (averaged) towards ``working_spacing_mm`` (3 mm: 0.8 mm
  pixels are averaged 3 x 3), a resolution that a 5-6 mm thick T2 cannot exceed anyway;
* the metric is sampled on a regular grid (jittered with the seed) inside the overlap of
  the two fields of view, at most 20,000 samples per level; SimpleITK reads seed 0 as
  "from the wall clock", so ``seed + 1`` is passed to keep runs reproducible;
* linear stages use regular-step gradient descent with parameter scales and learning rate
  estimated from physical shifts, so rotations and translations move comparably;
* every stage is kept only if it lowers the Mattes MI computed on every voxel of the
  overlap (not only the optimiser's samples): an affine fitted to a small ROI, or a
  B-spline fitted to noise where there is no deformation, is dropped;
* B-spline control points are bounded to +-10 mm; ITK's cost per metric evaluation grows
  with samples x parameters, so the stage runs at one coarse level with 32 bins and at
  most 20 evaluations.

Registration should follow N4: a strong bias field on either series biases the MI optimum
(a +-30 % field moved the rigid result by 1-2 mm on a phantom).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import numpy as np
import SimpleITK as sitk

from models.roi import RegionOfInterest

__all__ = [
    "Initialisation",
    "RegistrationResult",
    "n4_bias_field",
    "n4_correct",
    "register_t2_to_dce",
]

logger = logging.getLogger(__name__)

_MIN_SHRUNK_VOXELS = 32  # N4: an axis is shrunk only while it keeps this many voxels
_HISTOGRAM_BINS = 50  # Mattes mutual information
_MAX_STEP_MM = 2.0  # largest first step of the linear stages, mm at the image border
_MIN_STEP = 1e-3  # regular-step descent stops below this step (scaled units)
_MAX_DISPLACEMENT_MM = 10.0  # bound on each B-spline control-point displacement
_ROI_MARGIN_MM = 20.0  # context added around a registration ROI


class Initialisation(StrEnum):
    """Starting point of the rigid stage of :func:`register_t2_to_dce`.

    ``PATIENT`` keeps the DICOM patient frame (identity; right for two series of one
    exam), ``GEOMETRY`` aligns the centres of the two fields of view and ``MOMENTS`` the
    intensity centres of mass (only meaningful when both contrasts are alike).
    """

    PATIENT = "patient"
    GEOMETRY = "geometry"
    MOMENTS = "moments"


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register_t2_to_dce`.

    Attributes
    ----------
    t2_on_dce : SimpleITK.Image
        Float32 T2 resampled (linear interpolation) onto the DCE grid; 0 outside the T2
        field of view.
    transform : SimpleITK.Transform
        Maps DCE physical points (mm) to T2 physical points: the last kept stage, an
        ``Euler3DTransform``, an ``AffineTransform`` or a ``CompositeTransform`` of the
        linear transform and a ``BSplineTransform`` (the B-spline is applied first).
    metric_before, metric_after : float
        Mattes mutual information (SimpleITK's sign: lower is better) at the initial and
        at the final transform, over every voxel of the working DCE image where both
        fields of view overlap.
    seconds : float
        Wall-clock time of the whole registration.
    stages : tuple of str
        Stages kept in ``transform``, e.g. ``("rigid", "affine", "bspline")``.
    """

    t2_on_dce: sitk.Image
    transform: sitk.Transform
    metric_before: float
    metric_after: float
    seconds: float
    stages: tuple[str, ...] = ()


# --------------------------------------------------------------------------- shared


def _check_volume(image: sitk.Image, name: str) -> None:
    if not isinstance(image, sitk.Image):
        raise TypeError(f"{name} must be a SimpleITK.Image, got {type(image).__name__}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{name} must be a 3D scalar image, got dimension {image.GetDimension()} with "
            f"{image.GetNumberOfComponentsPerPixel()} components per pixel"
        )
    if min(image.GetSize()) < 2:
        raise ValueError(f"{name} needs at least 2 voxels along every axis, got {image.GetSize()}")


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0.0, atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0.0, atol=1e-5)
    )


def _centre(image: sitk.Image) -> tuple[float, float, float]:
    """Physical position of the centre of the image's voxel grid."""
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])


# --------------------------------------------------------------------------- N4


def _shrink_factors(size: Sequence[int], shrink: int) -> list[int]:
    """Per-axis factor: at most ``shrink``, keeping at least 32 voxels (or not shrinking)."""
    return [max(1, min(shrink, n // _MIN_SHRUNK_VOXELS)) for n in size]


def _fitting_levels(size: Sequence[int], requested: int) -> int:
    """Cap the levels so the finest mesh (2**(levels-1) spans) is not finer than a voxel."""
    fitting = 1 + int(math.floor(math.log2(max(size))))
    return max(1, min(requested, fitting))


def _fitting_mask(image: sitk.Image, mask: sitk.Image | None) -> sitk.Image:
    """UInt8 mask of positive voxels inside ``mask`` (default: Otsu foreground of log(1+I))."""
    positive = sitk.Cast(image > 0, sitk.sitkUInt8)
    if mask is None:
        # Otsu on log intensities separates the body from the air even when a bright
        # enhancing organ would take the plain Otsu threshold for itself. Otsu's "inside"
        # value goes to voxels below the threshold: 0 there, 1 above.
        log_image = sitk.Log(sitk.Clamp(image, lowerBound=0.0) + 1.0)
        chosen = sitk.OtsuThreshold(log_image, 0, 1, 200)
    else:
        _check_volume(mask, "mask")
        if not _same_grid(mask, image):
            raise ValueError(
                f"mask grid (size {mask.GetSize()}, spacing {mask.GetSpacing()}, origin "
                f"{mask.GetOrigin()}) differs from the image grid (size {image.GetSize()}, "
                f"spacing {image.GetSpacing()}, origin {image.GetOrigin()})"
            )
        chosen = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
        chosen.CopyInformation(image)
    fit = sitk.And(sitk.Cast(chosen, sitk.sitkUInt8), positive)
    if not np.any(sitk.GetArrayViewFromImage(fit)):
        if mask is not None:
            raise ValueError("the N4 mask holds no voxel with a positive intensity")
        logger.warning("Otsu foreground empty; N4 fitted on all positive voxels")
        fit = positive
    return fit


def n4_bias_field(
    image: sitk.Image,
    *,
    iterations: int = 2,
    fitting_levels: int = 8,
    shrink: int = 4,
    mask: sitk.Image | None = None,
) -> sitk.Image:
    """Estimate the multiplicative bias field of an MR volume with N4 (paper §3).

    The field is the receive coil's sensitivity: the phases of one dynamic series share
    it, so one estimate corrects them all (divide each by it).

    Parameters
    ----------
    image : SimpleITK.Image
        3D scalar MR volume (one DCE phase or the T2), any pixel type.
    iterations : int
        Maximum N4 iterations at each fitting level (paper: 2).
    fitting_levels : int
        Number of B-spline fitting levels (paper: 8); capped on small grids, see the
        module docstring.
    shrink : int
        Largest shrink factor of the image the field is estimated on; an axis is shrunk
        only while it keeps at least 32 voxels.
    mask : SimpleITK.Image, optional
        Voxels (non-zero) the field is fitted on, on the grid of ``image``; default the
        Otsu foreground of ``log(1 + intensity)`` (the body, not only its brightest
        organ). Voxels with intensity <= 0 are always left out of the fit.

    Returns
    -------
    SimpleITK.Image
        Float32 ``exp(log bias field)`` on the grid of ``image`` (corrected image =
        ``image / field``).

    Raises
    ------
    TypeError
        If ``image`` or ``mask`` is not a ``SimpleITK.Image``.
    ValueError
        If ``image`` is not a 3D scalar volume with at least 2 voxels per axis, a
        parameter is below 1, or ``mask`` lies on another grid or holds no positive voxel.
    """
    _check_volume(image, "image")
    if min(iterations, fitting_levels, shrink) < 1:
        raise ValueError(
            f"iterations, fitting_levels and shrink must be >= 1, got {iterations}, "
            f"{fitting_levels} and {shrink}"
        )
    full = sitk.Cast(image, sitk.sitkFloat32)
    fit_mask = _fitting_mask(full, mask)
    factors = _shrink_factors(full.GetSize(), shrink)
    small = sitk.BinShrink(full, factors)
    small_mask = sitk.BinaryThreshold(
        sitk.BinShrink(sitk.Cast(fit_mask, sitk.sitkFloat32), factors), 0.5, math.inf, 1, 0
    )
    if not np.any(sitk.GetArrayViewFromImage(small_mask)):
        small_mask = sitk.BinaryThreshold(small, 1e-12, math.inf, 1, 0)
    levels = _fitting_levels(small.GetSize(), fitting_levels)
    if levels < fitting_levels:
        logger.info(
            "N4 on a %s grid (shrunk %s): %d fitting levels instead of %d",
            full.GetSize(), factors, levels, fitting_levels,
        )
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([iterations] * levels)
    corrector.Execute(small, small_mask)
    log_bias = sitk.Cast(corrector.GetLogBiasFieldAsImage(full), sitk.sitkFloat32)
    return sitk.Exp(log_bias)


def n4_correct(image: sitk.Image, **kwargs: Any) -> sitk.Image:
    """``image`` divided by its :func:`n4_bias_field` (same parameters), float32."""
    field = n4_bias_field(image, **kwargs)  # checks the input first
    return sitk.Divide(sitk.Cast(image, sitk.sitkFloat32), field)


# --------------------------------------------------------------------------- registration


def _working_image(image: sitk.Image, spacing_mm: float | None) -> sitk.Image:
    """Float32 copy of ``image``, bin-shrunk (averaged) along axes finer than ``spacing_mm``."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    if spacing_mm is None:
        return image
    factors = [
        max(1, min(int(spacing_mm / s + 1e-6), n // 2))
        for s, n in zip(image.GetSpacing(), image.GetSize(), strict=True)
    ]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def _initial_transform(
    fixed: sitk.Image, moving: sitk.Image, initialisation: Initialisation
) -> sitk.Euler3DTransform:
    if initialisation is Initialisation.PATIENT:
        transform = sitk.Euler3DTransform()
        transform.SetCenter(_centre(fixed))
        return transform
    mode = (
        sitk.CenteredTransformInitializerFilter.GEOMETRY
        if initialisation is Initialisation.GEOMETRY
        else sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    return sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), mode)
    )


def _overlap_mask(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """UInt8 mask of the fixed voxels that ``transform`` maps inside the moving image."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    mask = sitk.Resample(ones, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise ValueError(
            f"the T2 field of view (origin {moving.GetOrigin()}, size {moving.GetSize()}) "
            f"does not overlap the DCE one (origin {fixed.GetOrigin()}, size {fixed.GetSize()})"
        )
    return mask


@dataclass(frozen=True)
class _Stage:
    """Resolution pyramid, metric samples per level and optimiser iterations of a stage."""

    shrink_factors: tuple[int, ...]
    sigmas_mm: tuple[float, ...]
    samples: int
    iterations: int
    bins: int = _HISTOGRAM_BINS


_RIGID = _Stage((4, 2, 1), (4.0, 2.0, 0.0), samples=20_000, iterations=100)
_AFFINE = _Stage((2, 1), (2.0, 0.0), samples=20_000, iterations=50)
# The cost of a B-spline metric evaluation grows with samples x parameters x bins.
_BSPLINE = _Stage((2,), (1.0,), samples=20_000, iterations=10, bins=32)


def _sampling_percentages(fixed: sitk.Image, mask: sitk.Image, stage: _Stage) -> list[float]:
    """Per-level sampling fraction aiming at ``stage.samples`` voxels inside ``mask``."""
    inside = float(np.mean(sitk.GetArrayViewFromImage(mask)))
    percentages = []
    for factor in stage.shrink_factors:
        voxels = math.prod(max(1, n // factor) for n in fixed.GetSize()) * inside
        percentages.append(min(1.0, stage.samples / max(voxels, 1.0)))
    return percentages


def _method(
    fixed: sitk.Image, mask: sitk.Image, *, stage: _Stage, seed: int
) -> sitk.ImageRegistrationMethod:
    """Mattes MI, linear interpolation, seeded regular sampling inside ``mask``."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=stage.bins)
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.REGULAR)
    # SimpleITK reads seed 0 as "seed from the wall clock": shift by one.
    method.SetMetricSamplingPercentagePerLevel(_sampling_percentages(fixed, mask, stage), seed + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(stage.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(stage.sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _regular_step_descent(method: sitk.ImageRegistrationMethod, iterations: int) -> None:
    """Regular-step gradient descent; scales and learning rate from physical shifts."""
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=_MIN_STEP,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
        estimateLearningRate=method.Once,
        maximumStepSizeInPhysicalUnits=_MAX_STEP_MM,
    )
    method.SetOptimizerScalesFromPhysicalShift()


def _rigid_stage(
    fixed: sitk.Image, moving: sitk.Image, start: sitk.Transform, *, mask: sitk.Image, seed: int
) -> sitk.Euler3DTransform:
    """Euler (rotation about the DCE centre, translation) from ``start`` (an Euler)."""
    rigid = sitk.Euler3DTransform(start)
    method = _method(fixed, mask, stage=_RIGID, seed=seed)
    _regular_step_descent(method, _RIGID.iterations)
    method.SetInitialTransform(rigid, inPlace=True)
    method.Execute(fixed, moving)
    logger.debug("rigid stage: %s", method.GetOptimizerStopConditionDescription())
    return rigid


def _affine_stage(
    fixed: sitk.Image, moving: sitk.Image, start: sitk.Transform, *, mask: sitk.Image, seed: int
) -> sitk.AffineTransform:
    """Affine started from ``start`` (an Euler or affine transform)."""
    linear = sitk.AffineTransform(3)
    linear.SetCenter(start.GetCenter())
    linear.SetMatrix(start.GetMatrix())
    linear.SetTranslation(start.GetTranslation())
    method = _method(fixed, mask, stage=_AFFINE, seed=seed)
    _regular_step_descent(method, _AFFINE.iterations)
    method.SetInitialTransform(linear, inPlace=True)
    method.Execute(fixed, moving)
    logger.debug("affine stage: %s", method.GetOptimizerStopConditionDescription())
    return linear


def _bspline_stage(
    fixed: sitk.Image,
    moving: sitk.Image,
    start: sitk.Transform,
    *,
    mask: sitk.Image,
    seed: int,
    mesh_spacing_mm: float,
) -> sitk.CompositeTransform:
    """Cubic B-spline over the fixed image, applied before ``start`` (the linear result)."""
    extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing(), strict=True)]
    mesh = [max(1, round(e / mesh_spacing_mm)) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, 3)
    method = _method(fixed, mask, stage=_BSPLINE, seed=seed)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=_BSPLINE.iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=2 * _BSPLINE.iterations,
        costFunctionConvergenceFactor=1e7,
        lowerBound=-_MAX_DISPLACEMENT_MM,
        upperBound=_MAX_DISPLACEMENT_MM,
    )
    method.SetMovingInitialTransform(start)
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed, moving)
    logger.debug("B-spline stage (mesh %s): %s", mesh,
                 method.GetOptimizerStopConditionDescription())
    return sitk.CompositeTransform([start, bspline])


def _mattes_mi(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *, mask: sitk.Image
) -> float:
    """Mattes MI of ``transform`` over every working fixed voxel in ``mask`` (no sampling)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=_HISTOGRAM_BINS)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _crop_to_roi(image: sitk.Image, roi: RegionOfInterest) -> sitk.Image:
    """``image`` cut to ``roi`` ((z, y, x) voxel box) grown by 20 mm, clipped to the image."""
    size_zyx = image.GetSize()[::-1]
    if any(b > n for b, n in zip(roi.stop, size_zyx, strict=True)):
        raise ValueError(
            f"ROI start={roi.start} stop={roi.stop} does not fit in the DCE volume of "
            f"(z, y, x) shape {size_zyx}"
        )
    grow = [math.ceil(_ROI_MARGIN_MM / s) for s in image.GetSpacing()[::-1]]
    lo = [max(0, a - g) for a, g in zip(roi.start, grow, strict=True)]
    hi = [min(n, b + g) for b, g, n in zip(roi.stop, grow, size_zyx, strict=True)]
    (z0, y0, x0), (z1, y1, x1) = lo, hi
    return image[x0:x1, y0:y1, z0:z1]


def register_t2_to_dce(
    dce: sitk.Image,
    t2: sitk.Image,
    *,
    deformable: bool = True,
    seed: int = 0,
    roi: RegionOfInterest | None = None,
    working_spacing_mm: float | None = 3.0,
    mesh_spacing_mm: float = 50.0,
    initialisation: Initialisation | str = Initialisation.PATIENT,
) -> RegistrationResult:
    """Register the T2 volume to one DCE phase and resample it onto the DCE grid (paper §3).

    Stages, all on Mattes mutual information with seeded regular sampling inside the
    overlap of the two fields of view (at most 20,000 samples per level): rigid (Euler;
    shrink factors 4/2/1, smoothing 4/2/0 mm, 50 bins), then affine (2/1, 2/0 mm), both
    by regular-step gradient descent with scales and learning rate estimated from physical
    shifts; then, if ``deformable``, a cubic B-spline with about ``mesh_spacing_mm``
    between control points (shrink 2, 1 mm smoothing, 32 bins, LBFGSB with control points
    bounded to +-10 mm). A stage is kept only if it lowers the metric computed on every
    overlapping voxel of the working images; see the module docstring.

    Parameters
    ----------
    dce : SimpleITK.Image
        Fixed image: one 3D DCE phase.
    t2 : SimpleITK.Image
        Moving image: the T2 volume, any grid, slice thickness or orientation.
    deformable : bool
        Try the B-spline stage after the linear ones.
    seed : int
        Seed (>= 0) of the metric sampling; the same inputs and seed give the same result.
    roi : RegionOfInterest, optional
        Box in DCE (z, y, x) voxels, e.g. from :func:`models.roi.detect_roi`: the metric
        is computed only there (grown by 20 mm of context) and the B-spline covers only
        it, a speed option that also focuses the alignment on the graft. Outside the box
        the result follows the linear transform (with a step at the box border when the
        B-spline stage is kept).
    working_spacing_mm : float or None
        Both images are bin-shrunk (averaged) by whole factors along axes finer than this
        before registering, a speed option; ``None`` registers at native resolution.
    mesh_spacing_mm : float
        Approximate distance between B-spline control points.
    initialisation : Initialisation or str
        Start of the rigid stage; default the shared patient frame.

    Returns
    -------
    RegistrationResult
        The T2 on the full DCE grid, the DCE -> T2 transform and the metric values.

    Raises
    ------
    TypeError
        If ``dce`` or ``t2`` is not a ``SimpleITK.Image``.
    ValueError
        If an image is not a 3D scalar volume, the fields of view do not overlap, the ROI
        does not fit the DCE volume, or ``seed``, ``initialisation`` or a spacing is
        invalid.
    """
    started = time.perf_counter()
    _check_registration_inputs(dce, t2, seed=seed, spacings=(working_spacing_mm, mesh_spacing_mm))
    initialisation = Initialisation(initialisation)
    fixed = _working_image(dce if roi is None else _crop_to_roi(dce, roi), working_spacing_mm)
    moving = _working_image(t2, working_spacing_mm)
    transform: sitk.Transform = _initial_transform(fixed, moving, initialisation)
    mask = _overlap_mask(fixed, moving, transform)
    metric_before = metric = _mattes_mi(fixed, moving, transform, mask=mask)
    steps = [("rigid", _rigid_stage), ("affine", _affine_stage)]
    if deformable:
        steps.append(("bspline", partial(_bspline_stage, mesh_spacing_mm=mesh_spacing_mm)))
    stages: tuple[str, ...] = ()
    for name, run in steps:
        candidate = run(fixed, moving, transform, mask=mask, seed=seed)
        value = _mattes_mi(fixed, moving, candidate, mask=mask)
        if value < metric:
            transform, metric, stages = candidate, value, (*stages, name)
        else:
            logger.info("%s stage dropped: Mattes MI %.4f not below %.4f", name, value, metric)

    t2_on_dce = sitk.Resample(
        sitk.Cast(t2, sitk.sitkFloat32), dce, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    seconds = time.perf_counter() - started
    logger.info("T2 registered to DCE (%s) in %.1f s: Mattes MI %.4f -> %.4f",
                "/".join(stages) or "no stage kept", seconds, metric_before, metric)
    return RegistrationResult(t2_on_dce, transform, metric_before, metric, seconds, stages)


def _check_registration_inputs(
    dce: sitk.Image, t2: sitk.Image, *, seed: int, spacings: tuple[float | None, float]
) -> None:
    _check_volume(dce, "dce")
    _check_volume(t2, "t2")
    working, mesh = spacings
    if mesh <= 0 or (working is not None and working <= 0):
        raise ValueError(
            f"spacings must be positive, got working_spacing_mm={working} and "
            f"mesh_spacing_mm={mesh}"
        )
    if not 0 <= seed < 2**32 - 1:
        raise ValueError(f"seed must be in [0, 2**32 - 1), got {seed}")
