"""Synthetic contrast CT of the abdomen: anatomy, HU, ground truth, DICOM and NIfTI files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage as ndi

from service.imaging.series import group_by_series, load_series
from service.synthetic import (
    CT_HU_RANGES,
    CT_SERIES_DESCRIPTION,
    Coverage,
    CtGrid,
    CtPhase,
    CtRenderSettings,
    CtTissue,
    Side,
    SyntheticCT,
    SyntheticCTStudy,
    hu_ranges,
    make_ct_anatomy,
    synthesize_ct,
    write_ct_nifti_case,
    write_ct_study,
)

SEED = 11

#: The brief's HU targets in the cortico-medullary phase (low, high).
EXPECTED_HU = {
    CtTissue.AORTA: (250, 350),
    CtTissue.LIVER: (90, 110),
    CtTissue.CORTEX: (150, 250),
    CtTissue.MEDULLA: (60, 100),
    CtTissue.SINUS_FAT: (-120, -80),
    CtTissue.CANCELLOUS_BONE: (200, 300),
    CtTissue.CORTICAL_BONE: (400, 1000),
    CtTissue.FAT: (-120, -80),
    CtTissue.MUSCLE: (40, 70),
}


@pytest.fixture(scope="module")
def ct() -> SyntheticCT:
    return synthesize_ct(SEED, grid=CtGrid.small())


@pytest.fixture(scope="module")
def study(ct: SyntheticCT, tmp_path_factory: pytest.TempPathFactory) -> SyntheticCTStudy:
    return write_ct_study(tmp_path_factory.mktemp("ct"), ct)


@pytest.fixture(scope="module")
def loaded(study: SyntheticCTStudy) -> sitk.Image:
    series = load_series(list(study.files))
    assert len(series.volumes) == 1
    return series.volumes[0].image


def _centroid_mm(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Patient position (LPS) of the centroid of a (z, y, x) mask on ``image``'s grid."""
    z, y, x = np.argwhere(mask).mean(axis=0)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint((x, y, z)))


# --------------------------------------------------------------------------- anatomy


@pytest.mark.parametrize("seed", range(6))
def test_kidneys_have_realistic_size_level_and_pose(seed: int) -> None:
    anatomy = make_ct_anatomy(seed)
    assert set(anatomy.kidneys) == {Side.RIGHT, Side.LEFT}
    for side, kidney in anatomy.kidneys.items():
        outline = kidney.outline
        assert 100.0 <= 2.0 * outline.semi_axes[0] <= 130.0
        assert 120.0 - 1e-6 <= kidney.analytic_volume_ml <= 250.0 + 1e-6
        assert np.sign(outline.centre[0]) == side.sign  # LPS: patient left is +x
        long_axis, hilum, _ = (np.asarray(a) for a in outline.axes)
        upper = long_axis if long_axis[2] > 0 else -long_axis
        assert np.sign(upper[0]) == -side.sign  # upper pole medial
        assert upper[1] > 0  # upper pole posterior
        assert np.sign(hilum[0]) == -side.sign and hilum[1] < 0  # hilum antero-medial
        assert 0.4 < kidney.cortex_volume_ml(50_000) / kidney.analytic_volume_ml < 0.8
    right, left = anatomy.kidneys[Side.RIGHT], anatomy.kidneys[Side.LEFT]
    assert 10.0 <= left.outline.centre[2] - right.outline.centre[2] <= 25.0  # right lower


def test_kidney_scale_options() -> None:
    full = make_ct_anatomy(3)
    shrunk = make_ct_anatomy(3, right_kidney_scale=0.7, left_kidney_scale=0.0)
    assert set(shrunk.kidneys) == {Side.RIGHT}
    ratio = (
        shrunk.kidneys[Side.RIGHT].analytic_volume_ml / full.kidneys[Side.RIGHT].analytic_volume_ml
    )
    assert ratio == pytest.approx(0.7**3)
    with pytest.raises(ValueError, match="left_kidney_scale"):
        make_ct_anatomy(3, left_kidney_scale=-1.0)


# --------------------------------------------------------------------------- rendering


def test_ideal_rendering_gives_each_tissue_its_hu() -> None:
    ideal = synthesize_ct(SEED, grid=CtGrid.small(), settings=CtRenderSettings.ideal())
    for tissue, value in ideal.hu_table.items():
        low, high = CT_HU_RANGES[tissue]
        assert low <= value <= high
        voxels = ideal.hu[ideal.tissues == tissue]
        if voxels.size:
            assert np.all(voxels == int(np.clip(round(value), -1024, 3071))), tissue
    for tissue, (low, high) in EXPECTED_HU.items():
        assert low <= ideal.hu_table[tissue] <= high, tissue
        assert np.any(ideal.tissues == tissue), f"{tissue.name} missing from the volume"


