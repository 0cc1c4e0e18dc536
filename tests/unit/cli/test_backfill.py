"""`kidney-node backfill` and the API's prior-study requests, on an index (SQLite); the
PACS side is in tests/integration/test_prior_studies.py."""

import json

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.cli import main


def test_without_a_pacs_the_cli_says_so_and_queues_nothing(index_env, capsys):
    assert main(["backfill", "P1"]) == 2
    assert "prior_studies.pacs is not set" in capsys.readouterr().err
    assert main(["backfill", "P1", "--status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == []


def test_the_cli_queues_a_request_and_shows_it(index_env, monkeypatch, capsys):
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__AE_TITLE", "PACS")
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__HOST", "127.0.0.1")
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__PORT", "104")
    assert main(["backfill", "P1"]) == 0
    out = capsys.readouterr()
    assert "the node asks PACS PACS@127.0.0.1:104" in out.err
    assert "(cli" in out.out and "not answered yet" in out.out
    assert main(["backfill", "P1", "--status", "--json"]) == 0
    (request,) = json.loads(capsys.readouterr().out)["requests"]
    assert request["reason"] == "cli" and request["queried_at"] is None


def test_the_api_asks_only_with_a_pacs_and_only_from_a_script_or_its_own_page(
        populated_index):
    without = TestClient(create_app(populated_index))
    assert without.post("/api/patients/P1/priors").status_code == 409
    client = TestClient(create_app(populated_index, pacs="PACS PACS@127.0.0.1:104"))
    refused = client.post("/api/patients/P1/priors",
                          headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    answer = client.post("/api/patient/priors", params={"id": "NEW-PATIENT"})
    assert answer.status_code == 202
    assert answer.json()["requests"][0]["reason"] == "api"
    status = client.get("/api/patient/priors", params={"id": "NEW-PATIENT"}).json()
    assert [r["reason"] for r in status["requests"]] == ["api"]
    assert client.get("/api/patients/P1/priors").json()["requests"] == []


def test_a_wild_card_patient_id_is_refused_by_cli_and_api(index_env, monkeypatch, capsys,
                                                          populated_index):
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__AE_TITLE", "PACS")
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__HOST", "127.0.0.1")
    monkeypatch.setenv("KIDNEY_NODE_PRIOR_STUDIES__PACS__PORT", "104")
    assert main(["backfill", "P*"]) == 2
    assert "wild card" in capsys.readouterr().err
    client = TestClient(create_app(populated_index, pacs="PACS"))
    answer = client.post("/api/patient/priors", params={"id": "P?"})
    assert answer.status_code == 422 and "wild card" in answer.json()["detail"]
