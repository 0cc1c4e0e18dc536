"""The whole MRI kidney-graft method of the paper (``../shared/seeds/000_…``), image in, mask out.

:func:`segment_graft` chains the pure steps of the other modules on SimpleITK images:

1. N4 bias-field correction of the DCE volume (§3: 2 iterations, 8 fitting levels);
2. region of interest on the corrected DCE volume (§2.1, :func:`models.roi.detect_roi`);
3. with a T2 volume: N4 on it, then T2 -> DCE registration (rigid and affine by mutual
   information, then a B-spline stage), resampled onto the DCE grid (§3);
4. both volumes cropped to the ROI and stacked as input channels (early fusion), brought
   to the *working grid* (below), clustered by the per-volume CNN (§2.2,
   :func:`models.feature_clustering.cluster_volume`);
5. the kidney cluster chosen (:func:`models.kidney_cluster.select_kidney`), vessels
   attached at the hilum cut off (:func:`models.kidney_cluster.prune_tubes`), and darker
   lobes lying on it (a bowel loop: :mod:`models.kidney_trim`), brought back
   to the ROI's full resolution, largest component, holes filled, its border refined
   (:func:`refine_boundary`, our addition: the cluster of the kidney leaves out the
   partial-volume edge voxels, which fall in a rim cluster with the outside), put back
   into the DCE grid.

Working grid
------------
``working_voxels=None`` clusters the ROI at its native resolution, the paper's setting
(on a GPU). A number caps the voxels of the clustering grid: the ROI is resampled to the
finest near-isotropic spacing ``s`` (no axis finer than it was) that keeps the voxel count
at or under the cap, after a Gaussian anti-aliasing filter (sigma 0.4 of the new spacing
along each coarsened axis). The kidney mask found on that grid comes back to full
resolution by linear interpolation of the 0/1 mask, thresholded at 0.5, which gives a
smooth boundary instead of the staircase of nearest-neighbour upsampling. The cost per
iteration of the network is proportional to the number of voxels, so the cap is the
CPU profile's knob; its accuracy cost is measured by the evaluation benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from models.components import binary_dilation, fill_holes, largest_component
from models.feature_clustering import (
    ClusteringConfig,
    ClusteringResult,
    cluster_slices,
    cluster_volume,
)
from models.kidney_cluster import prune_tubes, select_kidney, select_kidney_slices
from models.kidney_trim import drop_foreign_lobes
from models.preprocess import (
    RegistrationResult,
    n4_bias_field,
    n4_correct,
    register_t2_to_dce,
)
from models.roi import RegionOfInterest, detect_roi
from models.timing import StepTimer
from models.volume import image_spacing_zyx

__all__ = ["GraftConfig", "GraftResult", "finish_kidney", "refine_boundary", "segment_graft",
           "working_spacing"]

Progress = Callable[[int, float, int], None]


@dataclass(frozen=True)
class GraftConfig:
    """Settings of :func:`segment_graft` (defaults: the paper's where it states them).

    Attributes
    ----------
    clustering : ClusteringConfig
        The network and its stopping rules; ``spatial_dims=2`` gives the 2D variant.
    slice_networks : bool
        In the 2D variant, fit one network per slice and choose the kidney on every slice
        (:func:`~models.feature_clustering.cluster_slices`,
        :func:`~models.kidney_cluster.select_kidney_slices`): the 2D method of [12] as
        the paper compares it. ``False`` fits one 2D network to all the slices at once and
        chooses in 3D. Ignored in 3D.
    working_voxels : int or None
        Cap on the voxels of the clustering grid (see the module notes); ``None`` keeps
        the ROI's native resolution.
    n4 : bool
        Bias-field correction of each sequence before anything else.
    deformable : bool
        Add the B-spline stage to the T2 -> DCE registration.
    roi_margin_mm : float
        Margin around the bright component's bounding box (§2.1).
    expected_volume_ml : tuple of float
        Plausible graft volume, gates the kidney cluster.
    vessel_radius_mm : float
        Tubes thinner than this are cut off the chosen cluster
        (:func:`models.kidney_cluster.prune_tubes`); 0 disables it.
    drop_foreign : bool
        Cut off darker lobes lying on the chosen kidney (a bowel loop in the kidney's
        cluster), :func:`models.kidney_trim.drop_foreign_lobes`.
    foreign_separation : float
        How clear the split of the kidney's voxels in its peak channel must be (pooled
        standard deviations) before a darker lobe is dropped (``min_separation`` there).
    refine_boundary_mm : float
        Width of the band outside the kidney cluster where :func:`refine_boundary` adds
        edge voxels (at least one working voxel); 0 disables it.
    """

    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    slice_networks: bool = True
    working_voxels: int | None = None
    n4: bool = True
    deformable: bool = True
    roi_margin_mm: float = 10.0
    expected_volume_ml: tuple[float, float] = (20.0, 600.0)
    vessel_radius_mm: float = 6.0
    drop_foreign: bool = True
    foreign_separation: float = 3.0
    refine_boundary_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.working_voxels is not None and (
            isinstance(self.working_voxels, bool) or int(self.working_voxels) < 1000
        ):
            raise ValueError(
                f"GraftConfig.working_voxels must be None or an integer >= 1000, "
                f"got {self.working_voxels!r}"
            )


@dataclass(frozen=True)
class GraftResult:
    """Outcome of :func:`segment_graft`.

    Attributes
    ----------
    mask : numpy.ndarray
        Boolean (z, y, x) kidney mask on the DCE grid.
    roi : RegionOfInterest
        The region of interest, in DCE voxels.
    working_spacing_zyx : tuple of float
        Spacing (mm) of the grid the clustering ran on.
    working_shape : tuple of int
        Shape of that grid.
    clustering : ClusteringResult
        Labels on the working grid, iterations, losses and stop reason.
    registration : RegistrationResult or None
        The T2 -> DCE registration, ``None`` in the DCE-only variant.
    timings_s : mapping of str to float
        Seconds per step: ``n4``, ``roi``, ``registration``, ``clustering``, ``selection``.
    """

    mask: np.ndarray
    roi: RegionOfInterest
    working_spacing_zyx: tuple[float, float, float]
    working_shape: tuple[int, int, int]
    clustering: ClusteringResult
    registration: RegistrationResult | None
    timings_s: Mapping[str, float]



def working_spacing(
    shape_zyx: tuple[int, ...], spacing_zyx: tuple[float, float, float], max_voxels: int | None
) -> tuple[float, float, float]:
    """Spacing of the clustering grid: native, or the finest near-isotropic one under a cap.

    Parameters
    ----------
    shape_zyx, spacing_zyx
        Shape and spacing (mm) of the region of interest.
    max_voxels : int or None
        Cap on the number of voxels; ``None`` keeps the native spacing.

    Returns
    -------
    tuple of float
        Per axis ``max(native, s)`` with the smallest ``s`` (to 0.01 mm) meeting the cap.
    """
    native = tuple(float(s) for s in spacing_zyx)
    extent = [n * s for n, s in zip(shape_zyx, native, strict=True)]

    def count(s: float) -> float:
        return math.prod(max(1, math.ceil(e / max(a, s))) for e, a in zip(extent, native,
                                                                           strict=True))

    if max_voxels is None or count(0.0) <= max_voxels:
        return (native[0], native[1], native[2])
    low, high = min(native), max(extent)
    while high - low > 0.01:
        middle = (low + high) / 2
        low, high = (middle, high) if count(middle) > max_voxels else (low, middle)
    return (max(native[0], high), max(native[1], high), max(native[2], high))


def _to_grid(image: sitk.Image, spacing_zyx: tuple[float, float, float]) -> sitk.Image:
    """Anti-alias then linearly resample ``image`` to ``spacing_zyx`` over the same extent."""
    old = image.GetSpacing()
    new = (spacing_zyx[2], spacing_zyx[1], spacing_zyx[0])
    if np.allclose(old, new):
        return image
    sigmas = [0.4 * n if n > o * 1.01 else 0.0 for o, n in zip(old, new, strict=True)]
    smooth = image
    if any(sigmas):
        smooth = sitk.DiscreteGaussian(image, variance=[s * s for s in sigmas],
                                       maximumKernelWidth=64, useImageSpacing=True)
    size = [max(1, math.ceil(n * o / s))
            for n, o, s in zip(image.GetSize(), old, new, strict=True)]
    # Centre the coarse grid on the fine one's extent.
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    first = np.asarray(image.GetOrigin()) - direction @ (np.asarray(old) / 2)
    origin = first + direction @ (np.asarray(new) / 2)
    extent = np.asarray(image.GetSize()) * np.asarray(old)
    slack = extent - np.asarray(size) * np.asarray(new)
    origin = origin + direction @ (slack / 2)
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), new,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def _crop(image: sitk.Image, roi: RegionOfInterest) -> sitk.Image:
    (z0, y0, x0), (z1, y1, x1) = roi.start, roi.stop
    return image[x0:x1, y0:y1, z0:z1]


def _back_to(mask: np.ndarray, coarse: sitk.Image, fine: sitk.Image) -> np.ndarray:
    """The coarse boolean mask on the fine grid: linear interpolation of 0/1, >= 0.5."""
    if coarse.GetSize() == fine.GetSize():
        return mask
    small = sitk.GetImageFromArray(mask.astype(np.float32))
    small.CopyInformation(coarse)
    big = sitk.Resample(small, fine, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayViewFromImage(big) >= 0.5


def refine_boundary(
    mask: np.ndarray, image: np.ndarray, *, spacing_zyx: tuple[float, float, float],
    band_mm: float
) -> np.ndarray:
    """Add the voxels just outside ``mask`` that are brighter than the kidney/outside midpoint.

    The clusters of a partial-volume rim hold the kidney's edge voxels together with the
    tissue outside it, so the kidney cluster alone sits inside the true border. Within
    ``band_mm`` outside the mask, a voxel joins when its intensity is at least halfway
    between the mask's median and the median of the shell just beyond the band (medians:
    a bowel loop or vessel touching part of the surface does not move them much). Only
    voxels are added; the result is the largest component with holes filled.
    """
    if not mask.any():
        return mask
    radius = band_mm / min(spacing_zyx)
    band = binary_dilation(mask, radius_vox=radius, spacing_zyx=spacing_zyx) & ~mask
    shell = binary_dilation(mask, radius_vox=2 * radius, spacing_zyx=spacing_zyx) & ~mask & ~band
    if not band.any() or not shell.any():
        return mask
    threshold = 0.5 * (float(np.median(image[mask])) + float(np.median(image[shell])))
    return fill_holes(largest_component(mask | (band & (image >= threshold))))


def finish_kidney(
    kidney: np.ndarray, trim_channels: np.ndarray, *, coarse: sitk.Image, crop: sitk.Image,
    grid: tuple[float, float, float], roi: RegionOfInterest, shape: tuple[int, ...],
    config: GraftConfig,
) -> np.ndarray:
    """The chosen cluster (on the working grid ``coarse``) made the kidney mask on the
    full grid of ``shape``: hilar vessels cut off, darker lobes dropped (judged on
    ``trim_channels``), back to the ROI's resolution (``crop``), largest component, holes
    filled, border refined, put back into the full grid (step 5 of the module notes);
    ``grid`` is the working grid's spacing (z, y, x)."""
    if config.vessel_radius_mm > 0:
        kidney = prune_tubes(kidney, spacing_zyx=grid, radius_mm=config.vessel_radius_mm)
    if config.drop_foreign:
        kidney = drop_foreign_lobes(kidney, trim_channels, spacing_zyx=grid,
                                    min_separation=config.foreign_separation)
    full = _back_to(kidney, coarse, crop)
    full = fill_holes(largest_component(full)) if full.any() else full
    if config.refine_boundary_mm > 0:
        full = refine_boundary(full, sitk.GetArrayViewFromImage(crop),
                               spacing_zyx=image_spacing_zyx(crop),
                               band_mm=max(config.refine_boundary_mm, *grid))
    return roi.embed(full, shape=shape)


