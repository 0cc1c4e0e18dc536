"""Workers of a scaled-out node in the API and the metrics: a worker that stopped sending
heartbeats shows as lost even before a receiver has reaped it; queue depth per queue."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.db.tables import Job, JobState, Patient, Study, Worker, utcnow
from service.metrics import NodeMetrics


@pytest.fixture
def index(migrated_sessions):
    now = utcnow()
    with migrated_sessions.begin() as s:
        study = Study(patient=Patient(patient_id="P", issuer=""), study_instance_uid="1.2",
                      last_received_at=now)
        s.add_all([
            Worker(name="gpu-1", hostname="a", pid=10, device="cuda", queues="gpu",
                   version="0.1.0", heartbeat_at=now - dt.timedelta(seconds=5), job_pk=7,
                   jobs_done=12),
            Worker(name="gpu-2", hostname="b", pid=11, device="cuda", queues="gpu",
                   version="0.1.0", heartbeat_at=now - dt.timedelta(seconds=300)),
            Worker(name="cpu-1", hostname="c", pid=12, device="cpu", queues="cpu",
                   version="0.1.0", heartbeat_at=now - dt.timedelta(days=1),
                   state="stopped", jobs_done=3),
            *[Job(study=study, fingerprint=str(i), state=JobState.QUEUED, queue=q)
              for i, q in enumerate(["gpu", "gpu", "gpu+cpu", None])],
            Job(study=study, fingerprint="r", state=JobState.RUNNING, queue="gpu",
                worker="gpu-1"),
        ])
    return migrated_sessions


def test_workers_listed_with_their_state_and_heartbeat(index):
    client = TestClient(create_app(index, heartbeat_timeout_s=60))
    rows = client.get("/api/workers").json()
    assert [(r["name"], r["state"]) for r in rows] == [
        ("gpu-1", "alive"), ("cpu-1", "stopped"), ("gpu-2", "lost")]
    first = rows[0]
    assert first["job_id"] == 7 and first["jobs_done"] == 12 and first["queues"] == ["gpu"]
    assert 4 <= first["heartbeat_age_s"] < 30
    jobs = client.get("/api/jobs").json()
    assert {(j["state"], j["queue"], j["worker"]) for j in jobs} >= {
        ("running", "gpu", "gpu-1"), ("queued", "gpu+cpu", None)}


def test_metrics_give_queue_depth_and_lost_workers(index, tmp_path):
    metrics = NodeMetrics()
    metrics.watch_index(index, tmp_path, heartbeat_timeout_s=60)
    text = TestClient(create_app(index, metrics=metrics)).get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("kidney_node_queue_depth", (("queue", "gpu"),))] == 2
    assert samples[("kidney_node_queue_depth", (("queue", "gpu+cpu"),))] == 1
    assert samples[("kidney_node_queue_depth", (("queue", "local"),))] == 1
    assert samples[("kidney_node_workers", (("state", "lost"),))] == 1
    assert samples[("kidney_node_workers", (("state", "alive"),))] == 1
    assert samples[("kidney_node_workers", (("state", "stopped"),))] == 1
    age = samples[("kidney_node_worker_heartbeat_age_seconds",
                   (("device", "cuda"), ("worker", "gpu-2")))]
    assert age >= 300
    assert ("kidney_node_worker_heartbeat_age_seconds",
            (("device", "cpu"), ("worker", "cpu-1"))) not in samples


def test_the_cli_lists_the_workers(index, database_url, monkeypatch, capsys):
    import json

    from service.cli import main

    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", database_url)
    assert main(["workers"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "state", "device"]
    assert [line.split()[:2] for line in table[1:]] == [
        ["gpu-1", "alive"], ["cpu-1", "stopped"], ["gpu-2", "lost"]]
    assert main(["workers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["job_id"] == 7
