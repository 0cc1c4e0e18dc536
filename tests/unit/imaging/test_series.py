"""Loading series into oriented volumes: round trips of synthetic studies and broken copies."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import EnhancedMRImageStorage

from service.dicom.uids import new_uid
from service.errors import SeriesLoadError
from service.imaging import LoadedSeries, LoadedVolume, group_by_series, load_series
from service.synthetic import (
    DceLayout,
    Orientation,
    SyntheticMR,
    SyntheticStudy,
    make_anatomy,
    synthesize_mr,
    write_mr_study,
)

SEED = 7
NEPHROGRAPHIC = 2  # phase index of the default 4 phases (0, 20, 60, 180 s)
CASES = [(o, DceLayout.SINGLE_SERIES) for o in Orientation] + [
    (Orientation.OBLIQUE, DceLayout.PER_PHASE),
]


@pytest.fixture(scope="module")
def studies(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[Orientation, DceLayout], tuple[SyntheticStudy, dict[str, LoadedSeries]]]:
    """Every orientation and layout written once (default shape) and loaded back."""
    loaded = {}
    for orientation, layout in CASES:
        root = tmp_path_factory.mktemp(f"{orientation}-{layout}")
        study = write_mr_study(
            root,
            seed=SEED,
            orientation=orientation,
            dce_layout=layout,
            include_t2=orientation is Orientation.AXIAL,
        )
        groups = group_by_series(study.files)
        loaded[(orientation, layout)] = (study, {uid: load_series(p) for uid, p in groups.items()})
    return loaded


def _dce_volumes(study: SyntheticStudy, series: dict[str, LoadedSeries]) -> list[LoadedVolume]:
    volumes = [v for uid in study.dce_series_uids for v in series[uid].volumes]
    return sorted(volumes, key=lambda v: v.temporal_position or 0)


@functools.cache
def _phantom(orientation: Orientation) -> SyntheticMR:
    return synthesize_mr(seed=SEED, orientation=orientation, include_t2=False)


def _voxel_points(image: sitk.Image) -> np.ndarray:
    """Patient positions of all voxel centres from the image's own geometry, (z, y, x, 3)."""
    size = image.GetSize()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    scaled = direction * np.array(image.GetSpacing())
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    return np.array(image.GetOrigin()) + index @ scaled.T


@pytest.mark.parametrize(("orientation", "layout"), CASES, ids=lambda v: str(v))
def test_round_trip_phases_and_series(
    studies: dict, orientation: Orientation, layout: DceLayout
) -> None:
    study, series = studies[(orientation, layout)]
    expected_series = 4 if layout is DceLayout.PER_PHASE else 1
    assert len(study.dce_series_uids) == expected_series
    assert set(series) == set(study.dce_series_uids) | (
        {study.t2_series_uid} if study.t2_series_uid else set()
    )
    volumes = _dce_volumes(study, series)
    assert [v.temporal_position for v in volumes] == [1, 2, 3, 4]
    for uid in study.dce_series_uids:
        assert series[uid].modality == "MR"
        assert series[uid].description.startswith("DCE dyn 3D")
    if layout is DceLayout.SINGLE_SERIES:
        times = [v.acquisition_time_s for v in volumes]
        assert times == pytest.approx([0.0, 20.0, 60.0, 180.0])
    for volume in volumes:
        assert volume.image.GetSize() == (96, 96, 24)
        assert volume.image.GetPixelID() == sitk.sitkFloat32
        assert all("PixelData" not in ds for ds in volume.datasets)


