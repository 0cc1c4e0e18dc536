"""SR writer: a TID 1500 report of the SEG's volumes that validates and files with the study."""

from __future__ import annotations

import io
import shutil

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from service.pipeline.base import KIDNEY, PipelineOutput
from service.writers.sr import SrOptions, build_volume_report
from tests.peers import dciodvfy_errors


def _report(seg_case, volume_ml=123.456, case=None):
    phase, labels, seg, _ = case or seg_case("axial")
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                            volumes_ml={"kidney": volume_ml})
    sr = build_volume_report(output, seg, pipeline_name="test-pipeline", pipeline_version="9.9",
                             options=SrOptions(series_instance_uid="1.2.3.6",
                                               sop_instance_uid="1.2.3.6.1", series_number=9902,
                                               device_uid="1.2.3.7", software_version="0.1.0"))
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return phase, seg, buffer.getvalue()


def test_report_holds_the_volume_of_each_segment_and_references_the_seg(seg_case):
    phase, seg, data = _report(seg_case)
    sr = hd.sr.srread(io.BytesIO(data))
    source = phase.datasets[0]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    (measurement,) = groups[0].get_measurements()
    assert (measurement.name.value, measurement.name.scheme_designator) == ("118565006", "SCT")
    assert measurement.value == pytest.approx(123.456)
    assert measurement.unit.value == "ml"
    segment = groups[0].referenced_segment
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert segment.referenced_segment_numbers == [KIDNEY.label]
    assert groups[0].finding_type.value == KIDNEY.property_type.value
    evidence = {item.SeriesInstanceUID: {ref.ReferencedSOPInstanceUID
                                         for ref in item.ReferencedSOPSequence}
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for item in study.ReferencedSeriesSequence}
    assert evidence[seg.SeriesInstanceUID] == {seg.SOPInstanceUID}
    assert evidence[source.SeriesInstanceUID] == {ds.SOPInstanceUID for ds in phase.datasets}
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.SpecificCharacterSet == source.SpecificCharacterSet == "ISO_IR 100"
    assert seg.SpecificCharacterSet == "ISO_IR 100"


def test_report_of_a_missing_volume_is_refused(seg_case):
    phase, labels, seg, _ = seg_case("axial")
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,), volumes_ml={})
    with pytest.raises(KeyError):
        build_volume_report(output, seg, pipeline_name="p", pipeline_version="1",
                            options=SrOptions("1.2", "1.2.3", 1, "1.2.4", "0"))


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools' dciodvfy not installed")
def test_dciodvfy_finds_no_error(seg_case, tmp_path):
    *_, data = _report(seg_case)
    path = tmp_path / "sr.dcm"
    path.write_bytes(data)
    assert dcmread(path).Modality == "SR"
    assert dciodvfy_errors(path) == []


def test_each_volume_has_an_outline_where_its_segment_is_largest(seg_case):
    """A TID 1410 group per segment, with the TID 1411 group's tracking identifier, outlines
    the segment on its largest slice: what OHIF needs to list and place the volume."""
    case = seg_case("axial")
    phase, labels, _, _ = case
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                            volumes_ml={"kidney": 42.0})
    _, seg, data = _report(seg_case, volume_ml=42.0, case=case)
    sr = hd.sr.srread(io.BytesIO(data))
    (volumetric,) = sr.content.get_volumetric_roi_measurement_groups()
    (planar,) = sr.content.get_planar_roi_measurement_groups()
    assert planar.tracking_uid == volumetric.tracking_uid
    assert planar.tracking_identifier == volumetric.tracking_identifier
    region = planar.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    points = region.value
    assert np.allclose(points[0], points[-1])  # closed
    mask = output.segment_stack()[..., 0]
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    source = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == phase.datasets[z].SOPInstanceUID
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))
    assert area == pytest.approx(float(mask[z].sum()), rel=0.1)
    # Every outline point lies on the segment's border: between a pixel inside and one out.
    rows, cols = mask[z].shape
    for px, py in points:
        c, r = int(np.floor(px)), int(np.floor(py))
        near = mask[z][max(r - 1, 0):min(r + 1, rows), max(c - 1, 0):min(c + 1, cols)]
        assert near.any() and not near.all()
