"""A kidney's outline against fat redrawn on the CT's own grid (models.ct_edge)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from models.ct_edge import fat_level, grow_rim_by_nearest_side, redraw_fat_edge


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An unenhanced kidney (30 HU) in fat (-100 HU) with a muscle (50 HU) against its
    back, 3 mm slices of 1.5 mm pixels, noise sigma 17 HU (as the synthetic CTs)."""
    z, y, x = np.mgrid[:24, :64, :64]
    kidney = ((z - 12) / 9.0) ** 2 + ((y - 30) / 14.0) ** 2 + ((x - 32) / 20.0) ** 2 <= 1.0
    muscle = (y >= 38) & (y < 56) & ~kidney  # pressed into its back
    hu = np.full(kidney.shape, -100.0)
    hu[kidney] = 30.0
    hu[muscle] = 50.0
    hu += np.random.default_rng(seed).normal(0.0, 17.0, hu.shape)
    return hu, kidney, muscle, np.array([3.0, 1.5, 1.5])


def test_the_outer_layer_lost_to_a_coarse_grid_is_taken_back_from_fat() -> None:
    hu, kidney, muscle, spacing = _scene()
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    short = ndi.binary_erosion(kidney, structure=in_plane)  # one pixel short all round
    level = fat_level(hu, short, -100.0, -30.0)
    assert -45.0 < level < -25.0
    redrawn = redraw_fat_edge(short, hu, tuple(spacing), level, 1.25, 300.0)
    assert _dice(short, kidney) < 0.94
    assert _dice(redrawn, kidney) > 0.97  # the layer against the muscle stays lost
    assert (redrawn & ~short & muscle).sum() < 0.01 * kidney.sum()  # muscle not claimed
    assert (redrawn & short).sum() == short.sum()  # nothing of the kidney is lost


def test_fat_inside_the_border_is_dropped_and_an_exact_mask_barely_moves() -> None:
    hu, kidney, _, spacing = _scene(1)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndi.generate_binary_structure(2, 1)
    wide = ndi.binary_dilation(kidney, structure=in_plane)  # one pixel too many all round
    level = fat_level(hu, wide, -100.0, -30.0)
    redrawn = redraw_fat_edge(wide, hu, tuple(spacing), level, 1.25, 300.0)
    assert _dice(wide, kidney) < 0.94
    assert _dice(redrawn, kidney) > 0.97  # the layer on the muscle stays: not fat
    exact = redraw_fat_edge(kidney, hu, tuple(spacing), level, 1.25, 300.0)
    assert abs(int(exact.sum()) - int(kidney.sum())) < 0.02 * kidney.sum()


def test_a_thick_slice_is_not_a_step_and_finer_pixels_take_more_steps() -> None:
    hu = np.full((9, 9, 9), 30.0)
    hu[:, :, 0] = -100.0  # a plane of fat
    mask = np.zeros(hu.shape, dtype=bool)
    mask[3:6, :, 2:5] = True  # one voxel short of the fat
    layer = np.zeros_like(mask)
    layer[3:6, :, 1] = True
    thick = redraw_fat_edge(mask, hu, (5.0, 1.5, 1.5), -35.0, 1.25, 300.0)
    assert np.array_equal(thick, mask | layer)  # in-plane only, one step
    fine = redraw_fat_edge(mask, hu, (0.6, 0.6, 0.6), -35.0, 1.25, 300.0)
    assert fine[2, :, 1].all() and fine[6, :, 1].all()  # two steps, along the fat only
    assert not fine[2, :, 2:].any() and not fine[:, :, 5:].any()


def test_a_rim_grows_back_towards_fat_but_not_into_the_muscle_against_the_kidney() -> None:
    """A graft with contrast (170 HU) on a smoothed 2.5 mm grid: fat (-100 HU) on most
    sides, muscle (60 HU) against its back; the candidate has lost its outer layer against
    fat (not against the muscle, brighter than fat). A plain rim takes the kidney's layer
    back and a layer of muscle with it; the nearest-side rim takes the kidney's only."""
    z, y, x = np.mgrid[:30, :40, :40]
    kidney = ((z - 15) / 11.0) ** 2 + ((y - 18) / 9.0) ** 2 + ((x - 20) / 13.0) ** 2 <= 1.0
    muscle = (y >= 24) & (y < 34) & (np.abs(x - 20) < 16) & (np.abs(z - 15) < 13) & ~kidney
    hu = np.full(kidney.shape, -100.0)
    hu[kidney] = 170.0
    hu[muscle] = 60.0
    hu = ndi.gaussian_filter(hu, 0.7) + np.random.default_rng(3).normal(0.0, 6.0, hu.shape)
    face = ndi.generate_binary_structure(3, 1)
    against_muscle = kidney & ndi.binary_dilation(muscle, structure=face)
    short = ndi.binary_erosion(kidney, structure=face) | against_muscle
    allowed = hu > -30.0  # the non-fat voxels a plain rim takes
    plain = ndi.binary_dilation(short, structure=face, mask=allowed)
    nearest = grow_rim_by_nearest_side(short, hu, allowed, 1)
    lost_to_fat = kidney & ~short
    assert (plain & muscle).sum() > 0.03 * kidney.sum()
    assert (nearest & muscle).sum() < 0.2 * (plain & muscle).sum()
    assert (nearest & lost_to_fat).sum() > 0.7 * (plain & lost_to_fat).sum()
    assert (nearest & short).sum() == short.sum()
    assert _dice(nearest, kidney) > _dice(plain, kidney) > _dice(short, kidney) - 0.05


def test_with_contrast_a_brighter_rim_is_kidney_even_where_more_of_it_lies_beyond() -> None:
    """A cortico-medullary kidney whose chosen region holds the dark medulla (80 HU) and
    the inner cortex: its bright cortex (240 HU) lies beyond the region, so the cortex's
    next layer is nearer to what lies beyond than to the region's median. With contrast a
    voxel brighter than the region's median is taken as kidney."""
    z, y, x = np.mgrid[:30, :40, :40]
    r = np.sqrt(((z - 15) / 11.0) ** 2 + ((y - 20) / 11.0) ** 2 + ((x - 20) / 13.0) ** 2)
    hu = np.where(r <= 0.6, 80.0, np.where(r <= 1.0, 240.0, -100.0))
    hu += np.random.default_rng(4).normal(0.0, 6.0, hu.shape)
    region = r <= 0.72  # the medulla and the inner cortex
    allowed = hu > -30.0
    nearest = grow_rim_by_nearest_side(region, hu, allowed, 1)
    brighter = grow_rim_by_nearest_side(region, hu, allowed, 1, brighter_is_inside=True)
    layer = ndi.binary_dilation(region, structure=ndi.generate_binary_structure(3, 1)) & ~region
    assert (nearest & layer).sum() < 0.2 * layer.sum()
    assert (brighter & layer).sum() == layer.sum()
    # Two more layers of voxels as bright as the region's median: the cortex, not fat.
    deeper = grow_rim_by_nearest_side(region, hu, allowed, 1, brighter_is_inside=True,
                                      bright_layers=2)
    kidney = r <= 1.0
    assert (brighter & kidney).sum() < (deeper & kidney).sum()
    assert (deeper & ~kidney).sum() <= (brighter & ~kidney).sum()
    assert _dice(deeper, kidney) > _dice(brighter, kidney) + 0.05