@pytest.mark.parametrize(("orientation", "layout"), CASES, ids=lambda v: str(v))
def test_round_trip_geometry_maps_voxels_to_their_slices(
    studies: dict, orientation: Orientation, layout: DceLayout
) -> None:
    study, series = studies[(orientation, layout)]
    for volume in _dce_volumes(study, series):
        image = volume.image
        columns, rows, slices = image.GetSize()
        for i, j, k in [
            (0, 0, 0),
            (columns - 1, 0, 1),
            (5, rows - 1, slices // 2),
            (columns - 1, rows - 1, slices - 1),
            (17, 33, 7),
        ]:
            ds = volume.datasets[k]
            row, column = (
                np.array(ds.ImageOrientationPatient[:3]),
                np.array(ds.ImageOrientationPatient[3:]),
            )
            expected = (
                np.array(ds.ImagePositionPatient, dtype=float)
                + i * float(ds.PixelSpacing[1]) * row
                + j * float(ds.PixelSpacing[0]) * column
            )
            actual = image.TransformIndexToPhysicalPoint((i, j, k))
            np.testing.assert_allclose(actual, expected, atol=1e-3)
        mask = study.truth_mask
        np.testing.assert_allclose(mask.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(mask.GetSpacing(), image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(mask.GetDirection(), image.GetDirection(), atol=1e-6)
        assert mask.GetSize() == image.GetSize()


@pytest.mark.parametrize(("orientation", "layout"), CASES, ids=lambda v: str(v))
def test_round_trip_pixels_match_phantom_and_anatomy(
    studies: dict, orientation: Orientation, layout: DceLayout
) -> None:
    study, series = studies[(orientation, layout)]
    volumes = _dce_volumes(study, series)
    phantom = _phantom(orientation)
    for p, volume in enumerate(volumes):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), phantom.dce[p])

    # The kidney, evaluated in patient space at the loaded image's own voxel positions,
    # coincides with the truth mask: nothing is mirrored or shifted.
    image = volumes[NEPHROGRAPHIC].image
    kidney = make_anatomy(SEED).kidney.contains(_voxel_points(image))
    truth = sitk.GetArrayFromImage(study.truth_mask).astype(bool)
    assert np.count_nonzero(kidney != truth) <= 0.001 * truth.sum()

    pixels = sitk.GetArrayFromImage(image)
    body = pixels[~truth & (pixels > 50)]
    assert pixels[truth].mean() > 3.0 * body.mean()


@pytest.mark.parametrize(("orientation", "layout"), CASES, ids=lambda v: str(v))
def test_truth_volume_matches_analytic_volume(
    studies: dict, orientation: Orientation, layout: DceLayout
) -> None:
    study, _ = studies[(orientation, layout)]
    mask = sitk.GetArrayFromImage(study.truth_mask)
    voxel_ml = float(np.prod(study.truth_mask.GetSpacing())) / 1000.0
    assert study.truth_volume_ml == pytest.approx(mask.sum() * voxel_ml)
    assert study.truth_volume_ml == pytest.approx(study.analytic_volume_ml, rel=0.03)


def test_t2_is_static_in_the_same_frame_of_reference(studies: dict) -> None:
    study, series = studies[(Orientation.AXIAL, DceLayout.SINGLE_SERIES)]
    t2 = series[study.t2_series_uid]
    assert t2.description == "T2 TSE"
    assert len(t2.volumes) == 1
    volume = t2.volumes[0]
    assert volume.temporal_position is None
    assert volume.image.GetSpacing()[2] == pytest.approx(5.0)
    dce = series[study.dce_series_uids[0]].volumes[0]
    assert volume.datasets[0].FrameOfReferenceUID == dce.datasets[0].FrameOfReferenceUID


# --------------------------------------------------------------------------- broken copies


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    """A small study (3 phases of 5 slices, T2 of 5 slices) to break in copies."""
    return write_mr_study(tmp_path_factory.mktemp("small"), seed=1, shape=(5, 16, 16), phases=3)


def _series_files(study: SyntheticStudy, uid: str) -> list[Path]:
    return group_by_series(study.files)[uid]


Mutation = Callable[[list[pydicom.Dataset]], list[pydicom.Dataset]]


def _copy(paths: list[Path], out_dir: Path, mutate: Mutation) -> list[Path]:
    """Write the datasets of ``paths``, changed by ``mutate``, into ``out_dir``."""
    datasets = mutate([pydicom.dcmread(p) for p in paths])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for n, ds in enumerate(datasets):
        path = out_dir / f"copy{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _along_normal(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Sort slices by position along their normal."""
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(datasets, key=lambda ds: np.dot(np.array(ds.ImagePositionPatient), normal))


def _expect_error(paths: list[Path], uid: str, message: str) -> None:
    with pytest.raises(SeriesLoadError, match=re.escape(uid)) as info:
        load_series(paths)
    assert re.search(message, str(info.value)), str(info.value)
    assert info.value.series_uid == uid


def _del(keyword: str, index: int = 0) -> Mutation:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        delattr(datasets[index], keyword)
        return datasets

    return mutate


@pytest.mark.parametrize(
    "keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
)
def test_missing_geometry_is_refused(small: SyntheticStudy, tmp_path: Path, keyword: str) -> None:
    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, _del(keyword, 2))
    _expect_error(paths, uid, keyword)


