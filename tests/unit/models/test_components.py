"""Tests of models.components: connectivity, hole filling and ball morphology."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from models.components import (
    ball,
    binary_closing,
    binary_dilation,
    binary_erosion,
    binary_opening,
    box_around,
    close_in_background,
    dilate_by,
    erode_by,
    fill_holes,
    label_components,
    largest_component,
)


def test_ball_radius_0_is_a_single_voxel():
    assert ball(0).shape == (1, 1, 1)
    assert ball(0).all()


def test_ball_radius_2_holds_the_lattice_points_of_the_sphere():
    b = ball(2)
    assert b.shape == (5, 5, 5)
    # points with z²+y²+x² <= 4: 1 + 6 (|o|=1) + 12 (|o|=√2) + 8 (|o|=√3) + 6 (|o|=2)
    assert int(b.sum()) == 33
    assert (b == b[::-1, :, :]).all() and (b == b.transpose(2, 0, 1)).all()


@pytest.mark.parametrize("radius", [-1, 1.5, True])
def test_ball_rejects_bad_radius(radius):
    with pytest.raises(ValueError, match="radius_vox must be an integer"):
        ball(radius)


def test_components_are_6_connected():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corners touching only diagonally
    _, n = label_components(mask)
    assert n == 2


def test_largest_component_keeps_the_biggest():
    mask = np.zeros((6, 10, 10), dtype=bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[1:5, 5:9, 5:9] = True  # 64 voxels
    out = largest_component(mask)
    assert int(out.sum()) == 64
    assert out[2, 6, 6] and not out[1, 1, 1]


def test_largest_component_ranked_by_support():
    mask = np.zeros((6, 10, 10), dtype=bool)
    mask[1:3, 1:3, 1:3] = True  # small, but fully supported
    mask[1:5, 5:9, 5:9] = True  # big, supported by 2 voxels only
    support = np.zeros_like(mask)
    support[1:3, 1:3, 1:3] = True
    support[2, 6, 6:8] = True
    out = largest_component(mask, support)
    assert int(out.sum()) == 8


def test_largest_component_of_empty_mask_is_empty():
    assert not largest_component(np.zeros((2, 3, 4), dtype=bool)).any()


def test_largest_component_rejects_mismatched_support():
    with pytest.raises(ValueError, match="support shape"):
        largest_component(np.ones((2, 2, 2), dtype=bool), np.ones((2, 2, 3), dtype=bool))


def test_mask_must_be_boolean_and_3d():
    with pytest.raises(ValueError, match="boolean mask"):
        largest_component(np.full((2, 2, 2), 0.7))
    with pytest.raises(ValueError, match="3D"):
        fill_holes(np.ones((4, 4), dtype=bool))
    # 0/1 integers are accepted
    assert largest_component(np.ones((2, 2, 2), dtype=np.uint8)).all()


def test_fill_holes_fills_enclosed_cavity_only():
    shell = np.zeros((7, 7, 7), dtype=bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    assert fill_holes(shell)[3, 3, 3]
    assert int(fill_holes(shell).sum()) == 125
    opened = shell.copy()
    opened[3, 3, 5] = False  # a channel from the cavity to the outside
    assert not fill_holes(opened)[3, 3, 3]


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_distance_morphology_matches_scipy_with_ball(radius):
    rng = np.random.default_rng(radius)
    sparse = rng.random((10, 14, 12)) > 0.93
    dense = rng.random((10, 14, 12)) > 0.2
    expected_dilation = ndi.binary_dilation(sparse, structure=ball(radius))
    expected_erosion = ndi.binary_erosion(dense, structure=ball(radius), border_value=1)
    assert (binary_dilation(sparse, radius_vox=radius) == expected_dilation).all()
    assert (binary_erosion(dense, radius_vox=radius) == expected_erosion).all()


def test_anisotropic_ball_is_a_sphere_in_mm():
    mask = np.zeros((9, 15, 15), dtype=bool)
    mask[4, 7, 7] = True
    grown = binary_dilation(mask, radius_vox=4, spacing_zyx=(2.0, 1.0, 1.0))
    z, y, x = np.nonzero(grown)
    assert (z.min(), z.max()) == (2, 6)  # 4 mm = 2 slices of 2 mm
    assert (y.min(), y.max()) == (3, 11)  # 4 pixels of 1 mm
    assert (x.min(), x.max()) == (3, 11)


def test_closing_bridges_small_gap_and_keeps_border_objects():
    mask = np.zeros((8, 20, 20), dtype=bool)
    mask[:, 2:8, :] = True  # slab cut by the array border on 4 sides
    mask[:, 10:16, :] = True  # second slab, 2 voxels away
    closed = binary_closing(mask, radius_vox=2)
    assert closed[:, 2:16, :].all()  # gap bridged, nothing eroded at the borders
    assert not closed[:, 17:, :].any() and not closed[:, :2, :].any()


def test_opening_removes_thin_tube_and_keeps_sphere():
    mask = np.zeros((20, 30, 30), dtype=bool)
    z, y, x = np.ogrid[:20, :30, :30]
    sphere = (z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2 <= 64
    tube = np.broadcast_to((y - 23) ** 2 + (x - 23) ** 2 <= 2, mask.shape)
    opened = binary_opening(sphere | tube, radius_vox=3)
    assert not (opened & tube).any()
    assert not (opened & ~sphere).any()
    assert opened.sum() >= 0.95 * sphere.sum()  # lattice effects nibble a few voxels


def test_morphology_rejects_bad_radius_and_spacing():
    mask = np.ones((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="radius_vox"):
        binary_dilation(mask, radius_vox=-1)
    with pytest.raises(ValueError, match="spacing_zyx"):
        binary_erosion(mask, radius_vox=1, spacing_zyx=(1.0, 0.0, 1.0))


def test_box_around_widens_by_whole_voxels_per_axis_and_stays_in_the_array():
    mask = np.zeros((10, 20, 20), dtype=bool)
    mask[4:6, 2:5, 10:12] = True
    # 3 mm on 2 mm slices is 2 voxels; on 1 mm pixels 3; plus 1 extra each
    box = box_around(mask, margin_mm=3.0, spacing_zyx=(2.0, 1.0, 1.0), extra_vox=1)
    assert box == (slice(1, 9), slice(0, 9), slice(6, 16))
    assert box_around(mask, margin_mm=0.0, spacing_zyx=(2.0, 1.0, 1.0)) == (
        slice(4, 6), slice(2, 5), slice(10, 12))


def test_fill_holes_matches_scipy_on_random_masks():
    """Labelling the background gives exactly ndi.binary_fill_holes' result (face
    connectivity), holes touching no face of the array, and nothing else."""
    rng = np.random.default_rng(0)
    filled = 0
    for _ in range(20):
        shape = tuple(int(v) for v in rng.integers(8, 40, 3))
        mask = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.8, 2.5)) > 0.48
        expected = ndi.binary_fill_holes(mask, structure=ndi.generate_binary_structure(3, 1))
        np.testing.assert_array_equal(fill_holes(mask), expected)
        filled += int((expected & ~mask).sum())
    assert filled > 100  # the masks had holes to fill
    assert not fill_holes(np.zeros((3, 3, 3), dtype=bool)).any()
    assert fill_holes(np.ones((3, 3, 3), dtype=bool)).all()


def test_close_in_background_matches_scipy_on_random_masks():
    """Shifted copies give exactly ndi.binary_closing of the mask padded with background
    (what the CT searches solidify with), for balls of 1 to 3 voxels."""
    rng = np.random.default_rng(1)
    changed = 0
    for _ in range(12):
        shape = tuple(int(v) for v in rng.integers(6, 36, 3))
        mask = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.8, 2.5)) > 0.5
        for r in (1, 2, 3):
            padded = np.pad(mask, r)
            expected = ndi.binary_closing(padded, structure=ball(r))[(slice(r, -r),) * 3]
            np.testing.assert_array_equal(close_in_background(mask, r), expected)
            changed += int((expected & ~mask).sum())
    assert changed > 100
    np.testing.assert_array_equal(close_in_background(mask, 0), mask)


def test_dilate_by_and_erode_by_match_scipy():
    """The shifted-copy dilation and erosion give scipy's voxels for the balls, the face
    connectivity and its second iterate; an asymmetric structure is refused."""
    rng = np.random.default_rng(2)
    face = ndi.generate_binary_structure(3, 1)
    structures = [ball(1), ball(2), ball(4), face, ndi.iterate_structure(face, 2)]
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(5, 30, 3))
        mask = ndi.gaussian_filter(rng.random(shape), rng.uniform(0.8, 2.5)) > 0.5
        for structure in structures:
            np.testing.assert_array_equal(dilate_by(mask, structure),
                                          ndi.binary_dilation(mask, structure=structure))
            np.testing.assert_array_equal(erode_by(mask, structure),
                                          ndi.binary_erosion(mask, structure=structure))
    with pytest.raises(ValueError, match="symmetric"):
        dilate_by(mask, np.ones((3, 3, 2), dtype=bool))
