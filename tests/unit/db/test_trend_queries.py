"""Trend queries on SQLite and PostgreSQL: latest result per study, date order, alerts."""

import pytest

from service.db.queries import list_patients, patient_exists, patient_trend
from service.trends import AlertRules


def test_patient_trend_orders_by_date_and_reports_the_latest_result(populated_index):
    with populated_index() as session:
        rows = patient_trend(session, "P1")
        assert patient_exists(session, "P1") and not patient_exists(session, "nobody")
        assert patient_trend(session, "nobody") == []
    assert [r["study_instance_uid"] for r in rows] == ["1.1", "1.2", "1.3"]
    assert [r["volume_ml"] for r in rows] == [200.0, 190.0, 170.0]
    assert rows[1]["pipeline"] == "mri-graft-dce"
    assert rows[1]["seg_sop_instance_uid"] == "1.2.9.again"
    assert rows[1]["change_from_previous_pct"] == -5.0
    assert rows[2]["change_from_previous_pct"] == pytest.approx(-10.53)  # more than 10 %
    assert rows[2]["change_from_baseline_pct"] == -15.0  # not more than 15 %
    assert [r["alert"] for r in rows] == [False, False, True]
    with populated_index() as session:
        assert patient_trend(session, "P1", structure="cortex") == []
        lenient = patient_trend(session, "P1", rules=AlertRules(20.0, 20.0))
    assert not any(r["alert"] for r in lenient)


def test_list_patients_with_alerts(populated_index):
    with populated_index() as session:
        everyone = list_patients(session)
        alerted = list_patients(session, alerts_only=True)
    assert [p["patient_id"] for p in everyone] == ["P1", "P2"]  # newest last study first
    assert everyone[0]["studies"] == 3 and everyone[0]["last_study_date"] == "2025-06-01"
    assert everyone[0]["latest_volumes_ml"] == {"kidney": 170.0}
    assert [p["patient_id"] for p in alerted] == ["P1"]
