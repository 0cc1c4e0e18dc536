"""Which of the PACS's earlier studies and series the node fetches (pure planning)."""

from __future__ import annotations

import datetime as dt

from pydicom import Dataset

from service.config import ClassificationRules
from service.priors.planning import (
    FoundSeries,
    FoundStudy,
    needs_temporal_positions,
    other_issuer,
    plan_study,
    relevant,
    study_query,
    temporal_positions,
)

RULES = ClassificationRules()
PIPELINES = {"mr_pipeline": "mri-graft", "ct_pipeline": "ct-kidneys",
             "mr_nocontrast_pipeline": "mri-graft-nc"}


def _answer(**keys: object) -> Dataset:
    ds = Dataset()
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _series(uid: str, modality: str, description: str, n: int = 40) -> FoundSeries:
    return FoundSeries(uid, modality, description, None, n)


def test_a_dce_study_fetches_its_dce_and_t2_not_its_seg_or_localizer():
    plan = plan_study([_series("1", "MR", "dce_vibe_dynamic"), _series("2", "MR", "t2_haste"),
                       _series("3", "SEG", "kidney-node SEG"),
                       _series("4", "MR", "localizer", 3)], RULES, **PIPELINES)
    assert plan.pipeline == "mri-graft"
    assert set(plan.series_uids) == {"1", "2"}


def test_a_study_without_a_series_for_a_pipeline_is_not_fetched_and_says_why():
    plan = plan_study([_series("1", "MR", "diffusion b800"), _series("2", "SR", "report")],
                      RULES, **PIPELINES)
    assert plan.pipeline is None and plan.series_uids == ()
    assert "no DCE" in plan.reason


def test_t2_only_goes_to_the_no_contrast_pipeline_and_ct_to_ct():
    assert plan_study([_series("1", "MR", "t2_tse_cor")], RULES,
                      **PIPELINES).pipeline == "mri-graft-nc"
    assert plan_study([_series("1", "CT", "abdomen 1.0")], RULES,
                      **PIPELINES).pipeline == "ct-kidneys"


def test_an_unnamed_dynamic_series_is_looked_at_by_its_temporal_positions():
    series = [_series("1", "MR", "vibe", 120), _series("2", "MR", "t2_haste", 30),
              _series("3", "MR", "scout", 1)]
    assert needs_temporal_positions(series, RULES) == ["1", "2"]
    answers = [_answer(TemporalPositionIdentifier=str(1 + i % 4)) for i in range(120)]
    dynamic = FoundSeries("1", "MR", "vibe", None, 120, temporal_positions(answers))
    plan = plan_study([dynamic, series[1], series[2]], RULES, **PIPELINES)
    assert plan.pipeline == "mri-graft" and set(plan.series_uids) == {"1", "2"}
    # A study with a DCE named as such needs no image-level query.
    assert needs_temporal_positions([_series("0", "MR", "dce_vibe_dynamic"), *series],
                                    RULES) == []


def test_answers_of_another_issuer_and_of_other_modalities_are_told_apart():
    study = FoundStudy.from_answer(_answer(StudyInstanceUID="1.2.3", StudyDate="20230405",
                                           ModalitiesInStudy=["MR", "SR"],
                                           IssuerOfPatientID="HOSP-B"))
    assert study is not None and study.study_date == dt.date(2023, 4, 5)
    assert study.modalities == ("MR", "SR")
    assert other_issuer(study, "HOSP-A") and not other_issuer(study, "HOSP-B")
    assert not other_issuer(study, "")  # no issuer asked: any answer
    assert relevant(study, ("MR", "CT")) is None
    assert "US" in (relevant(FoundStudy("1", None, ("US",), None, ""), ("MR", "CT")) or "")
    # A PACS that does not return the modalities: the series query decides.
    assert relevant(FoundStudy("1", None, (), None, ""), ("MR", "CT")) is None
    assert FoundStudy.from_answer(_answer(StudyDate="20230405")) is None


def test_the_study_query_asks_for_the_patient_issuer_dates_and_modalities():
    ds = study_query("P/1", "HOSP-A", modalities=("MR", "CT"), since=dt.date(2011, 1, 2))
    assert ds.QueryRetrieveLevel == "STUDY"
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("P/1", "HOSP-A")
    assert ds.StudyDate == "20110102-"
    assert list(ds.ModalitiesInStudy) == ["MR", "CT"]
    assert study_query("P", "", modalities=("MR",), since=None).StudyDate == ""


def test_a_patient_id_that_would_match_others_is_never_sent():
    from service.priors.planning import other_patient, unsafe_patient_id

    assert unsafe_patient_id("P123") is None
    for bad in ("", "  ", "P*", "P?3", "A\\B"):
        assert unsafe_patient_id(bad) is not None, bad
    study = FoundStudy("1", None, (), None, "", patient_id="P1234")
    assert other_patient(study, "P123") and not other_patient(study, "P1234")
    assert not other_patient(FoundStudy("1", None, (), None, ""), "P123")
