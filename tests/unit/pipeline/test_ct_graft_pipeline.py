"""The ct-kidneys pipeline with a kidney graft: segments, codes, laterality, flags (the
graft method is tested in tests/unit/models/test_ct_graft.py)."""

from __future__ import annotations

import io
from dataclasses import replace

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.sr.codedict import codes

from models.ct_graft import CtGraft, FoundGraft
from service.config import CtSettings, ProcessingSettings
from service.db.tables import SeriesRole
from service.imaging.series import load_series
from service.pipeline import ct_kidneys
from service.pipeline.base import (
    GRAFT_LEFT,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    TRANSPLANTED_KIDNEY,
    StudyInput,
)
from service.pipeline.registry import get_pipeline
from service.synthetic.ct_anatomy import NativeKidneys, Transplant
from service.synthetic.ct_phantom import Coverage, CtGrid, synthesize_ct
from service.synthetic.ct_study import write_ct_study
from service.writers.result import ResultUids, build_result_objects
from tests.ct_cases import fake_segmenter, truth_on


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    """Abdomen and pelvis with native kidneys and a graft in the left iliac fossa."""
    grid = CtGrid(matrix=96, in_plane_spacing_mm=4.0, slice_spacing_mm=6.0,
                  coverage=Coverage.ABDOMEN_PELVIS)
    ct = synthesize_ct(3, grid=grid, transplant=Transplant(graft_side="left",
                                                           natives=NativeKidneys.NORMAL))
    study = write_ct_study(tmp_path_factory.mktemp("ctg"), ct)
    series = load_series(list(study.files))
    loaded = StudyInput(study.study_instance_uid, {SeriesRole.CT: (series,)})
    graft = truth_on(series.volumes[0].image, study.graft_path) > 0
    return study, loaded, graft


def _fake_graft(graft_path, *, found: bool = True, touches_edge: bool = False):  # noqa: ANN001, ANN202
    def search(ct: sitk.Image, config=None, *, natives=None) -> CtGraft:  # noqa: ANN001, ARG001
        mask = truth_on(ct, graft_path) > 0
        if not found:
            return CtGraft(None, "fake: no graft-like region", crest_z_mm=-110.0)
        voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
        return CtGraft(FoundGraft("left", mask, float(mask.sum()) * voxel_ml, 0.5, touches_edge),
                       "", crest_z_mm=-110.0)

    return search


def _pipeline(**ct):  # noqa: ANN003, ANN202
    return get_pipeline("ct-kidneys", ProcessingSettings(ct=CtSettings(**ct)))


def _seg_bytes(out, pipeline) -> bytes:  # noqa: ANN001
    seg = build_result_objects(out, pipeline, ProcessingSettings(), ResultUids(
        "1.2.826.0.1.3680043.8.498.41", "1.2.826.0.1.3680043.8.498.42",
        "1.2.826.0.1.3680043.8.498.43", "1.2.826.0.1.3680043.8.498.44",
        "1.2.826.0.1.3680043.8.498.45")).seg
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_graft_and_natives_are_segments_of_their_own(case, monkeypatch):
    study, loaded, graft = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft",
                        _fake_graft(study.graft_path, touches_edge=True))
    pipeline = _pipeline()
    assert pipeline.version == "0.4.1"
    out = pipeline.run(loaded, device="cpu")
    assert out.finding is None
    assert out.segments == (KIDNEY_RIGHT, KIDNEY_LEFT, GRAFT_LEFT)
    assert np.array_equal(out.masks[2], graft)
    spacing = loaded.series[SeriesRole.CT][0].volumes[0].image.GetSpacing()
    assert out.volumes_ml["graft"] == pytest.approx(float(graft.sum()) * np.prod(spacing) / 1000)
    assert set(out.volumes_ml) == {"kidney_right", "kidney_left", "graft"}
    assert out.flags == ("graft-touches-edge",)
    ds = dcmread(io.BytesIO(_seg_bytes(out, pipeline)))
    item = ds.SegmentSequence[2]
    assert (int(item.SegmentNumber), item.SegmentLabel) == (3, GRAFT_LEFT.text)
    prop = item.SegmentedPropertyTypeCodeSequence[0]
    assert prop.CodeValue == TRANSPLANTED_KIDNEY.value
    assert prop.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == \
        codes.SCT.Left.value == "7771000"
    back = hd.seg.segread(io.BytesIO(_seg_bytes(out, pipeline)))
    volume = back.get_volume(combine_segments=False)
    assert volume.array[..., 2].sum() == graft.sum()


