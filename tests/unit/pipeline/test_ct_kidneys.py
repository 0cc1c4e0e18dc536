"""The ct-kidneys pipeline around a stand-in kidney method (the real one is tested in
tests/unit/models and end to end in tests/integration/test_ct_round_trip.py)."""

from __future__ import annotations

import io
import logging

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.config import CtSettings, ProcessingSettings
from service.db.tables import SeriesRole
from service.errors import ModelFilesError
from service.imaging.series import load_series
from service.pipeline import ct_kidneys
from service.pipeline.base import (
    CORTEX_LEFT,
    CORTEX_RIGHT,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    StudyInput,
)
from service.pipeline.registry import get_pipeline
from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from service.writers.result import ResultUids, build_result_objects
from tests.ct_cases import fake_cortex, fake_segmenter, tiny_model_dir, truth_on


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic CT study: files, the loaded study and the true labels."""
    study = write_ct_study(tmp_path_factory.mktemp("ct"), synthesize_ct(seed=4,
                                                                         grid=CtGrid.small()))
    series = load_series(list(study.files))
    loaded = StudyInput(study.study_instance_uid, {SeriesRole.CT: (series,)})
    return study, loaded, truth_on(series.volumes[0].image, study.kidneys_path)


def _pipeline(**ct):  # noqa: ANN003, ANN202
    return get_pipeline("ct-kidneys", ProcessingSettings(ct=CtSettings(**ct)))


def test_both_kidneys_volumes_and_flags(case, monkeypatch, caplog):
    study, loaded, truth = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, touches_edge=True))
    with caplog.at_level(logging.INFO):
        out = _pipeline().run(loaded, device="cpu")
    assert out.finding is None
    assert out.segments == (KIDNEY_RIGHT, KIDNEY_LEFT)
    assert np.array_equal(out.masks[0], truth == 1) and np.array_equal(out.masks[1], truth == 2)
    assert out.volumes_ml == pytest.approx({
        "kidney_right": study.truth[1].volume_ml, "kidney_left": study.truth[2].volume_ml},
        rel=1e-6)
    assert out.flags == ("right-kidney-touches-edge", "left-kidney-touches-edge")
    assert f"segmenting CT series {study.series_instance_uid}" in caplog.text


def test_one_side_found_writes_only_that_side(case, monkeypatch):
    study, loaded, truth = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("left",)))
    pipeline = _pipeline()
    out = pipeline.run(loaded, device="cpu")
    assert out.segments == (KIDNEY_LEFT,) and out.flags == ("right-kidney-not-found",)
    assert set(out.volumes_ml) == {"kidney_left"}
    objects = build_result_objects(out, pipeline, ProcessingSettings(), ResultUids(
        "1.2.826.0.1.3680043.8.498.31", "1.2.826.0.1.3680043.8.498.32",
        "1.2.826.0.1.3680043.8.498.33", "1.2.826.0.1.3680043.8.498.34",
        "1.2.826.0.1.3680043.8.498.35"))
    seg, sr = objects.seg, objects.sr
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    ds = dcmread(io.BytesIO(buffer.getvalue()))
    (item,) = ds.SegmentSequence
    assert (int(item.SegmentNumber), item.SegmentLabel) == (1, "Left kidney")
    modifier = item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert modifier[0].CodeValue == "7771000"
    back = hd.seg.segread(io.BytesIO(buffer.getvalue()))
    assert back.get_volume(combine_segments=False).array.sum() == (truth == 2).sum()
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    report = hd.sr.srread(io.BytesIO(buffer.getvalue()))
    (group,) = report.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_segment_numbers == [1]
    assert group.finding_sites[0].laterality == codes.SCT.Left


def test_no_kidney_is_a_finding_with_the_reasons(case, monkeypatch):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    out = _pipeline().run(loaded, device="cpu")
    assert out.segments == () and out.volumes_ml == {}
    assert out.finding == ("no kidney in field of view (left: fake: no left candidate; "
                           "right: fake: no right candidate)")


def test_cortex_segments_come_from_the_installed_ensemble(case, monkeypatch, tmp_path):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    monkeypatch.setattr(ct_kidneys, "segment_cortex", fake_cortex(study.cortex_path))
    out = _pipeline(cortex_models_dir=tiny_model_dir(tmp_path / "m")).run(loaded, device="cpu")
    assert out.segments == (KIDNEY_RIGHT, KIDNEY_LEFT, CORTEX_RIGHT, CORTEX_LEFT)
    assert out.volumes_ml["cortex_right"] == pytest.approx(study.truth[1].cortex_volume_ml)
    assert out.volumes_ml["cortex_left"] == pytest.approx(study.truth[2].cortex_volume_ml)
    algorithm = out.algorithms["cortex_left"]
    assert algorithm.name == "cortex-residual-unet-2d ensemble of 2"
    assert algorithm.family == codes.cid7162.ArtificialIntelligence
    assert "kidney_left" not in out.algorithms


def test_cortex_of_the_found_side_only(case, monkeypatch, tmp_path):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("right",)))
    monkeypatch.setattr(ct_kidneys, "segment_cortex", fake_cortex(study.cortex_path))
    out = _pipeline(cortex_models_dir=tiny_model_dir(tmp_path / "m")).run(loaded, device="cpu")
    assert out.segments == (KIDNEY_RIGHT, CORTEX_RIGHT)
    assert out.flags == ("left-kidney-not-found",)


def test_untrained_ensemble_runs_on_the_ct_grid(case, monkeypatch, tmp_path):
    """The real ensemble code path (tiny untrained networks): masks on the CT grid."""
    study, loaded, truth = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    out = _pipeline(cortex_models_dir=tiny_model_dir(tmp_path / "m", n=1)).run(loaded,
                                                                             device="cpu")
    assert out.segments[:2] == (KIDNEY_RIGHT, KIDNEY_LEFT)
    for spec, mask in zip(out.segments, out.masks, strict=True):
        assert mask.shape == truth.shape and mask.dtype == bool and mask.any(), spec
    for side in ("right", "left"):
        assert (f"cortex_{side}" in out.volumes_ml) != (f"{side}-cortex-not-found" in out.flags)


def test_tampered_weight_file_fails_the_run_naming_it(case, monkeypatch, tmp_path):
    study, loaded, _ = case
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    folder = tiny_model_dir(tmp_path / "m")
    pipeline = _pipeline(cortex_models_dir=folder)
    weights = folder / "model_1.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ModelFilesError, match=r"model_1\.pt: sha256 mismatch"):
        pipeline.run(loaded, device="cpu")
