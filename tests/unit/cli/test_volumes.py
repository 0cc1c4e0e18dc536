"""`kidney-node volumes` and `kidney-node patients` on a populated index (SQLite)."""

import csv
import io
import json

import pytest

from service.cli import main


def test_volumes_json_keeps_the_fields_and_adds_the_trend(index_env, capsys):
    assert main(["volumes", "P1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["study_date"] for r in rows] == ["2025-01-01", "2025-03-01", "2025-06-01"]
    for key in ("study_instance_uid", "study_date", "structure", "volume_ml",
                "change_from_previous_pct", "change_from_baseline_pct", "alert"):
        assert key in rows[0]
    assert [r["alert"] for r in rows] == [False, False, True]
    assert main(["volumes", "P1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_volumes_csv_and_table(index_env, capsys):
    assert main(["volumes", "P1", "--format", "csv", "--structure", "kidney"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["volume_ml"] for r in rows] == ["200.0", "190.0", "170.0"]
    assert rows[2]["alert"] == "True"
    assert main(["volumes", "P1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "vs_previous_pct" in table[0] and "ALERT" in table[3] and "ALERT" not in table[2]


def test_unknown_patient_says_so_and_fails(index_env, capsys):
    assert main(["volumes", "nobody"]) == 1
    assert "no study of this patient" in capsys.readouterr().out


def test_patients_with_alerts(index_env, capsys):
    assert main(["patients", "--json"]) == 0
    assert [p["patient_id"] for p in json.loads(capsys.readouterr().out)] == ["P1", "P2"]
    assert main(["patients", "--alerts"]) == 0
    out = capsys.readouterr().out
    assert "P1" in out and "P2" not in out and "ALERT" in out


def test_marked_baseline_moves_the_reference(index_env, capsys):
    assert main(["baseline", "1.2"]) == 0
    assert "is the baseline of patient P1" in capsys.readouterr().out
    assert main(["volumes", "P1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["baseline"] for r in rows] == [False, True, False]
    assert rows[0]["change_from_baseline_pct"] == pytest.approx(5.26)  # 200 vs 190
    assert rows[2]["change_from_baseline_pct"] == pytest.approx(-10.53)
    assert main(["baseline", "1.3"]) == 0  # one baseline per patient
    capsys.readouterr()
    assert main(["volumes", "P1", "--json"]) == 0
    assert [r["baseline"] for r in json.loads(capsys.readouterr().out)] == [False, False, True]
    assert main(["baseline", "1.3", "--clear"]) == 0
    assert "no longer the baseline" in capsys.readouterr().out
    assert main(["volumes", "P1", "--json"]) == 0
    assert [r["baseline"] for r in json.loads(capsys.readouterr().out)] == [True, False, False]
    assert main(["baseline", "9.9"]) == 2
    assert "9.9 is not known" in capsys.readouterr().err
