"""Issue 16: synthetic graft studies without contrast (T2 only, T2 + T1 Dixon)."""

import numpy as np
import SimpleITK as sitk

from service.config import ClassificationRules
from service.db.tables import SeriesRole
from service.imaging.series import group_by_series, load_series
from service.scheduler.classify import SeriesFacts, classify_series
from service.synthetic import Tissue, synthesize_mr, write_mr_study


def test_dixon_signals_per_tissue():
    mr = synthesize_mr(seed=4, include_dce=False, dixon=True)
    assert mr.dce.shape[0] == 0 and mr.phase_times_s == ()
    labels = mr.dce_labels

    def mean(name, tissue):
        return float(mr.dixon[name][labels == tissue].mean())

    # Fat bright on in-phase and fat, dark on water; the kidney intermediate; urine dark.
    assert mean("in", Tissue.FAT) > mean("in", Tissue.CORTEX) > mean("in", Tissue.BLADDER)
    assert mean("water", Tissue.FAT) < 0.5 * mean("water", Tissue.CORTEX)
    assert mean("fat", Tissue.FAT) > 3 * mean("fat", Tissue.CORTEX)
    # T2: urine brighter than the kidney, the kidney brighter than muscle.
    t2_of = mr.t2.astype(float)
    assert t2_of.max() > 0 and mr.t2_kidney_mask.any()
    assert abs(mr.t2_truth_volume_ml - mr.truth_volume_ml) < 0.1 * mr.truth_volume_ml


def test_the_other_images_of_a_seed_do_not_change():
    plain = synthesize_mr(seed=5)
    more = synthesize_mr(seed=5, dixon=True)
    assert np.array_equal(plain.dce, more.dce) and np.array_equal(plain.t2, more.t2)
    assert plain.dixon is None and plain.t2_kidney_mask is not None


def test_lymphocele_lies_against_the_graft():
    plain = synthesize_mr(seed=6, include_dce=False, include_t2=False)
    fluid = synthesize_mr(seed=6, include_dce=False, include_t2=False, lymphocele=True)
    added = (fluid.dce_labels == Tissue.BLADDER) & (plain.dce_labels != Tissue.BLADDER)
    assert added.sum() > 100
    near = sitk.GetArrayFromImage(sitk.BinaryDilate(
        sitk.GetImageFromArray(fluid.kidney_mask), [2, 2, 2]))
    assert (added & (near > 0)).any()  # it touches the kidney


def test_written_study_without_contrast_is_classified_t2_and_t1(tmp_path):
    study = write_mr_study(tmp_path, seed=1, include_dce=False, dixon=True)
    assert study.dce_series_uids == () and set(study.dixon_series_uids) == {
        "in", "opp", "water", "fat"}
    assert study.t2_truth_mask is not None and study.t2_truth_volume_ml > 0
    roles = []
    for paths in group_by_series(study.files).values():
        series = load_series(paths)
        ds = series.volumes[0].datasets[0]
        facts = SeriesFacts(ds.SeriesInstanceUID, "MR", ds.SeriesDescription,
                            ds.get("ProtocolName"), frozenset({ds.SOPClassUID}),
                            len(paths), 0)
        roles.append(classify_series(facts, ClassificationRules()))
    assert sorted(roles) == sorted([SeriesRole.T2] + [SeriesRole.T1] * 4)