def _no_second_look(kidneys, graft, ct, config=None):  # noqa: ANN001, ANN202, ARG001
    return kidneys


def test_graft_alone_in_a_pelvic_study(case, monkeypatch):
    study, loaded, graft = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft", _fake_graft(study.graft_path))
    monkeypatch.setattr(ct_kidneys, "find_atrophic_natives", _no_second_look)
    out = _pipeline().run(loaded, device="cpu")
    assert out.finding is None and out.segments == (GRAFT_LEFT,)
    assert out.flags == ("right-kidney-not-found", "left-kidney-not-found")
    assert set(out.volumes_ml) == {"graft"}


def test_natives_missed_beside_a_graft_get_a_second_look(case, monkeypatch):
    """With a graft found and no native, the pipeline searches again for small natives
    (models.ct_graft.find_atrophic_natives, run for real here on this CT's natives)."""
    study, loaded, graft = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft", _fake_graft(study.graft_path))
    out = _pipeline().run(loaded, device="cpu")
    assert out.segments == (KIDNEY_RIGHT, KIDNEY_LEFT, GRAFT_LEFT)
    assert out.flags == ()
    truth = truth_on(loaded.series[SeriesRole.CT][0].volumes[0].image, study.kidneys_path)
    for mask, label in zip(out.masks[:2], (1, 2), strict=True):
        assert 2 * (mask & (truth == label)).sum() / (mask.sum() + (truth == label).sum()) > 0.7


def test_a_native_kidney_on_the_graft_is_dropped(case, monkeypatch):
    """A 'right kidney' that is the graft itself is not reported as a native kidney."""
    study, loaded, graft = case
    segment = fake_segmenter(study.kidneys_path)

    def natives_on_graft(ct, config=None):  # noqa: ANN001, ANN202
        found = segment(ct, config)
        return found.__class__(right=found.right.__class__(
            side="right", mask=truth_on(ct, study.graft_path) > 0, volume_ml=1.0, score=0.5,
            touches_edge=False), left=found.left, reasons={})

    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", natives_on_graft)
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft", _fake_graft(study.graft_path))
    monkeypatch.setattr(ct_kidneys, "find_atrophic_natives", _no_second_look)
    out = _pipeline().run(loaded, device="cpu")
    assert out.segments == (KIDNEY_LEFT, GRAFT_LEFT)
    assert "right-kidney-not-found" in out.flags


def test_no_kidney_and_no_graft_is_a_finding(case, monkeypatch):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft",
                        _fake_graft(study.graft_path, found=False))
    out = _pipeline().run(loaded, device="cpu")
    assert out.segments == () and out.volumes_ml == {}
    assert out.finding.startswith("no kidney in field of view (")
    assert "graft: fake: no graft-like region" in out.finding


def test_graft_search_can_be_switched_off(case, monkeypatch):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("graft search ran")

    monkeypatch.setattr(ct_kidneys, "segment_ct_graft", fail)
    out = _pipeline(search_graft=False).run(loaded, device="cpu")
    assert out.segments == (KIDNEY_RIGHT, KIDNEY_LEFT)


def test_an_unenhanced_ct_is_flagged(case, monkeypatch):
    """The native search's finding that the CT has no contrast reaches the result's
    flags (the graft search does not drop it)."""
    study, loaded, _ = case
    plain = fake_segmenter(study.kidneys_path)
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        lambda image, config=None: replace(plain(image, config),
                                                           unenhanced=True))
    monkeypatch.setattr(ct_kidneys, "segment_ct_graft", _fake_graft(study.graft_path))
    out = _pipeline().run(loaded, device="cpu")
    assert out.flags == ("unenhanced",)
