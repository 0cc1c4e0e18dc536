"""Tests of models.otsu: the Otsu thresholding baseline."""

import numpy as np
import pytest

from models.metrics import dice, recall
from models.otsu import otsu_threshold, segment_otsu
from models.roi import RegionOfInterest, detect_roi

SHAPE = (24, 64, 64)


def _phantom(seed=0):
    """Body 100 with an ellipsoidal kidney (cortex 300, medulla 220), noise sigma 12."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    radius = ((z - 12) / 8) ** 2 + ((y - 30) / 14) ** 2 + ((x - 28) / 10) ** 2
    volume = np.full(SHAPE, 100.0)
    volume[radius <= 1] = 300
    volume[radius <= 0.3] = 220
    return volume + rng.normal(0.0, 12.0, SHAPE), radius <= 1


def test_otsu_threshold_splits_two_classes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.0, 1.0, 5000), rng.normal(10.0, 1.0, 2000)])
    assert 3.0 < otsu_threshold(values) < 7.0


def test_otsu_threshold_of_two_values_is_between_them():
    assert 0.0 < otsu_threshold(np.array([0.0, 0.0, 1.0, 1.0, 1.0])) < 1.0


def test_otsu_threshold_of_constant_values_raises():
    with pytest.raises(ValueError, match="all intensities equal 3"):
        otsu_threshold(np.full(10, 3.0))
    with pytest.raises(ValueError, match="no finite intensity"):
        otsu_threshold(np.array([np.nan]))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_segment_otsu_finds_the_kidney(spacing):
    volume, kidney = _phantom()
    roi = detect_roi(volume, spacing_zyx=spacing)
    mask = segment_otsu(volume, roi)
    assert mask.shape == volume.shape and mask.dtype == bool
    assert dice(mask, kidney) > 0.9
    assert recall(mask, kidney) > 0.95


def test_segment_otsu_is_false_outside_the_roi():
    volume, _ = _phantom()
    roi = RegionOfInterest(start=(4, 20, 20), stop=(20, 40, 40))
    mask = segment_otsu(volume, roi)
    outside = np.ones(SHAPE, dtype=bool)
    outside[roi.slices] = False
    assert mask[roi.slices].any() and not mask[outside].any()


def test_segment_otsu_raises_on_constant_roi():
    volume = np.full(SHAPE, 5.0)
    with pytest.raises(ValueError, match=r"ROI \(0, 0, 0\)-\(4, 4, 4\).*all intensities equal"):
        segment_otsu(volume, RegionOfInterest(start=(0, 0, 0), stop=(4, 4, 4)))


def test_segment_otsu_raises_when_roi_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        segment_otsu(np.zeros((4, 4, 4)), RegionOfInterest(start=(0, 0, 0), stop=(5, 4, 4)))
