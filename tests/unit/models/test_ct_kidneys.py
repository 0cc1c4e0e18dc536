"""Whole-kidney CT segmentation without weights (models.ct_kidneys, models.ct_body)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from models.ct_body import blood_enhanced_area_mm2, body_mask, spine_track, to_working_grid
from models.ct_kidneys import (
    Candidate,
    CtKidneyConfig,
    bone_mask,
    choose_pair,
    delineate,
    detach_appendages,
    pair_term,
    score_body,
    score_region,
    segment_ct_kidneys,
    solidify,
)
from service.synthetic.ct_anatomy import Transplant
from service.synthetic.ct_phantom import Coverage, CtGrid, SyntheticCT, synthesize_ct
from service.synthetic.ct_tissues import CtPhase, CtTissue
from service.synthetic.study import geometry_image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def _image(ct: SyntheticCT) -> sitk.Image:
    return sitk.Cast(geometry_image(ct.hu, ct.geometry), sitk.sitkFloat32)


def _truth(ct: SyntheticCT, label: int) -> np.ndarray:
    """The kidney as reference segmentations draw it: without the renal sinus fat."""
    return (ct.kidneys == label) & (ct.tissues != CtTissue.SINUS_FAT)


@pytest.fixture(scope="module")
def case() -> SyntheticCT:
    return synthesize_ct(2, grid=CtGrid.small())


@pytest.fixture(scope="module")
def found(case: SyntheticCT):
    return segment_ct_kidneys(_image(case))


def test_both_kidneys_found_on_their_own_side(case: SyntheticCT, found) -> None:
    assert found.right is not None and found.left is not None, found.reasons
    image = _image(case)
    for kidney, label in ((found.right, 1), (found.left, 2)):
        assert _dice(kidney.mask, _truth(case, label)) >= 0.85
        truth_ml = float(_truth(case, label).sum()) * np.prod(image.GetSpacing()) / 1000
        assert kidney.volume_ml == pytest.approx(truth_ml, rel=0.15)
        assert 0 < kidney.score <= 1
        assert not kidney.touches_edge
    # The patient's right is -x in DICOM LPS: the right kidney's centre lies there.
    def centre_x(mask: np.ndarray) -> float:
        k, j, i = np.argwhere(mask).mean(axis=0)
        return image.TransformContinuousIndexToPhysicalPoint((i, j, k))[0]

    assert centre_x(found.right.mask) < centre_x(found.left.mask)


def test_sides_follow_the_patient_not_the_array(case: SyntheticCT, found) -> None:
    """The same CT stored with its columns reversed (direction x negated) gives the same
    kidneys on the same patient sides."""
    image = _image(case)
    flipped = sitk.Flip(image, [True, False, False])
    again = segment_ct_kidneys(flipped)
    assert again.right is not None and again.left is not None
    for before, after in ((found.right, again.right), (found.left, again.left)):
        assert _dice(before.mask, after.mask[:, :, ::-1]) >= 0.9


def test_no_kidney_in_view() -> None:
    ct = synthesize_ct(1, grid=CtGrid.small(Coverage.NO_KIDNEYS))
    assert not ct.kidney_in_view
    result = segment_ct_kidneys(_image(ct))
    assert result.found == ()
    assert set(result.reasons) == {"right", "left"}
    assert all("no kidney-like region" in why for why in result.reasons.values())


@pytest.mark.parametrize("phase", list(CtPhase))
@pytest.mark.parametrize("coverage", [Coverage.KIDNEYS, Coverage.PELVIS])
def test_blood_tells_an_unenhanced_ct_from_any_contrast_phase(phase: CtPhase,
                                                              coverage: Coverage) -> None:
    """Iodine in the aorta, vena cava or iliac vessels puts several cm² of blood above
    90 HU in front of the column; without contrast almost nothing is there."""
    transplant = Transplant() if coverage == Coverage.PELVIS else None
    ct = synthesize_ct(3, grid=CtGrid.small(coverage), phase=phase, transplant=transplant)
    work = to_working_grid(_image(ct), 2.5)
    hu = sitk.GetArrayFromImage(work)
    spine = spine_track(hu, body_mask(hu), 2.5)
    area = blood_enhanced_area_mm2(hu, spine, bone_mask(hu, 300.0), 2.5)
    threshold = CtKidneyConfig().enhanced_blood_mm2
    if phase == CtPhase.UNENHANCED:
        assert area < threshold / 1.5  # 50 mm² on this small grid; 131 the least seen with contrast
    else:
        assert area > threshold * 1.5


def test_unenhanced_ct_finds_both_kidneys() -> None:
    """Without contrast the kidney (30-40 HU) barely differs from the psoas beside it;
    the method notices the phase and still finds both kidneys."""
    ct = synthesize_ct(6, grid=CtGrid.small(), phase=CtPhase.UNENHANCED)
    found = segment_ct_kidneys(_image(ct))
    assert found.unenhanced
    assert found.right is not None and found.left is not None, found.reasons
    for kidney, label in ((found.right, 1), (found.left, 2)):
        assert _dice(kidney.mask, _truth(ct, label)) >= 0.8
    # Treated as a contrast CT (no adaptation), the same study loses its kidneys.
    plain = segment_ct_kidneys(_image(ct), CtKidneyConfig(enhanced_blood_mm2=0.0))
    assert not plain.unenhanced
    assert len(plain.found) < 2


def test_contrast_ct_is_not_called_unenhanced(found) -> None:
    assert not found.unenhanced


def test_no_column_no_search() -> None:
    water = sitk.Image([40, 40, 20], sitk.sitkFloat32)
    water.SetSpacing((4.0, 4.0, 5.0))
    result = segment_ct_kidneys(water)
    assert result.found == ()
    assert "vertebral column" in result.reasons["right"]


def test_spine_track_follows_the_column(case: SyntheticCT) -> None:
    work = to_working_grid(_image(case), 2.5)
    hu = sitk.GetArrayFromImage(work)
    track = spine_track(hu, body_mask(hu), 2.5)
    assert track.found.mean() > 0.8
    # The column lies between the kidneys, on the working grid's x axis.
    truth = sitk.Resample(geometry_image(case.kidneys, case.geometry), work,
                          sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    lab = sitk.GetArrayFromImage(truth)
    right_x = np.argwhere(lab == 1)[:, 2].mean()
    left_x = np.argwhere(lab == 2)[:, 2].mean()
    assert right_x < np.median(track.x) < left_x


def test_working_grid_is_patient_aligned() -> None:
    img = sitk.Image([10, 8, 6], sitk.sitkFloat32)
    img.SetSpacing((1.0, 2.0, 3.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    work = to_working_grid(img, 2.0)
    assert work.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert work.GetSpacing() == (2.0, 2.0, 2.0)
    assert work.GetSize() == (5, 8, 8)


def _noise_image(spacing: tuple[float, float, float], shape=(40, 64, 64)) -> sitk.Image:
    img = sitk.GetImageFromArray(
        np.random.default_rng(0).normal(40.0, 20.0, shape).astype(np.float32))
    img.SetSpacing(spacing)
    return img


def test_working_grid_low_passes_thin_slices_only() -> None:
    thin = _noise_image((0.75, 0.75, 1.0))
    inner = (slice(3, -3),) * 3  # away from the air the grid's edge may sample
    smooth = sitk.GetArrayFromImage(to_working_grid(thin, 2.5))[inner]
    raw = sitk.GetArrayFromImage(to_working_grid(thin, 2.5, anti_alias=False))[inner]
    assert smooth.std() < 6.0 < 12.0 < raw.std()
    assert abs(float(smooth.mean()) - 40.0) < 1.0
    coarse = _noise_image((3.0, 3.0, 3.0), shape=(12, 16, 16))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(to_working_grid(coarse, 2.5)),
        sitk.GetArrayFromImage(to_working_grid(coarse, 2.5, anti_alias=False)))


def test_solidify_fills_a_c_shape() -> None:
    c = np.zeros((9, 20, 20), dtype=bool)
    c[2:7, 4:16, 4:16] = True
    c[2:7, 8:12, 10:16] = False  # a notch open on one side, like the renal sinus
    assert not solidify(c, 0)[4, 10, 12]  # open notch: hole filling alone cannot
    filled = solidify(c, 3)
    assert filled[4, 10, 12]
    assert filled.sum() > c.sum()


def _ellipsoid(shape: tuple[int, int, int], semi_vox: tuple[float, float, float]) -> np.ndarray:
    zz, yy, xx = np.indices(shape, dtype=float)
    c = [(n - 1) / 2 for n in shape]
    return ((zz - c[0]) / semi_vox[0]) ** 2 + ((yy - c[1]) / semi_vox[1]) ** 2 + \
        ((xx - c[2]) / semi_vox[2]) ** 2 <= 1


def test_score_prefers_an_upright_kidney_in_fat_to_a_slab() -> None:
    config = CtKidneyConfig()
    shape = (60, 40, 40)
    hu = np.full(shape, -100.0, dtype=np.float32)  # fat
    kidney = _ellipsoid(shape, (22, 12, 9))  # 55 x 30 x 22 mm at 2.5 mm
    hu[kidney] = 150.0
    bone = np.zeros(shape, dtype=bool)
    whole = (slice(0, 60), slice(0, 40), slice(0, 40))
    good = score_region(hu, bone, whole, kidney, (100.0, 200.0), 2.5, config)
    assert good.score > 0.5
    lying = score_region(hu, bone, whole, _ellipsoid(shape, (9, 12, 19)), (100.0, 200.0),
                         2.5, config)
    assert lying.upright < 0.5 and lying.score < good.score
    # The same kidney against equally bright tissue has no contrast.
    flat = np.full(shape, 150.0, dtype=np.float32)
    assert score_region(flat, bone, whole, kidney, (100.0, 200.0), 2.5, config).score < 0.05
    # Bone all around is not a kidney.
    bony = score_region(hu, np.ones(shape, dtype=bool), whole, kidney, (100.0, 200.0), 2.5,
                        config)
    assert bony.bone_free == 0.0 and bony.score == 0.0


def test_the_size_band_forgives_a_small_kidney_its_size_not_its_proportions() -> None:
    """An atrophic kidney is a kidney's shape at 55-80 % of its length: the adult size
    alone scores it near 0; with a size band it keeps its proportions' score, and a
    small region of other proportions stays low."""
    shape = (40, 30, 30)
    hu = np.full(shape, -100.0, dtype=np.float32)
    small = _ellipsoid(shape, (13, 7, 5.5))  # 33 x 18 x 14 mm: 0.6 of the adult size
    hu[small] = 150.0
    bone = np.zeros(shape, dtype=bool)
    whole = (slice(0, 40), slice(0, 30), slice(0, 30))
    adult = CtKidneyConfig()
    band = CtKidneyConfig(semi_axes_scale=(0.55, 1.0))
    assert score_region(hu, bone, whole, small, (100.0, 200.0), 2.5, adult).shape < 0.1
    assert score_region(hu, bone, whole, small, (100.0, 200.0), 2.5, band).shape > 0.8
    ball_like = _ellipsoid(shape, (8, 8, 8))
    assert score_region(hu, bone, whole, ball_like, (100.0, 200.0), 2.5, band).shape < 0.3
    # The default band (1, 1) is the adult size: a kidney of that size is unchanged.
    big_shape = (60, 40, 40)
    big = _ellipsoid(big_shape, (22, 12, 9))
    fat = np.where(big, 150.0, -100.0).astype(np.float32)
    none = np.zeros(big_shape, dtype=bool)
    full = (slice(0, 60), slice(0, 40), slice(0, 40))
    assert score_region(fat, none, full, big, (100.0, 200.0), 2.5, band).shape == \
        pytest.approx(score_region(fat, none, full, big, (100.0, 200.0), 2.5, adult).shape)


def test_detach_appendages_cuts_a_tube_but_not_a_thin_kidney() -> None:
    body = np.zeros((60, 40, 40), dtype=bool)
    body[:40] = _ellipsoid((40, 40, 40), (16, 12, 12))
    with_tube = body.copy()
    with_tube[20:58, 18:22, 18:22] = True  # a 4-voxel tube leaving the lower pole
    cut = detach_appendages(with_tube, 4, 0.15)
    assert with_tube[50:].any() and not cut[50:].any()  # the tube is gone
    assert cut[body].mean() > 0.98  # the body is whole
    # A plate thinner than every ball is left as it is rather than cut away.
    plate = np.zeros((20, 30, 30), dtype=bool)
    plate[9:12, 5:25, 5:25] = True
    assert np.array_equal(detach_appendages(plate, 4, 0.15), plate)


def test_the_rim_added_back_stops_at_its_ceiling() -> None:
    """An unenhanced graft (30 HU) drawn two voxels short of its edge, against fat on one
    side and muscle (50 HU) on the other: two rim layers restore its edge against fat;
    a ceiling half-way to muscle keeps them out of the muscle, which they enter without
    one (issue 16)."""
    shape = (40, 40, 40)
    kidney = _ellipsoid(shape, (14, 12, 12))
    hu = np.full(shape, -100.0, dtype=np.float32)
    hu[kidney] = 30.0
    muscle = ~kidney & (np.indices(shape)[2] >= 27)
    hu[muscle] = 50.0
    # Drawn two layers short against fat; against muscle (the smoothed grid blends the
    # two there) the candidate reaches the edge.
    short = ndi.binary_erosion(kidney, iterations=2) | (kidney & (np.indices(shape)[2] >= 27))
    box = (slice(0, 40),) * 3
    best = Candidate(window=(20.0, 40.0), bbox=box, mask=short, volume_ml=1.0, contrast=1.0,
                     compactness=1.0, shape=1.0, bone_share=0.0, upright=1.0, bone_free=1.0)
    zone = np.ones(shape, dtype=bool)
    config = CtKidneyConfig(detach_voxels=0)
    one = delineate(hu, best, zone, config)
    two = delineate(hu, best, zone, config, rim_voxels=2, rim_ceiling_hu=40.0)
    unbounded = delineate(hu, best, zone, config, rim_voxels=2)
    assert (one & kidney).sum() < 0.93 * kidney.sum()  # a layer short against fat
    assert not (two & muscle).any() and (two & kidney).sum() > 0.98 * kidney.sum()
    assert (unbounded & muscle).sum() > 100


def test_a_kidney_with_a_vessel_of_its_own_hu_is_scored_on_its_body() -> None:
    """Excretory phase: an iliac vein as bright as the graft joins its region; the score
    judges what delineation keeps (the body), not the kidney with its tube."""
    config = CtKidneyConfig(detach_voxels=2)
    shape = (80, 40, 40)
    hu = np.full(shape, -100.0, dtype=np.float32)
    kidney = np.zeros(shape, dtype=bool)
    kidney[:60] = _ellipsoid((60, 40, 40), (22, 12, 9))
    vessel = np.zeros(shape, dtype=bool)
    vessel[30:80, 18:21, 17:20] = True  # 3-voxel tube down from the hilum, out of view
    vessel[30:80, 18:21, 20:35] |= np.eye(50, 15, k=-30, dtype=bool)[:, None, :]  # a loop
    hu[kidney | vessel] = 140.0
    bone = np.zeros(shape, dtype=bool)
    whole = tuple(slice(0, n) for n in shape)
    tubed = score_region(hu, bone, whole, kidney | vessel, (100.0, 200.0), 2.5, config)
    body = score_body(hu, bone, tubed, 2.5, config)
    assert body.score > tubed.score and body.compactness > tubed.compactness
    assert body.mask[kidney].mean() > 0.95 and not body.mask[65:].any()
    # A kidney without appendages keeps its own candidate.
    plain = score_region(hu, bone, whole, kidney, (100.0, 200.0), 2.5, config)
    assert score_body(hu, bone, plain, 2.5, config) is plain


@pytest.mark.parametrize("kidney_hu", [30.0, 160.0])
def test_outline_follows_the_half_way_level_between_kidney_and_fat(kidney_hu: float) -> None:
    """A blurred kidney in fat: the outline is where the blur is half-way (the true edge),
    whether the kidney is plain (30 HU, level stays at the fat limit of -30 HU) or
    enhanced (160 HU, level 30 HU); a fixed fat limit lets an enhanced kidney bleed."""
    from scipy import ndimage as ndi

    truth = _ellipsoid((36, 30, 30), (16.0, 9.0, 7.0))
    hu = ndi.gaussian_filter(np.where(truth, kidney_hu, -100.0).astype(np.float32), 1.0)
    config = CtKidneyConfig()
    window = (kidney_hu - 40.0, kidney_hu + 40.0)
    where = (slice(0, 36), slice(0, 30), slice(0, 30))
    candidate = score_region(hu, np.zeros(hu.shape, bool), where, truth, window, 2.5,
                             config)
    zone = np.ones(hu.shape, bool)
    outline = delineate(hu, candidate, zone, config)
    assert abs(int(outline.sum()) / int(truth.sum()) - 1.0) < 0.05
    fixed = delineate(hu, candidate, zone, CtKidneyConfig(fat_reference_hu=None))
    if kidney_hu > 100:
        assert fixed.sum() > 1.1 * truth.sum()
    else:
        np.testing.assert_array_equal(fixed, outline)


def _candidate_at(z: int, y: int, x: int, score: float) -> Candidate:
    """A small candidate centred at (z, y, x) of the working grid with the given score."""
    mask = np.ones((3, 3, 3), dtype=bool)
    box = (slice(z - 1, z + 2), slice(y - 1, y + 2), slice(x - 1, x + 2))
    return Candidate(window=(0.0, 40.0), bbox=box, mask=mask, volume_ml=150.0, contrast=1.0,
                     compactness=1.0, shape=score, bone_share=0.0, upright=1.0, bone_free=1.0)


def test_a_kidney_level_with_the_other_side_beats_a_slightly_better_scoring_loop() -> None:
    """Synthetic unenhanced CT seed 211: the ascending colon (78 mm below and 43 mm in
    front of the left kidney, score 0.531) against the right kidney (level with the left
    one, 0.517): the pair decides."""
    config = CtKidneyConfig()
    s = config.working_spacing_mm
    left = _candidate_at(96, 150, 177, 0.472)
    kidney = _candidate_at(int(96 - 15 / s), 152, 78, 0.517)
    colon = _candidate_at(int(96 - 78 / s), int(150 - 43 / s), 61, 0.531)
    assert colon.score > kidney.score
    assert pair_term(kidney, left, s, config) == 1.0
    assert pair_term(colon, left, s, config) < 0.3
    chosen = choose_pair([colon, kidney], [left], s, config)
    assert chosen["right"] is kidney and chosen["left"] is left
    # Alone on its side (no candidate on the other), the best-scoring region is taken.
    assert choose_pair([colon, kidney], [], s, config) == {"right": colon, "left": None}
    # Without a match level with the left kidney (pair term < 0.5), the best alone.
    assert choose_pair([colon], [left], s, config)["right"] is colon
    # A right kidney 3 cm lower than the left (within the free band) is not penalised.
    low = _candidate_at(int(96 - 30 / s), 150, 78, 0.5)
    assert pair_term(low, left, s, config) == 1.0
