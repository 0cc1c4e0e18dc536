"""Reviews in the trend (SQLite and PostgreSQL): a correction replaces the volume, a
rejection takes the result out, an acceptance outranks quality control, and the history
keeps every one."""

import pytest
from sqlalchemy import select

from service.db import Result, Study
from service.db.queries import list_patients, patient_history, patient_trend, study_summary
from service.db.tables import Review, ReviewAction
from service.reviews.decisions import ReviewRefused, decide


def _correct(session, uid: str, structure: str, ml: float, reviewer: str = "DOE^JANE"):  # noqa: ANN001, ANN202
    study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
    result = session.scalar(select(Result).where(Result.study_pk == study.id,
                                                 Result.structure == structure)
                            .order_by(Result.id.desc()).limit(1))
    session.add(Review(study_pk=study.id, result_pk=None if result is None else result.id,
                       structure=structure, action=ReviewAction.CORRECTED, volume_ml=ml,
                       reviewer=reviewer, device="OHIF", seg_sop_instance_uid=f"{uid}.77"))


def test_a_correction_replaces_the_volume_in_the_trend_and_its_alerts(populated_index):
    with populated_index() as session, session.begin():
        _correct(session, "1.3", "kidney", 185.0)
    with populated_index() as session:
        rows = patient_trend(session, "P1")
        history = patient_history(session, "P1")
        patients = list_patients(session)
    last = rows[-1]
    assert last["volume_ml"] == 185.0 and last["measurement"] == "corrected"
    assert last["automatic_volume_ml"] == 170.0 and last["reviewed_by"] == "DOE^JANE"
    assert last["review"] == "corrected" and last["in_trend"]
    assert not last["alert"]  # 190 -> 185: the automatic 170 had raised one
    assert patients[0]["latest_volumes_ml"] == {"kidney": 185.0}
    of_study = [h for h in history if h["study_instance_uid"] == "1.3"]
    assert [(h["kind"], h["volume_ml"], h["reported"]) for h in of_study] == [
        ("automatic", 170.0, False), ("corrected", 185.0, True)]
    assert len([h for h in history if h["kind"] == "automatic"]) == 4  # 1.2 twice


def test_a_rejected_result_leaves_the_trend_and_an_accepted_one_counts(populated_index):
    with populated_index() as session, session.begin():
        (review,) = decide(session, "1.2", "reject", reviewer="Dr Who", device="API")
        assert review.action is ReviewAction.REJECTED
    with populated_index() as session:
        rows = patient_trend(session, "P1")
    assert [r["in_trend"] for r in rows] == [True, False, True]
    assert rows[2]["change_from_previous_pct"] == -15.0  # from 1.1's 200 ml, not 1.2's 190
    assert rows[1]["review"] == "rejected" and rows[1]["reviewed_by"] == "Dr Who"
    with populated_index() as session:
        patients = list_patients(session)
    assert patients[0]["needs_review"] == []  # a reader looked: not waiting for one
    with populated_index() as session, session.begin():
        decide(session, "1.2", "accept", reviewer="Dr Who", device="API", comment="fine")
    with populated_index() as session:
        rows = patient_trend(session, "P1")
        summary = study_summary(session, "1.2")
    assert [r["in_trend"] for r in rows] == [True, True, True]
    assert [r["action"] for r in summary["reviews"]] == ["rejected", "accepted"]
    assert summary["reviews"][1]["comment"] == "fine"


def test_an_accepted_result_enters_the_trend_whatever_its_verdict(populated_index):
    with populated_index() as session, session.begin():
        study = session.scalar(select(Study).where(Study.study_instance_uid == "2.2"))
        for result in session.scalars(select(Result).where(Result.study_pk == study.id)):
            result.qc_verdict = "review"
    with populated_index() as session:
        assert [r["in_trend"] for r in patient_trend(session, "P2")] == [True, False]
        assert list_patients(session)[1]["needs_review"] == ["kidney"]
    with populated_index() as session, session.begin():
        decide(session, "2.2", "accept", reviewer="R", device="web page")
    with populated_index() as session:
        assert [r["in_trend"] for r in patient_trend(session, "P2")] == [True, True]
        assert list_patients(session)[1]["needs_review"] == []


def test_a_review_stands_only_for_the_result_it_names(populated_index):
    """Processed again (new images), the study's new result stands until reviewed."""
    with populated_index() as session, session.begin():
        decide(session, "2.2", "reject", reviewer="R", device="API")
        study = session.scalar(select(Study).where(Study.study_instance_uid == "2.2"))
        old = session.scalar(select(Result).where(Result.study_pk == study.id))
        session.add(Result(job_pk=old.job_pk, study_pk=study.id, structure="kidney",
                           volume_ml=151.0, pipeline_name="mri-graft", pipeline_version="2",
                           seg_sop_instance_uid="2.2.new", seg_series_instance_uid="s",
                           source_series_instance_uid="t"))
    with populated_index() as session:
        rows = patient_trend(session, "P2")
        history = patient_history(session, "P2")
    assert rows[1]["volume_ml"] == 151.0 and rows[1]["review"] is None and rows[1]["in_trend"]
    assert [h["kind"] for h in history if h["study_instance_uid"] == "2.2"] == [
        "automatic", "automatic", "rejected"]


def test_a_structure_only_a_reader_segmented_is_reported(populated_index):
    with populated_index() as session, session.begin():
        _correct(session, "2.2", "kidney_left", 42.0)
    with populated_index() as session:
        rows = patient_trend(session, "P2", structure="kidney_left")
    assert [(r["volume_ml"], r["pipeline"], r["measurement"], r["job_id"]) for r in rows] == [
        (42.0, "reader", "corrected", None)]


@pytest.mark.parametrize(("uid", "decision", "reviewer", "structure", "status"), [
    ("9.9", "accept", "R", None, 404),
    ("1.1", "approve", "R", None, 422),
    ("1.1", "accept", "  ", None, 422),
    ("1.1", "accept", "R", "cortex", 409),
])
def test_a_review_that_cannot_be_recorded_says_why(populated_index, uid, decision, reviewer,
                                                    structure, status):
    with populated_index() as session, pytest.raises(ReviewRefused) as refused:
        decide(session, uid, decision, reviewer=reviewer, device="API", structure=structure)
    assert refused.value.status == status
