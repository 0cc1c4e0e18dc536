"""The HTTP API on a populated index (FastAPI's test client, no server)."""

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
    # The bearer scheme is declared, on the guarded routes only.
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/patients"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]
    # Typed answers: the trend's rows and the study summary are declared models.
    ok = schema["paths"]["/api/patients/{patient_id}/volumes"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/TrendRow")
    fields = schema["components"]["schemas"]["TrendRow"]["properties"]
    assert {"volume_ml", "in_trend", "review", "automatic_volume_ml"} <= fields.keys()
    assert "StudyOut" in schema["components"]["schemas"]


def _png_size(data: bytes) -> tuple[int, int]:
    from io import BytesIO

    from PIL import Image
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(BytesIO(data)) as image:
        return image.size


def test_trend_plot_is_a_png_and_unknown_patient_is_404(client):
    response = client.get("/api/patients/P1/volumes.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    width, height = _png_size(response.content)
    assert width > 300 and height > 200
    assert client.get("/api/patients/nobody/volumes.png").status_code == 404
    assert "/api/patients/{patient_id}/volumes.png" in client.get("/openapi.json").json()["paths"]


def test_patient_page_lists_each_study_with_changes_alert_and_preview_link(client):
    page = client.get("/patients/P1")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'src="/api/patient/volumes.png?id=P1&amp;issuer="' in html
    for uid in ("1.1", "1.2", "1.3"):
        assert f'data-study="{uid}"' in html
        assert f'href="/api/studies/{uid}/preview.png"' in html
    assert html.count('class="alert"') == 1 and "ALERT" in html
    assert client.get("/patients/nobody").status_code == 404
    assert 'href="/patient?id=P1&amp;issuer="' in client.get("/").text


def test_preview_of_a_study_without_stored_result_is_404(client):
    response = client.get("/api/studies/1.1/preview.png")
    assert response.status_code == 404 and "1.1" in response.json()["detail"]


def test_bearer_token_guards_everything_but_health(populated_index):
    token = "s3cret-token-0123456789"
    guarded = TestClient(create_app(populated_index, token=token))
    assert guarded.get("/health").status_code == 200
    assert guarded.get("/favicon.ico").status_code == 204  # empty: browsers ask for it
    for path in ("/api/patients", "/api/patients/P1/volumes", "/patients/P1", "/api/jobs",
                 "/api/patient/history?id=P1"):
        refused = guarded.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert guarded.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get(path, headers={"Authorization": f"Bearer {token}"}
                           ).status_code == 200, path
    guarded.cookies.set("kidney_node_token", token)
    assert guarded.get("/patients/P1").status_code == 200


def test_api_off_loopback_needs_a_token():
    from pydantic import ValidationError

    from service.config.settings import HttpSettings
    assert HttpSettings(host="127.0.0.1").token is None
    with pytest.raises(ValidationError, match="not a loopback address"):
        HttpSettings(host="0.0.0.0")  # noqa: S104
    assert HttpSettings(host="0.0.0.0", token="x" * 16).token == "x" * 16  # noqa: S104
    assert HttpSettings(host="0.0.0.0", enabled=False).enabled is False  # noqa: S104
