"""``/metrics`` on a populated index: what the index holds, read at each scrape, parsed
with prometheus-client's parser; guarded by the token like every other route."""

import shutil

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.metrics import NodeMetrics


def _parse(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def metrics(populated_index, tmp_path):
    found = NodeMetrics()
    found.watch_index(populated_index, tmp_path)
    return found


def test_metrics_read_the_index_at_each_scrape(populated_index, metrics, tmp_path):
    client = TestClient(create_app(populated_index, metrics=metrics))
    metrics.store_answered(0)
    metrics.store_answered(0xA700)
    metrics.association("refused")
    metrics.job_timings("mri-graft", {"load_s": 1.5, "segment_s": 42.0})
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = _parse(response.text)
    assert samples[("kidney_node_jobs", (("pipeline", "mri-graft"), ("state", "succeeded")))] \
        == 5
    assert samples[("kidney_node_jobs", (("pipeline", "mri-graft-dce"),
                                         ("state", "succeeded")))] == 1
    assert samples[("kidney_node_results", (("structure", "kidney"),
                                            ("verdict", "not-assessed")))] == 6
    assert samples[("kidney_node_stores_total", (("status", "0xA700"),))] == 1
    assert samples[("kidney_node_associations_total", (("outcome", "refused"),))] == 1
    assert samples[("kidney_node_job_stage_seconds_sum", (("pipeline", "mri-graft"),
                                                          ("stage", "segment")))] == 42.0
    free = samples[("kidney_node_archive_free_bytes", ())]
    assert abs(free - shutil.disk_usage(tmp_path).free) < 64 * 2**20
    assert samples[("kidney_node_index_up", ())] == 1


def test_metrics_need_the_token_and_exist_only_when_given(populated_index, metrics):
    token = "s3cret-token-0123456789"
    guarded = TestClient(create_app(populated_index, metrics=metrics, token=token))
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {token}"}
                       ).status_code == 200
    assert TestClient(create_app(populated_index)).get("/metrics").status_code == 404
