"""Tests of service.trends: changes between studies and alerts, computed by hand."""

import datetime as dt

import pytest

from service.trends import AlertRules, Measurement, volume_trend


def _m(uid, day, ml, structure="kidney", time=None, baseline=False):
    date = dt.date(2026, 1, day) if day else None
    return Measurement(uid, date, time, structure, ml, baseline)


def test_changes_from_previous_and_baseline_in_date_order():
    # Given out of order: 200 ml, then 190 (-5 %), 171 (-10 %), 153.9 (-10 %).
    rows = volume_trend([_m("c", 20, 171.0), _m("a", 1, 200.0), _m("d", 30, 153.9),
                         _m("b", 10, 190.0)])
    assert [r.study_instance_uid for r in rows] == ["a", "b", "c", "d"]
    first, second, third, fourth = rows
    assert first.baseline and first.change_from_previous_pct is None
    assert first.change_from_baseline_pct is None and not first.alert
    assert second.change_from_previous_ml == -10.0 and second.change_from_previous_pct == -5.0
    assert second.change_from_baseline_pct == -5.0 and not second.alert
    # -10 % exactly is not "more than 10 %"; -14.5 % from baseline is under 15 %.
    assert third.change_from_previous_pct == -10.0 and third.change_from_baseline_pct == -14.5
    assert not third.alert
    # -10 % from previous (not more), -23.05 % from baseline: the baseline rule fires.
    assert fourth.change_from_baseline_pct == -23.05 and fourth.alert
    assert len(fourth.alert_reasons) == 1 and "baseline" in fourth.alert_reasons[0]


def test_a_fall_of_more_than_the_threshold_since_the_previous_study_alerts():
    rows = volume_trend([_m("a", 1, 100.0), _m("b", 2, 89.0)])
    assert rows[1].alert and "previous" in rows[1].alert_reasons[0]
    assert "baseline" not in " ".join(rows[1].alert_reasons)  # -11 % < 15 %
    quiet = volume_trend([_m("a", 1, 100.0), _m("b", 2, 89.0)],
                         AlertRules(fall_from_previous_pct=12.0))
    assert not quiet[1].alert


def test_growth_never_alerts_and_structures_are_separate():
    rows = volume_trend([_m("a", 1, 100.0, "left"), _m("b", 2, 150.0, "left"),
                         _m("a", 1, 100.0, "right"), _m("b", 2, 50.0, "right")])
    assert [(r.structure, r.alert) for r in rows] == [
        ("left", False), ("left", False), ("right", False), ("right", True)]
    assert rows[1].change_from_previous_pct == 50.0


def test_marked_baseline_same_day_order_and_undated_studies():
    rows = volume_trend([
        _m("x", None, 80.0),
        _m("b", 5, 120.0, time="101500"),
        _m("a", 5, 100.0, time="090000", baseline=False),
        _m("c", 9, 110.0, baseline=True),
    ])
    assert [r.study_instance_uid for r in rows] == ["a", "b", "c", "x"]
    assert [r.baseline for r in rows] == [False, False, True, False]
    assert rows[0].change_from_baseline_pct == pytest.approx(-9.09)  # before the baseline
    assert rows[3].study_date is None and rows[3].change_from_baseline_pct == pytest.approx(-27.27)
    assert rows[3].alert


def test_as_dict_keeps_the_reported_fields():
    row = volume_trend([_m("a", 1, 100.0), _m("b", 2, 80.0)])[1].as_dict()
    assert {"study_instance_uid", "study_date", "structure", "volume_ml",
            "change_from_previous_pct", "change_from_baseline_pct", "alert"} <= set(row)
    assert row["study_date"] == "2026-01-02" and row["alert_reasons"]


def _qc(uid, day, ml, verdict, baseline=False):
    return Measurement(uid, dt.date(2026, 1, day), None, "graft", ml, baseline, verdict,
                       () if verdict == "pass" else ("thickness 6.0 mm < 8 mm",))


def test_results_not_accepted_by_quality_control_are_listed_but_left_out_of_the_trend():
    # 200 -> (60, a wrong structure, QC fail) -> 195 -> (150, QC review) -> 190.
    rows = volume_trend([_qc("a", 1, 200.0, "pass"), _qc("b", 2, 60.0, "fail"),
                         _qc("c", 3, 195.0, "pass"), _qc("d", 4, 150.0, "review"),
                         _qc("e", 5, 190.0, "pass")])
    by_uid = {r.study_instance_uid: r for r in rows}
    assert [r.in_trend for r in rows] == [True, False, True, False, True]
    # The failed one neither alerts (-70 %) nor becomes "the previous study" of c.
    assert not by_uid["b"].alert and by_uid["b"].change_from_previous_pct == -70.0
    assert by_uid["b"].qc_verdict == "fail" and by_uid["b"].qc_reasons
    assert by_uid["c"].change_from_previous_pct == -2.5 and not by_uid["c"].alert
    assert not by_uid["d"].alert
    assert by_uid["e"].change_from_previous_ml == -5.0  # from c, not from d
    # Counted in: the same series with every verdict used alerts on b and d.
    loose = volume_trend([_qc("a", 1, 200.0, "pass"), _qc("b", 2, 60.0, "fail"),
                          _qc("c", 3, 195.0, "pass"), _qc("d", 4, 150.0, "review")],
                         AlertRules(verdicts_used=("pass", "review", "fail")))
    assert [r.alert for r in loose] == [False, True, False, True]


def test_the_first_accepted_study_is_the_baseline_and_unassessed_results_count():
    rows = volume_trend([_qc("a", 1, 50.0, "fail"), _qc("b", 2, 200.0, "pass"),
                         Measurement("c", dt.date(2026, 1, 3), None, "graft", 160.0)])
    assert [r.baseline for r in rows] == [False, True, False]
    assert rows[0].change_from_baseline_pct == -75.0 and not rows[0].alert
    # A result from before quality control (verdict None) is in the trend and alerts.
    assert rows[2].in_trend and rows[2].alert and rows[2].change_from_baseline_pct == -20.0
