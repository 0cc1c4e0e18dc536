"""Synthetic CT of kidney-transplant recipients: pelvis, graft in an iliac fossa, natives."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from service.synthetic.ct_anatomy import NativeKidneys, Side, Transplant, make_ct_anatomy
from service.synthetic.ct_phantom import Coverage, CtGrid, SyntheticCT, synthesize_ct
from service.synthetic.ct_study import write_ct_study
from service.synthetic.ct_tissues import CtPhase, CtTissue

#: A coarse grid for fast tests (the pelvis needs a wider field than CtGrid.small()).
GRID = CtGrid(matrix=112, in_plane_spacing_mm=3.2, slice_spacing_mm=4.0,
              coverage=Coverage.PELVIS)


def _centre_mm(ct: SyntheticCT, mask: np.ndarray) -> np.ndarray:
    k, j, i = np.argwhere(mask).mean(axis=0)
    g = ct.geometry
    return np.asarray(g.origin) + np.array([i * g.spacing_mm[2], j * g.spacing_mm[1],
                                            k * g.spacing_mm[0]])


@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_graft_lies_in_the_requested_iliac_fossa(side: Side) -> None:
    ct = synthesize_ct(5, grid=GRID, transplant=Transplant(graft_side=side))
    assert ct.graft_side is side and ct.graft_truth is not None
    assert ct.graft_truth.side is side and ct.graft_in_view
    assert 120.0 <= ct.graft_truth.analytic_volume_ml <= 250.0
    assert ct.graft_truth.volume_ml == pytest.approx(ct.graft_truth.analytic_volume_ml, rel=0.1)
    x, y, z = _centre_mm(ct, ct.graft)
    assert 30.0 < side.sign * x < 120.0  # LPS: the patient's right is -x
    assert y < 0.0  # anterior half of the body
    pelvis = ct.anatomy.pelvis
    assert pelvis is not None and pelvis.hip < z < pelvis.iliac_crest
    assert not ct.kidney_in_view  # the pelvic field of view holds no native kidney
    # The graft has a native kidney's inner structure.
    inside = ct.tissues[ct.graft]
    for tissue in (CtTissue.CORTEX, CtTissue.MEDULLA, CtTissue.SINUS_FAT):
        assert np.any(inside == tissue)
    # Pelvic bones, bladder and bowel are in view.
    for tissue in (CtTissue.CORTICAL_BONE, CtTissue.URINE, CtTissue.BOWEL_WALL):
        assert np.any(ct.tissues == tissue)


def test_side_is_drawn_from_the_seed_and_the_same_seed_is_the_same_patient() -> None:
    sides = {make_ct_anatomy(seed, transplant=Transplant()).graft_side for seed in range(8)}
    assert sides == {Side.RIGHT, Side.LEFT}
    a = synthesize_ct(7, grid=GRID, transplant=Transplant())
    b = synthesize_ct(7, grid=GRID, transplant=Transplant())
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.graft, b.graft)


def test_abdomen_above_the_pelvis_is_the_plain_phantoms() -> None:
    """The transplant's choices come from their own stream: the body and the native
    kidneys' poses are those of the same seed without a transplant."""
    plain = make_ct_anatomy(4)
    recipient = make_ct_anatomy(4, transplant=Transplant(natives=NativeKidneys.NORMAL))
    assert plain.body_semi_axes == recipient.body_semi_axes
    for side in Side:
        assert plain.kidneys[side].outline == recipient.kidneys[side].outline


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_atrophic_natives_are_small_and_scarred(seed: int) -> None:
    anatomy = make_ct_anatomy(seed, transplant=Transplant())
    assert set(anatomy.kidneys) == {Side.RIGHT, Side.LEFT}
    for kidney in anatomy.kidneys.values():
        assert 20.0 <= kidney.analytic_volume_ml <= 80.0
        assert kidney.analytic_volume_ml < kidney.outline.analytic_volume_ml
    removed = make_ct_anatomy(seed, transplant=Transplant(natives="removed"))
    assert removed.kidneys == {}


def test_abdomen_pelvis_holds_natives_and_graft_apart() -> None:
    grid = CtGrid(matrix=112, in_plane_spacing_mm=3.2, slice_spacing_mm=5.0,
                  coverage=Coverage.ABDOMEN_PELVIS)
    ct = synthesize_ct(2, grid=grid, transplant=Transplant(graft_side="left"))
    assert ct.kidney_in_view and ct.graft_in_view
    assert set(np.unique(ct.kidneys)) == {0, 1, 2}
    assert not (ct.graft & (ct.kidneys > 0)).any()
    graft_z = _centre_mm(ct, ct.graft)[2]
    for label in (1, 2):
        assert _centre_mm(ct, ct.kidneys == label)[2] > graft_z + 100.0
    assert ct.truth[Side.RIGHT].volume_ml < 90.0


def test_every_phase_and_the_graft_enhances_like_a_kidney() -> None:
    values = {}
    for phase in CtPhase:
        ct = synthesize_ct(3, grid=GRID, phase=phase, transplant=Transplant())
        values[phase] = ct.hu_table[CtTissue.CORTEX]
        assert np.array_equal(ct.graft, synthesize_ct(3, grid=GRID, transplant=Transplant()).graft)
    assert values[CtPhase.UNENHANCED] < 45.0 < values[CtPhase.CORTICOMEDULLARY]


def test_hard_variants_lymphocele_bowel_and_cut_graft() -> None:
    ct = synthesize_ct(4, grid=GRID, transplant=Transplant(lymphocele=True,
                                                          bowel_against_graft=True))
    lymph = ct.tissues == CtTissue.LYMPH
    assert lymph.any()
    near = ndi.binary_dilation(ct.graft, iterations=2) & ~ct.graft
    assert (near & lymph).any()
    assert (near & (ct.tissues == CtTissue.BOWEL_WALL)).any()
    assert 0.0 <= ct.hu_table[CtTissue.LYMPH] <= 15.0
    cut = synthesize_ct(4, grid=CtGrid(matrix=112, in_plane_spacing_mm=3.2,
                                       slice_spacing_mm=4.0, coverage=Coverage.LOWER_PELVIS),
                        transplant=Transplant())
    assert cut.graft[-1].any()  # the top slice crosses the graft
    assert cut.graft_truth is not None
    assert cut.graft.sum() * np.prod(cut.geometry.spacing_mm) / 1000 < \
        0.8 * cut.graft_truth.analytic_volume_ml


def test_without_a_transplant_nothing_changes() -> None:
    ct = synthesize_ct(3, grid=CtGrid.small())
    assert ct.graft is not None and not ct.graft.any()
    assert ct.graft_side is None and ct.graft_truth is None
    with pytest.raises(ValueError, match="transplant"):
        synthesize_ct(3, grid=CtGrid.small(Coverage.PELVIS))
    with pytest.raises(ValueError, match="graft_side"):
        Transplant(graft_side="middle")


def test_study_files_carry_the_graft_truth(tmp_path) -> None:
    ct = synthesize_ct(6, grid=GRID, phase=CtPhase.UNENHANCED,
                       transplant=Transplant(graft_side=Side.RIGHT))
    study = write_ct_study(tmp_path, ct)
    assert study.graft_side is Side.RIGHT and study.graft_path is not None
    graft = sitk.GetArrayFromImage(sitk.ReadImage(str(study.graft_path)))
    assert np.array_equal(graft > 0, ct.graft)
    plain = write_ct_study(tmp_path / "plain", synthesize_ct(6, grid=CtGrid.small()))
    assert plain.graft_path is None and not (tmp_path / "plain" / "truth_graft.nii.gz").exists()
