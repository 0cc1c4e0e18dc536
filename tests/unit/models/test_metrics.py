"""Tests of models.metrics on hand-computed cases."""

import numpy as np
import pytest

from models.metrics import dice, precision, recall, volume_difference_pct


def _mask(*flags):
    return np.array(flags, dtype=bool).reshape(1, 1, -1)


def test_half_overlap():
    a, b = _mask(1, 1, 0, 0), _mask(1, 0, 1, 0)
    assert dice(a, b) == 0.5
    assert precision(a, b) == 0.5
    assert recall(a, b) == 0.5


def test_over_segmentation():
    pred, truth = _mask(1, 1, 1, 0), _mask(1, 0, 0, 0)
    assert dice(pred, truth) == pytest.approx(2 * 1 / (3 + 1))
    assert precision(pred, truth) == pytest.approx(1 / 3)
    assert recall(pred, truth) == 1.0


def test_identical_and_disjoint():
    a = _mask(0, 1, 1, 0)
    assert dice(a, a) == precision(a, a) == recall(a, a) == 1.0
    assert dice(a, ~a) == precision(a, ~a) == recall(a, ~a) == 0.0


def test_empty_masks():
    empty, full = _mask(0, 0, 0), _mask(1, 1, 0)
    assert dice(empty, empty) == 1.0
    assert precision(empty, empty) == recall(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert precision(empty, full) == 0.0 and recall(empty, full) == 0.0
    assert precision(full, empty) == 0.0 and recall(full, empty) == 0.0


def test_metrics_reject_bad_masks():
    with pytest.raises(ValueError, match=r"shape \(1, 1, 3\) does not match"):
        dice(_mask(1, 0, 1), _mask(1, 0))
    with pytest.raises(ValueError, match="boolean mask"):
        precision(np.array([0.2, 0.9]), np.array([True, False]))


def test_volume_difference_pct():
    truth = np.zeros((2, 5, 5), dtype=bool)
    truth[0, :2, :5] = True  # 10 voxels
    over = truth.copy()
    over[1, 0, :2] = True  # 12 voxels
    under = truth.copy()
    under[0, 1, 3:] = False  # 8 voxels
    spacing = (2.5, 0.8, 0.8)
    assert volume_difference_pct(over, truth, spacing_zyx=spacing) == pytest.approx(20.0)
    assert volume_difference_pct(under, truth, spacing_zyx=spacing) == pytest.approx(20.0)
    signed = volume_difference_pct(under, truth, spacing_zyx=spacing, signed=True)
    assert signed == pytest.approx(-20.0)
    assert volume_difference_pct(truth, truth, spacing_zyx=spacing) == 0.0


def test_volume_difference_with_empty_truth_raises():
    empty = np.zeros((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="truth mask is empty"):
        volume_difference_pct(~empty, empty, spacing_zyx=(1.0, 1.0, 1.0))
