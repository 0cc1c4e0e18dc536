import pytest
import SimpleITK as sitk

from service.db.tables import SeriesRole
from service.errors import PipelineError
from service.imaging.series import group_by_series, load_series
from service.pipeline.base import StudyInput
from service.synthetic import write_mr_study


def _phases(study, layout_series):
    return [load_series(paths) for uid, paths in layout_series.items()
            if uid in study.dce_series_uids]


@pytest.mark.parametrize("layout", ["single-series", "per-phase"])
def test_dce_phases_in_time_order_for_both_layouts(tmp_path, layout):
    study = write_mr_study(tmp_path, seed=4, shape=(12, 48, 48), dce_layout=layout,
                           include_t2=False)
    series = _phases(study, group_by_series(study.files))
    series.reverse()  # arrival order must not matter
    phases = StudyInput(study.study_instance_uid, {SeriesRole.DCE: tuple(series)}).dce_phases()
    assert len(phases) == 4
    means = [float(sitk.GetArrayFromImage(p.image).mean()) for p in phases]
    assert means[0] == min(means)  # pre-contrast first
    times = [p.datasets[0].AcquisitionTime for p in phases]
    assert times == sorted(times)


def test_no_dce_or_mismatched_grids_are_pipeline_errors(tmp_path):
    with pytest.raises(PipelineError, match="1.2.3: no DCE"):
        StudyInput("1.2.3", {}).dce_phases()
    a = write_mr_study(tmp_path / "a", seed=1, shape=(12, 48, 48), dce_layout="per-phase",
                       include_t2=False)
    b = write_mr_study(tmp_path / "b", seed=1, shape=(12, 40, 40), dce_layout="per-phase",
                       include_t2=False)
    sa = _phases(a, group_by_series(a.files))[:1]
    sb = _phases(b, group_by_series(b.files))[:1]
    with pytest.raises(PipelineError, match="different grids"):
        StudyInput("9.9", {SeriesRole.DCE: tuple(sa + sb)}).dce_phases()
