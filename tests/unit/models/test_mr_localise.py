"""Issue 16: kidney localisation on MRI by shape and context, not brightness."""

import numpy as np
import pytest
import SimpleITK as sitk

from models.metrics import dice
from models.mr_localise import LocaliseConfig, localise_kidneys, patient_side
from models.preprocess import n4_correct
from models.roi import detect_roi
from service.synthetic import Tissue, synthesize_mr
from service.synthetic.study import geometry_image


@pytest.fixture(scope="module")
def t2_case():
    # A graft of about 155 ml in the right iliac fossa, the bladder in view, T2 only.
    mr = synthesize_mr(seed=2, include_dce=False, shape=(30, 128, 128),
                       spacing_mm=(5.0, 2.6, 2.6), grid_centre="body", kidney_scale=1.4)
    image = n4_correct(geometry_image(mr.t2.astype(np.float32), mr.t2_geometry))
    return mr, image


def test_the_bladder_is_brighter_than_the_graft_and_the_paper_roi_misses_it(t2_case):
    mr, image = t2_case
    labels = mr.dce_labels  # the T2 shows the same tissues; means from the DCE-grid labels
    assert labels is not None
    t2 = sitk.GetArrayFromImage(image)
    truth = mr.t2_kidney_mask.astype(bool)
    assert np.percentile(t2, 99.9) > 1.5 * np.median(t2[truth])  # urine outshines the graft
    roi = detect_roi(t2, spacing_zyx=mr.t2_geometry.spacing_mm)
    assert truth[roi.slices].sum() < 0.5 * truth.sum()


def test_localisation_finds_the_graft_on_its_side(t2_case):
    mr, image = t2_case
    truth = mr.t2_kidney_mask.astype(bool)
    found = localise_kidneys(sitk.GetArrayFromImage(image),
                             spacing_zyx=mr.t2_geometry.spacing_mm,
                             direction=image.GetDirection())
    assert found
    best = found[0]
    assert truth[best.roi.slices].sum() >= 0.95 * truth.sum()  # the box holds the graft
    assert dice(best.mask, truth) > 0.4
    assert not (best.mask & (mr.t2 > np.percentile(mr.t2, 99.9))).any()  # not the bladder
    assert best.side == "right" and best.centroid_mm[0] < 0  # LPS: right is -x
    assert set(best.terms) >= {"size", "shape", "contrast", "homogeneity", "position", "depth"}


