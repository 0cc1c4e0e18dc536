"""SEG geometry: every frame on its source slice, in every orientation (FIELD-NOTES)."""

from __future__ import annotations

import copy
import io
import shutil

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.pipeline.base import KIDNEY, PipelineOutput
from service.writers.seg import SegOptions, build_segmentation
from tests.peers import dciodvfy_errors

ORIENTATIONS = ["axial", "axial-flipped", "coronal", "sagittal", "oblique"]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("omit_empty_frames", [True, False])
def test_frames_lie_on_their_source_slices(seg_case, orientation, omit_empty_frames):
    phase, labels, seg, _ = seg_case(orientation, omit_empty_frames=omit_empty_frames)
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


def test_segment_codes_algorithm_and_creator(seg_case):
    _, _, seg, data = seg_case("axial")
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
def test_dciodvfy_finds_no_error(seg_case, tmp_path, orientation):
    *_, data = seg_case(orientation)
    path = tmp_path / "seg.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


def test_mask_of_the_wrong_shape_is_refused(seg_case):
    phase, labels, *_ = seg_case("axial")
    bad = PipelineOutput(reference=phase, labels=labels[:-1], segments=(KIDNEY,),
                         volumes_ml={})
    with pytest.raises(ValueError, match=str(phase.datasets[0].SeriesInstanceUID)):
        build_segmentation(bad, pipeline_name="p", pipeline_version="1",
                           family=codes.cid7162.MorphologicalOperations,
                           options=SegOptions("1.2", "1.2.3", 1, "X", "0"))


def test_sources_without_type2_patient_attributes_still_give_a_valid_seg(seg_case, tmp_path):
    """Anonymised or converted images often lack Type 2 attributes (no birth date, sex or
    accession number): the SEG carries them empty instead of failing."""
    phase, labels, *_ = seg_case("axial")
    datasets = []
    for ds in phase.datasets:
        ds = copy.deepcopy(ds)
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber",
                        "ReferringPhysicianName"):
            if keyword in ds:
                delattr(ds, keyword)
        datasets.append(ds)
    stripped = PipelineOutput(reference=type(phase)(phase.image, tuple(datasets),
                                                    phase.temporal_position,
                                                    phase.acquisition_time_s),
                              labels=labels, segments=(KIDNEY,), volumes_ml={})
    seg = build_segmentation(stripped, pipeline_name="p", pipeline_version="1",
                             family=codes.cid7162.MorphologicalOperations,
                             options=SegOptions("1.2", "1.2.3", 1, "X^Y", "0"))
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber"):
        assert keyword in seg and not seg[keyword].value, keyword
    assert "PatientBirthDate" not in datasets[0]  # the source headers are left as they are
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
