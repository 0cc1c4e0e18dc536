"""Overlapping segments (cortex inside kidney) in one BINARY SEG, and their SR groups."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.imaging.series import load_series
from service.pipeline.base import (
    CORTEX_LEFT,
    CORTEX_RIGHT,
    GRAFT_LEFT,
    GRAFT_RIGHT,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    AlgorithmSpec,
    PipelineOutput,
)
from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.ct_cases import truth_on
from tests.peers import dciodvfy_errors
from tests.segs import write_seg_and_sr

SPECS = (KIDNEY_RIGHT, KIDNEY_LEFT, CORTEX_RIGHT, CORTEX_LEFT)
NETWORK = AlgorithmSpec("test-ensemble", "7", codes.cid7162.ArtificialIntelligence)


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic CT, its four true masks, and the SEG and SR written for them."""
    root = tmp_path_factory.mktemp("ct-overlap")
    study = write_ct_study(root, synthesize_ct(seed=4, grid=CtGrid.small()))
    volume = load_series(list(study.files)).volumes[0]
    kidneys = truth_on(volume.image, study.kidneys_path)
    cortex = truth_on(volume.image, study.cortex_path)
    masks = (kidneys == 1, kidneys == 2, cortex == 1, cortex == 2)
    volumes = {spec.structure: float(m.sum()) for spec, m in zip(SPECS, masks, strict=True)}
    output = PipelineOutput(reference=volume, segments=SPECS, masks=masks, volumes_ml=volumes,
                            algorithms={CORTEX_RIGHT.structure: NETWORK,
                                        CORTEX_LEFT.structure: NETWORK})
    paths = write_seg_and_sr(output, root, "1.2.826.0.1.3680043.8.498.2")
    return volume, masks, volumes, paths


def test_cortex_lies_inside_its_kidney_so_segments_overlap(four):
    _, masks, *_ = four
    for kidney, cortex in ((masks[0], masks[2]), (masks[1], masks[3])):
        assert cortex.any() and not np.any(cortex & ~kidney)


def test_four_segments_with_codes_laterality_and_algorithms(four):
    *_, paths = four
    ds = dcmread(io.BytesIO(paths["seg"].read_bytes()))
    assert ds.SegmentationType == "BINARY" and ds.SegmentsOverlap == "YES"
    items = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert sorted(items) == [1, 2, 3, 4]
    expected = {1: ("Right kidney", "64033007", "24028007"),
                2: ("Left kidney", "64033007", "7771000"),
                3: ("Right renal cortex", "50403003", "24028007"),
                4: ("Left renal cortex", "50403003", "7771000")}
    for number, (label, code, side) in expected.items():
        item = items[number]
        assert item.SegmentLabel == label
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator) == (code, "SCT")
        (modifier,) = prop.SegmentedPropertyTypeModifierCodeSequence
        assert (modifier.CodeValue, modifier.CodingSchemeDesignator) == (side, "SCT")
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        family = algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning
        if number <= 2:
            assert algorithm.AlgorithmName == "ct-test" and family == "Morphological Operations"
        else:
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("test-ensemble", "7")
            assert family == "Artificial Intelligence"
    assert items[3].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == \
        "Structure of cortex of kidney"


def test_overlapping_masks_round_trip(four):
    volume, masks, _, paths = four
    seg = hd.seg.segread(paths["seg"])
    for number, mask in enumerate(masks, start=1):
        back = seg.get_volume(combine_segments=False, segment_numbers=[number])
        assert back.array.sum() == mask.sum(), number
    # Frame by frame on the source slices: each segment's frames hold exactly its mask.
    sources = {ds.SOPInstanceUID: z for z, ds in enumerate(volume.datasets)}
    for frame, group in zip(seg.pixel_array, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.array_equal(frame.astype(bool), masks[number - 1][sources[uid]])


def test_seg_and_sr_pass_dciodvfy(four):
    *_, paths = four
    assert dciodvfy_errors(paths["seg"]) == []
    assert dciodvfy_errors(paths["sr"]) == []


def test_sr_has_one_group_per_segment_with_its_volume(four):
    _, _, volumes, paths = four
    sr = hd.sr.srread(paths["sr"])
    found = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        (site,) = group.finding_sites
        (measurement,) = group.get_measurements(name=codes.SCT.Volume)
        (number,) = group.referenced_segment.referenced_segment_numbers
        found[number] = (site.value.value, site.laterality.value, float(measurement.value))
    assert found == {
        1: ("64033007", "24028007", pytest.approx(volumes["kidney_right"], abs=1e-3)),
        2: ("64033007", "7771000", pytest.approx(volumes["kidney_left"], abs=1e-3)),
        3: ("50403003", "24028007", pytest.approx(volumes["cortex_right"], abs=1e-3)),
        4: ("50403003", "7771000", pytest.approx(volumes["cortex_left"], abs=1e-3))}


def test_each_segment_carries_its_recommended_display_colour(four):
    """Without Recommended Display CIELab Value the colours were each viewer's choice
    (issue 17): each structure has its own, read back as the same sRGB by highdicom."""
    *_, paths = four
    ds = dcmread(io.BytesIO(paths["seg"].read_bytes()))
    colours = {}
    for item in ds.SegmentSequence:
        spec = SPECS[int(item.SegmentNumber) - 1]
        lab = hd.color.CIELabColor.from_dicom_value(tuple(item.RecommendedDisplayCIELabValue))
        colours[spec.structure] = lab.to_rgb()
        assert all(abs(int(a) - b) <= 2 for a, b in zip(lab.to_rgb(), spec.rgb, strict=True)), \
            (spec.structure, lab.to_rgb(), spec.rgb)
    assert len(set(colours.values())) == len(SPECS)  # distinct side by side
    assert GRAFT_RIGHT.rgb == GRAFT_LEFT.rgb and GRAFT_RIGHT.rgb not in {s.rgb for s in SPECS}
