"""Tests of models.roi: high-intensity threshold and region of interest (paper §2.1)."""

import dataclasses

import numpy as np
import pytest

from models.components import binary_closing, binary_opening, fill_holes, largest_component
from models.roi import RegionOfInterest, detect_roi, high_intensity_threshold

SHAPE = (24, 64, 64)
KIDNEY_CENTRE, KIDNEY_RADII = (12, 24, 22), (8, 12, 9)
FAR_CENTRE = (12, 53, 56)


def _ellipsoid(centre, radii, shape=SHAPE):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (
        ((z - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((x - centre[2]) / radii[2]) ** 2
    ) <= 1.0


def _phantom(seed=0):
    """Body 100, kidney cortex 300 around a medulla 220, a vessel 300 beside it, a bright
    sphere far away, Gaussian noise (sigma 12). Returns the volume and the kidney mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    volume = np.zeros(SHAPE)
    volume[np.broadcast_to(((y - 32) / 30) ** 2 + ((x - 32) / 30) ** 2 <= 1, SHAPE)] = 100
    kidney = _ellipsoid(KIDNEY_CENTRE, KIDNEY_RADII)
    volume[kidney] = 300
    volume[_ellipsoid(KIDNEY_CENTRE, [0.55 * r for r in KIDNEY_RADII])] = 220
    volume[np.broadcast_to((y - 24) ** 2 + (x - 38) ** 2 <= 4, SHAPE)] = 300
    volume[_ellipsoid(FAR_CENTRE, (5, 5, 5))] = 300
    return volume + rng.normal(0.0, 12.0, SHAPE), kidney


def _box(mask):
    index = np.nonzero(mask)
    return [int(i.min()) for i in index], [int(i.max()) + 1 for i in index]


def _contains(roi, mask):
    start, stop = _box(mask)
    return all(
        a <= s and e <= b for a, b, s, e in zip(roi.start, roi.stop, start, stop, strict=True)
    )


def test_threshold_is_the_mode_of_the_bright_class():
    volume, _ = _phantom()
    assert 285.0 <= high_intensity_threshold(volume) <= 315.0


def test_threshold_same_for_integer_volume():
    volume, _ = _phantom()
    assert 285.0 <= high_intensity_threshold(np.round(volume).astype(np.int16)) <= 315.0


def test_threshold_of_noise_free_two_valued_volume_is_the_bright_value():
    volume = (_ellipsoid((12, 32, 32), (6, 10, 10)) * 500).astype(np.uint16)
    assert high_intensity_threshold(volume) == 500.0


def test_threshold_falls_back_to_percentile_without_a_high_peak():
    volume = np.random.default_rng(1).normal(100.0, 10.0, SHAPE)  # one tissue class only
    expected = np.percentile(volume, 99.5)
    assert high_intensity_threshold(volume) == pytest.approx(expected)


def test_threshold_of_constant_volume_is_its_value():
    assert high_intensity_threshold(np.full((4, 5, 6), 7.0)) == 7.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (3.0, 0.7, 0.7)])
def test_roi_contains_kidney_and_excludes_far_structure(spacing):
    volume, kidney = _phantom()
    roi = detect_roi(volume, spacing_zyx=spacing)
    assert _contains(roi, kidney)
    assert not roi.crop(_ellipsoid(FAR_CENTRE, (5, 5, 5))).any()
    assert not roi.touches_edge
    assert roi.crop(volume).shape == roi.shape


def test_roi_margin_is_converted_per_axis():
    volume = np.zeros((30, 80, 80), dtype=np.int16)
    volume[12:18, 30:50, 30:50] = 500
    roi = detect_roi(volume, spacing_zyx=(2.5, 0.8, 0.8), margin_mm=10.0)
    # 10 mm = 4 slices of 2.5 mm and 12.5 -> 13 pixels of 0.8 mm
    assert roi.start == (8, 17, 17)
    assert roi.stop == (22, 63, 63)
    assert not roi.touches_edge


def test_roi_is_clipped_and_flagged_when_kidney_touches_border():
    volume, kidney = _phantom()
    shifted = np.roll(volume, -14, axis=2)  # kidney now cut by the x = 0 border
    roi = detect_roi(shifted, spacing_zyx=(2.5, 0.8, 0.8))
    assert roi.touches_edge
    assert roi.start[2] == 0
    assert _contains(roi, np.roll(kidney, -14, axis=2)[:, :, :50])


def test_bundle_larger_than_kidney_only_after_closing_is_not_chosen():
    rng = np.random.default_rng(2)
    volume = np.full(SHAPE, 100.0)
    kidney = _ellipsoid((12, 18, 18), (8, 12, 10))
    volume[kidney] = 300
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    bundle = np.zeros(SHAPE, dtype=bool)
    for cy in range(42, 62, 5):
        for cx in range(42, 62, 5):
            bundle |= np.broadcast_to((y - cy) ** 2 + (x - cx) ** 2 <= 1, SHAPE)
    volume[bundle] = 300
    volume += rng.normal(0.0, 12.0, SHAPE)

    # The premise: after closing and opening, the bundle is the biggest component.
    bright = volume >= high_intensity_threshold(volume)
    cleaned = binary_opening(fill_holes(binary_closing(bright, radius_vox=5)), radius_vox=4)
    assert largest_component(cleaned)[bundle].any()

    roi = detect_roi(volume, spacing_zyx=(1.0, 1.0, 1.0))
    assert _contains(roi, kidney)
    assert not roi.crop(bundle).any()


def test_roi_on_thick_slices_has_margin_in_slices_not_pixels():
    volume, kidney = _phantom(seed=3)
    roi = detect_roi(volume, spacing_zyx=(5.0, 0.7, 0.7))  # 10 mm = 2 slices, 15 pixels
    assert _contains(roi, kidney)
    start, stop = _box(kidney)
    assert start[0] - 3 <= roi.start[0] and roi.stop[0] <= stop[0] + 3
    assert roi.stop[1] >= stop[1] + 14


@pytest.mark.parametrize(
    "volume",
    [np.zeros(SHAPE), np.full(SHAPE, 42, dtype=np.int16)],
    ids=["empty", "constant"],
)
def test_roi_of_empty_or_constant_volume_raises(volume):
    with pytest.raises(ValueError, match="empty or constant"):
        detect_roi(volume, spacing_zyx=(1.0, 1.0, 1.0))


def test_roi_of_all_nan_volume_raises():
    with pytest.raises(ValueError, match="no finite value"):
        detect_roi(np.full((4, 4, 4), np.nan), spacing_zyx=(1.0, 1.0, 1.0))


def test_roi_ignores_nan_voxels():
    volume, kidney = _phantom()
    volume[0] = np.nan
    assert _contains(detect_roi(volume, spacing_zyx=(1.0, 1.0, 1.0)), kidney)


def test_roi_rejects_bad_inputs():
    volume, _ = _phantom()
    with pytest.raises(ValueError, match="spacing_zyx"):
        detect_roi(volume, spacing_zyx=(1.0, 1.0))
    with pytest.raises(ValueError, match="margin_mm"):
        detect_roi(volume, spacing_zyx=(1.0, 1.0, 1.0), margin_mm=-1.0)
    with pytest.raises(ValueError, match="3D"):
        detect_roi(volume[0], spacing_zyx=(1.0, 1.0, 1.0))


def test_region_of_interest_properties():
    roi = RegionOfInterest(start=(1, 2, 3), stop=(4, 6, 8))
    assert roi.shape == (3, 4, 5)
    assert roi.slices == (slice(1, 4), slice(2, 6), slice(3, 8))
    assert not roi.touches_edge
    with pytest.raises(dataclasses.FrozenInstanceError):
        roi.start = (0, 0, 0)  # type: ignore[misc]


def test_region_of_interest_validation_and_crop():
    with pytest.raises(ValueError, match="start < stop"):
        RegionOfInterest(start=(1, 2, 3), stop=(1, 6, 8))
    roi = RegionOfInterest(start=(0, 0, 0), stop=(2, 2, 9))
    with pytest.raises(ValueError, match="does not fit"):
        roi.crop(np.zeros((4, 4, 4)))
    full = roi.embed(np.ones((2, 2, 9), dtype=bool), shape=(3, 3, 10))
    assert int(full.sum()) == 36 and not full[2].any()


def test_roi_falls_back_to_closed_mask_when_opening_removes_everything():
    volume = np.zeros(SHAPE, dtype=np.int16)
    volume[:, 30:32, 40:42] = 400  # only a thin tube, thinner than the opening ball
    roi = detect_roi(volume, spacing_zyx=(1.0, 1.0, 1.0), margin_mm=2.0)
    assert roi.start[1:] == (28, 38) and roi.stop[1:] == (34, 44)
    assert roi.touches_edge  # the tube runs through all slices
