"""Synthetic kidney-graft MR phantom: rendering of the DCE and T2 series.

Everything is defined in patient coordinates (mm, DICOM LPS: +x towards the patient's
left, +y posterior, +z superior) and sampled at voxel centres of a
:class:`VolumeGeometry`, so the same seed gives the same patient in every orientation.
numpy does the maths; ``scipy.ndimage`` blurs (point-spread function) and interpolates.

The phantom's parts live in their own modules, whose public names this one re-exports:

- :mod:`service.synthetic.tissues`: tissue labels and signals (:data:`TISSUE_SIGNALS`);
- :mod:`service.synthetic.shapes`: analytic shapes and the :class:`Kidney`;
- :mod:`service.synthetic.anatomy`: the phantom patient (:func:`make_anatomy`);
- :mod:`service.synthetic.geometry`: voxel grids (:class:`VolumeGeometry`) and motion;
- :mod:`service.synthetic.protocol`: acquisition protocols (:func:`paper_protocol`);
- :mod:`service.synthetic.formation`: :class:`RenderSettings` and the low-level image
  formation (texture, bias field, blur, Rician noise).

This module paints the anatomy on the grids and renders the images.

Image formation (:func:`synthesize_mr`)
---------------------------------------
1. *Labels* at the voxel centres (the DCE ground truth: voxel centre inside the kidney).
   Shapes are culled by their bounding boxes mapped to voxel-index boxes, and everything
   is rendered in slabs of about a million voxels, in float32.
2. *Texture*: each tissue's signal is multiplied by ``1 + a_t * n_t(x)``, ``a_t`` its
   ``texture`` amplitude (a few %) and ``n_t`` a unit-variance Gaussian random field in
   patient space (white noise smoothed by a Gaussian of
   :attr:`RenderSettings.texture_correlation_mm`, 6 mm).
   The ``n_t`` are fixed mixtures of three shared fields (white noise on a 3 mm lattice,
   Gaussian-smoothed, seeded by the anatomy seed), evaluated on a lattice of about 3 mm in
   each grid and interpolated linearly: the same texture in every DCE phase and, moved with
   the patient, in the T2. Layers also carry a gain (e.g. bowel loops 0.7-1.15).
3. *Partial volume*: the DCE is blurred by a Gaussian point-spread function (sigma
   :attr:`RenderSettings.psf_sigma_in_plane` voxels in-plane and
   :attr:`RenderSettings.psf_sigma_through_plane` through-plane, the slice profile of the
   3D acquisition); the thick T2 slices average
   :attr:`RenderSettings.t2_sub_slices` sub-slice samples across their thickness (a
   rectangular slice profile) and are blurred in-plane.
4. *Bias field*: a smooth multiplicative field per series, ``exp`` of a random quadratic
   polynomial of patient position normalised so that it stays within
   ``1 / (1 + b)`` and ``1 + b`` over the whole body (``b`` =
   :attr:`RenderSettings.bias_amplitude`, 25 %): a large field of view sees all of it,
   a small one around the kidney a fraction.
5. *Rician noise*: complex Gaussian noise, then the magnitude. Its sigma is set by the
   kidney's SNR (:attr:`RenderSettings.dce_snr`: late-phase kidney signal / sigma, 20;
   :attr:`RenderSettings.t2_snr`: T2 kidney signal / sigma, 20) at a reference voxel of the
   paper's protocol (DCE 0.86 x 0.86 x 2.2 mm, T2 0.84 x 0.84 x 5.5 mm), and scales
   inversely with the voxel volume: the small default grid (2.5 x 1.5 x 1.5 mm) has an SNR
   about 3.5 times higher.

T2 misalignment
---------------
The T2 is acquired minutes before the DCE: the patient moved by a seeded
:class:`RigidMotion` (up to 3 degrees about the kidney centre and 4 mm per axis) and the
soft tissues deformed by a :class:`SmoothDeformation`, a sum of four Gaussian
displacement bumps (width 25-45 mm, centred within 50 mm of the kidney per axis) scaled
so that no point moves by more than :attr:`RenderSettings.t2_deformation_mm` (3 mm); the
rigid motion and the deformation are drawn from independent streams of the seed, so
``t2_motion`` does not depend on the deformation settings. The T2 voxel at scanner
position ``y`` shows the anatomy at DCE position
``deformation.source(motion.apply_inverse(y))`` (see :meth:`SyntheticMR.t2_source_points`);
the renderer interpolates the displacement from a 10 mm lattice (error about 0.1 mm).

Speed
-----
A paper-protocol study (4 DCE phases of 512 x 512 x 64-88 voxels and the T2) renders in
about 11 s on two CPU cores, with a peak resident memory of about 0.9 GB; the default
(24, 96, 96) study in about 0.3 s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.synthetic.anatomy import (
    BODY_CENTRE_XY,
    KIDNEY_SEMI_AXES_MM,
    Anatomy,
    Layer,
    make_anatomy,
)
from service.synthetic.formation import (
    _DCE_REFERENCE_VOXEL_MM,
    _SNR_PHASE_S,
    _T2_REFERENCE_VOXEL_MM,
    _TEXTURE_LATTICE_MM,
    RenderSettings,
    _bias_function,
    _blur,
    _GridField,
    _kidney_signal,
    _lookup,
    _noise_sigma,
    _rician,
    _Texture,
    _to_uint16,
)
from service.synthetic.geometry import (
    GridCentre,
    Orientation,
    RigidMotion,
    SmoothDeformation,
    VolumeGeometry,
    _SampleGrid,
)
from service.synthetic.protocol import (
    PAPER_RANGES,
    T2_SLICE_THICKNESS_MM,
    AcquisitionProtocol,
    ProtocolRanges,
    _acquisition,
    paper_protocol,
)
from service.synthetic.shapes import (
    Capsule,
    Ellipsoid,
    EllipticCylinder,
    Kidney,
    Shape,
    _as_matrix,
    _as_vector,
    _rotation,
)
from service.synthetic.shapes import Matrix as Matrix  # re-exported, as before the split
from service.synthetic.shapes import Vector as Vector  # re-exported, as before the split
from service.synthetic.tissues import (
    _KIDNEY_TISSUES,
    DIXON_SIGNALS,
    TISSUE_SIGNALS,
    EnhancementCurve,
    Tissue,
    TissueSignal,
    default_phase_times,
)

__all__ = [
    "BODY_CENTRE_XY",
    "DIXON_IMAGES",
    "DIXON_SIGNALS",
    "KIDNEY_SEMI_AXES_MM",
    "PAPER_RANGES",
    "T2_SLICE_THICKNESS_MM",
    "TISSUE_SIGNALS",
    "AcquisitionProtocol",
    "Anatomy",
    "Capsule",
    "Ellipsoid",
    "EllipticCylinder",
    "EnhancementCurve",
    "GridCentre",
    "Kidney",
    "Layer",
    "Orientation",
    "ProtocolRanges",
    "RenderSettings",
    "RigidMotion",
    "Shape",
    "SmoothDeformation",
    "SyntheticMR",
    "Tissue",
    "TissueSignal",
    "VolumeGeometry",
    "default_phase_times",
    "make_anatomy",
    "paper_protocol",
    "synthesize_mr",
]

logger = logging.getLogger(__name__)

#: The images of a two-point Dixon series: in-phase, opposed-phase, water, fat.
DIXON_IMAGES: tuple[str, ...] = ("in", "opp", "water", "fat")


# --------------------------------------------------------------------------- painting


def _chunks(
    n_slices: int, slice_voxels: int, *, multiple: int = 1, target: int = 1 << 20
) -> Iterator[tuple[int, int]]:
    """Slice ranges of about ``target`` voxels, a whole ``multiple`` of slices each."""
    per_chunk = max(1, target // max(1, slice_voxels) // multiple) * multiple
    for start in range(0, n_slices, per_chunk):
        yield start, min(n_slices, start + per_chunk)


def _shape_test(shape: Shape, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    fast = getattr(shape, "contains_xyz", None)
    if fast is not None:
        return fast(x, y, z)
    return shape.contains(np.stack([x, y, z], axis=-1))


class _Painter:
    """Paints an :class:`Anatomy` on a :class:`_SampleGrid`, slab by slab.

    Each voxel gets a region id: 0 for air, ``n`` for ``layers[n - 1]``, then cortex and
    medulla; :attr:`tissues` and :attr:`gains` map ids to labels and signal gains.
    """

    def __init__(self, anatomy: Anatomy, grid: _SampleGrid, margin_mm: float = 0.0) -> None:
        self.anatomy = anatomy
        self.boxes = [grid.index_box(*layer.shape.bounds(), margin_mm) for layer in anatomy.layers]
        self.kidney_box = grid.index_box(*anatomy.kidney.bounds(), margin_mm)
        n = len(anatomy.layers)
        if n + 4 > 256:
            raise ValueError(f"at most 252 layers can be painted, got {n}")
        self.cortex, self.medulla, self.sinus = n + 1, n + 2, n + 3
        self.tissues = np.array(
            [Tissue.AIR, *(layer.tissue for layer in anatomy.layers), *_KIDNEY_TISSUES,
             Tissue.FAT],
            dtype=np.uint8,
        )
        self.gains = np.array(
            [1.0, *(layer.gain for layer in anatomy.layers), 1.0, 1.0, 1.0], dtype=np.float32
        )

    @staticmethod
    def _within(
        box: tuple[slice, slice, slice] | None, k0: int, k1: int
    ) -> tuple[slice, slice, slice] | None:
        if box is None or box[0].stop <= k0 or box[0].start >= k1:
            return None
        slices = slice(max(box[0].start, k0) - k0, min(box[0].stop, k1) - k0)
        return (slices, box[1], box[2])

    def paint(self, xyz: Sequence[np.ndarray], k0: int) -> np.ndarray:
        """Region ids (uint8) of the slab starting at slice ``k0`` with coordinates ``xyz``."""
        x, y, z = xyz
        k1 = k0 + x.shape[0]
        ids = np.zeros(x.shape, dtype=np.uint8)
        for n, (layer, box) in enumerate(zip(self.anatomy.layers, self.boxes, strict=True), 1):
            sub = self._within(box, k0, k1)
            if sub is None:
                continue
            inside = _shape_test(layer.shape, x[sub], y[sub], z[sub])
            ids[sub][inside] = n
        sub = self._within(self.kidney_box, k0, k1)
        if sub is not None:
            kidney = self.anatomy.kidney.tissues_xyz(x[sub], y[sub], z[sub])
            region = ids[sub]
            region[kidney == Tissue.CORTEX] = self.cortex
            region[kidney == Tissue.MEDULLA] = self.medulla
            region[kidney == Tissue.FAT] = self.sinus
        return ids


@dataclass
class _Rendered:
    """Labels and texture-and-gain factors of a grid, before any signal is chosen."""

    labels: np.ndarray
    factors: np.ndarray


def _paint_grid(
    anatomy: Anatomy,
    grid: _SampleGrid,
    texture: _Texture | None,
    displacement: _GridField | None = None,
    margin_mm: float = 0.0,
    texture_source: Callable[[np.ndarray], np.ndarray] | None = None,
    multiple: int = 1,
) -> Iterator[tuple[int, int, _Rendered]]:
    """Yield ``(k0, k1, rendered)`` slabs of ``grid``, whole multiples of ``multiple`` slices.

    ``displacement`` (3 channels, mm) is added to the voxel positions; the texture is
    sampled at ``texture_source`` of the lattice positions (default: as they are).
    """
    painter = _Painter(anatomy, grid, margin_mm)
    texture_field = None
    if texture is not None:
        source = texture_source or (lambda p: p)
        texture_field = _GridField.sample(
            grid, lambda p: texture.at(source(p)), _TEXTURE_LATTICE_MM
        )
    slice_voxels = grid.shape[1] * grid.shape[2]
    for k0, k1 in _chunks(grid.shape[0], slice_voxels, multiple=multiple):
        xyz = grid.coordinates(k0, k1)
        if displacement is not None:
            shift = displacement.block(k0, k1)
            for c in range(3):
                xyz[c] += shift[c]
        ids = painter.paint(xyz, k0)
        labels = painter.tissues[ids]
        factors = painter.gains[ids]
        if texture is not None and texture_field is not None:
            factors *= texture.factors(labels, texture_field.block(k0, k1))
        yield k0, k1, _Rendered(labels, factors)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class SyntheticMR:
    """Synthetic DCE and T2 images of one phantom, before any DICOM encoding.

    Attributes
    ----------
    anatomy : Anatomy
        The phantom patient.
    dce_geometry : VolumeGeometry
        Grid of the DCE series.
    dce : numpy.ndarray
        uint16, (phases, slices, rows, columns).
    phase_times_s : tuple of float
        Seconds after injection of each DCE phase.
    dce_labels : numpy.ndarray
        uint8 :class:`Tissue` label of each DCE voxel (at its centre).
    kidney_mask : numpy.ndarray
        uint8 kidney mask in the DCE grid (voxel centres inside the kidney).
    t2_geometry, t2, t2_motion
        Grid, uint16 image (slices, rows, columns) and the rigid patient motion relative
        to the DCE of the T2 series; ``None`` without T2.
    t2_deformation : SmoothDeformation or None
        Non-rigid part of the T2 misalignment (see :meth:`t2_source_points`); ``None``
        without T2 or with ``t2_deformation_mm=0``.
    protocol : AcquisitionProtocol or None
        The acquisition rendered (grids and kidney scale).
    t2_kidney_mask : numpy.ndarray or None
        uint8 kidney mask in the T2 grid (at least half of the slice's thickness inside
        the kidney at the voxel's in-plane centre), ``None`` without T2.
    dixon : mapping of str to numpy.ndarray or None
        Pre-contrast T1 Dixon images on the DCE grid, uint16, by :data:`DIXON_IMAGES`
        name; ``None`` unless asked for.
    """

    anatomy: Anatomy
    dce_geometry: VolumeGeometry
    dce: np.ndarray
    phase_times_s: tuple[float, ...]
    dce_labels: np.ndarray
    kidney_mask: np.ndarray
    t2_geometry: VolumeGeometry | None
    t2: np.ndarray | None
    t2_motion: RigidMotion | None
    t2_deformation: SmoothDeformation | None = None
    protocol: AcquisitionProtocol | None = field(default=None, repr=False)
    t2_kidney_mask: np.ndarray | None = field(default=None, repr=False)
    dixon: Mapping[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def t2_truth_volume_ml(self) -> float | None:
        """Volume of the kidney mask in the T2 grid, ml; ``None`` without T2."""
        if self.t2_kidney_mask is None or self.t2_geometry is None:
            return None
        return float(self.t2_kidney_mask.sum()) * self.t2_geometry.voxel_volume_ml

    @property
    def truth_volume_ml(self) -> float:
        """Volume of the voxelised kidney mask, ml."""
        return float(self.kidney_mask.sum()) * self.dce_geometry.voxel_volume_ml

    @property
    def analytic_volume_ml(self) -> float:
        """Exact kidney volume of the analytic shape, ml."""
        return self.anatomy.kidney.analytic_volume_ml

    def t2_source_points(self, points: np.ndarray) -> np.ndarray:
        """DCE-frame positions of the anatomy seen at T2-frame ``points`` (..., 3)."""
        if self.t2_motion is None:
            raise ValueError("this phantom has no T2 series")
        unmoved = self.t2_motion.apply_inverse(np.asarray(points, dtype=float))
        if self.t2_deformation is None:
            return unmoved
        return self.t2_deformation.source(unmoved)

    def dce_to_t2(self, points: np.ndarray) -> np.ndarray:
        """Where the anatomy at DCE-frame ``points`` appears in the T2 (inverse of the above)."""
        if self.t2_motion is None:
            raise ValueError("this phantom has no T2 series")
        p = np.asarray(points, dtype=float)
        if self.t2_deformation is not None:
            p = self.t2_deformation.inverse_source(p)
        return self.t2_motion.apply(p)


def _render_dce(
    anatomy: Anatomy,
    geometry: VolumeGeometry,
    times: Sequence[float],
    texture: _Texture | None,
    settings: RenderSettings,
    bias_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """DCE phases (uint16), voxel-centre labels, texture factors and the bias field."""
    grid = _SampleGrid.of(geometry)
    labels = np.empty(geometry.shape, dtype=np.uint8)
    factors = np.empty(geometry.shape, dtype=np.float32)
    for k0, k1, slab in _paint_grid(anatomy, grid, texture):
        labels[k0:k1] = slab.labels
        factors[k0:k1] = slab.factors
    bias = _bias_function(bias_rng, anatomy.kidney.centre, settings.bias_amplitude)
    bias_field = None
    if settings.bias_amplitude > 0:
        bias_field = _GridField.sample(grid, bias, 20.0).block(0, geometry.shape[0])[0]
    sigma = _noise_sigma(
        settings.dce_snr,
        _kidney_signal(lambda s: s.dce(_SNR_PHASE_S)),
        _DCE_REFERENCE_VOXEL_MM,
        geometry.spacing_mm,
    )
    psf = (
        settings.psf_sigma_through_plane,
        settings.psf_sigma_in_plane,
        settings.psf_sigma_in_plane,
    )
    dce = np.empty((len(times), *geometry.shape), dtype=np.uint16)
    for p, time_s in enumerate(times):
        table = _lookup({t: s.dce(time_s) for t, s in TISSUE_SIGNALS.items()})
        image = table[labels]
        image *= factors
        _blur(image, psf)
        if bias_field is not None:
            image *= bias_field
        dce[p] = _to_uint16(_rician(image, sigma, noise_rng) if sigma > 0 else image)
    return dce, labels, factors, bias_field


def _render_dixon(
    labels: np.ndarray,
    factors: np.ndarray,
    geometry: VolumeGeometry,
    settings: RenderSettings,
    bias_field: np.ndarray | None,
    noise_rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Pre-contrast two-point Dixon images (uint16) on the DCE grid.

    Water and fat signals are blurred apart and combined after, so the opposed-phase image
    shows the dark line of the fat-water boundaries; same bias field as the DCE (one 3D
    gradient-echo coil setting); noise at the DCE's SNR on the kidney's water signal.
    """
    psf = (settings.psf_sigma_through_plane, settings.psf_sigma_in_plane,
           settings.psf_sigma_in_plane)
    parts = []
    for index in (0, 1):
        table = _lookup({t: s[index] for t, s in DIXON_SIGNALS.items()})
        part = table[labels]
        part *= factors
        _blur(part, psf)
        if bias_field is not None:
            part *= bias_field
        parts.append(part)
    water, fat = parts
    kidney = float(np.mean([DIXON_SIGNALS[t][0] for t in _KIDNEY_TISSUES]))
    sigma = _noise_sigma(settings.dce_snr, kidney, _DCE_REFERENCE_VOXEL_MM, geometry.spacing_mm)
    clean = {"in": water + fat, "opp": np.abs(water - fat), "water": water, "fat": fat}
    return {name: _to_uint16(_rician(clean[name], sigma, noise_rng) if sigma > 0
                             else clean[name]) for name in DIXON_IMAGES}


def _render_t2(
    anatomy: Anatomy,
    geometry: VolumeGeometry,
    motion: RigidMotion,
    deformation: SmoothDeformation | None,
    texture: _Texture | None,
    settings: RenderSettings,
    bias_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The T2 image (uint16): sub-slices through the motion and deformation, averaged;
    and its kidney mask (uint8: at least half of the sub-slices in the kidney)."""
    n_sub = settings.t2_sub_slices
    scanner = _SampleGrid.of(geometry)
    fine = scanner.sub_slices(n_sub).seen_through(motion)
    displacement = margin = source = None
    if deformation is not None:
        displacement = _GridField.sample(fine, deformation.displacement, 10.0)
        margin, source = deformation.bound_mm, deformation.source
    table = _lookup({t: s.t2w for t, s in TISSUE_SIGNALS.items()})
    clean = np.empty(geometry.shape, dtype=np.float32)
    kidney = np.empty(geometry.shape, dtype=np.uint8)
    rows, columns = geometry.shape[1:]
    slabs = _paint_grid(anatomy, fine, texture, displacement, margin or 0.0, source, multiple=n_sub)
    for k0, k1, slab in slabs:
        signal = table[slab.labels] * slab.factors
        clean[k0 // n_sub : k1 // n_sub] = signal.reshape(-1, n_sub, rows, columns).mean(axis=1)
        inside = np.isin(slab.labels, _KIDNEY_TISSUES).reshape(-1, n_sub, rows, columns)
        kidney[k0 // n_sub : k1 // n_sub] = 2 * inside.sum(axis=1) >= n_sub
    _blur(clean, (0.0, settings.psf_sigma_in_plane, settings.psf_sigma_in_plane))
    bias = _bias_function(bias_rng, anatomy.kidney.centre, settings.bias_amplitude)
    if settings.bias_amplitude > 0:
        clean *= _GridField.sample(scanner, bias, 20.0).block(0, geometry.shape[0])[0]
    sigma = _noise_sigma(
        settings.t2_snr,
        _kidney_signal(lambda s: s.t2w),
        _T2_REFERENCE_VOXEL_MM,
        geometry.spacing_mm,
    )
    return _to_uint16(_rician(clean, sigma, noise_rng) if sigma > 0 else clean), kidney


def _random_motion(rng: np.random.Generator, centre: Sequence[float]) -> RigidMotion:
    """Up to 3 degrees about ``centre`` and 4 mm per axis."""
    return RigidMotion(
        rotation=_as_matrix(_rotation(rng.normal(size=3), float(rng.uniform(-3.0, 3.0)))),
        translation_mm=_as_vector(rng.uniform(-4.0, 4.0, size=3)),
        centre=_as_vector(centre),
    )


def synthesize_mr(
    *,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    spacing_mm: tuple[float, float, float] | None = None,
    orientation: Orientation | str = Orientation.AXIAL,
    phases: int = 4,
    phase_times_s: Sequence[float] | None = None,
    include_t2: bool = True,
    kidney_scale: float | None = None,
    protocol: AcquisitionProtocol | None = None,
    t2_shape: tuple[int, int, int] | None = None,
    t2_spacing_mm: tuple[float, float, float] | None = None,
    grid_centre: GridCentre | str | None = None,
    settings: RenderSettings | None = None,
    include_dce: bool = True,
    dixon: bool = False,
    lymphocele: bool = False,
    scan_draw: int = 0,
    renal_sinus: bool = False,
) -> SyntheticMR:
    """Render the DCE phases (and a T2 image) of a synthetic kidney-graft study.

    Parameters
    ----------
    seed : int
        Seeds anatomy variations, texture, bias fields, noise and the T2 motion and
        deformation independently.
    shape : tuple of int, optional
        DCE (slices, rows, columns); default (24, 96, 96).
    spacing_mm : tuple of float, optional
        DCE (slice step, row spacing, column spacing), mm; default (2.5, 1.5, 1.5).
    orientation : Orientation or str
        Slice orientation of both series.
    phases : int
        Number of DCE phases; ignored when ``phase_times_s`` is given.
    phase_times_s : sequence of float, optional
        Seconds after injection of each phase; default :func:`default_phase_times`.
    include_t2 : bool
        Also render the T2 series (centred like the DCE, the patient moved by a seeded
        rigid motion of up to 3 degrees and 4 mm per axis and a smooth deformation).
    kidney_scale : float, optional
        Factor on the kidney's semi-axes; default 1.
    protocol : AcquisitionProtocol, optional
        Grids of both series and kidney scale, e.g. from :func:`paper_protocol`; then
        ``shape``, ``spacing_mm``, ``kidney_scale``, ``t2_shape`` and ``t2_spacing_mm``
        must be left out.
    t2_shape : tuple of int, optional
        T2 (slices, rows, columns); default: the DCE's rows and columns and enough
        slices to cover the DCE slab plus one slice on each side.
    t2_spacing_mm : tuple of float, optional
        T2 (slice thickness, row spacing, column spacing); default
        (:data:`T2_SLICE_THICKNESS_MM`, DCE row spacing, DCE column spacing).
    grid_centre : GridCentre or str, optional
        ``"kidney"`` or ``"body"``; default ``"body"`` with a protocol (clinical field of
        view), ``"kidney"`` otherwise.
    settings : RenderSettings, optional
        Image formation (texture, point-spread function, bias, noise, deformation);
        default ``RenderSettings()``.
    include_dce : bool
        Render the DCE phases; ``False`` (gadolinium withheld) gives ``dce`` with no phase
        and no phase times, the DCE grid still carrying the labels, the kidney mask and
        the Dixon images.
    dixon : bool
        Also render a pre-contrast T1 two-point Dixon series on the DCE grid
        (:attr:`SyntheticMR.dixon`; its noise has a stream of its own, so the other images
        of the seed do not change).
    lymphocele : bool
        A lymphocele against the graft (:func:`~service.synthetic.anatomy.make_anatomy`).
    scan_draw : int
        0: the bias fields, noise, T2 motion and deformation of the seed. Another value
        draws those again (the anatomy and texture stay): the same patient scanned again.
    renal_sinus : bool
        The graft with its renal sinus fat, outside the kidney mask
        (:class:`~service.synthetic.shapes.Kidney`); off by default.

    Returns
    -------
    SyntheticMR
        Images (uint16), labels, kidney mask and geometry.

    Raises
    ------
    ValueError
        For an unknown orientation or grid centre, fewer than one phase, invalid sizes, or
        grid arguments given together with a protocol.
    """
    orientation = Orientation(orientation)
    settings = settings or RenderSettings()
    acquisition = _acquisition(
        protocol,
        shape=shape,
        spacing_mm=spacing_mm,
        kidney_scale=kidney_scale,
        t2_shape=t2_shape,
        t2_spacing_mm=t2_spacing_mm,
    )
    centring = GridCentre(grid_centre or (GridCentre.BODY if protocol else GridCentre.KIDNEY))
    times = tuple(float(t) for t in (phase_times_s or default_phase_times(phases)))
    if not include_dce:
        times = ()
    entropy = [seed, 2, scan_draw] if scan_draw else [seed, 2]
    bias_seed, noise_seed, motion_seed, deformation_seed = np.random.SeedSequence(
        entropy).spawn(4)
    anatomy = make_anatomy(seed, kidney_scale=acquisition.kidney_scale, lymphocele=lymphocele,
                           renal_sinus=renal_sinus)
    kidney = anatomy.kidney
    texture = _Texture.generate(seed, anatomy, settings)
    noise_rng = np.random.default_rng(noise_seed)
    bias_rng = np.random.default_rng(bias_seed)
    in_plane_centre = (*BODY_CENTRE_XY, kidney.centre[2]) if centring is GridCentre.BODY else None

    dce_geometry = VolumeGeometry.centred(
        kidney,
        orientation=orientation,
        shape=acquisition.dce_shape,
        spacing_mm=acquisition.dce_spacing_mm,
        in_plane_centre=in_plane_centre,
    )
    dce, labels, factors, bias_field = _render_dce(
        anatomy, dce_geometry, times, texture, settings, bias_rng, noise_rng
    )
    mask = np.isin(labels, _KIDNEY_TISSUES).astype(np.uint8)
    dixon_images = None
    if dixon:
        dixon_rng = np.random.default_rng(np.random.SeedSequence([seed, 6]))
        dixon_images = _render_dixon(labels, factors, dce_geometry, settings, bias_field,
                                     dixon_rng)
    del factors

    t2_geometry = t2 = motion = deformation = t2_mask = None
    if include_t2:
        motion = _random_motion(np.random.default_rng(motion_seed), kidney.centre)
        if settings.t2_deformation_mm > 0:
            deformation = SmoothDeformation.random(
                np.random.default_rng(deformation_seed),
                around=kidney.centre,
                max_mm=settings.t2_deformation_mm,
            )
        t2_geometry = VolumeGeometry.centred(
            kidney,
            orientation=orientation,
            shape=acquisition.t2_shape,
            spacing_mm=acquisition.t2_spacing_mm,
            in_plane_centre=in_plane_centre,
        )
        t2, t2_mask = _render_t2(
            anatomy, t2_geometry, motion, deformation, texture, settings, bias_rng, noise_rng
        )

    return SyntheticMR(
        anatomy=anatomy,
        dce_geometry=dce_geometry,
        dce=dce,
        phase_times_s=times,
        dce_labels=labels,
        kidney_mask=mask,
        t2_geometry=t2_geometry,
        t2=t2,
        t2_motion=motion,
        t2_deformation=deformation,
        protocol=acquisition,
        t2_kidney_mask=t2_mask,
        dixon=dixon_images,
    )
