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
    assert result["volumes_ml"]["kidney"] == pytest.approx(study.truth_volume_ml, rel=0.5)
    seg = hd.seg.segread(out / result["seg_file"])
    assert seg.SOPInstanceUID == result["seg_sop_instance_uid"]
    assert result["source_series_instance_uid"] in study.dce_series_uids
    sr = hd.sr.srread(out / result["sr_file"])
    assert sr.SOPInstanceUID == result["sr_sop_instance_uid"]
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert group.get_measurements()[0].value == pytest.approx(result["volumes_ml"]["kidney"],
                                                              abs=1e-3)
    assert "kidney:" in capsys.readouterr().out


def test_segment_without_dce_says_why(tmp_path, capsys):
    study = write_mr_study(tmp_path / "in", seed=2, shape=(16, 64, 64))
    for path in study.files:  # keep only the T2 series
        if _series_of(path) != study.t2_series_uid:
            path.unlink()
    assert main(["segment", str(study.root), "--out", str(tmp_path / "out")]) == 2
    assert "no DCE MR series" in capsys.readouterr().err


def test_unknown_pipeline_is_named(tmp_path, capsys):
    study = write_mr_study(tmp_path / "in", seed=2, shape=(16, 64, 64), include_t2=False)
    assert main(["segment", str(study.root), "--out", str(tmp_path / "o"),
                 "--pipeline", "nope"]) == 2
    assert "unknown pipeline 'nope'" in capsys.readouterr().err


def _series_of(path):
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=True).SeriesInstanceUID
