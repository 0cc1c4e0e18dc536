"""Issue 16: native kidneys on MRI without contrast (models.mr_native), on a real T2."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from models.metrics import dice
from models.mr_localise import LocaliseConfig
from models.mr_native import segment_native_kidneys, volume_asymmetry

CHAOS = Path(__file__).resolve().parents[4] / "shared" / "data" / "real" / "kidney" / "chaos_t2spir"


@pytest.mark.skipif(not CHAOS.is_dir(), reason=f"no CHAOS T2-SPIR data at {CHAOS}")
def test_both_native_kidneys_of_a_real_fat_suppressed_t2_on_their_sides():
    # CHAOS case 1 (a tuning case of benchmarks.chaos_check): the spleen and bowel loops
    # are as bright as the kidneys; labels 2 (right) and 3 (left) are the manual masks.
    image = sitk.ReadImage(str(CHAOS / "image_1.nii.gz"), sitk.sitkFloat32)
    labels = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(CHAOS / "label_1.nii.gz"))))
    result = segment_native_kidneys(image)
    assert set(result.masks) == {"right", "left"}
    assert dice(result.masks["right"], labels == 2) > 0.85
    assert dice(result.masks["left"], labels == 3) > 0.85
    left = result.masks["left"]
    assert (left & (labels == 4)).sum() < 0.02 * left.sum()  # not the spleen (label 4)
    assert set(result.timings_s) == {"n4", "localise", "grow"}


def test_constant_volume_and_a_graft_localisation_are_refused():
    image = sitk.GetImageFromArray(np.ones((8, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="constant"):
        segment_native_kidneys(image)
    with pytest.raises(ValueError, match="native"):
        segment_native_kidneys(image, localise=LocaliseConfig())


def test_volume_asymmetry_is_the_larger_kidney_over_the_smaller():
    small, large = np.zeros((4, 4, 4), dtype=bool), np.zeros((4, 4, 4), dtype=bool)
    small[:1, :2, :2] = True  # 4 voxels
    large[:2, :3, :2] = True  # 12 voxels
    assert volume_asymmetry({"right": small, "left": large}) == 3.0
    assert volume_asymmetry({"right": large, "left": small}) == 3.0
    assert volume_asymmetry({"right": large}) is None
    assert volume_asymmetry({"right": large, "left": np.zeros_like(large)}) is None
