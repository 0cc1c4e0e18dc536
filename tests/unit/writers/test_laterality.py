"""Paired kidneys on CT: one SEG segment and one SR group per side, with laterality."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.imaging.series import load_series
from service.pipeline.base import KIDNEY_LEFT, KIDNEY_RIGHT, PipelineOutput
from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.peers import dciodvfy_errors
from tests.segs import write_seg_and_sr


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic CT with both kidneys, its truth labels on the loaded grid (1 = right,
    2 = left), and the SEG and SR written for them."""
    root = tmp_path_factory.mktemp("ct-laterality")
    study = write_ct_study(root, synthesize_ct(seed=4, grid=CtGrid.small()))
    volume = load_series(list(study.files)).volumes[0]
    truth = sitk.Resample(sitk.ReadImage(str(study.kidneys_path)), volume.image,
                          sitk.Transform(), sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    voxel_ml = float(np.prod(volume.image.GetSpacing())) / 1000.0
    volumes = {spec.structure: float((labels == spec.label).sum()) * voxel_ml
               for spec in (KIDNEY_RIGHT, KIDNEY_LEFT)}
    output = PipelineOutput(reference=volume, labels=labels,
                            segments=(KIDNEY_RIGHT, KIDNEY_LEFT), volumes_ml=volumes)
    paths = write_seg_and_sr(output, root, "1.2.826.0.1.3680043.8.498.1")
    return volume, labels, volumes, paths


def test_truth_sides_are_the_patients_sides(paired):
    volume, labels, *_ = paired
    # LPS: patient left is +x. The right kidney's centre lies at smaller x than the left's.
    centres = {}
    for label in (1, 2):
        z, y, x = np.argwhere(labels == label).mean(axis=0)
        centres[label] = volume.image.TransformContinuousIndexToPhysicalPoint((x, y, z))[0]
    assert centres[1] < 0 < centres[2]


def test_seg_has_one_segment_per_side_with_its_laterality(paired):
    volume, labels, _, paths = paired
    seg = hd.seg.segread(paths["seg"])
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    for spec, code in ((KIDNEY_RIGHT, "24028007"), (KIDNEY_LEFT, "7771000")):
        item = segments[spec.label]
        assert item.SegmentLabel == spec.text
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator) == ("64033007", "SCT")
        (modifier,) = prop.SegmentedPropertyTypeModifierCodeSequence
        assert (modifier.CodeValue, modifier.CodingSchemeDesignator) == (code, "SCT")
        mask = seg.get_volume(combine_segments=False, segment_numbers=[spec.label])
        assert mask.array.sum() == (labels == spec.label).sum()
    assert dciodvfy_errors(paths["seg"]) == []


def test_sr_reports_each_side_with_laterality_and_volume(paired):
    _, _, volumes, paths = paired
    sr = hd.sr.srread(paths["sr"])
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    found = {}
    for group in groups:
        (site,) = group.finding_sites
        assert site.value == codes.SCT.Kidney
        (measurement,) = group.get_measurements(name=codes.SCT.Volume)
        found[site.laterality.value] = float(measurement.value)
    assert found == pytest.approx({"24028007": volumes["kidney_right"],
                                   "7771000": volumes["kidney_left"]}, abs=1e-3)
    assert dciodvfy_errors(paths["sr"]) == []
    assert dcmread(io.BytesIO(paths["sr"].read_bytes())).Modality == "SR"