def test_phases_change_the_enhancing_tissues_only(tmp_path: Path) -> None:
    default = synthesize_ct(SEED, grid=CtGrid.small(), settings=CtRenderSettings.ideal())
    assert default.phase == CtPhase.CORTICOMEDULLARY
    cases = {phase: synthesize_ct(SEED, grid=CtGrid.small(), settings=CtRenderSettings.ideal(),
                                  phase=phase) for phase in CtPhase}
    for phase, ct in cases.items():
        assert np.array_equal(ct.tissues, default.tissues), phase  # same anatomy
        for tissue, value in ct.hu_table.items():
            low, high = hu_ranges(phase)[tissue]
            assert low <= value <= high, (phase, tissue)
        for tissue in (CtTissue.FAT, CtTissue.MUSCLE, CtTissue.CORTICAL_BONE):
            assert ct.hu_table[tissue] == default.hu_table[tissue], (phase, tissue)
    plain = cases[CtPhase.UNENHANCED].hu_table
    assert plain[CtTissue.CORTEX] < plain[CtTissue.LIVER] and plain[CtTissue.AORTA] < 60
    late = cases[CtPhase.NEPHROGRAPHIC].hu_table
    assert abs(late[CtTissue.CORTEX] - late[CtTissue.MEDULLA]) < 60
    assert cases[CtPhase.EXCRETORY].hu_table[CtTissue.URINE] >= 400
    assert cases[CtPhase.CORTICOMEDULLARY].hu_table == default.hu_table
    study = write_ct_study(tmp_path, cases[CtPhase.UNENHANCED])
    ds = pydicom.dcmread(study.files[0])
    assert "ContrastBolusAgent" not in ds and ds.SeriesDescription == "ABD NON-CONTRAST"


def test_rendered_hu_near_intended_values(ct: SyntheticCT) -> None:
    for tissue in EXPECTED_HU:
        mask = ct.tissues == tissue
        interior = mask & (
            ndi.minimum_filter(ct.tissues, size=3) == ndi.maximum_filter(ct.tissues, size=3)
        )
        values = ct.hu[interior if interior.sum() >= 20 else mask].astype(float)
        if tissue is CtTissue.CORTICAL_BONE:  # a 2 mm shell: partial volume at 4 x 5 mm
            assert np.percentile(values, 90) > 400.0
            continue
        assert abs(np.median(values) - ct.hu_table[tissue]) < 15.0, tissue
    # The cortico-medullary phase: cortex well above medulla, aorta above both.
    assert ct.hu_table[CtTissue.CORTEX] > ct.hu_table[CtTissue.MEDULLA] + 50
    assert ct.hu_table[CtTissue.AORTA] > ct.hu_table[CtTissue.CORTEX]


def test_noise_sigma_is_as_set() -> None:
    settings = CtRenderSettings(noise_sigma_hu=12.0, psf_sigma_mm=0.0, texture_scale=0.0)
    noisy = synthesize_ct(SEED, grid=CtGrid.small(), settings=settings)
    flat = synthesize_ct(
        SEED,
        grid=CtGrid.small(),
        settings=CtRenderSettings(noise_sigma_hu=0.0, psf_sigma_mm=0.0, texture_scale=0.0),
    )
    body = flat.tissues != CtTissue.AIR
    residual = noisy.hu[body].astype(float) - flat.hu[body]
    assert residual.std() == pytest.approx(12.0, rel=0.05)
    assert abs(residual.mean()) < 0.5


def test_default_grid_has_realistic_spacing() -> None:
    ct = synthesize_ct(SEED, grid=CtGrid(slices=3))
    step, row, column = ct.geometry.spacing_mm
    assert ct.geometry.shape == (3, 512, 512)
    assert step == 2.5 and row == column and 0.6 <= row <= 0.9


def test_same_seed_same_volume(ct: SyntheticCT) -> None:
    again = synthesize_ct(SEED, grid=CtGrid.small())
    assert np.array_equal(again.hu, ct.hu) and np.array_equal(again.kidneys, ct.kidneys)
    other = synthesize_ct(SEED + 1, grid=CtGrid.small())
    assert other.hu.shape != ct.hu.shape or not np.array_equal(other.hu, ct.hu)


# --------------------------------------------------------------------------- ground truth


def test_cortex_lies_inside_its_kidney(ct: SyntheticCT) -> None:
    for side in Side:
        kidney, cortex = ct.kidneys == side, ct.cortex == side
        assert cortex.any() and not np.any(cortex & ~kidney)
        assert np.all(ct.tissues[cortex] == CtTissue.CORTEX)
        assert 0.4 < cortex.sum() / kidney.sum() < 0.8
        inside = ct.tissues[kidney]
        for tissue in (CtTissue.MEDULLA, CtTissue.SINUS_FAT):
            assert np.any(inside == tissue), tissue


def test_volumes_match_voxel_counts(ct: SyntheticCT) -> None:
    voxel_ml = ct.geometry.voxel_volume_ml
    for side, truth in ct.truth.items():
        assert truth.volume_ml == pytest.approx(np.count_nonzero(ct.kidneys == side) * voxel_ml)
        assert truth.volume_ml == pytest.approx(truth.analytic_volume_ml, rel=0.03)
        assert truth.cortex_volume_ml == pytest.approx(truth.analytic_cortex_ml, rel=0.06)