def test_mixed_orientations_are_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        angle = np.radians(5.0)
        datasets[1].ImageOrientationPatient = [
            1,
            0,
            0,
            0,
            round(np.cos(angle), 6),
            round(np.sin(angle), 6),
        ]
        return datasets

    uid = small.t2_series_uid
    _expect_error(_copy(_series_files(small, uid), tmp_path, mutate), uid, "mixed orientations")


def test_different_frames_of_reference_are_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        datasets[3].FrameOfReferenceUID = new_uid()
        return datasets

    uid = small.dce_series_uids[0]
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "FrameOfReferenceUID")


def test_missing_slice_is_non_uniform_spacing(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        ordered = _along_normal(datasets)
        return ordered[:2] + ordered[3:]

    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "non-uniform slice spacing")


def test_shifted_slice_is_non_uniform_spacing(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        ordered = _along_normal(datasets)
        orientation = np.array(ordered[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        position = np.array(ordered[2].ImagePositionPatient, dtype=float) + 0.2 * normal
        ordered[2].ImagePositionPatient = [round(v, 4) for v in position]
        return ordered

    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "non-uniform slice spacing")


def test_gantry_tilt_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        ordered = _along_normal(datasets)
        row = np.array(ordered[0].ImageOrientationPatient[:3], dtype=float)
        for k, ds in enumerate(ordered):
            position = np.array(ds.ImagePositionPatient, dtype=float) + k * 0.5 * row
            ds.ImagePositionPatient = [round(v, 4) for v in position]
        return ordered

    uid = small.t2_series_uid
    _expect_error(_copy(_series_files(small, uid), tmp_path, mutate), uid, "tilt")


def test_duplicated_position_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        twin = pydicom.dcmread(datasets[0].filename)
        twin.SOPInstanceUID = new_uid()
        twin.file_meta.MediaStorageSOPInstanceUID = twin.SOPInstanceUID
        return [*datasets, twin]

    uid = small.t2_series_uid
    _expect_error(_copy(_series_files(small, uid), tmp_path, mutate), uid, "cannot be split")


def test_phases_without_any_time_are_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        for ds in datasets:
            del ds.TemporalPositionIdentifier
            ds.AcquisitionTime = "100000"
            ds.AcquisitionNumber = 1
        return datasets

    uid = small.dce_series_uids[0]
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "cannot be split into phases")


def test_phases_with_different_slice_counts_are_refused(
    small: SyntheticStudy, tmp_path: Path
) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        victim = next(ds for ds in datasets if ds.TemporalPositionIdentifier == 2)
        return [ds for ds in datasets if ds is not victim]

    uid = small.dce_series_uids[0]
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "different slice counts")


def test_unequal_phases_without_identifier_are_refused(
    small: SyntheticStudy, tmp_path: Path
) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        victim = next(ds for ds in datasets if ds.TemporalPositionIdentifier == 2)
        kept = [ds for ds in datasets if ds is not victim]
        for ds in kept:
            del ds.TemporalPositionIdentifier
        return kept

    uid = small.dce_series_uids[0]
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "equal slice counts")


def test_fewer_than_three_slices_are_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, lambda ds: _along_normal(ds)[:2])
    _expect_error(paths, uid, "at least 3")


def test_enhanced_multi_frame_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        datasets[0].SOPClassUID = EnhancedMRImageStorage
        datasets[0].file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
        datasets[0].NumberOfFrames = 1
        return datasets

    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    _expect_error(paths, uid, "enhanced multi-frame .* not supported yet")


