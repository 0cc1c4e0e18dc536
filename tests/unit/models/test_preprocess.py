"""Tests of models.preprocess: N4 bias-field correction and T2 to DCE registration (§3).

Phantoms are ellipsoids defined in patient space (mm, centred on the origin) and painted at
the voxel centres of a grid, so the same anatomy can be sampled on a DCE-like grid and, moved
by a known transform, on a thick-slice T2-like grid with another contrast and orientation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from models.preprocess import (
    Initialisation,
    RegistrationResult,
    _fitting_levels,
    _shrink_factors,
    n4_correct,
    register_t2_to_dce,
)
from models.roi import RegionOfInterest

AXIAL = np.eye(3)
#: DICOM coronal: rows along +x, columns along -z, slices along +y.
CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

#: (centre, semi-axes, DCE value, T2 value): body, kidney, medulla, muscle, vessel.
ANATOMY = (
    ((0.0, 0.0, 0.0), (66.0, 54.0, 45.0), 100.0, 300.0),
    ((-20.0, -10.0, 0.0), (24.0, 14.0, 12.0), 300.0, 150.0),
    ((-20.0, -10.0, 0.0), (10.0, 6.0, 6.0), 200.0, 400.0),
    ((22.0, 14.0, -5.0), (10.0, 14.0, 18.0), 220.0, 60.0),
    ((8.0, -26.0, 6.0), (6.0, 6.0, 14.0), 400.0, 90.0),
)
KIDNEY_CENTRE = np.array([-20.0, -10.0, 0.0])
LANDMARKS = np.array(
    [(x, y, z) for x in (-30.0, 0.0, 30.0) for y in (-30.0, 0.0, 30.0) for z in (-15.0, 0.0, 15.0)]
)


def _grid(shape_zyx, spacing_xyz, direction=AXIAL):
    """Empty float32 image centred on the origin."""
    image = sitk.Image([int(n) for n in shape_zyx[::-1]], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing_xyz])
    image.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    half = np.asarray(direction) @ ((np.array(shape_zyx[::-1]) - 1) * np.array(spacing_xyz) / 2)
    image.SetOrigin([float(v) for v in -half])
    return image


def _points(image, slice_offset=0.0):
    """Physical (x, y, z) of the voxel centres, shape (z, y, x, 3); offset along k in voxels."""
    nx, ny, nz = image.GetSize()
    k, j, i = np.meshgrid(np.arange(nz) + slice_offset, np.arange(ny), np.arange(nx),
                          indexing="ij")
    index = np.stack([i, j, k], axis=-1) * np.array(image.GetSpacing())
    return np.array(image.GetOrigin()) + index @ np.array(image.GetDirection()).reshape(3, 3).T


def _paint(points, contrast):
    """ANATOMY values (``contrast`` "dce" or "t2") at (..., 3) points; later shapes win."""
    column = {"dce": 2, "t2": 3}[contrast]
    layer = np.zeros(points.shape[:-1])
    for shape in ANATOMY:
        layer[(((points - shape[0]) / np.array(shape[1])) ** 2).sum(axis=-1) <= 1.0] = shape[column]
    return layer


def _render(grid, contrast, *, to_anatomy=None, oversample=1, noise=5.0, seed=0):
    """Paint ANATOMY on ``grid``. ``to_anatomy`` maps grid points to anatomy points; a thick
    slice averages ``oversample`` positions across its thickness (partial volume)."""
    passes = []
    for s in range(oversample):
        points = _points(grid, (s + 0.5) / oversample - 0.5)
        passes.append(_paint(points if to_anatomy is None else to_anatomy(points), contrast))
    values = np.mean(passes, axis=0)
    values = values + np.random.default_rng(seed).normal(0.0, noise, values.shape)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.CopyInformation(grid)
    return image


def _motion(degrees=4.0, translation=(3.0, -2.0, 1.5)):
    """True DCE -> T2 transform: rotation about z through the origin, then translation."""
    motion = sitk.Euler3DTransform()
    motion.SetRotation(0.0, 0.0, math.radians(degrees))
    motion.SetTranslation(translation)
    return motion


def _apply(transform, points):
    return np.array([transform.TransformPoint([float(v) for v in p]) for p in points])


def _inverse_rigid(motion):
    """Vectorised inverse of an Euler transform centred on the origin, for (..., 3) points."""
    matrix = np.array(motion.GetMatrix()).reshape(3, 3)
    translation = np.array(motion.GetTranslation())
    return lambda q: (q - translation) @ matrix  # R^-1 = R^T, applied to row vectors


def _mean_distance(transform, truth):
    return float(np.linalg.norm(_apply(transform, LANDMARKS) - truth, axis=1).mean())


def _dce():
    return _render(_grid((24, 48, 48), (3.0, 3.0, 2.5)), "dce", seed=0)


def _t2(direction, to_anatomy):
    """Thick-slice (5 mm) T2-like image covering the DCE slab in ``direction``."""
    shape = (14, 48, 48) if direction is AXIAL else (29, 20, 48)
    grid = _grid(shape, (3.0, 3.0, 5.0), direction)
    return _render(grid, "t2", to_anatomy=to_anatomy, oversample=5, seed=1)


# --------------------------------------------------------------------------- N4


def _biased_phantom():
    """Air 0, body 100, two blobs 200 and 300, times exp(+-30 % linear ramp), noise 1."""
    z, y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in (16, 32, 32)), indexing="ij")
    body = (y**2 + x**2) <= 0.85
    blob1 = (z / 0.6) ** 2 + ((y + 0.35) / 0.35) ** 2 + ((x + 0.3) / 0.3) ** 2 <= 1.0
    blob2 = (z / 0.5) ** 2 + ((y - 0.3) / 0.3) ** 2 + ((x - 0.35) / 0.35) ** 2 <= 1.0
    truth = np.where(body, 100.0, 0.0)
    truth[blob1], truth[blob2] = 200.0, 300.0
    bias = np.exp(0.3 * (0.6 * x + 0.6 * y + 0.5 * z) / 1.7)
    noisy = truth * bias + np.random.default_rng(0).normal(0.0, 1.0, truth.shape)
    image = sitk.GetImageFromArray(np.clip(noisy, 0.0, None).astype(np.float32))
    image.SetSpacing((3.0, 3.0, 2.5))
    image.SetOrigin((-46.5, -46.5, -18.75))
    regions = {"body": body & ~blob1 & ~blob2, "blob 200": blob1, "blob 300": blob2}
    return image, regions


def _cv(array, region):
    values = array[region]
    return float(values.std() / values.mean())


def test_n4_halves_the_variation_inside_each_constant_region():
    image, regions = _biased_phantom()
    corrected = n4_correct(image)
    before, after = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(corrected)
    for name, region in regions.items():
        assert _cv(after, region) < 0.5 * _cv(before, region), name
    # contrast between the regions survives
    ratio = after[regions["blob 300"]].mean() / after[regions["blob 200"]].mean()
    assert ratio == pytest.approx(1.5, rel=0.1)


def test_n4_returns_float32_on_the_input_grid():
    image, _ = _biased_phantom()
    image = sitk.Cast(image, sitk.sitkUInt16)
    image.SetDirection(CORONAL.ravel().tolist())
    corrected = n4_correct(image, fitting_levels=2)
    assert corrected.GetPixelID() == sitk.sitkFloat32
    assert corrected.GetSize() == image.GetSize()
    assert corrected.GetSpacing() == image.GetSpacing()
    assert corrected.GetOrigin() == image.GetOrigin()
    assert corrected.GetDirection() == image.GetDirection()


def test_n4_with_eight_levels_runs_on_a_thin_small_volume():
    image = sitk.GetImageFromArray(
        np.random.default_rng(0).uniform(50.0, 100.0, (3, 20, 20)).astype(np.float32)
    )
    corrected = n4_correct(image, fitting_levels=8)
    assert corrected.GetSize() == (20, 20, 3)
    assert np.all(np.isfinite(sitk.GetArrayViewFromImage(corrected)))


def test_n4_accepts_a_mask_on_the_same_grid_only():
    image, regions = _biased_phantom()
    mask = sitk.GetImageFromArray(regions["body"].astype(np.uint8))
    mask.CopyInformation(image)
    corrected = n4_correct(image, fitting_levels=2, mask=mask)
    body = sitk.GetArrayFromImage(corrected)[regions["body"]]
    assert body.std() / body.mean() < 0.5 * _cv(sitk.GetArrayFromImage(image), regions["body"])
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="mask grid"):
        n4_correct(image, mask=shifted)


@pytest.mark.parametrize(
    ("size", "factors", "levels"),
    [
        ((512, 512, 72), [4, 4, 2], 8),  # 128 x 128 x 36: all 8 levels
        ((512, 512, 30), [4, 4, 1], 8),  # thin T2 slab: z is not shrunk
        ((48, 48, 24), [1, 1, 1], 6),  # test-sized volume: mesh capped at 32 spans
        ((20, 20, 3), [1, 1, 1], 5),
    ],
)
def test_shrink_factors_and_fitting_levels_follow_the_grid(size, factors, levels):
    assert _shrink_factors(size, 4) == factors
    shrunk = [n // f for n, f in zip(size, factors, strict=True)]
    assert _fitting_levels(shrunk, 8) == levels


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (sitk.Image(10, 10, sitk.sitkFloat32), "3D scalar"),
        (sitk.Image(10, 10, 1, sitk.sitkFloat32), "at least 2 voxels"),
        (sitk.Image(5, 5, 5, sitk.sitkVectorFloat32), "3D scalar"),
    ],
)
def test_n4_refuses_what_is_not_a_volume(image, match):
    with pytest.raises(ValueError, match=match):
        n4_correct(image)


def test_n4_refuses_arrays_and_bad_parameters():
    with pytest.raises(TypeError, match="SimpleITK.Image, got ndarray"):
        n4_correct(np.ones((4, 4, 4)))
    image, _ = _biased_phantom()
    with pytest.raises(ValueError, match="must be >= 1"):
        n4_correct(image, fitting_levels=0)


# --------------------------------------------------------------------------- registration


@pytest.fixture(scope="module")
def rigid_cases():
    """DCE, axial and coronal T2 moved by 4 degrees and 3.9 mm, and their registrations."""
    motion = _motion()
    dce = _dce()
    cases = {}
    for name, direction in (("axial", AXIAL), ("coronal", CORONAL)):
        t2 = _t2(direction, _inverse_rigid(motion))
        cases[name] = (dce, t2, register_t2_to_dce(dce, t2, deformable=False, seed=3))
    return motion, cases


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_registration_recovers_a_rigid_motion(rigid_cases, orientation):
    motion, cases = rigid_cases
    _, _, result = cases[orientation]
    truth = _apply(motion, LANDMARKS)
    before = float(np.linalg.norm(LANDMARKS - truth, axis=1).mean())
    assert before > 4.0
    assert _mean_distance(result.transform, truth) < 1.5
    assert result.metric_after < result.metric_before
    assert result.stages[0] == "rigid"
    assert result.seconds > 0.0


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_registered_t2_lies_on_the_dce_grid(rigid_cases, orientation):
    _, cases = rigid_cases
    dce, t2, result = cases[orientation]
    out = result.t2_on_dce
    assert isinstance(result, RegistrationResult)
    assert out.GetPixelID() == sitk.sitkFloat32
    assert out.GetSize() == dce.GetSize()
    assert out.GetSpacing() == dce.GetSpacing()
    assert out.GetOrigin() == dce.GetOrigin()
    assert out.GetDirection() == dce.GetDirection()
    assert t2.GetSize() != dce.GetSize()


def test_registration_aligns_the_kidney(rigid_cases):
    """The T2 kidney (dark in T2) lands where the DCE kidney is."""
    _, cases = rigid_cases
    dce, t2, result = cases["axial"]
    kidney = (((_points(dce) - ANATOMY[1][0]) / ANATOMY[1][1]) ** 2).sum(axis=-1) <= 0.8
    identity = sitk.Resample(t2, dce, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    expected = _expected_t2(dce)[kidney]
    before = np.abs(sitk.GetArrayFromImage(identity)[kidney] - expected).mean()
    after = np.abs(sitk.GetArrayFromImage(result.t2_on_dce)[kidney] - expected).mean()
    # cortex 150 / medulla 400 in T2: misplaced voxels show the fat (300) or the muscle
    assert after < 0.6 * before


def _expected_t2(dce):
    """T2 values of the anatomy painted on the DCE grid (the ideal registered T2)."""
    return sitk.GetArrayFromImage(_render(dce, "t2", noise=0.0))


def test_same_seed_gives_the_same_transform(rigid_cases):
    _, cases = rigid_cases
    dce, t2, result = cases["axial"]
    again = register_t2_to_dce(dce, t2, deformable=False, seed=3)
    # ITK's threads sum in a varying order: parameters differ by ~1e-6 run to run.
    assert again.transform.GetParameters() == pytest.approx(
        result.transform.GetParameters(), abs=1e-4
    )
    assert again.metric_after == pytest.approx(result.metric_after, rel=1e-4)


def test_registration_on_a_roi_still_fills_the_whole_dce_grid(rigid_cases):
    motion, cases = rigid_cases
    dce, t2, _ = cases["axial"]
    roi = RegionOfInterest(start=(4, 8, 6), stop=(20, 32, 30))
    result = register_t2_to_dce(dce, t2, deformable=False, roi=roi, initialisation="geometry")
    assert result.t2_on_dce.GetSize() == dce.GetSize()
    near_kidney = KIDNEY_CENTRE + LANDMARKS / 3.0
    error = np.linalg.norm(_apply(result.transform, near_kidney) - _apply(motion, near_kidney),
                           axis=1)
    assert error.mean() < 1.5


def test_deformable_stage_recovers_a_local_warp():
    """T2 anatomy pushed 5 mm along y near the kidney (Gaussian bump, sigma 20 mm), plus
    a small rigid motion: the B-spline stage is kept and brings the error down."""
    amplitude, sigma = np.array([0.0, 5.0, 0.0]), 20.0

    def bump(p):
        return amplitude * np.exp(-((p - KIDNEY_CENTRE) ** 2).sum(-1, keepdims=True)
                                  / (2 * sigma**2))

    motion = _motion(degrees=3.0, translation=(2.0, -1.5, 1.0))
    undo_rigid = _inverse_rigid(motion)

    def to_anatomy(q):  # solve p + bump(p) = R^-1 (q - t) by fixed-point iteration
        target = undo_rigid(q)
        p = target.copy()
        for _ in range(20):
            p = target - bump(p)
        return p

    dce, t2 = _dce(), _t2(AXIAL, to_anatomy)
    points = KIDNEY_CENTRE + LANDMARKS / 2.0
    truth = _apply(motion, points + bump(points))
    result = register_t2_to_dce(dce, t2, deformable=True)
    assert result.stages[-1] == "bspline"
    assert isinstance(result.transform, sitk.CompositeTransform)
    linear = result.transform.GetNthTransform(0)  # the B-spline is applied before it
    linear_error = np.linalg.norm(_apply(linear, points) - truth, axis=1).mean()
    warped_error = np.linalg.norm(_apply(result.transform, points) - truth, axis=1).mean()
    assert linear_error > 2.0
    assert warped_error < 0.5 * linear_error


def test_registration_of_the_synthetic_study():
    """The project's phantom: the T2 motion drawn by the generator is recovered."""
    from service.synthetic import synthesize_mr
    from service.synthetic.study import geometry_image

    mr = synthesize_mr(seed=4, shape=(24, 96, 96), phases=2, include_t2=True)
    dce = geometry_image(mr.dce[-1], mr.dce_geometry)
    t2 = geometry_image(mr.t2, mr.t2_geometry)
    result = register_t2_to_dce(sitk.Cast(dce, sitk.sitkFloat32), t2, deformable=False)
    centre = np.asarray(mr.anatomy.kidney.centre)
    points = centre + LANDMARKS / 2.0
    truth = mr.t2_motion.apply(points)
    before = np.linalg.norm(points - truth, axis=1).mean()
    after = np.linalg.norm(_apply(result.transform, points) - truth, axis=1).mean()
    assert after < 1.5
    assert after < before


def test_registration_refuses_disjoint_fields_of_view():
    dce = _dce()
    far = sitk.Image(dce)
    far.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="does not overlap"):
        register_t2_to_dce(dce, far)


def test_registration_refuses_bad_inputs():
    dce = _dce()
    with pytest.raises(ValueError, match="3D scalar"):
        register_t2_to_dce(dce, sitk.Image(10, 10, sitk.sitkFloat32))
    with pytest.raises(ValueError, match="seed"):
        register_t2_to_dce(dce, dce, seed=-1)
    with pytest.raises(ValueError, match="does not fit"):
        register_t2_to_dce(dce, dce, roi=RegionOfInterest(start=(0, 0, 0), stop=(30, 10, 10)))
    with pytest.raises(ValueError, match="'sideways' is not a valid Initialisation"):
        register_t2_to_dce(dce, dce, initialisation="sideways")
    assert Initialisation("patient") is Initialisation.PATIENT
