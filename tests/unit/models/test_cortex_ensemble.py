"""Tests of models.cortex_ensemble: largest component per model, median, back to the CT."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from models.cortex_ensemble import (
    aggregate,
    keep_largest_component,
    median_of_models,
    predict_slices,
    segment_cortex,
)
from models.metrics import dice


def test_largest_component_keeps_the_probabilities_of_the_biggest_blob_only():
    prob = np.array([[0.9, 0.8, 0.0, 0.0, 0.0],
                     [0.7, 0.6, 0.0, 0.0, 0.7],
                     [0.0, 0.0, 0.0, 0.0, 0.0],
                     [0.3, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    out = keep_largest_component(prob)
    expected = prob.copy()
    expected[1, 4] = 0.0  # the single-pixel blob
    expected[3, 0] = 0.0  # below the threshold: not part of any component
    np.testing.assert_array_equal(out, expected)


def test_largest_component_is_eight_connected_in_2d():
    prob = np.zeros((5, 5), dtype=np.float32)
    prob[[0, 1, 2, 3], [0, 1, 2, 3]] = 1.0  # a diagonal line: one component of 4, not 4 of 1
    prob[[3, 4, 4], [0, 0, 1]] = 1.0  # a 3-pixel blob that touches no diagonal pixel
    kept = keep_largest_component(prob) > 0
    np.testing.assert_array_equal(kept, np.eye(5, dtype=bool) & (np.arange(5) < 4))


def test_largest_component_per_slice_or_in_3d():
    stack = np.zeros((2, 3, 6), dtype=np.float32)
    stack[0, :, 0:2] = 1.0  # 6 pixels, left
    stack[0, 0, 5] = 1.0  # 1 pixel, right ...
    stack[1, :, 4:6] = 1.0  # ... that continues into 6 pixels on slice 1
    per_slice = keep_largest_component(stack) > 0
    assert per_slice[0, :, 0:2].all() and not per_slice[0, 0, 5]
    assert per_slice[1, :, 4:6].all()
    in_3d = keep_largest_component(stack, per_slice=False) > 0  # right blob: 7 voxels
    assert not in_3d[0, :, 0:2].any() and in_3d[0, 0, 5] and in_3d[1, :, 4:6].all()


def test_nothing_above_threshold_gives_zeros():
    assert not keep_largest_component(np.full((4, 4), 0.5, np.float32)).any()


def test_median_of_models_is_pixelwise():
    probs = np.array([[[0.1, 0.9]], [[0.6, 0.2]], [[0.8, 0.4]]], dtype=np.float32)
    np.testing.assert_allclose(median_of_models(probs), [[0.6, 0.4]])
    np.testing.assert_allclose(median_of_models(probs[:2]), [[0.35, 0.55]])
    with pytest.raises(ValueError, match="models"):
        median_of_models(np.zeros((0, 2, 2)))


def test_aggregate_drops_one_models_blob_and_follows_the_majority():
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:6, 2:6] = True
    a = np.where(truth, 0.9, 0.1).astype(np.float32)
    b = a.copy()
    b[0, 7] = 0.95  # a false blob of model b, removed by its largest component
    c = np.where(truth, 0.3, 0.0).astype(np.float32)  # an unsure model
    c[2, 2] = 0.99
    median, mask = aggregate([a, b, c])
    np.testing.assert_array_equal(mask, truth)
    assert median[0, 7] == 0.0 and median.dtype == np.float32


class _Bright(nn.Module):
    """Fake network: cortex is whatever is brighter than 0.85 (about 150 HU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x - 0.85)


def test_predict_slices_stacks_the_models():
    slices = np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    out = predict_slices([_Bright(), _Bright()], slices, batch_size=2)
    assert out.shape == (2, 5, 16, 16)
    np.testing.assert_allclose(out[1], 1 / (1 + np.exp(-40.0 * (slices - 0.85))), rtol=1e-4)


def test_segment_cortex_returns_each_kidneys_cortex_on_the_ct_grid():
    shape = (50, 60, 120)  # (z, y, x) at 1.5 x 0.8 x 0.8 mm
    zz, yy, xx = np.indices(shape)
    hu = np.full(shape, -80.0, np.float32)
    kidneys = np.zeros(shape, np.uint8)
    cortex = np.zeros(shape, np.uint8)
    for label, cx in [(1, 30), (2, 90)]:  # 1 = patient's right (low x)
        r = np.sqrt(((zz - 25) / 12) ** 2 + ((yy - 30) / 15) ** 2 + ((xx - cx) / 18) ** 2)
        kidneys[r <= 1] = label
        cortex[(r <= 1) & (r > 0.7)] = label
        hu[r <= 1] = 60.0
        hu[(r <= 1) & (r > 0.7)] = 190.0
    hu[5:8, 28:32, 55:65] = 300.0  # bright bone-like blob between the kidneys
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((0.8, 0.8, 1.5))
    lab = sitk.GetImageFromArray(kidneys)
    lab.CopyInformation(ct)
    out = segment_cortex(ct, lab, [_Bright()] * 3, size=96)
    assert out.shape == shape and out.dtype == np.uint8
    assert not out[5:8, 28:32, 55:65].any()
    for label in (1, 2):
        assert dice(out == label, cortex == label) > 0.85


def test_segment_cortex_handles_a_kidney_cut_by_the_grid_and_keeps_to_its_margin():
    shape = (30, 60, 70)  # (z, y, x) at 1.5 x 0.8 x 0.8 mm; the kidney runs off slice 0
    zz, yy, xx = np.indices(shape)
    r = np.sqrt(((zz - 4) / 12) ** 2 + ((yy - 30) / 15) ** 2 + ((xx - 35) / 18) ** 2)
    hu = np.full(shape, -80.0, np.float32)
    hu[r <= 1] = 60.0
    hu[(r <= 1) & (r > 0.7)] = 190.0
    hu[(r > 1.3) & (r <= 1.45)] = 190.0  # a bright shell well beyond the 3 mm margin
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((0.8, 0.8, 1.5))
    lab = sitk.GetImageFromArray((r <= 1).astype(np.uint8))
    lab.CopyInformation(ct)
    out = segment_cortex(ct, lab, [_Bright()] * 3, size=96)
    assert out.shape == shape
    assert out[0].any()  # cortex on the cut face
    assert not out[r > 1.3].any()
    assert dice(out == 1, (r <= 1) & (r > 0.7)) > 0.8
