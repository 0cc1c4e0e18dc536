"""Tests of models.metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from models.metrics import dice, hd95, precision, recall, volume_difference_pct


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


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


@pytest.mark.parametrize(
    ("axis", "shift_mm"),
    [(0, 2.5), (1, 0.8), (2, 0.8)],
)
def test_hd95_of_cubes_shifted_by_one_voxel_is_the_shift(axis, shift_mm):
    # Each surface voxel is either on both surfaces (0) or one voxel from the other
    # surface (the shift); the latter are the two faces across the shift, 2 x 16 of the
    # 56 surface voxels of a 4x4x4 cube, far more than 5 %.
    spacing = (2.5, 0.8, 0.8)
    truth = _cube((8, 8, 8), (2, 2, 2), 4)
    start = [2, 2, 2]
    start[axis] += 1
    pred = _cube((8, 8, 8), start, 4)
    assert hd95(pred, truth, spacing_zyx=spacing) == pytest.approx(shift_mm)
    assert hd95(truth, pred, spacing_zyx=spacing) == pytest.approx(shift_mm)


def test_hd95_of_two_voxels_is_their_distance():
    a = np.zeros((5, 6, 7), dtype=bool)
    b = a.copy()
    a[0, 1, 0] = True
    b[2, 1, 3] = True  # 2 slices of 2.5 mm and 3 columns of 0.8 mm away
    expected = np.hypot(2 * 2.5, 3 * 0.8)
    assert hd95(a, b, spacing_zyx=(2.5, 1.0, 0.8)) == pytest.approx(expected)


def test_hd95_pools_both_directions():
    # truth: a 1x1x20 line (every voxel is surface). pred: the same line plus two voxels
    # 19 and 20 columns beyond its end. Pooled distances: 40 zeros, 19 and 20; the 95th
    # percentile sits at rank 0.95 * 41 = 38.95, between two zeros. The larger directed
    # 95th percentile (pred -> truth: 20 zeros, 19, 20; rank 19.95) would be 0.95 * 19.
    truth = np.zeros((1, 1, 40), dtype=bool)
    truth[0, 0, :20] = True
    pred = truth.copy()
    pred[0, 0, [38, 39]] = True
    assert hd95(pred, truth, spacing_zyx=(1.0, 1.0, 1.0)) == 0.0
    pred[0, 0, 30:40] = True  # 10 distances 11..20 among 50: rank 46.55 of the pooled
    assert hd95(pred, truth, spacing_zyx=(1.0, 1.0, 2.0)) == pytest.approx(2.0 * 17.55)


def test_hd95_matches_a_brute_force_pooled_percentile():
    rng = np.random.default_rng(0)
    spacing = np.array([2.0, 0.7, 0.9])
    a = rng.random((6, 9, 8)) > 0.6
    b = rng.random((6, 9, 8)) > 0.7

    def surface(mask):
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        neighbours = [
            np.roll(padded, s, axis)[1:-1, 1:-1, 1:-1] for axis in range(3) for s in (1, -1)
        ]
        return np.argwhere(inner & ~np.logical_and.reduce(neighbours)) * spacing

    sa, sb = surface(a), surface(b)
    pairwise = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=-1)
    pooled = np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])
    expected = np.percentile(pooled, 95)
    assert hd95(a, b, spacing_zyx=tuple(spacing)) == pytest.approx(expected)


def test_hd95_identical_and_empty_masks():
    cube = _cube((6, 6, 6), (0, 1, 1), 5)  # touches the border of the array
    empty = np.zeros((6, 6, 6), dtype=bool)
    assert hd95(cube, cube, spacing_zyx=(2.5, 0.8, 0.8)) == 0.0
    assert hd95(~empty, ~empty, spacing_zyx=(1.0, 1.0, 1.0)) == 0.0
    assert hd95(empty, empty, spacing_zyx=(1.0, 1.0, 1.0)) == 0.0
    assert hd95(cube, empty, spacing_zyx=(1.0, 1.0, 1.0)) == math.inf
    assert hd95(empty, cube, spacing_zyx=(1.0, 1.0, 1.0)) == math.inf


def test_hd95_rejects_bad_input():
    cube = _cube((4, 4, 4), (1, 1, 1), 2)
    with pytest.raises(ValueError, match="does not match"):
        hd95(cube, cube[:3], spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        hd95(cube[0], cube[0], spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing_zyx"):
        hd95(cube, cube, spacing_zyx=(1.0, -1.0, 1.0))
