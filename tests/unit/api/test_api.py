"""The read-only HTTP API on a populated index (FastAPI's test client, no server)."""

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app


@pytest.fixture
def client(populated_index):
    return TestClient(create_app(populated_index))


def test_patient_volumes_with_trend(client):
    response = client.get("/api/patients/P1/volumes")
    assert response.status_code == 200
    rows = response.json()
    assert [r["study_instance_uid"] for r in rows] == ["1.1", "1.2", "1.3"]
    assert rows[-1]["alert"] and rows[-1]["alert_reasons"]
    assert client.get("/api/patients/P1/volumes", params={"structure": "cortex"}).json() == []


def test_unknown_patient_and_study_are_404_with_a_message(client):
    response = client.get("/api/patients/nobody/volumes")
    assert response.status_code == 404 and "nobody" in response.json()["detail"]
    assert client.get("/api/studies/9.9.9").status_code == 404


def test_patients_list_and_alerts_and_bad_parameters(client):
    assert [p["patient_id"] for p in client.get("/api/patients").json()] == ["P1", "P2"]
    alerted = client.get("/api/patients", params={"alerts": "true"}).json()
    assert [p["patient_id"] for p in alerted] == ["P1"]
    assert client.get("/api/patients", params={"limit": 0}).status_code == 422
    schema = client.get("/openapi.json").json()
    assert "/api/patients/{patient_id}/volumes" in schema["paths"]
