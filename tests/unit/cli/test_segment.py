import json

import highdicom as hd
import pytest

from service.cli import main
from service.synthetic import write_mr_study


@pytest.mark.parametrize("pipeline", ["mri-watershed", "mri-otsu"])
def test_segment_writes_seg_and_result(tmp_path, pipeline, capsys):
    study = write_mr_study(tmp_path / "in", seed=2, shape=(16, 64, 64), dce_layout="per-phase")
    out = tmp_path / "out"
    assert main(["segment", str(study.root), "--out", str(out), "--pipeline", pipeline]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pipeline"] == pipeline
    assert result["study_instance_uid"] == study.study_instance_uid
    assert result["volumes_ml"]["graft"] == pytest.approx(study.truth_volume_ml, rel=0.5)
    assert result["qc"]["graft"]["verdict"] in ("pass", "review", "fail")
    assert set(result["qc"]["graft"]["signals"]) >= {"thickness_mm", "contrast", "edge_share"}
    seg = hd.seg.segread(out / result["seg_file"])
    assert seg.SOPInstanceUID == result["seg_sop_instance_uid"]
    assert result["source_series_instance_uid"] in study.dce_series_uids
    sr = hd.sr.srread(out / result["sr_file"])
    assert sr.SOPInstanceUID == result["sr_sop_instance_uid"]
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert group.get_measurements()[0].value == pytest.approx(result["volumes_ml"]["graft"],
                                                              abs=1e-3)
    assert f"graft: {result['volumes_ml']['graft']:.1f} ml (QC " in capsys.readouterr().out


def test_segment_without_a_usable_series_says_why(tmp_path, capsys):
    """Only a localizer (an excluded MR series): nothing to segment, and the message says
    which series were found. (A T2-only study goes to mri-graft-nc: see
    tests/integration/test_graft_followups.py.)"""
    from pydicom import dcmread

    study = write_mr_study(tmp_path / "in", seed=2, shape=(16, 64, 64))
    for path in study.files:  # keep only the T2 series, renamed a localizer
        if _series_of(path) != study.t2_series_uid:
            path.unlink()
            continue
        ds = dcmread(path)
        ds.SeriesDescription = "localizer"
        ds.ProtocolName = "localizer"
        ds.save_as(path)
    assert main(["segment", str(study.root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no DCE, T2 or T1 MR or CT series to segment" in err
    assert f"{study.t2_series_uid}=other-mr" in err


def test_unknown_pipeline_is_named(tmp_path, capsys):
    study = write_mr_study(tmp_path / "in", seed=2, shape=(16, 64, 64), include_t2=False)
    assert main(["segment", str(study.root), "--out", str(tmp_path / "o"),
                 "--pipeline", "nope"]) == 2
    assert "unknown pipeline 'nope'" in capsys.readouterr().err


def _series_of(path):
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=True).SeriesInstanceUID


def test_segment_ct_without_kidney_writes_the_finding_only(tmp_path, capsys, monkeypatch):
    from service.pipeline import ct_kidneys
    from service.synthetic import CtGrid, synthesize_ct, write_ct_study
    from tests.ct_cases import fake_segmenter

    study = write_ct_study(tmp_path / "in", synthesize_ct(2, grid=CtGrid.small()))
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    out = tmp_path / "out"
    assert main(["segment", str(study.root), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pipeline"] == "ct-kidneys" and result["volumes_ml"] == {}
    assert result["finding"].startswith("no kidney in field of view")
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]
    assert "no kidney in field of view" in capsys.readouterr().out
