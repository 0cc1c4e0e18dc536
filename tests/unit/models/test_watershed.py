"""Tests of models.watershed: the marker-controlled 3D watershed baseline."""

import numpy as np
import pytest

from models.components import fill_holes
from models.metrics import dice, precision
from models.roi import RegionOfInterest, detect_roi
from models.watershed import grow_by_watershed, segment_watershed

SHAPE = (24, 64, 64)


def _phantom(seed=0):
    """Body 100, kidney (cortex 300, medulla 220), a separate vessel 300 4 px from it,
    noise sigma 12. Returns the volume, the kidney and the vessel masks."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    radius = ((z - 12) / 8) ** 2 + ((y - 28) / 13) ** 2 + ((x - 24) / 10) ** 2
    vessel = np.broadcast_to((y - 28) ** 2 + (x - 40) ** 2 <= 4, SHAPE)
    volume = np.full(SHAPE, 100.0)
    volume[radius <= 1] = 300
    volume[radius <= 0.3] = 220
    volume[vessel] = 300
    return volume + rng.normal(0.0, 12.0, SHAPE), radius <= 1, vessel


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (4.0, 0.7, 0.7)])
def test_watershed_segments_the_kidney_without_the_vessel(spacing):
    volume, kidney, vessel = _phantom()
    roi = detect_roi(volume, spacing_zyx=spacing)
    assert roi.crop(vessel).any()  # the vessel is in the box: the markers must reject it
    mask = segment_watershed(volume, roi, spacing_zyx=spacing)
    assert mask.shape == volume.shape and mask.dtype == bool
    assert dice(mask, kidney) > 0.9
    assert precision(mask, kidney) > 0.95
    assert not (mask & vessel).any()


def test_watershed_mask_has_no_holes_and_stays_in_roi():
    volume, _, _ = _phantom(seed=1)
    roi = RegionOfInterest(start=(2, 10, 8), stop=(22, 46, 36))
    mask = segment_watershed(volume, roi, spacing_zyx=(2.5, 0.8, 0.8))
    assert (fill_holes(mask) == mask).all()
    outside = np.ones(SHAPE, dtype=bool)
    outside[roi.slices] = False
    assert mask.any() and not mask[outside].any()


def test_watershed_raises_on_constant_roi():
    with pytest.raises(ValueError, match="all intensities equal"):
        segment_watershed(
            np.full(SHAPE, 9.0),
            RegionOfInterest(start=(0, 0, 0), stop=(6, 6, 6)),
            spacing_zyx=(1.0, 1.0, 1.0),
        )


def test_watershed_rejects_bad_spacing_and_sigma():
    volume, _, _ = _phantom()
    roi = RegionOfInterest(start=(0, 0, 0), stop=SHAPE)
    with pytest.raises(ValueError, match="spacing_zyx"):
        segment_watershed(volume, roi, spacing_zyx=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="sigma_mm"):
        segment_watershed(volume, roi, spacing_zyx=(1.0, 1.0, 1.0), sigma_mm=0.0)


def test_watershed_rejects_roi_thinner_than_4_voxels():
    volume, _, _ = _phantom()
    with pytest.raises(ValueError, match=r"\(3, 10, 10\) voxels"):
        segment_watershed(
            volume, RegionOfInterest(start=(0, 0, 0), stop=(3, 10, 10)), spacing_zyx=(1, 1, 1)
        )


def test_grow_by_watershed_grows_a_partial_seed_to_the_whole_kidney_not_the_vessel():
    volume, kidney, vessel = _phantom(seed=3)
    spacing = (2.5, 1.0, 1.0)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    # The localisation often holds only part of the organ: here its lower, medial third.
    seed = kidney & (x < 22) & (z < 12)
    assert dice(seed, kidney) < 0.5
    grown = grow_by_watershed(volume, seed, spacing_zyx=spacing)
    assert dice(grown, kidney) > 0.9
    assert precision(grown, kidney) > 0.95
    assert not (grown & vessel).any()


def test_grow_by_watershed_rejects_an_empty_or_misshaped_seed():
    volume, kidney, _ = _phantom()
    with pytest.raises(ValueError, match="non-empty mask"):
        grow_by_watershed(volume, np.zeros_like(kidney), spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="non-empty mask"):
        grow_by_watershed(volume, kidney[1:], spacing_zyx=(1.0, 1.0, 1.0))
