"""Realism of the synthetic studies: paper protocol, neighbours, texture, partial volume,
T2 deformation and noise (small volumes; each test can fail)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from service.synthetic import (
    BODY_CENTRE_XY,
    PAPER_RANGES,
    TISSUE_SIGNALS,
    AcquisitionProtocol,
    GridCentre,
    Orientation,
    ProtocolRanges,
    RenderSettings,
    SmoothDeformation,
    SyntheticMR,
    Tissue,
    VolumeGeometry,
    make_anatomy,
    paper_protocol,
    synthesize_mr,
    write_mr_study,
)
from service.synthetic.phantom import Capsule

KIDNEY = (Tissue.CORTEX, Tissue.MEDULLA)
BOWEL = (Tissue.BOWEL, Tissue.BOWEL_CONTENT)
#: Noise-free, bias-free: what remains is texture, point-spread function and anatomy.
CLEAN = RenderSettings(bias_amplitude=0.0, dce_snr=None, t2_snr=None)
#: A coarse paper-like protocol: large field of view, few voxels (fast).
COARSE_RANGES = ProtocolRanges(
    matrix=96, dce_pixel_mm=(4.0, 4.5), t2_pixel_mm=(4.0, 5.0), dce_slices=(64, 88)
)


def _slab(geometry: VolumeGeometry) -> tuple[float, float]:
    """Extent of a grid's slices along its normal (patient mm, projected on the normal)."""
    first = float(np.asarray(geometry.origin) @ geometry.normal)
    step = geometry.spacing_mm[0]
    return first - step / 2.0, first + (geometry.shape[0] - 0.5) * step


def _touching(mr: SyntheticMR, tissues: tuple[Tissue, ...]) -> int:
    """Voxels of ``tissues`` face-adjacent to the kidney in the DCE labels."""
    kidney = mr.kidney_mask.astype(bool)
    shell = ndi.binary_dilation(kidney) & ~kidney
    return int(np.isin(mr.dce_labels[shell], tissues).sum())


def _renal_vessel_mask(mr: SyntheticMR, tissue: Tissue) -> np.ndarray:
    """DCE voxels of ``tissue`` inside the vessel layer that starts at the hilum."""
    hilum = mr.anatomy.kidney.hilum
    (vessel,) = [
        layer.shape
        for layer in mr.anatomy.layers
        if layer.tissue is tissue
        and isinstance(layer.shape, Capsule)
        and np.linalg.norm(np.asarray(layer.shape.start) - hilum) < 15.0
    ]
    inside = vessel.contains(mr.dce_geometry.points())
    return inside & (mr.dce_labels == tissue)


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("seed", range(12))
def test_paper_protocol_draws_inside_the_paper_ranges(seed: int) -> None:
    protocol = paper_protocol(seed)
    r = PAPER_RANGES
    slices, rows, columns = protocol.dce_shape
    step, row_mm, column_mm = protocol.dce_spacing_mm
    assert (rows, columns) == (512, 512)
    assert r.dce_slices[0] <= slices <= r.dce_slices[1]
    assert r.dce_pixel_mm[0] <= row_mm == column_mm <= r.dce_pixel_mm[1]
    assert r.dce_slice_mm[0] <= step <= r.dce_slice_mm[1]
    t2_slices, t2_rows, t2_columns = protocol.t2_shape
    t2_step, t2_row_mm, t2_column_mm = protocol.t2_spacing_mm
    assert (t2_rows, t2_columns) == (512, 512)
    assert r.t2_pixel_mm[0] <= t2_row_mm == t2_column_mm <= r.t2_pixel_mm[1]
    assert r.t2_slice_mm[0] <= t2_step <= r.t2_slice_mm[1]
    # The T2 slab covers the DCE slab, with at most one slice beyond the paper's range,
    # and only when the range cannot cover it.
    assert protocol.t2_slab_mm >= protocol.dce_slab_mm
    assert r.t2_slices[0] <= t2_slices <= r.t2_slices[1] + 1
    if t2_slices > r.t2_slices[1]:
        assert protocol.dce_slab_mm > r.t2_slices[1] * r.t2_slice_mm[1]
    assert 1.3 <= protocol.kidney_scale <= 1.6
    volume = make_anatomy(seed, kidney_scale=protocol.kidney_scale).kidney.analytic_volume_ml
    assert 100.0 <= volume <= 250.0


