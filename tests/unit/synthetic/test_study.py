"""Synthetic kidney-graft MR studies: phantom maths and the DICOM files written."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from service.synthetic import (
    T2_SLICE_THICKNESS_MM,
    DceLayout,
    Orientation,
    SyntheticMR,
    SyntheticStudy,
    Tissue,
    VolumeGeometry,
    default_phase_times,
    make_anatomy,
    synthesize_mr,
    write_mr_study,
)

DEFAULT_SHAPE = (24, 96, 96)
DEFAULT_SPACING = (2.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def phantom() -> SyntheticMR:
    return synthesize_mr(seed=5)


def _tissue_mean(image: np.ndarray, labels: np.ndarray, *tissues: Tissue) -> float:
    return float(image[np.isin(labels, tissues)].mean())


# --------------------------------------------------------------------------- phantom maths


def test_default_phase_times() -> None:
    assert default_phase_times(4) == pytest.approx((0.0, 20.0, 60.0, 180.0))
    assert default_phase_times(1) == (0.0,)
    for n in (2, 3, 5, 8):
        times = default_phase_times(n)
        assert len(times) == n
        assert times[0] == 0.0
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
    with pytest.raises(ValueError, match="at least one"):
        default_phase_times(0)


def test_dce_phases_follow_the_enhancement_curves(phantom: SyntheticMR) -> None:
    pre, arterial, nephrographic, late = phantom.dce.astype(float)
    labels = phantom.dce_labels
    kidney = (Tissue.CORTEX, Tissue.MEDULLA)
    vessels = (Tissue.ARTERY,)
    # Arterial: the arteries outshine the cortex.
    assert _tissue_mean(arterial, labels, *vessels) > 1.5 * _tissue_mean(
        arterial, labels, Tissue.CORTEX
    )
    # Nephrographic: the kidney is the brightest tissue.
    kidney_mean = _tissue_mean(nephrographic, labels, *kidney)
    for tissue in set(Tissue) - {Tissue.CORTEX, Tissue.MEDULLA, Tissue.AIR}:
        if np.any(labels == tissue):
            assert kidney_mean > _tissue_mean(nephrographic, labels, tissue), tissue
    # Enhancement: kidney brighter after contrast than before, still enhanced late.
    assert kidney_mean > 2.5 * _tissue_mean(pre, labels, *kidney)
    assert _tissue_mean(late, labels, *kidney) > 2.0 * _tissue_mean(pre, labels, *kidney)


def test_noise_is_rician_and_images_are_uint16(phantom: SyntheticMR) -> None:
    assert phantom.dce.dtype == np.uint16
    assert phantom.t2 is not None and phantom.t2.dtype == np.uint16
    air = phantom.dce[0][phantom.dce_labels == Tissue.AIR].astype(float)
    assert air.size > 100
    # Rician noise floor of pure noise: sigma * sqrt(pi / 2) ~ 15 for sigma = 12.
    assert 8.0 < air.mean() < 25.0
    assert air.min() >= 0


def test_t2_contrast_and_motion(phantom: SyntheticMR) -> None:
    assert phantom.t2 is not None and phantom.t2_geometry is not None
    motion = phantom.t2_motion
    assert motion is not None
    assert 0.0 < motion.angle_deg <= 3.0
    assert np.all(np.abs(motion.translation_mm) <= 4.0)
    assert phantom.t2_geometry.spacing_mm[0] == T2_SLICE_THICKNESS_MM
    labels = phantom.anatomy.labels(motion.apply_inverse(phantom.t2_geometry.points()))
    t2 = phantom.t2.astype(float)
    medulla = _tissue_mean(t2, labels, Tissue.MEDULLA)
    cortex = _tissue_mean(t2, labels, Tissue.CORTEX)
    assert medulla > cortex > _tissue_mean(t2, labels, Tissue.MUSCLE)
    assert _tissue_mean(t2, labels, Tissue.VEIN) < cortex / 2
    # The T2 kidney is displaced: its mask differs from the unmoved one.
    moved = phantom.anatomy.kidney.contains(motion.apply_inverse(phantom.t2_geometry.points()))
    still = phantom.anatomy.kidney.contains(phantom.t2_geometry.points())
    assert np.count_nonzero(moved != still) > 0.05 * still.sum()
    np.testing.assert_allclose(motion.apply(motion.apply_inverse(np.eye(3))), np.eye(3), atol=1e-9)


def test_seed_reproducibility() -> None:
    a = synthesize_mr(seed=3, shape=(6, 32, 32), include_t2=True)
    b = synthesize_mr(seed=3, shape=(6, 32, 32), include_t2=True)
    c = synthesize_mr(seed=4, shape=(6, 32, 32), include_t2=True)
    np.testing.assert_array_equal(a.dce, b.dce)
    np.testing.assert_array_equal(a.t2, b.t2)
    assert a.t2_motion == b.t2_motion
    assert not np.array_equal(a.dce, c.dce)
    assert a.t2_motion != c.t2_motion


@pytest.mark.parametrize("orientation", list(Orientation), ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_whole_kidney_inside_default_grid(orientation: Orientation, seed: int) -> None:
    kidney = make_anatomy(seed).kidney
    geometry = VolumeGeometry.centred(
        kidney, orientation=orientation, shape=DEFAULT_SHAPE, spacing_mm=DEFAULT_SPACING
    )
    mask = kidney.contains(geometry.points())
    for axis in range(3):
        assert not mask.take(0, axis=axis).any()
        assert not mask.take(-1, axis=axis).any()
    volume_ml = mask.sum() * geometry.voxel_volume_ml
    assert volume_ml == pytest.approx(kidney.analytic_volume_ml, rel=0.03)


def test_orientation_cosines() -> None:
    kidney = make_anatomy(0).kidney
    expected = {
        Orientation.AXIAL: ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        Orientation.AXIAL_FLIPPED: ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
        Orientation.CORONAL: ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
        Orientation.SAGITTAL: ((0, 1, 0), (0, 0, -1), (-1, 0, 0)),
    }
    for orientation, (row, column, normal) in expected.items():
        g = VolumeGeometry.centred(
            kidney, orientation=orientation, shape=(3, 4, 5), spacing_mm=(1, 1, 1)
        )
        np.testing.assert_allclose(g.row_direction, row, atol=1e-9)
        np.testing.assert_allclose(g.column_direction, column, atol=1e-9)
        np.testing.assert_allclose(g.normal, normal, atol=1e-9)
    oblique = VolumeGeometry.centred(
        kidney, orientation=Orientation.OBLIQUE, shape=(3, 4, 5), spacing_mm=(1, 1, 1)
    )
    angle = np.degrees(np.arccos(np.clip(oblique.normal @ (0, 0, 1), -1, 1)))
    assert angle == pytest.approx(20.0, abs=1e-6)
    assert np.count_nonzero(np.abs(oblique.direction) > 1e-3) > 6


def test_kidney_scale_scales_the_volume() -> None:
    small = make_anatomy(2, kidney_scale=0.5).kidney
    large = make_anatomy(2, kidney_scale=1.0).kidney
    assert small.analytic_volume_ml == pytest.approx(large.analytic_volume_ml / 8)
    with pytest.raises(ValueError, match="kidney_scale"):
        make_anatomy(2, kidney_scale=0)


# --------------------------------------------------------------------------- DICOM files

#: Type 1 and 2 attributes of the MR Image IOD modules written (PS3.3 A.4).
REQUIRED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber",
    "Modality", "SeriesInstanceUID", "SeriesNumber", "PatientPosition",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    "Manufacturer",
    "InstanceNumber", "ContentDate", "ContentTime",
    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
    "ImageType", "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
    "RepetitionTime", "EchoTime", "EchoTrainLength",
    "SOPClassUID", "SOPInstanceUID",
)  # fmt: skip


@pytest.fixture(scope="module", params=list(DceLayout), ids=str)
def written(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SyntheticStudy, list[pydicom.Dataset]]:
    study = write_mr_study(
        tmp_path_factory.mktemp(str(request.param)),
        patient_id="P-42",
        study_date=datetime.date(2023, 5, 6),
        seed=2,
        shape=(4, 16, 16),
        phases=3,
        dce_layout=request.param,
        orientation=Orientation.OBLIQUE,
        study_instance_uid="2.25.123456789",
    )
    return study, [pydicom.dcmread(p) for p in study.files]


def test_files_carry_the_mr_image_iod(written: tuple[SyntheticStudy, list]) -> None:
    study, datasets = written
    assert len(study.files) == len(datasets) == 3 * 4 + 4
    for ds in datasets:
        missing = [k for k in REQUIRED if k not in ds]
        assert not missing, missing
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == MRImageStorage
        assert ds.preamble is not None
        assert str(ds.PatientName) == "Synthetic^Graft"
        assert ds.PatientID == "P-42"
        assert ds.StudyInstanceUID == "2.25.123456789" == study.study_instance_uid
        assert ds.StudyDate == "20230506"
        assert ds.Modality == "MR"
        assert ds.BodyPartExamined == "ABDOMEN"
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert ds.pixel_array.dtype == np.uint16
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1


def test_series_layout_and_temporal_attributes(written: tuple[SyntheticStudy, list]) -> None:
    study, datasets = written
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for ds in datasets:
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert set(by_series) == {*study.dce_series_uids, study.t2_series_uid}
    assert len({s[0].SeriesNumber for s in by_series.values()}) == len(by_series)
    t2 = by_series[study.t2_series_uid]
    assert {ds.SeriesDescription for ds in t2} == {"T2 TSE"}
    assert {float(ds.SliceThickness) for ds in t2} == {T2_SLICE_THICKNESS_MM}
    assert all("TemporalPositionIdentifier" not in ds for ds in t2)
    dce = [ds for uid in study.dce_series_uids for ds in by_series[uid]]
    assert all(ds.SeriesDescription.startswith("DCE dyn 3D") for ds in dce)
    assert {ds.TemporalPositionIdentifier for ds in dce} == {1, 2, 3}
    assert {ds.NumberOfTemporalPositions for ds in dce} == {3}
    times = {}
    for ds in dce:
        times.setdefault(ds.TemporalPositionIdentifier, set()).add(ds.AcquisitionTime)
        assert ds.ContentTime == ds.AcquisitionTime
    assert all(len(t) == 1 for t in times.values())
    ordered = [times[k].pop() for k in sorted(times)]
    assert ordered == sorted(ordered)
    # One series holding every phase, or one series per phase in time order.
    assert len(study.dce_series_uids) in (1, 3)
    if len(study.dce_series_uids) == 3:
        for k, uid in enumerate(study.dce_series_uids, start=1):
            assert {ds.TemporalPositionIdentifier for ds in by_series[uid]} == {k}
    for uid in study.dce_series_uids:
        numbers = [ds.InstanceNumber for ds in by_series[uid]]
        assert len(set(numbers)) == len(numbers)


def test_truth_mask_matches_the_written_grid(written: tuple[SyntheticStudy, list]) -> None:
    study, datasets = written
    first = min(
        (ds for ds in datasets if ds.SeriesInstanceUID == study.dce_series_uids[0]),
        key=lambda ds: ds.InstanceNumber,
    )
    mask = study.truth_mask
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == (16, 16, 4)
    np.testing.assert_allclose(mask.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
    np.testing.assert_allclose(
        mask.GetSpacing()[:2], [float(first.PixelSpacing[1]), float(first.PixelSpacing[0])]
    )


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
def test_dciodvfy_finds_no_errors(written: tuple[SyntheticStudy, list]) -> None:
    study, _ = written
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy is not None
    for path in study.files:
        result = subprocess.run(  # noqa: S603 - fixed tool, our own files
            [dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        output = result.stdout + result.stderr
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'upside-down'"):
        write_mr_study(tmp_path, orientation="upside-down")
    with pytest.raises(ValueError, match="'interleaved'"):
        write_mr_study(tmp_path, dce_layout="interleaved")
    assert not list(tmp_path.iterdir())


def test_a_study_scanned_again_keeps_its_anatomy_and_draws_the_rest_again():
    from service.synthetic import paper_protocol, synthesize_mr

    first, again = synthesize_mr(seed=7), synthesize_mr(seed=7, scan_draw=1)
    assert (first.kidney_mask == again.kidney_mask).all()  # same patient, same graft
    assert not np.array_equal(first.dce[-1], again.dce[-1])  # other noise and bias
    assert not np.array_equal(first.t2, again.t2)
    assert np.array_equal(synthesize_mr(seed=7).t2, first.t2)  # reproducible
    protocol, slab = paper_protocol(7), paper_protocol(7, t2_draw=1)
    assert (protocol.dce_shape, protocol.dce_spacing_mm, protocol.kidney_scale) == (
        slab.dce_shape, slab.dce_spacing_mm, slab.kidney_scale)
    assert (protocol.t2_shape, protocol.t2_spacing_mm) != (slab.t2_shape, slab.t2_spacing_mm)
    assert slab.t2_slab_mm >= slab.dce_slab_mm  # the new slab still covers the DCE's
