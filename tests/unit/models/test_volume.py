"""Tests of models.volume."""

import math

import numpy as np
import pytest

from models.volume import mask_volume_ml


def _sphere(radius_mm, spacing):
    """Voxels whose centre lies in a sphere of radius_mm centred in the grid."""
    half = [math.ceil(radius_mm / s) + 1 for s in spacing]
    axes = [(np.arange(2 * h + 1) - h) * s for h, s in zip(half, spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    return z**2 + y**2 + x**2 <= radius_mm**2


@pytest.mark.parametrize(
    "spacing",
    [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (3.0, 0.7, 0.7), (5.0, 0.94, 0.94), (1.9, 0.78, 1.2)],
)
def test_sphere_volume_within_3_percent(spacing):
    radius = 25.0  # mm
    expected_ml = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    assert mask_volume_ml(_sphere(radius, spacing), spacing) == pytest.approx(expected_ml, rel=0.03)


def test_hand_computed_volume():
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, :2, :5] = True  # 10 voxels of 2 x 0.5 x 0.5 = 0.5 mm³
    assert mask_volume_ml(mask, (2.0, 0.5, 0.5)) == pytest.approx(0.005)
    assert mask_volume_ml(np.zeros((2, 2, 2), dtype=bool), (1.0, 1.0, 1.0)) == 0.0


def test_volume_rejects_bad_inputs():
    with pytest.raises(ValueError, match="spacing_zyx"):
        mask_volume_ml(np.ones((2, 2, 2), dtype=bool), (1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="boolean mask"):
        mask_volume_ml(np.full((2, 2, 2), 0.5), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        mask_volume_ml(np.ones((2, 2), dtype=bool), (1.0, 1.0, 1.0))