def test_paper_protocol_is_reproducible_and_varies() -> None:
    assert paper_protocol(3) == paper_protocol(3)
    drawn = {paper_protocol(seed) for seed in range(20)}
    assert len(drawn) == 20
    assert len({p.dce_shape[0] for p in drawn}) > 5
    assert len({p.t2_spacing_mm for p in drawn}) > 5


def test_the_thickest_dce_slab_is_covered_just_beyond_the_t2_range() -> None:
    ranges = dataclasses.replace(PAPER_RANGES, dce_slices=(88, 88), dce_slice_mm=(2.5, 2.5))
    protocol = paper_protocol(0, ranges=ranges)
    assert protocol.dce_slab_mm == pytest.approx(220.0)
    assert protocol.t2_slab_mm >= 220.0
    assert protocol.t2_spacing_mm[0] <= 6.0
    assert protocol.t2_shape[0] == 37


def test_protocol_excludes_explicit_grids_and_checks_sizes() -> None:
    protocol = paper_protocol(0, ranges=COARSE_RANGES)
    with pytest.raises(ValueError, match="shape, kidney_scale"):
        synthesize_mr(protocol=protocol, shape=(4, 8, 8), kidney_scale=1.0)
    with pytest.raises(ValueError, match="t2_shape"):
        AcquisitionProtocol((4, 8, 8), (1.0, 1.0, 1.0), (0, 8, 8), (5.0, 1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="t2_sub_slices"):
        RenderSettings(t2_sub_slices=0)


@pytest.fixture(scope="module")
def coarse_paper() -> SyntheticMR:
    """A paper-protocol study on a coarse 96 x 96 matrix (same fields of view)."""
    return synthesize_mr(seed=1, protocol=paper_protocol(1, ranges=COARSE_RANGES))


def test_protocol_grids_are_rendered(coarse_paper: SyntheticMR) -> None:
    mr = coarse_paper
    protocol = mr.protocol
    assert protocol is not None and mr.t2_geometry is not None and mr.t2 is not None
    assert mr.dce.shape[1:] == protocol.dce_shape
    assert mr.t2.shape == protocol.t2_shape
    assert mr.dce_geometry.spacing_mm == protocol.dce_spacing_mm
    # The T2 has its own in-plane spacing and slice thickness, and covers the DCE slab.
    assert mr.t2_geometry.spacing_mm == protocol.t2_spacing_mm
    assert mr.t2_geometry.spacing_mm[1] != mr.dce_geometry.spacing_mm[1]
    dce_low, dce_high = _slab(mr.dce_geometry)
    t2_low, t2_high = _slab(mr.t2_geometry)
    assert t2_low <= dce_low + 1e-6 and dce_high <= t2_high + 1e-6
    assert 100.0 <= mr.truth_volume_ml <= 250.0
    assert mr.truth_volume_ml == pytest.approx(mr.analytic_volume_ml, rel=0.05)


def test_large_field_of_view_is_centred_on_the_body(coarse_paper: SyntheticMR) -> None:
    mr = coarse_paper
    for geometry in (mr.dce_geometry, mr.t2_geometry):
        assert geometry is not None
        centre = geometry.centre
        np.testing.assert_allclose(centre[:2], BODY_CENTRE_XY, atol=1e-3)
        # Along the slices: on the kidney, whose whole extent is inside the slab.
        low, high = mr.anatomy.kidney.bounds()
        assert low[2] >= _slab(geometry)[0] and high[2] <= _slab(geometry)[1]
    # The whole body section is in the field of view: air all around it.
    labels = mr.dce_labels
    for edge in (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        assert np.all(edge == Tissue.AIR)


def test_explicit_t2_grid_and_centring() -> None:
    mr = synthesize_mr(
        seed=2,
        shape=(10, 40, 40),
        t2_spacing_mm=(6.0, 1.2, 1.2),
        t2_shape=(6, 50, 50),
        phases=1,
        grid_centre=GridCentre.BODY,
    )
    assert mr.t2_geometry is not None and mr.t2 is not None
    assert mr.t2.shape == (6, 50, 50)
    assert mr.t2_geometry.spacing_mm == (6.0, 1.2, 1.2)
    np.testing.assert_allclose(mr.dce_geometry.centre[:2], BODY_CENTRE_XY, atol=1e-3)
    default = synthesize_mr(seed=2, shape=(10, 40, 40), phases=1)
    assert default.t2_geometry is not None
    assert default.t2_geometry.spacing_mm == (5.0, 1.5, 1.5)
    assert default.t2_geometry.shape == (7, 40, 40)


def test_write_mr_study_takes_a_protocol(tmp_path) -> None:  # noqa: ANN001
    ranges = dataclasses.replace(COARSE_RANGES, matrix=32, dce_slices=(64, 64))
    study = write_mr_study(tmp_path, seed=4, protocol=paper_protocol(4, ranges=ranges), phases=1)
    assert study.truth_mask.GetSize() == (32, 32, 64)
    assert study.t2_deformation is not None
    with pytest.raises(ValueError, match="spacing_mm"):
        write_mr_study(tmp_path / "x", protocol=paper_protocol(4), spacing_mm=(1, 1, 1))


# --------------------------------------------------------------------------- neighbours


@pytest.mark.parametrize("seed", range(5))
def test_bowel_and_muscle_touch_the_graft(seed: int) -> None:
    mr = synthesize_mr(seed=seed, phases=1, include_t2=False, settings=RenderSettings.ideal())
    assert _touching(mr, BOWEL) > 20
    assert _touching(mr, (Tissue.MUSCLE,)) > 20


def test_touching_bowel_enhances_like_the_kidney_late() -> None:
    late = TISSUE_SIGNALS[Tissue.BOWEL].dce(180.0)
    kidney = np.mean([TISSUE_SIGNALS[t].dce(180.0) for t in KIDNEY])
    assert 0.8 * kidney <= late <= kidney
    nephrographic = TISSUE_SIGNALS[Tissue.BOWEL].dce(60.0)
    assert nephrographic < min(TISSUE_SIGNALS[t].dce(60.0) for t in KIDNEY)


@pytest.fixture(scope="module")
def clean_phantom() -> SyntheticMR:
    """Default grid, texture and point-spread function, no noise or bias."""
    return synthesize_mr(seed=5, settings=CLEAN)


def test_renal_vessels_outshine_the_kidney_in_the_arterial_phase(
    clean_phantom: SyntheticMR,
) -> None:
    mr = clean_phantom
    arterial = mr.dce[1].astype(float)  # 20 s
    kidney = arterial[mr.kidney_mask.astype(bool)].mean()
    cortex = arterial[mr.dce_labels == Tissue.CORTEX].mean()
    artery = _renal_vessel_mask(mr, Tissue.ARTERY)
    vein = _renal_vessel_mask(mr, Tissue.VEIN)
    assert artery.sum() > 10 and vein.sum() > 10
    assert arterial[artery].mean() >= 1.5 * kidney
    assert arterial[vein].mean() >= kidney
    assert arterial[vein].mean() >= 0.95 * cortex


# --------------------------------------------------------------------------- texture, PSF


def _interior(mr: SyntheticMR, tissue: Tissue) -> np.ndarray:
    """Voxels of ``tissue`` two voxels away from any other tissue."""
    return ndi.binary_erosion(mr.dce_labels == tissue, iterations=2)


def test_texture_varies_within_tissues_and_is_the_same_in_every_phase(
    clean_phantom: SyntheticMR,
) -> None:
    cortex = _interior(clean_phantom, Tissue.CORTEX)
    assert cortex.sum() > 200
    nephrographic, late = (clean_phantom.dce[p].astype(float)[cortex] for p in (2, 3))
    assert nephrographic.std() / nephrographic.mean() > 0.015
    ratio = late / nephrographic  # one multiplicative texture for every phase
    assert ratio.std() < 0.2 * (nephrographic.std() / nephrographic.mean())
    flat = synthesize_mr(
        seed=5, include_t2=False, settings=dataclasses.replace(CLEAN, texture_scale=0.0)
    )
    flat_cortex = flat.dce[2].astype(float)[_interior(flat, Tissue.CORTEX)]
    assert flat_cortex.std() < 0.2 * nephrographic.std()


def test_texture_is_the_patients_not_the_grids() -> None:
    """The same seed seen by two grids: the same texture at the same patient position."""
    settings = dataclasses.replace(CLEAN, psf_sigma_in_plane=0.0, psf_sigma_through_plane=0.0)
    a = synthesize_mr(seed=6, shape=(12, 48, 48), include_t2=False, settings=settings)
    b = synthesize_mr(
        seed=6,
        shape=(12, 48, 48),
        spacing_mm=(2.5, 1.5, 1.5),
        orientation=Orientation.AXIAL_FLIPPED,
        include_t2=False,
        settings=settings,
    )
    # Axial flipped: the same voxel centres, with rows and slices reversed.
    np.testing.assert_allclose(
        a.dce_geometry.points(), b.dce_geometry.points()[::-1, ::-1], atol=1e-3
    )
    np.testing.assert_allclose(a.dce[2].astype(float), b.dce[2][::-1, ::-1].astype(float), atol=2.0)


def test_partial_volume_gives_intermediate_boundary_values() -> None:
    no_texture = dataclasses.replace(CLEAN, texture_scale=0.0)
    blurred = synthesize_mr(seed=3, include_t2=False, settings=no_texture)
    sharp = synthesize_mr(seed=3, include_t2=False, settings=RenderSettings.ideal())
    np.testing.assert_array_equal(blurred.dce_labels, sharp.dce_labels)
    fat, cortex = (TISSUE_SIGNALS[t].dce(60.0) for t in (Tissue.FAT, Tissue.CORTEX))
    kidney = blurred.kidney_mask.astype(bool)
    outer = ndi.binary_dilation(kidney) & ~kidney & (blurred.dce_labels == Tissue.FAT)
    rim = kidney & ~ndi.binary_erosion(kidney) & (blurred.dce_labels == Tissue.CORTEX)
    assert outer.sum() > 100 and rim.sum() > 100
    margin = 0.05 * (cortex - fat)
    for mr, mixed in ((blurred, True), (sharp, False)):
        image = mr.dce[2].astype(float)  # 60 s
        share = tuple(
            float(np.mean((image[where] > fat + margin) & (image[where] < cortex - margin)))
            for where in (outer, rim)
        )
        if mixed:
            assert min(share) > 0.5, share
        else:
            assert max(share) == 0.0, share


def test_thick_t2_slices_average_sub_slices() -> None:
    base = dataclasses.replace(RenderSettings.ideal(), t2_sub_slices=1, t2_deformation_mm=0.0)
    sharp = synthesize_mr(seed=2, phases=1, settings=base)
    thick = synthesize_mr(seed=2, phases=1, settings=dataclasses.replace(base, t2_sub_slices=5))
    assert sharp.t2 is not None and thick.t2 is not None
    levels = np.unique(sharp.t2)  # one value per tissue and layer gain
    assert len(levels) < 40
    mixed = ~np.isin(thick.t2, levels)
    assert mixed.mean() > 0.02


def test_the_dce_ground_truth_is_the_voxel_centre(clean_phantom: SyntheticMR) -> None:
    mr = clean_phantom
    inside = mr.anatomy.kidney.contains(mr.dce_geometry.points())
    assert np.count_nonzero(inside != mr.kidney_mask.astype(bool)) <= 3
    labels = mr.anatomy.labels(mr.dce_geometry.points())
    assert np.count_nonzero(labels != mr.dce_labels) <= 10


# --------------------------------------------------------------------------- T2 deformation


def test_deformation_is_small_smooth_and_not_rigid() -> None:
    rng = np.random.default_rng(0)
    centre = make_anatomy(0).kidney.centre
    deformation = SmoothDeformation.random(rng, around=centre, max_mm=3.0)
    axes = [np.arange(-100.0, 101.0, 5.0) + c for c in centre]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    moved = deformation.source(points)
    length = np.linalg.norm(moved - points, axis=1)
    assert 2.5 <= length.max() <= 3.0 * 1.02
    # Not rigid (not even affine): the best affine fit leaves millimetre residuals.
    design = np.column_stack([points, np.ones(len(points))])
    fit, *_ = np.linalg.lstsq(design, moved, rcond=None)
    residual = np.linalg.norm(design @ fit - moved, axis=1)
    assert residual.max() > 0.5
    np.testing.assert_allclose(deformation.inverse_source(moved), points, atol=1e-3)


def test_t2_shows_the_moved_and_deformed_anatomy() -> None:
    settings = dataclasses.replace(RenderSettings.ideal(), t2_deformation_mm=3.0)
    mr = synthesize_mr(seed=4, phases=1, settings=settings)
    assert mr.t2 is not None and mr.t2_geometry is not None
    assert mr.t2_motion is not None and mr.t2_deformation is not None
    points = mr.t2_geometry.points()
    kidney_values = [round(TISSUE_SIGNALS[t].t2w) for t in KIDNEY]
    seen = np.isin(mr.t2, kidney_values)
    deformed = np.isin(mr.anatomy.labels(mr.t2_source_points(points)), KIDNEY)
    rigid = np.isin(mr.anatomy.labels(mr.t2_motion.apply_inverse(points)), KIDNEY)
    assert deformed.sum() > 1000
    assert np.count_nonzero(seen != deformed) < 0.01 * deformed.sum()
    assert np.count_nonzero(seen != rigid) > 3 * np.count_nonzero(seen != deformed)
    sample = points.reshape(-1, 3)[::97]
    np.testing.assert_allclose(mr.dce_to_t2(mr.t2_source_points(sample)), sample, atol=1e-3)
    rigid_only = synthesize_mr(seed=4, phases=1, settings=RenderSettings.ideal())
    assert rigid_only.t2_deformation is None and rigid_only.t2_motion == mr.t2_motion


# --------------------------------------------------------------------------- noise, bias


@pytest.mark.parametrize(
    ("spacing", "low", "high"), [((2.2, 0.86, 0.86), 15.0, 30.0), ((2.5, 1.5, 1.5), 50.0, 90.0)]
)
def test_late_phase_kidney_snr(
    spacing: tuple[float, float, float], low: float, high: float
) -> None:
    """SNR about 20 at the paper's voxel size, higher for larger voxels."""
    kwargs = dict(seed=1, shape=(12, 64, 64), spacing_mm=spacing, include_t2=False)
    noisy = synthesize_mr(**kwargs, settings=dataclasses.replace(CLEAN, dce_snr=20.0))
    clean = synthesize_mr(**kwargs, settings=CLEAN)
    kidney = ndi.binary_erosion(clean.kidney_mask.astype(bool), iterations=2)
    late = clean.dce[-1].astype(float)[kidney]
    sigma = (noisy.dce[-1].astype(float) - clean.dce[-1].astype(float))[kidney].std()
    assert low <= late.mean() / sigma <= high


def test_bias_field_spans_the_body_within_its_amplitude() -> None:
    kwargs = dict(
        seed=2, shape=(8, 64, 64), spacing_mm=(25.0, 6.0, 6.0), include_t2=False, phases=2
    )
    no_bias = RenderSettings.ideal()
    biased = synthesize_mr(
        **kwargs, grid_centre="body", settings=dataclasses.replace(no_bias, bias_amplitude=0.25)
    )
    flat = synthesize_mr(**kwargs, grid_centre="body", settings=no_bias)
    body = flat.dce[-1] > 50
    ratio = biased.dce[-1][body].astype(float) / flat.dce[-1][body].astype(float)
    assert 1 / 1.25 - 0.02 <= ratio.min() and ratio.max() <= 1.25 + 0.02
    assert ratio.max() / ratio.min() > 1.15


def test_renal_sinus_is_fat_outside_the_kidney_mask() -> None:
    """With ``renal_sinus`` the graft's sinus is fat, not kidney: the mask is as compact
    as real kidneys' manual masks (0.88-0.94, CHAOS), not an ellipsoid's 0.98."""
    from models.mr_localise import compactness

    plain = synthesize_mr(seed=7, include_t2=False)
    sinus = synthesize_mr(seed=7, include_t2=False, renal_sinus=True)
    spacing = plain.dce_geometry.spacing_mm
    plain_mask, sinus_mask = plain.kidney_mask.astype(bool), sinus.kidney_mask.astype(bool)
    assert not (sinus_mask & ~plain_mask).any()
    taken = plain_mask & ~sinus_mask
    assert 0.05 < taken.sum() / plain_mask.sum() < 0.2
    assert (sinus.dce_labels[taken] == Tissue.FAT).all()
    # The rest of the patient is the same.
    assert np.array_equal(plain.dce_labels[~plain_mask], sinus.dce_labels[~plain_mask])
    assert compactness(plain_mask, spacing) > 0.95
    assert 0.8 < compactness(sinus_mask, spacing) < 0.92
    # Fat does not enhance: the sinus stays darker than the cortex in the late phase.
    late = sinus.dce[-1].astype(float)
    cortex = sinus.dce_labels == Tissue.CORTEX
    assert late[taken].mean() < 0.7 * late[cortex].mean()