def test_missing_pixel_data_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    uid = small.t2_series_uid
    paths = _copy(_series_files(small, uid), tmp_path, _del("PixelData", 1))
    _expect_error(paths, uid, "no pixel data")


def test_truncated_pixel_data_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        datasets[1].PixelData = datasets[1].PixelData[:100]
        return datasets

    uid = small.t2_series_uid
    _expect_error(_copy(_series_files(small, uid), tmp_path, mutate), uid, "cannot be decoded")


def test_mixed_series_are_refused(small: SyntheticStudy) -> None:
    paths = [
        *_series_files(small, small.t2_series_uid),
        *_series_files(small, small.dce_series_uids[0]),
    ]
    with pytest.raises(SeriesLoadError, match="2 series"):
        load_series(paths)


def test_non_dicom_file_in_a_series_is_refused(small: SyntheticStudy, tmp_path: Path) -> None:
    uid = small.t2_series_uid
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    _expect_error([*_series_files(small, uid), junk], uid, "notes.txt")


# --------------------------------------------------------------------------- other inputs


def test_group_by_series_skips_non_dicom_with_warning(
    small: SyntheticStudy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "readme.txt"
    junk.write_text("hello")
    with caplog.at_level(logging.WARNING, logger="service.imaging.series"):
        groups = group_by_series([*small.files, junk])
    assert set(groups) == {*small.dce_series_uids, small.t2_series_uid}
    assert sum(len(p) for p in groups.values()) == len(small.files)
    assert str(junk) in caplog.text


def test_input_order_does_not_matter(small: SyntheticStudy) -> None:
    paths = _series_files(small, small.dce_series_uids[0])
    forward, backward = load_series(paths), load_series(paths[::-1])
    for a, b in zip(forward.volumes, backward.volumes, strict=True):
        assert [ds.SOPInstanceUID for ds in a.datasets] == [ds.SOPInstanceUID for ds in b.datasets]
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(a.image), sitk.GetArrayFromImage(b.image)
        )


def test_same_instance_twice_is_loaded_once(small: SyntheticStudy, tmp_path: Path) -> None:
    paths = _series_files(small, small.t2_series_uid)
    twin = _copy(paths[:1], tmp_path, lambda ds: ds)
    series = load_series([*paths, *twin])
    assert len(series.volumes) == 1
    assert len(series.volumes[0].datasets) == len(paths)


@pytest.mark.parametrize(
    "retime",
    [
        pytest.param(
            lambda ds: setattr(ds, "TriggerTime", 1000 * ds.TemporalPositionIdentifier),
            id="TriggerTime",
        ),
        pytest.param(lambda ds: None, id="AcquisitionTime"),
        pytest.param(lambda ds: delattr(ds, "AcquisitionTime"), id="AcquisitionNumber"),
    ],
)
def test_phases_without_temporal_position_identifier(
    small: SyntheticStudy, tmp_path: Path, retime: Callable[[pydicom.Dataset], None]
) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        for ds in datasets:
            retime(ds)
            del ds.TemporalPositionIdentifier
        return datasets

    uid = small.dce_series_uids[0]
    paths = _copy(_series_files(small, uid), tmp_path, mutate)
    reference = load_series(_series_files(small, uid))
    series = load_series(paths)
    assert [v.temporal_position for v in series.volumes] == [1, 2, 3]
    for a, b in zip(reference.volumes, series.volumes, strict=True):
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(a.image), sitk.GetArrayFromImage(b.image)
        )


def test_modality_lut_is_applied(small: SyntheticStudy, tmp_path: Path) -> None:
    def mutate(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
        for ds in datasets:
            ds.RescaleSlope = 2
            ds.RescaleIntercept = -100
        return datasets

    uid = small.t2_series_uid
    reference = load_series(_series_files(small, uid)).volumes[0]
    rescaled = load_series(_copy(_series_files(small, uid), tmp_path, mutate)).volumes[0]
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(rescaled.image),
        2.0 * sitk.GetArrayFromImage(reference.image) - 100.0,
    )
