"""Synthetic contrast CT of the abdomen (cortico-medullary phase) with kidney ground truth.

:func:`synthesize_ct` paints the seeded :func:`~service.synthetic.ct_anatomy.make_ct_anatomy`
on an axial grid (:class:`CtGrid`) and forms the image (:class:`CtRenderSettings`):

1. *Labels* at sub-slice sample points: each slice is split into an odd number of
   sub-slices at most :attr:`CtRenderSettings.sub_slice_mm` apart (a rectangular slice
   profile); the middle one is the voxel centre, whose labels are the ground truth.
2. *CT numbers*: each tissue's HU (drawn per case within
   :data:`~service.synthetic.ct_tissues.CT_HU_RANGES`), averaged over the sub-slices
   (partial volume through the slice), then a Gaussian in-plane point-spread function
   (:attr:`CtRenderSettings.psf_sigma_mm`).
3. *Texture*: a smooth Gaussian random field times each tissue's amplitude
   (:data:`~service.synthetic.ct_tissues.CT_TEXTURE_HU`).
4. *Noise*: Gaussian, slightly correlated in-plane (as a reconstruction kernel makes it),
   of standard deviation :attr:`CtRenderSettings.noise_sigma_hu`; values are rounded and
   clipped to [-1024, 3071] HU.

Ground truth on the CT grid, at voxel centres: kidneys (1 = right, 2 = left; the whole
outline, parenchyma plus sinus, as TotalSegmentator labels kidneys) and cortex (same
labels, cortex only). With a :class:`~service.synthetic.ct_anatomy.Transplant` the
patient also has a pelvis and usually a kidney graft in an iliac fossa: its mask is
``graft`` (the whole outline, like the native kidneys), its side ``graft_side`` (the
patient's) and its volumes ``graft_truth``; ``kidneys`` and ``cortex`` stay the native
kidneys'. A 512 x 512 x 71 study (2.5 mm slices) renders in about 4 s on two
CPU cores, peak resident memory about 0.5 GB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import ndimage as ndi

from service.synthetic.ct_anatomy import CtAnatomy, Side, Transplant, make_ct_anatomy
from service.synthetic.ct_shapes import RenalKidney, ScarredKidney, _contains_xyz
from service.synthetic.ct_tissues import CT_TEXTURE_HU, CtPhase, CtTissue, draw_hu
from service.synthetic.geometry import VolumeGeometry, _SampleGrid
from service.synthetic.shapes import Shape

__all__ = [
    "Coverage",
    "CtGrid",
    "CtRenderSettings",
    "KidneyTruth",
    "SyntheticCT",
    "synthesize_ct",
]

#: Range of stored CT numbers (12-bit with Rescale Intercept -1024), HU.
HU_MIN, HU_MAX = -1024, 3071
_SLAB_SAMPLES = 3_000_000


class Coverage(StrEnum):
    """Head-foot extent of the scan.

    ``KIDNEYS``: both kidney sites and 20 mm beyond. ``ABDOMEN``: T9 to L5 (z -170 to
    +160 mm). ``NO_KIDNEYS``: a 90 mm slab of the upper abdomen starting 15 mm above the
    highest kidney pole (liver, spleen, stomach, lower ribs; no kidney voxel).

    The pelvic coverages need a transplant anatomy (one with a pelvis): ``PELVIS`` from the
    middle of L5 (or 10 mm above the graft, whichever is higher) to 15 mm below the pubic
    symphysis; ``ABDOMEN_PELVIS`` from 20 mm above
    the native kidney sites to the same lower end; ``LOWER_PELVIS`` from the graft's centre
    to the same lower end (the field of view cuts the graft).
    """

    KIDNEYS = "kidneys"
    ABDOMEN = "abdomen"
    NO_KIDNEYS = "no-kidneys"
    PELVIS = "pelvis"
    ABDOMEN_PELVIS = "abdomen-pelvis"
    LOWER_PELVIS = "lower-pelvis"


@dataclass(frozen=True)
class CtGrid:
    """Axial reconstruction grid (square matrix, slices stacked foot to head).

    Attributes
    ----------
    matrix : int
        Rows and columns.
    in_plane_spacing_mm : float or None
        Pixel spacing; ``None`` draws it in 0.6-0.9 mm (at least the body width plus 40 mm
        over ``matrix``).
    slice_spacing_mm : float
        Slice thickness and step (contiguous slices), mm.
    coverage : Coverage
        Head-foot extent.
    slices : int or None
        Number of slices, centred on the coverage; ``None``: as many as it needs.
    """

    matrix: int = 512
    in_plane_spacing_mm: float | None = None
    slice_spacing_mm: float = 2.5
    coverage: Coverage = Coverage.KIDNEYS
    slices: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "coverage", Coverage(self.coverage))
        if self.matrix < 16:
            raise ValueError(f"matrix must be at least 16, got {self.matrix}")
        if not 0.0 < self.slice_spacing_mm <= 10.0:
            raise ValueError(f"slice_spacing_mm must be in (0, 10], got {self.slice_spacing_mm}")
        if self.in_plane_spacing_mm is not None and not self.in_plane_spacing_mm > 0:
            raise ValueError(
                f"in_plane_spacing_mm must be positive, got {self.in_plane_spacing_mm}"
            )
        if self.slices is not None and self.slices < 3:
            raise ValueError(f"slices must be at least 3, got {self.slices}")

    @classmethod
    def small(cls, coverage: Coverage | str = Coverage.KIDNEYS) -> CtGrid:
        """A coarse grid for fast tests: 96 x 96 at 4 mm, 5 mm slices."""
        return cls(matrix=96, in_plane_spacing_mm=4.0, slice_spacing_mm=5.0, coverage=coverage)


@dataclass(frozen=True)
class CtRenderSettings:
    """Image formation of :func:`synthesize_ct` (defaults: realistic).

    Attributes
    ----------
    noise_sigma_hu : float
        Standard deviation of the image noise, HU (0: none).
    noise_correlation_px : float
        In-plane Gaussian (sigma, pixels) correlating the noise before it is scaled.
    psf_sigma_mm : float
        In-plane Gaussian point-spread function, sigma in mm (0: none).
    sub_slice_mm : float
        Largest distance between the sub-slices averaged in a slice, mm.
    texture_scale : float
        Factor on every tissue's texture amplitude (0: flat tissues).
    texture_correlation_mm : float
        Smoothing (Gaussian sigma) of the texture field, mm.
    """

    noise_sigma_hu: float = 15.0
    noise_correlation_px: float = 0.7
    psf_sigma_mm: float = 0.5
    sub_slice_mm: float = 1.25
    texture_scale: float = 1.0
    texture_correlation_mm: float = 3.0

    def __post_init__(self) -> None:
        for name in ("noise_sigma_hu", "noise_correlation_px", "psf_sigma_mm", "texture_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("sub_slice_mm", "texture_correlation_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def ideal(cls) -> CtRenderSettings:
        """Flat tissues, no noise or blur, one sample per voxel: the labels made HU."""
        return cls(noise_sigma_hu=0.0, psf_sigma_mm=0.0, sub_slice_mm=1e6, texture_scale=0.0)


@dataclass(frozen=True)
class KidneyTruth:
    """Ground-truth volumes of one kidney.

    Attributes
    ----------
    side : Side
        Right (label 1) or left (label 2).
    analytic_volume_ml : float
        Exact volume of the kidney's outline (parenchyma plus sinus), ml.
    volume_ml : float
        Voxels of the kidney mask in the CT grid times the voxel volume, ml.
    cortex_volume_ml : float
        Voxels of the cortex mask times the voxel volume, ml.
    analytic_cortex_ml : float
        Monte Carlo estimate of the cortex volume of the shape (about 0.5 %), ml.
    """

    side: Side
    analytic_volume_ml: float
    volume_ml: float
    cortex_volume_ml: float
    analytic_cortex_ml: float


@dataclass(frozen=True)
class SyntheticCT:
    """A rendered CT volume with its ground truth, arrays in (slice, row, column) order.

    ``hu`` is int16 HU; ``tissues`` the :class:`CtTissue` at each voxel centre; ``kidneys``
    and ``cortex`` uint8 (0 background, 1 right, 2 left): the native kidneys. ``truth``
    holds the native kidneys present in the anatomy (visible or not); ``hu_table`` the
    case's HU of each tissue. ``graft`` is the kidney graft's mask (bool, all false
    without a graft), ``graft_side`` the patient's side of its iliac fossa and
    ``graft_truth`` its volumes (``None`` without a graft).
    """

    hu: np.ndarray
    geometry: VolumeGeometry
    tissues: np.ndarray
    kidneys: np.ndarray
    cortex: np.ndarray
    hu_table: Mapping[CtTissue, float]
    truth: Mapping[Side, KidneyTruth]
    anatomy: CtAnatomy
    noise_sigma_hu: float
    seed: int = field(default=0)
    phase: CtPhase = CtPhase.CORTICOMEDULLARY
    graft: np.ndarray | None = None
    graft_side: Side | None = None
    graft_truth: KidneyTruth | None = None

    @property
    def kidney_in_view(self) -> bool:
        """Whether any voxel centre lies in a (native) kidney."""
        return bool(self.kidneys.any())

    @property
    def graft_in_view(self) -> bool:
        """Whether any voxel centre lies in the graft."""
        return self.graft is not None and bool(self.graft.any())


def synthesize_ct(
    seed: int = 0,
    *,
    grid: CtGrid | None = None,
    settings: CtRenderSettings | None = None,
    right_kidney_scale: float = 1.0,
    left_kidney_scale: float = 1.0,
    phase: CtPhase | str = CtPhase.CORTICOMEDULLARY,
    transplant: Transplant | None = None,
) -> SyntheticCT:
    """Render a synthetic contrast CT of the abdomen with kidney ground truth.

    Parameters
    ----------
    seed : int
        Seeds the anatomy, the HU of each tissue, the grid's spacing and offset, the
        texture and the noise: the same seed gives the same volume.
    grid : CtGrid, optional
        Reconstruction grid; default ``CtGrid()`` (512 x 512, 2.5 mm slices over the
        kidneys).
    settings : CtRenderSettings, optional
        Image formation; default ``CtRenderSettings()``.
    right_kidney_scale, left_kidney_scale : float
        Factor on that kidney's semi-axes; 0 removes it.
    phase : CtPhase or str
        Contrast phase: the HU ranges the tissues are drawn from
        (:func:`~service.synthetic.ct_tissues.hu_ranges`).
    transplant : Transplant, optional
        A kidney-transplant recipient: pelvis, graft in an iliac fossa, native kidneys'
        state (:class:`~service.synthetic.ct_anatomy.Transplant`). Without it the
        phantom is the plain abdomen, as before.

    Returns
    -------
    SyntheticCT
        The volume, its geometry and the ground truth.

    Raises
    ------
    ValueError
        For a negative kidney scale, or a pelvic coverage without a transplant anatomy
        (or ``LOWER_PELVIS`` without a graft).
    """
    grid = grid or CtGrid()
    settings = settings or CtRenderSettings()
    anatomy = make_ct_anatomy(
        seed,
        right_kidney_scale=right_kidney_scale,
        left_kidney_scale=left_kidney_scale,
        transplant=transplant,
    )
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 7]).spawn(4)]
    phase = CtPhase(phase)
    hu_table = draw_hu(streams[0], phase)
    geometry = _geometry(anatomy, grid, streams[1])
    step = geometry.spacing_mm[0]
    sub = _odd_at_least(math.ceil(step / settings.sub_slice_mm - 1e-9))
    fine = _SampleGrid.of(geometry).sub_slices(sub)
    lookup = np.zeros(max(CtTissue) + 1, dtype=np.float32)
    for tissue, value in hu_table.items():
        lookup[tissue] = value

    slices, rows, columns = geometry.shape
    hu = np.empty(geometry.shape, dtype=np.float32)
    tissues = np.empty(geometry.shape, dtype=np.uint8)
    per_slab = max(1, _SLAB_SAMPLES // (rows * columns * sub))
    for k0 in range(0, slices, per_slab):
        k1 = min(slices, k0 + per_slab)
        labels = _paint(fine, k0 * sub, k1 * sub, anatomy)
        hu[k0:k1] = lookup[labels].reshape(k1 - k0, sub, rows, columns).mean(axis=1)
        tissues[k0:k1] = labels[(sub - 1) // 2 :: sub]

    spacing = geometry.spacing_mm[1]
    if settings.psf_sigma_mm > 0:
        sigma_px = settings.psf_sigma_mm / spacing
        hu = ndi.gaussian_filter(hu, (0.0, sigma_px, sigma_px))
    if settings.texture_scale > 0:
        hu += _texture(tissues, geometry, settings, streams[2])
    if settings.noise_sigma_hu > 0:
        hu += _noise(geometry.shape, settings, streams[3])

    kidneys, cortex, truth = _ground_truth(anatomy, geometry, tissues)
    graft, graft_truth = _graft_truth(anatomy, geometry, tissues)
    return SyntheticCT(
        hu=np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16),
        geometry=geometry,
        tissues=tissues,
        kidneys=kidneys,
        cortex=cortex,
        hu_table=hu_table,
        truth=truth,
        anatomy=anatomy,
        noise_sigma_hu=settings.noise_sigma_hu,
        seed=seed,
        phase=phase,
        graft=graft,
        graft_side=anatomy.graft_side,
        graft_truth=graft_truth,
    )


def _odd_at_least(n: int) -> int:
    n = max(1, n)
    return n if n % 2 else n + 1


def _geometry(anatomy: CtAnatomy, grid: CtGrid, rng: np.random.Generator) -> VolumeGeometry:
    """Axial grid over the coverage, centred near the body axis (a few mm of table offset)."""
    low, high = anatomy.kidney_z_range
    z_ranges = {
        Coverage.KIDNEYS: (low - 20.0, high + 20.0),
        Coverage.ABDOMEN: (-170.0, 160.0),
        Coverage.NO_KIDNEYS: (high + 15.0, high + 105.0),
    }
    pelvic = (Coverage.PELVIS, Coverage.ABDOMEN_PELVIS, Coverage.LOWER_PELVIS)
    if grid.coverage in pelvic:
        if anatomy.pelvis is None:
            raise ValueError(f"coverage {grid.coverage} needs a transplant anatomy (a pelvis)")
        bottom = anatomy.pelvis.symphysis_bottom - 15.0
        top = -112.0  # the middle of L5, or 10 mm above the graft's upper pole
        if anatomy.graft is not None:
            top = max(top, float(anatomy.graft.outline.surface_points()[:, 2].max()) + 10.0)
        z_ranges[Coverage.PELVIS] = (bottom, top)
        z_ranges[Coverage.ABDOMEN_PELVIS] = (bottom, high + 20.0)
        if grid.coverage is Coverage.LOWER_PELVIS:
            if anatomy.graft is None:
                raise ValueError("coverage lower-pelvis needs a graft")
            z_ranges[Coverage.LOWER_PELVIS] = (bottom, float(anatomy.graft.outline.centre[2]))
    z_range = z_ranges[grid.coverage]
    step = grid.slice_spacing_mm
    if grid.slices is None:
        slices = int(math.floor((z_range[1] - z_range[0]) / step)) + 1
        z0 = z_range[0]
    else:
        slices = grid.slices
        z0 = (z_range[0] + z_range[1]) / 2.0 - (slices - 1) * step / 2.0
    need = (2.0 * anatomy.body_semi_axes[0] + 40.0) / grid.matrix
    if grid.in_plane_spacing_mm is None:
        lowest = max(0.6, need)
        spacing = round(float(rng.uniform(lowest, max(0.9, 1.1 * lowest))), 4)
    else:
        spacing = float(grid.in_plane_spacing_mm)
    offset = rng.uniform(-10.0, 10.0, size=2)
    half = (grid.matrix - 1) * spacing / 2.0
    if grid.coverage is Coverage.NO_KIDNEYS:
        z0 = max(z0, high + 15.0)  # the lowest slice's sub-slices stay clear of the kidneys
    origin = (
        round(float(offset[0]) - half, 4),
        round(float(offset[1]) - half, 4),
        round(float(z0), 4),
    )
    return VolumeGeometry(
        origin=origin,
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        spacing_mm=(float(step), spacing, spacing),
        shape=(slices, grid.matrix, grid.matrix),
    )


def _box_xyz(grid: _SampleGrid, box: tuple[slice, slice, slice]) -> list[np.ndarray]:
    """float32 x, y, z of the grid's points in an index box, each (K, J, I)."""
    k = np.arange(box[0].start, box[0].stop, dtype=float)[:, None, None]
    j = np.arange(box[1].start, box[1].stop, dtype=float)[None, :, None]
    i = np.arange(box[2].start, box[2].stop, dtype=float)[None, None, :]
    return [
        (grid.origin[c] + k * grid.steps[0, c]).astype(np.float32)
        + (j * grid.steps[1, c]).astype(np.float32)
        + (i * grid.steps[2, c]).astype(np.float32)
        for c in range(3)
    ]