def _check_contrast(values: np.ndarray) -> None:
    """Refuse a DCE volume without contrast: N4 would invent structure from rounding."""
    if not np.isfinite(values).all():
        raise ValueError("the DCE volume holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-6 * max(1.0, abs(high)):
        raise ValueError(f"the DCE volume is constant ({low:g}): nothing to segment")


def segment_graft(
    dce: sitk.Image,
    t2: sitk.Image | None = None,
    *,
    extra_phases: Sequence[sitk.Image] = (),
    config: GraftConfig = GraftConfig(),
    device: str = "cpu",
    progress: Progress | None = None,
) -> GraftResult:
    """Segment the kidney graft on one DCE volume, with the T2 volume when given.

    Parameters
    ----------
    dce : SimpleITK.Image
        The DCE volume the method works on (one phase, or a combination of phases).
    t2 : SimpleITK.Image, optional
        T2 volume on any grid; ``None`` runs the DCE-only variant.
    extra_phases : sequence of SimpleITK.Image
        Other DCE phases on the grid of ``dce``, N4-corrected alike and stacked as further
        input channels (an extension: the enhancement over time tells a bowel wall from
        the parenchyma). ROI and kidney choice still use ``dce`` alone.
    config : GraftConfig
        Method settings.
    device : str
        Torch device of the clustering.
    progress : callable, optional
        ``progress(iteration, loss, n_labels)`` during the clustering.

    Returns
    -------
    GraftResult
        The mask on the DCE grid and what led to it.

    Raises
    ------
    ValueError
        No region of interest (empty or constant volume), a failed registration, or no
        cluster qualifying as the kidney (the message says why each was rejected).
    """
    timer = StepTimer()
    lap = timer.lap
    timings = timer.seconds

    fixed = sitk.Cast(dce, sitk.sitkFloat32)
    _check_contrast(sitk.GetArrayViewFromImage(fixed))
    field = n4_bias_field(fixed) if config.n4 else None
    if field is not None:
        fixed = sitk.Divide(fixed, field)
    lap("n4")
    spacing = image_spacing_zyx(fixed)
    dce_arr = sitk.GetArrayViewFromImage(fixed)
    roi = detect_roi(dce_arr, spacing_zyx=spacing, margin_mm=config.roi_margin_mm)
    lap("roi")
    crops = [_crop(fixed, roi)]
    for phase in extra_phases:  # one dynamic series: one coil, one bias field
        phase = sitk.Cast(phase, sitk.sitkFloat32)
        crops.append(_crop(phase if field is None else sitk.Divide(phase, field), roi))
    registration = None
    if t2 is not None:
        moving = sitk.Cast(t2, sitk.sitkFloat32)
        if config.n4:
            moving = n4_correct(moving)
        lap("n4")
        registration = register_t2_to_dce(fixed, moving, roi=roi, deformable=config.deformable)
        crops.append(_crop(registration.t2_on_dce, roi))
        lap("registration")
    grid = working_spacing(roi.shape, spacing, config.working_voxels)
    coarse = [_to_grid(image, grid) for image in crops]
    channels = np.stack([sitk.GetArrayFromImage(image) for image in coarse])
    slice_wise = config.clustering.spatial_dims == 2 and config.slice_networks
    clustering = (cluster_slices if slice_wise else cluster_volume)(
        channels, config=config.clustering, device=device, progress=progress)
    lap("clustering")
    if slice_wise:
        kidney = select_kidney_slices(clustering.labels, dce=channels[0], spacing_zyx=grid)
    else:
        kidney = select_kidney(clustering.labels, dce=channels[0], spacing_zyx=grid,
                               expected_volume_ml=config.expected_volume_ml)
    mask = finish_kidney(kidney, channels[: 1 + len(extra_phases)], coarse=coarse[0],
                         crop=crops[0], grid=grid, roi=roi, shape=dce_arr.shape,
                         config=config)
    lap("selection")
    return GraftResult(mask=mask, roi=roi, working_spacing_zyx=grid,
                       working_shape=tuple(int(n) for n in channels.shape[1:]),
                       clustering=clustering, registration=registration, timings_s=timings)
