"""The access log: every read of patient data through the API and pages, with who (the
user an authenticating proxy names), when and what; health and metrics are not reads."""

from fastapi.testclient import TestClient

from service.api.app import create_app


def test_every_read_of_a_patient_is_in_the_access_log(populated_index):
    client = TestClient(create_app(populated_index, audit_user_header="X-Remote-User"))
    alice = {"X-Remote-User": "alice"}
    assert client.get("/api/patients/P1/volumes", headers=alice).status_code == 200
    assert client.get("/patient", params={"id": "P2", "issuer": ""}).status_code == 200
    assert client.get("/api/studies/1.3", headers=alice).status_code == 200
    assert client.get("/api/patients/nobody/volumes", headers=alice).status_code == 404
    assert client.get("/health").status_code == 200
    reads = client.get("/api/audit/access", headers=alice).json()
    # Newest first; the audit read itself is the newest of all once recorded.
    assert [(r["user"], r["path"], r["patient_id"], r["study_instance_uid"], r["status"])
            for r in reads] == [
        ("alice", "/api/patients/nobody/volumes", "nobody", None, 404),
        ("alice", "/api/studies/1.3", None, "1.3", 200),
        ("", "/patient?id=P2&issuer=", "P2", None, 200),
        ("alice", "/api/patients/P1/volumes", "P1", None, 200)]
    assert all(r["client"] == "testclient" and r["at"] for r in reads)
    of_p1 = client.get("/api/audit/access", params={"patient_id": "P1"}).json()
    assert [r["path"] for r in of_p1] == ["/api/patients/P1/volumes"]
    by_alice = client.get("/api/audit/access", params={"user": "alice"}).json()
    assert len(by_alice) == 4  # the first audit read, by alice, included


def test_the_access_log_can_be_off(populated_index):
    client = TestClient(create_app(populated_index, audit_reads=False))
    client.get("/api/patients/P1/volumes")
    assert client.get("/api/audit/access").json() == []
