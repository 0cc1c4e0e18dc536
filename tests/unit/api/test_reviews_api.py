"""Accept and reject through the API and the patient page's form; the history lists every
measurement and review; a write from another site is refused."""

from fastapi.testclient import TestClient

from service.api.app import create_app

TOKEN = "s3cret-token-for-tests"


def test_a_reader_rejects_then_accepts_through_the_api(populated_index):
    client = TestClient(create_app(populated_index, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/studies/1.3/reviews", json={"decision": "reject",
                                                         "reviewer": "R"}).status_code == 401
    response = client.post("/api/studies/1.3/reviews", headers=auth,
                           json={"decision": "reject", "reviewer": "Dr Who",
                                 "comment": "bowel, not graft"})
    assert response.status_code == 201
    (review,) = response.json()
    assert (review["action"], review["reviewer"], review["structure"]) == (
        "rejected", "Dr Who", "kidney")
    rows = client.get("/api/patients/P1/volumes", headers=auth).json()
    assert [r["in_trend"] for r in rows] == [True, True, False]
    assert not rows[2]["alert"] and rows[2]["review"] == "rejected"
    patients = client.get("/api/patients", headers=auth).json()
    assert patients[0]["latest_volumes_ml"] == {"kidney": 190.0}
    history = client.get("/api/patient/history", params={"id": "P1"}, headers=auth).json()
    assert [(h["study_instance_uid"], h["kind"]) for h in history][-2:] == [
        ("1.3", "automatic"), ("1.3", "rejected")]
    assert history[-1]["comment"] == "bowel, not graft" and history[-1]["device"] == "API"
    for body, status in (({"decision": "maybe", "reviewer": "R"}, 422),
                         ({"decision": "accept", "reviewer": ""}, 422),
                         ({"decision": "accept", "reviewer": "R", "structure": "cortex"}, 409)):
        assert client.post("/api/studies/1.3/reviews", headers=auth,
                           json=body).status_code == status
    assert client.post("/api/studies/9.9/reviews", headers=auth,
                       json={"decision": "accept", "reviewer": "R"}).status_code == 404


def test_the_patient_page_form_records_a_review_and_refuses_another_site(populated_index):
    client = TestClient(create_app(populated_index), base_url="http://node.test")
    page = client.get("/patient", params={"id": "P1", "issuer": ""})
    assert page.text.count('action="/patient/review"') == 3
    assert "form-action 'self'" in page.headers["content-security-policy"]
    form = {"id": "P1", "issuer": "", "study": "1.2", "structure": "kidney",
            "reviewer": "Jane Reader", "decision": "reject"}
    for headers in ({"Origin": "http://evil.test"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "same-site", "Origin": "http://node.test"}):
        forged = client.post("/patient/review", data=form, follow_redirects=False,
                             headers=headers)
        assert forged.status_code == 403, headers
    assert client.post("/patient/review", data=form, follow_redirects=False,
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    done = client.post("/patient/review", data=form, follow_redirects=False,
                       headers={"Origin": "http://node.test", "Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 303 and done.headers["location"] == "/patient?id=P1&issuer="
    html = client.get(done.headers["location"]).text
    assert 'data-study="1.2" data-structure="kidney" data-qc="not assessed" ' \
           'data-review="rejected"' in html
    assert "rejected by Jane Reader" in html and "(web page)" in html
    rows = client.get("/api/patients/P1/volumes").json()
    assert [r["in_trend"] for r in rows] == [True, False, True]
    assert rows[2]["change_from_previous_pct"] == -15.0
