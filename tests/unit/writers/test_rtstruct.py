"""RT Structure Set writer: valid, and its contours rasterise back to the segments."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.path import Path as Polygon
from pydicom import dcmread

from service.pipeline.base import KIDNEY_LEFT, KIDNEY_RIGHT, PipelineOutput
from service.writers.rtstruct import RtStructOptions, build_rtstruct
from tests.peers import dciodvfy_errors

OPTIONS = RtStructOptions(series_instance_uid="1.2.826.0.1.3680043.8.498.61",
                          sop_instance_uid="1.2.826.0.1.3680043.8.498.62",
                          series_number=9904, software_version="0.1.0")


def _two_kidneys(seg_case):  # noqa: ANN001, ANN202
    phase, labels, _, _ = seg_case("axial")
    left = np.zeros_like(labels)
    left[4:10, 40:52, 8:20] = KIDNEY_LEFT.label  # a box, and a second part on one slice
    left[6, 30:34, 8:12] = KIDNEY_LEFT.label
    right = np.where(labels > 0, KIDNEY_RIGHT.label, 0).astype(np.uint8)
    right[left > 0] = 0
    return phase, right + left


def test_contours_rasterise_back_to_each_segment(seg_case, tmp_path):
    phase, labels = _two_kidneys(seg_case)
    output = PipelineOutput(reference=phase, labels=labels,
                            segments=(KIDNEY_RIGHT, KIDNEY_LEFT),
                            volumes_ml={"kidney_right": 1.0, "kidney_left": 1.0})
    ds = build_rtstruct(output, pipeline_name="test", options=OPTIONS)
    path = tmp_path / "rt.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    rt = dcmread(io.BytesIO(path.read_bytes()))
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == phase.datasets[0].StudyInstanceUID
    names = {int(r.ROINumber): str(r.ROIName) for r in rt.StructureSetROISequence}
    assert names == {1: "Right kidney", 2: "Left kidney"}
    z_of = {str(d.SOPInstanceUID): z for z, d in enumerate(phase.datasets)}
    source = phase.datasets[0]
    iop = np.asarray(source.ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in source.PixelSpacing)
    rows, cols = labels.shape[1:]
    centres = np.column_stack([g.ravel() for g in np.meshgrid(np.arange(cols), np.arange(rows))])
    for roi in rt.ROIContourSequence:
        number = int(roi.ReferencedROINumber)
        spec = (KIDNEY_RIGHT, KIDNEY_LEFT)[number - 1]
        assert list(roi.ROIDisplayColor) == list(spec.rgb)
        drawn = np.zeros(labels.shape, dtype=bool)
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            z = z_of[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            origin = np.asarray(phase.datasets[z].ImagePositionPatient, float)
            xyz = np.asarray(contour.ContourData, float).reshape(-1, 3) - origin
            assert np.abs(xyz @ np.cross(iop[:3], iop[3:])).max() < 1e-3  # on its image
            polygon = np.column_stack([xyz @ iop[:3] / col_mm, xyz @ iop[3:] / row_mm])
            inside = Polygon(polygon).contains_points(centres).reshape(rows, cols)
            drawn[z] |= inside
        truth = labels == spec.label
        overlap = (drawn & truth).sum() / (drawn | truth).sum()
        assert overlap >= 0.95, f"{spec.text}: contours cover the segment at IoU {overlap:.3f}"
    # The left kidney's second part on slice 6 is a contour of its own.
    left = rt.ROIContourSequence[1].ContourSequence
    assert sum(1 for c in left if z_of[str(c.ContourImageSequence[0]
                                          .ReferencedSOPInstanceUID)] == 6) == 2


def test_a_segment_with_no_pixel_has_no_contour(seg_case, tmp_path):
    phase, labels = _two_kidneys(seg_case)
    labels[labels == KIDNEY_LEFT.label] = 0
    output = PipelineOutput(reference=phase, labels=labels,
                            segments=(KIDNEY_RIGHT, KIDNEY_LEFT),
                            volumes_ml={"kidney_right": 1.0, "kidney_left": 0.0})
    ds = build_rtstruct(output, pipeline_name="test", options=OPTIONS)
    assert "ContourSequence" not in ds.ROIContourSequence[1]
    assert len(ds.ROIContourSequence[0].ContourSequence) > 0
    path = tmp_path / "rt.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
