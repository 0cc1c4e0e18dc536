"""Tests of models.cortex_data: HU window, coronal crops from the direction matrix, augmentation."""

import numpy as np
import pytest
import SimpleITK as sitk

from models.cortex_data import (
    AugmentConfig,
    augment_pair,
    case_slices,
    crop_around,
    kidney_regions,
    normalise_hu,
    physical_bounds,
    resample_to_crop,
    uncrop,
)
from models.metrics import dice


def _image(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _phantom(shape=(40, 60, 70)):
    """(z, y, x) HU volume, identity direction: a 'kidney' block and three markers.

    LPS: x grows to the patient's left, y to posterior, z to superior.
    """
    hu = np.full(shape, -100.0, dtype=np.float32)
    kidney = np.zeros(shape, dtype=np.uint8)
    kidney[10:30, 20:40, 25:45] = 1
    hu[kidney == 1] = 150.0
    hu[28:30, 28:31, 33:37] = 400.0  # superior marker
    hu[18:22, 20:22, 33:37] = 300.0  # anterior marker (low y)
    hu[18:22, 28:31, 43:45] = 250.0  # left marker (high x)
    return hu, kidney


def test_normalise_hu_clips_to_the_paper_window():
    out = normalise_hu(np.array([-1000.0, -150.0, 25.0, 200.0, 3000.0]))
    assert out.dtype == np.float32
    assert np.allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_crop_is_centred_on_the_box_and_spans_its_anterior_posterior_extent():
    crop = crop_around(np.array([10.0, 20.0, 30.0]), np.array([30.0, 39.0, 50.0]), size=192)
    assert crop.shape == (20, 192, 192)  # y from 20 to 39 at 1 mm
    assert crop.origin == (20.0 - 96.0, 20.0, 40.0 + 96.0)


def test_coronal_slices_put_anterior_first_head_up_and_patient_left_on_the_right():
    hu, kidney = _phantom()
    ct = _image(hu)
    crop = crop_around(*physical_bounds(_image(kidney)), size=64)
    vol = resample_to_crop(ct, crop)
    assert vol.shape == (20, 64, 64)
    sup = np.argwhere(vol == 400.0)
    ant = np.argwhere(vol == 300.0)
    left = np.argwhere(vol == 250.0)
    assert sup[:, 1].max() < 32  # superior = top rows
    assert ant[:, 0].max() < 2  # anterior = first slices
    assert left[:, 2].min() > 32  # patient's left = right-hand columns


@pytest.mark.parametrize("layout", ["flipped", "permuted"])
def test_coronal_slices_follow_the_direction_matrix_not_the_array_order(layout):
    hu, kidney = _phantom()
    spacing = (0.8, 0.9, 2.0)
    nz, ny, nx = hu.shape
    ref_ct, ref_kid = _image(hu, spacing), _image(kidney, spacing)
    if layout == "flipped":  # x and y stored reversed, direction says so
        origin = ((nx - 1) * spacing[0], (ny - 1) * spacing[1], 0.0)
        direction = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
        ct = _image(hu[:, ::-1, ::-1].copy(), spacing, origin, direction)
        kid = _image(kidney[:, ::-1, ::-1].copy(), spacing, origin, direction)
    else:  # array axes (i, j, k) = patient (z, x, y)
        direction = (0.0, 1, 0, 0, 0, 1, 1, 0, 0)
        perm_spacing = (spacing[2], spacing[0], spacing[1])
        ct = _image(hu.transpose(1, 2, 0).copy(), perm_spacing, direction=direction)
        kid = _image(kidney.transpose(1, 2, 0).copy(), perm_spacing, direction=direction)
    stored = sitk.GetArrayFromImage(ct)
    assert stored.shape != hu.shape or not np.array_equal(stored, hu)
    crop = crop_around(*physical_bounds(kid), size=40)  # inside the field of view
    assert crop == crop_around(*physical_bounds(ref_kid), size=40)
    np.testing.assert_allclose(resample_to_crop(ct, crop), resample_to_crop(ref_ct, crop),
                               atol=1e-3)
    # nearest neighbour: only ties halfway between two voxels may round either way
    assert dice(resample_to_crop(kid, crop, label=True) == 1,
                resample_to_crop(ref_kid, crop, label=True) == 1) > 0.9


def test_crop_then_uncrop_gives_the_mask_back():
    _, kidney = _phantom()
    flipped = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)
    mask = _image(kidney, origin=(5.0, -3.0, 12.0), direction=flipped)
    crop = crop_around(*physical_bounds(mask), size=64, grid=mask)
    back = uncrop(resample_to_crop(mask, crop, label=True), crop, mask, label=True)
    np.testing.assert_array_equal(back, kidney)
    coarse = _image(kidney, spacing=(0.8, 0.8, 2.0))  # off-grid: interpolated, nearly equal
    crop = crop_around(*physical_bounds(coarse), size=64)
    prob = resample_to_crop(coarse, crop, label=True).astype(np.float32)
    assert dice(uncrop(prob, crop, coarse) > 0.5, kidney.astype(bool)) > 0.9


def test_crop_near_the_border_is_padded_with_air():
    hu, kidney = _phantom()
    kidney[:] = 0
    kidney[10:30, 20:40, 0:10] = 1  # against the patient's right edge of the field of view
    crop = crop_around(*physical_bounds(_image(kidney)), size=64)
    vol = normalise_hu(resample_to_crop(_image(hu), crop))
    assert vol.shape == (20, 64, 64)
    assert (vol[:, :, :20] == 0.0).all()  # beyond x = 0: air
    assert (vol[:, :, 40:] > 0.0).any()


def test_case_slices_crop_each_kidney_label():
    hu, kidney = _phantom((40, 60, 120))
    kidneys = kidney.copy()
    kidneys[10:30, 25:35, 80:100] = 2
    cortex = (kidneys > 0).astype(np.uint8)
    images, masks = case_slices(_image(hu), _image(cortex), _image(kidneys), size=64)
    assert images.shape == (20 + 10, 64, 64) and masks.shape == images.shape
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(masks)) == {0, 1}
    assert len(kidney_regions(_image(cortex))) == 2  # without labels: the two components


def test_augmentation_moves_image_and_mask_together():
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[20:40, 15:35] = 1
    image = mask.astype(np.float32) * 0.8
    cfg = AugmentConfig(noise_sigma=0.0, max_brightness=0.0, contrast=(1.0, 1.0))
    img_a, msk_a = augment_pair(image, mask, np.random.default_rng(3), cfg)
    assert not np.array_equal(msk_a, mask)  # it moved
    assert dice(img_a > 0.4, msk_a.astype(bool)) > 0.95
    img_b, msk_b = augment_pair(image, mask, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(msk_a, msk_b)


def test_intensity_augmentation_changes_only_the_image():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (32, 32)).astype(np.float32)
    mask = (image > 0.5).astype(np.uint8)
    cfg = AugmentConfig(max_shift_px=0.0, max_rotation_deg=0.0, zoom=(1.0, 1.0))
    img, msk = augment_pair(image, mask, rng, cfg)
    np.testing.assert_array_equal(msk, mask)
    assert not np.allclose(img, image) and 0.0 <= img.min() and img.max() <= 1.0
