"""Tests of models.qc: signals of hand-made masks and the verdicts they give."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from models.qc import QcThresholds, Verdict, judge, mask_signals, worst

SPACING = (2.5, 1.5, 1.5)


def _grid():
    z, y, x = np.mgrid[0:48, 0:110, 0:110]
    return z * SPACING[0], y * SPACING[1], x * SPACING[2]


def _ellipsoid(centre, semi_axes):
    zz, yy, xx = _grid()
    return (((zz - centre[0]) / semi_axes[0]) ** 2 + ((yy - centre[1]) / semi_axes[1]) ** 2
            + ((xx - centre[2]) / semi_axes[2]) ** 2) <= 1


KIDNEY = _ellipsoid((60, 82, 82), (50, 30, 22))


def _image(noise: float = 12.0, seed: int = 0) -> np.ndarray:
    """A bright kidney (200) in darker tissue (100), blurred, with Gaussian noise."""
    rng = np.random.default_rng(seed)
    image = np.where(KIDNEY, 200.0, 100.0)
    return ndi.gaussian_filter(image, 1.0) + rng.normal(0, noise, KIDNEY.shape)


def test_a_kidney_shaped_mask_on_its_edges_passes():
    signals = mask_signals(_image(), KIDNEY, spacing_zyx=SPACING)
    assert 130 < signals.volume_ml < 145  # 4/3 pi 50 30 22 mm3 = 138 ml
    assert signals.thickness_mm == pytest.approx(44, abs=3)
    assert signals.length_mm == pytest.approx(100, abs=5)
    assert signals.solidity > 0.9 and signals.main_share == 1.0 and signals.edge_share == 0
    assert signals.contrast > 2 and signals.gradient_ratio > 3
    assert judge(signals) == judge(signals, thresholds=QcThresholds())
    assert judge(signals).verdict is Verdict.PASS and judge(signals).reasons == ()


def test_a_thin_strip_beside_the_kidney_fails():
    strip = _ellipsoid((60, 82, 112), (50, 30, 3)) & ~KIDNEY
    verdict = judge(mask_signals(_image(), strip, spacing_zyx=SPACING))
    assert verdict.verdict is Verdict.FAIL
    assert any("thickness" in r for r in verdict.reasons)


def test_a_kidney_sized_mask_off_the_kidney_follows_no_edge_and_is_reviewed():
    shifted = _ellipsoid((60, 82, 122), (50, 30, 22))  # half on, half beside the kidney
    outside = _ellipsoid((60, 20, 25), (40, 14, 14))  # kidney-shaped, in plain tissue
    for mask in (shifted, outside):
        verdict = judge(mask_signals(_image(), mask, spacing_zyx=SPACING))
        assert verdict.verdict is not Verdict.PASS
        assert any("boundary" in r for r in verdict.reasons)


def test_a_kidney_cut_by_the_field_of_view_is_flagged():
    image, mask = _image()[:22], KIDNEY[:22]  # the grid ends through the kidney's middle
    signals = mask_signals(image, mask, spacing_zyx=SPACING)
    assert signals.edge_share > 0.15
    verdict = judge(signals)
    assert verdict.verdict is Verdict.FAIL and "cut off" in " ".join(verdict.reasons)


def test_fragments_a_crescent_and_an_implausible_change_are_reasons():
    two = KIDNEY | _ellipsoid((60, 20, 20), (12, 12, 12))
    assert judge(mask_signals(_image(), two, spacing_zyx=SPACING)).verdict is Verdict.REVIEW
    shell = KIDNEY & ~_ellipsoid((60, 82, 92), (45, 26, 20))
    assert mask_signals(_image(), shell, spacing_zyx=SPACING).solidity < 0.6
    kidney = mask_signals(_image(), KIDNEY, spacing_zyx=SPACING)
    assert judge(kidney, previous_volume_ml=140.0).verdict is Verdict.PASS
    changed = judge(kidney, previous_volume_ml=250.0)
    assert changed.verdict is Verdict.REVIEW and "previous study" in changed.reasons[0]
    flagged = judge(kidney, flags=("right-kidney-touches-edge",))
    assert flagged.verdict is Verdict.REVIEW
    unpaired = judge(kidney, flags=("no-contrast", "left-kidney-unpaired"))
    assert unpaired.reasons == ("method flag left-kidney-unpaired",)
    assert judge(kidney, flags=("right-kidney-asymmetric",)).verdict is Verdict.REVIEW
    assert judge(kidney, flags=("no-contrast",)).verdict is Verdict.PASS
    assert judge(kidney, shape_checks=False).verdict is Verdict.PASS


def test_volume_limits_and_the_worst_verdict():
    kidney = mask_signals(_image(), KIDNEY, spacing_zyx=SPACING)
    assert judge(kidney, thresholds=QcThresholds(volume_ml_review=(150, 500))).verdict \
        is Verdict.REVIEW
    assert judge(kidney, thresholds=QcThresholds(volume_ml_fail=(200, 900))).verdict \
        is Verdict.FAIL
    assert worst([Verdict.PASS, Verdict.FAIL, Verdict.REVIEW]) is Verdict.FAIL
    assert worst([]) is Verdict.PASS
    with pytest.raises(ValueError, match="empty"):
        mask_signals(_image(), np.zeros_like(KIDNEY), spacing_zyx=SPACING)
    with pytest.raises(ValueError, match="grid"):
        mask_signals(_image()[:10], KIDNEY, spacing_zyx=SPACING)


def test_a_graft_grown_unlike_a_kidney_is_sent_to_review_by_its_flag():
    # The T2-only graft method's own doubt (models.graft_nocontrast.NoContrastResult.doubts):
    # the shape signals of a kidney-sized mask may pass while the grown region was a
    # fragment; the flag alone asks for review.
    signals = mask_signals(_image(), KIDNEY, spacing_zyx=SPACING)
    verdict = judge(signals, flags=("no-contrast", "not-kidney-shaped"))
    assert verdict.verdict is Verdict.REVIEW
    assert verdict.reasons == ("method flag not-kidney-shaped",)
    assert judge(signals, flags=("no-contrast",)).verdict is Verdict.PASS