def test_patient_side_follows_the_image_direction():
    body = np.zeros((4, 10, 10), dtype=bool)
    body[:, 2:8, 1:9] = True
    mask = np.zeros_like(body)
    mask[:, 4:6, 1:3] = True  # low column index
    assert patient_side(mask, body, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                        spacing_zyx=(1, 1, 1)) == "right"
    assert patient_side(mask, body, direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1),
                        spacing_zyx=(1, 1, 1)) == "left"
    with pytest.raises(ValueError, match="empty"):
        patient_side(np.zeros_like(body), body, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                     spacing_zyx=(1, 1, 1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="3D"):
        localise_kidneys(np.zeros((4, 4)), spacing_zyx=(1, 1, 1))
    with pytest.raises(ValueError, match="volume_ml"):
        LocaliseConfig(volume_ml=(300.0, 100.0))
    assert Tissue.BLADDER  # the bright structure of the case above


def test_kidney_likeness_prefers_a_whole_kidney_to_a_ring_of_bowel_or_a_fragment():
    from models.mr_localise import kidney_likeness

    spacing = (2.0, 2.0, 2.0)
    z, y, x = np.mgrid[:80, :80, :80]
    kidney = ((z - 40) / 27.5) ** 2 + ((y - 40) / 15) ** 2 + ((x - 40) / 11) ** 2 <= 1  # ~150 ml
    ring = (np.hypot(y - 40, x - 40) - 25) ** 2 + (z - 40) ** 2 <= 7 ** 2  # a bowel loop
    loop = ((z - 40) ** 2 + (y - 40) ** 2 + (x - 40) ** 2) <= 10 ** 2  # a 40 mm ball, 33 ml
    graft = (100.0, 300.0)
    assert kidney_likeness(kidney, spacing, volume_ml=graft) > 0.9
    assert 100 < ring.sum() * 8 / 1000 < 300  # a graft's volume, not its shape
    assert kidney_likeness(ring, spacing, volume_ml=graft) < 0.5
    assert kidney_likeness(loop, spacing, volume_ml=graft) == 0.0  # far too small
    assert kidney_likeness(np.zeros_like(kidney), spacing, volume_ml=graft) == 0.0


def _candidate(side, score, centroid_mm):
    from models.mr_localise import LocalisedKidney
    from models.roi import RegionOfInterest

    return LocalisedKidney(mask=np.zeros((2, 2, 2), dtype=bool),
                           roi=RegionOfInterest(start=(0, 0, 0), stop=(2, 2, 2)),
                           volume_ml=150.0, score=score, side=side, centroid_mm=centroid_mm)


def test_native_kidneys_are_chosen_as_a_mirrored_pair_not_by_their_own_scores():
    from models.mr_localise import _native_pair, pair_likeness

    sd = LocaliseConfig().pair_sd_mm
    right = _candidate("right", 0.8, (-80.0, 50.0, 0.0))
    kidney = _candidate("left", 0.65, (78.0, 40.0, 20.0))  # 2 cm higher: as usual
    spleen = _candidate("left", 0.95, (80.0, 30.0, 55.0))  # brighter, higher, anterior
    bowel = _candidate("left", 0.9, (70.0, -5.0, 15.0))  # in front of the kidney
    assert pair_likeness(right, kidney, sd) > 0.6 > 0.3 > pair_likeness(right, spleen, sd)
    assert pair_likeness(right, bowel, sd) < 0.05
    assert _native_pair([spleen, bowel, right, kidney], sd) == [right, kidney]
    # One side only (a single kidney): its best candidate, nothing invented on the other.
    assert _native_pair([right, _candidate("right", 0.5, (-60.0, 0.0, 0.0))], sd) == [right]
    assert _native_pair([], sd) == []
    # Ranked pairs, for the growth to fall back on: the mirrored pair first, then the
    # right kidney with the spleen (its score makes up for a worse symmetry), bowel last.
    from models.mr_localise import native_pairs

    pairs = native_pairs([spleen, bowel, right, kidney], sd, limit=3)
    assert pairs == [[right, kidney], [spleen, right], [bowel, right]]
    assert native_pairs([right], sd, limit=3) == [[right]]


def test_a_candidate_of_plausible_volume_is_scored_not_dropped():
    # A 150 ml ellipsoid (a graft) in the right iliac fossa of an elliptic body: its
    # volume lies inside LocaliseConfig.volume_ml, so its size term is 1. (A hard window
    # used to score 0 inside its own range: only fragments and merges were candidates.)
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:40, 0:120, 0:160].astype(float)
    spacing = (4.0, 2.5, 2.5)
    body = ((y - 60) / 50) ** 2 + ((x - 80) / 75) ** 2 <= 1.0
    volume = np.where(body, 100.0, 5.0) + rng.normal(0, 3, (40, 120, 160))
    kidney = (((z - 20) * 4 / 50) ** 2 + ((y - 45) * 2.5 / 30) ** 2
              + ((x - 40) * 2.5 / 24) ** 2) <= 1.0
    assert 130 < kidney.sum() * np.prod(spacing) / 1000 < 170
    volume[kidney] = 160.0 + rng.normal(0, 3, kidney.sum())
    found = localise_kidneys(volume.astype(np.float32), spacing_zyx=spacing)
    assert found and found[0].terms["size"] == 1.0
    assert dice(found[0].mask, kidney) > 0.8 and found[0].side == "right"