def test_no_kidney_field_of_view() -> None:
    ct = synthesize_ct(SEED, grid=CtGrid.small(Coverage.NO_KIDNEYS))
    assert not ct.kidney_in_view and not ct.cortex.any()
    assert not np.isin(ct.tissues, [CtTissue.CORTEX, CtTissue.MEDULLA]).any()
    assert np.any(ct.tissues == CtTissue.LIVER) and np.any(ct.tissues == CtTissue.SPLEEN)
    assert set(ct.truth) == {Side.RIGHT, Side.LEFT}  # the patient still has both


def test_one_kidney_removed() -> None:
    ct = synthesize_ct(SEED, grid=CtGrid.small(), left_kidney_scale=0.0)
    assert set(np.unique(ct.kidneys)) == {0, 1} and set(ct.truth) == {Side.RIGHT}


# --------------------------------------------------------------------------- files


def test_dicom_is_one_axial_ct_series(
    ct: SyntheticCT, study: SyntheticCTStudy, loaded: sitk.Image
) -> None:
    assert len(study.files) == ct.geometry.shape[0]
    assert list(group_by_series(study.files)) == [study.series_instance_uid]
    series = load_series(list(study.files))
    assert series.modality == "CT" and series.description == CT_SERIES_DESCRIPTION
    step, row, column = ct.geometry.spacing_mm
    assert loaded.GetSpacing() == pytest.approx((column, row, step))
    assert loaded.GetDirection() == pytest.approx(tuple(np.eye(3).ravel()))
    assert loaded.GetOrigin() == pytest.approx(ct.geometry.origin, abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(loaded), ct.hu.astype(np.float32))
    ds = pydicom.dcmread(study.files[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
    assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.PatientPosition == "HFS" and ds.KVP == 120 and ds.ContrastBolusAgent
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert ds.StudyInstanceUID == study.study_instance_uid


def test_kidneys_on_the_patients_side_after_reading_back(
    ct: SyntheticCT, study: SyntheticCTStudy, loaded: sitk.Image
) -> None:
    labels = sitk.Resample(
        sitk.ReadImage(str(study.kidneys_path)), loaded, sitk.Transform(), sitk.sitkNearestNeighbor
    )
    array = sitk.GetArrayFromImage(labels)
    assert np.array_equal(array, ct.kidneys)
    right = _centroid_mm(loaded, array == Side.RIGHT)
    left = _centroid_mm(loaded, array == Side.LEFT)
    liver = _centroid_mm(loaded, ct.tissues == CtTissue.LIVER)
    spleen = _centroid_mm(loaded, ct.tissues == CtTissue.SPLEEN)
    assert right[0] < 0 < left[0] and liver[0] < 0 < spleen[0]
    assert right[2] < left[2]
    cortex = sitk.GetArrayFromImage(sitk.ReadImage(str(study.cortex_path)))
    assert np.array_equal(cortex, ct.cortex)


def test_no_kidney_study_says_so(tmp_path: Path) -> None:
    ct = synthesize_ct(SEED, grid=CtGrid.small(Coverage.NO_KIDNEYS))
    study = write_ct_study(tmp_path, ct)
    assert not study.kidney_in_view
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(study.kidneys_path))).any()


def test_nifti_case_for_training(ct: SyntheticCT, loaded: sitk.Image, tmp_path: Path) -> None:
    case = write_ct_nifti_case(tmp_path, "case007", ct)
    assert [p.name for p in (case.ct_path, case.cortex_path, case.kidneys_path)] == [
        "case007_ct.nii.gz",
        "case007_cortex.nii.gz",
        "case007_kidneys.nii.gz",
    ]
    for path, expected in (
        (case.ct_path, ct.hu),
        (case.cortex_path, ct.cortex),
        (case.kidneys_path, ct.kidneys),
    ):
        image = sitk.ReadImage(str(path))
        assert np.array_equal(sitk.GetArrayFromImage(image), expected)
        assert image.GetOrigin() == pytest.approx(loaded.GetOrigin(), abs=1e-3)
        assert image.GetSpacing() == pytest.approx(loaded.GetSpacing())
    assert sitk.ReadImage(str(case.ct_path)).GetPixelID() == sitk.sitkInt16
    with pytest.raises(ValueError, match="case"):
        write_ct_nifti_case(tmp_path, "a/b", ct)


def test_grid_validation() -> None:
    with pytest.raises(ValueError, match="slice_spacing_mm"):
        CtGrid(slice_spacing_mm=0.0)
    with pytest.raises(ValueError, match="coverage|no-such"):
        CtGrid(coverage="no-such")
    with pytest.raises(ValueError, match="noise_sigma_hu"):
        CtRenderSettings(noise_sigma_hu=-1.0)