def _paint(grid: _SampleGrid, k0: int, k1: int, anatomy: CtAnatomy) -> np.ndarray:
    """Tissue labels of the grid's slices ``k0:k1``: layers in order, then the kidneys."""
    slab = _SampleGrid(grid.origin + k0 * grid.steps[0], grid.steps, (k1 - k0, *grid.shape[1:]))
    labels = np.zeros(slab.shape, dtype=np.uint8)
    shapes: list[tuple[CtTissue | None, Shape]] = [(ly.tissue, ly.shape) for ly in anatomy.layers]
    shapes += [(None, kidney) for kidney in anatomy.kidneys.values()]
    if anatomy.graft is not None:
        shapes.append((None, anatomy.graft))
    for tissue, shape in shapes:
        box = slab.index_box(*shape.bounds())
        if box is None:
            continue
        x, y, z = _box_xyz(slab, box)
        view = labels[box]
        if tissue is None and isinstance(shape, (RenalKidney, ScarredKidney)):
            painted = shape.tissues_xyz(x, y, z)
            inside = painted != 0
            view[inside] = painted[inside]
        else:
            view[_contains_xyz(shape, x, y, z)] = tissue
    return labels


def _texture(
    tissues: np.ndarray,
    geometry: VolumeGeometry,
    settings: CtRenderSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """A unit-variance smooth Gaussian field times each voxel's tissue texture amplitude."""
    amplitude = np.zeros(max(CtTissue) + 1, dtype=np.float32)
    for tissue, value in CT_TEXTURE_HU.items():
        amplitude[tissue] = value * settings.texture_scale
    sigma = [settings.texture_correlation_mm / s for s in geometry.spacing_mm]
    field_ = ndi.gaussian_filter(rng.standard_normal(geometry.shape, dtype=np.float32), sigma)
    field_ /= max(float(field_.std()), 1e-12)
    return amplitude[tissues] * field_


def _noise(
    shape: tuple[int, int, int], settings: CtRenderSettings, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian noise of the set sigma, correlated in-plane by ``noise_correlation_px``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if settings.noise_correlation_px > 0:
        s = settings.noise_correlation_px
        noise = ndi.gaussian_filter(noise, (0.0, s, s))
        noise /= max(float(noise.std()), 1e-12)
    return noise * np.float32(settings.noise_sigma_hu)


def _ground_truth(
    anatomy: CtAnatomy, geometry: VolumeGeometry, tissues: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[Side, KidneyTruth]]:
    """Kidney outlines at voxel centres (1 right, 2 left), their cortex, and volumes."""
    grid = _SampleGrid.of(geometry)
    kidneys = np.zeros(geometry.shape, dtype=np.uint8)
    for side, kidney in anatomy.kidneys.items():
        box = grid.index_box(*kidney.bounds())
        if box is None:
            continue
        view = kidneys[box]
        view[kidney.contains_xyz(*_box_xyz(grid, box))] = side
    cortex = np.where((tissues == CtTissue.CORTEX) & (kidneys > 0), kidneys, 0).astype(np.uint8)
    voxel_ml = geometry.voxel_volume_ml
    truth = {
        side: KidneyTruth(
            side=side,
            analytic_volume_ml=kidney.analytic_volume_ml,
            volume_ml=float(np.count_nonzero(kidneys == side)) * voxel_ml,
            cortex_volume_ml=float(np.count_nonzero(cortex == side)) * voxel_ml,
            analytic_cortex_ml=kidney.cortex_volume_ml(),
        )
        for side, kidney in anatomy.kidneys.items()
    }
    return kidneys, cortex, truth


def _graft_truth(
    anatomy: CtAnatomy, geometry: VolumeGeometry, tissues: np.ndarray
) -> tuple[np.ndarray, KidneyTruth | None]:
    """The graft's outline at voxel centres (bool) and its volumes (cortex included)."""
    graft = np.zeros(geometry.shape, dtype=bool)
    if anatomy.graft is None or anatomy.graft_side is None:
        return graft, None
    grid = _SampleGrid.of(geometry)
    box = grid.index_box(*anatomy.graft.bounds())
    if box is not None:
        graft[box] = anatomy.graft.contains_xyz(*_box_xyz(grid, box))
    voxel_ml = geometry.voxel_volume_ml
    cortex = np.count_nonzero(graft & (tissues == CtTissue.CORTEX))
    return graft, KidneyTruth(
        side=anatomy.graft_side,
        analytic_volume_ml=anatomy.graft.analytic_volume_ml,
        volume_ml=float(np.count_nonzero(graft)) * voxel_ml,
        cortex_volume_ml=float(cortex) * voxel_ml,
        analytic_cortex_ml=anatomy.graft.cortex_volume_ml(),
    )
