"""SEG geometry: every frame on its source slice, in every orientation (FIELD-NOTES)."""

from __future__ import annotations

import io
import shutil

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.imaging.series import group_by_series, load_series
from service.pipeline.base import KIDNEY, PipelineOutput
from service.synthetic import write_mr_study
from service.writers.seg import SegOptions, build_segmentation
from tests.peers import dciodvfy_errors

ORIENTATIONS = ["axial", "axial-flipped", "coronal", "sagittal", "oblique"]


def _seg_for(tmp_path, orientation, *, omit_empty_frames):
    study = write_mr_study(tmp_path / orientation, orientation=orientation, seed=1,
                           include_t2=False, shape=(16, 64, 64))
    (dce_paths,) = group_by_series(study.files).values()
    phase = load_series(dce_paths).volumes[-1]
    truth = sitk.Resample(study.truth_mask, phase.image, sitk.Transform(),
                          sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    assert labels.any()
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                            volumes_ml={"kidney": 1.0})
    seg = build_segmentation(
        output, pipeline_name="test-pipeline", pipeline_version="9.9",
        family=codes.cid7162.MorphologicalOperations,
        options=SegOptions(series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5",
                           series_number=9901, content_creator="KIDNEY^NODE",
                           software_version="0.1.0", omit_empty_frames=omit_empty_frames))
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return phase, labels, hd.seg.segread(io.BytesIO(buffer.getvalue())), buffer.getvalue()


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("omit_empty_frames", [True, False])
def test_frames_lie_on_their_source_slices(tmp_path, orientation, omit_empty_frames):
    phase, labels, seg, _ = _seg_for(tmp_path, orientation, omit_empty_frames=omit_empty_frames)
    by_uid = {ds.SOPInstanceUID: (z, ds) for z, ds in enumerate(phase.datasets)}
    pixel = seg.pixel_array
    if pixel.ndim == 2:
        pixel = pixel[None]
    n_nonempty = int((labels.reshape(len(labels), -1).any(axis=1)).sum())
    assert int(seg.NumberOfFrames) == (n_nonempty if omit_empty_frames else len(labels))
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    assert np.allclose(iop, [float(v) for v in phase.datasets[0].ImageOrientationPatient])
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        src = frame.DerivationImageSequence[0].SourceImageSequence[0]
        z, ds = by_uid[src.ReferencedSOPInstanceUID]
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(ipp, [float(v) for v in ds.ImagePositionPatient], atol=1e-3)
        assert np.array_equal(pixel[i].astype(bool), labels[z].astype(bool)), (orientation, z)
    assert seg.FrameOfReferenceUID == phase.datasets[0].FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [
        phase.datasets[0].SeriesInstanceUID]


def test_segment_codes_algorithm_and_creator(tmp_path):
    _, _, seg, data = _seg_for(tmp_path, "axial", omit_empty_frames=True)
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Kidney"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algo = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("test-pipeline", "9.9")
    assert seg.ContentCreatorName == "KIDNEY^NODE"
    assert seg.SegmentationType == "BINARY"
    assert dcmread(io.BytesIO(data)).SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools' dciodvfy not installed")
@pytest.mark.parametrize("orientation", ["axial-flipped", "oblique"])
def test_dciodvfy_finds_no_error(tmp_path, orientation):
    *_, data = _seg_for(tmp_path, orientation, omit_empty_frames=True)
    path = tmp_path / "seg.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


def test_mask_of_the_wrong_shape_is_refused(tmp_path):
    phase, labels, *_ = _seg_for(tmp_path, "axial", omit_empty_frames=True)
    bad = PipelineOutput(reference=phase, labels=labels[:-1], segments=(KIDNEY,),
                         volumes_ml={})
    with pytest.raises(ValueError, match=str(phase.datasets[0].SeriesInstanceUID)):
        build_segmentation(bad, pipeline_name="p", pipeline_version="1",
                           family=codes.cid7162.MorphologicalOperations,
                           options=SegOptions("1.2", "1.2.3", 1, "X", "0"))
