"""A DICOMweb destination (issue 20, item 3): the node's results reach Orthanc's DICOMweb
plugin by STOW-RS through the same outbox as DICOM sends: after Orthanc was down for a
while, and, when Orthanc refuses the credentials, as a permanent failure with a clear
message that ``kidney-node outbox --retry`` sends again once the password is fixed."""

from __future__ import annotations

import io
import json

import pytest
from pydicom import dcmread

from tests.conftest import free_port
from tests.peers import orthanc, storescu

pytestmark = pytest.mark.integration

USER = ("kidney", "s3cret-stow")


def _destination(http_port: int, password: str) -> dict:
    return {"name": "web", "dicomweb": {"url": f"http://127.0.0.1:{http_port}/dicom-web",
                                         "username": USER[0], "password": password,
                                         "timeout_seconds": 10}}


def _outbox(node) -> list[dict]:  # noqa: ANN001
    return json.loads(node.cli("outbox", "--json").stdout)


def test_results_reach_orthanc_by_stow_rs_after_it_was_down(make_node, sqlite_url,
                                                            small_study_dir, tmp_path):
    http_port = free_port()
    node = make_node(sqlite_url, destinations=[_destination(http_port, USER[1])])
    node.start()
    study_uid = small_study_dir.study_instance_uid
    assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
    # Orthanc is down: the results wait in the outbox, retried, the reason recorded.
    waiting = node.wait_for(lambda: [i for i in _outbox(node) if i["attempts"] >= 2] or None,
                            240, "STOW-RS attempts while Orthanc is down")
    assert all(i["state"] == "pending" for i in waiting), waiting
    assert all("unreachable" in i["last_error"] and "STOW-RS" in i["last_error"]
               for i in waiting), waiting
    with orthanc(tmp_path / "orthanc", dicom_port=free_port(), http_port=http_port,
                 dicomweb=True, user=USER) as pacs:
        node.wait_for(lambda: all(i["state"] == "sent" for i in _outbox(node)) or None, 60,
                      "every result sent once Orthanc is up")
        counts = pacs.series_by_modality(study_uid)
        assert counts.get("SEG") == 1 and counts.get("SR") == 1, counts
        (seg,) = pacs.files(study_uid, "SEG")
        assert str(dcmread(io.BytesIO(seg)).StudyInstanceUID) == study_uid
    # The audit lists each delivery with the endpoint's host and port.
    audit = node.get("/api/audit/sent")
    assert audit and all(a["address"] == f"127.0.0.1:{http_port}" for a in audit), audit
    assert "sent" in node.log() and f"STOW-RS http://127.0.0.1:{http_port}" in node.log()


def test_refused_credentials_fail_for_good_then_retry_sends_them(make_node, sqlite_url,
                                                                 small_study_dir, tmp_path):
    http_port = free_port()
    study_uid = small_study_dir.study_instance_uid
    with orthanc(tmp_path / "orthanc", dicom_port=free_port(), http_port=http_port,
                 dicomweb=True, user=USER) as pacs:
        node = make_node(sqlite_url, destinations=[_destination(http_port, "wrong-password")])
        node.start()
        assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
        failed = node.wait_for(
            lambda: (items := _outbox(node)) and all(i["state"] == "failed" for i in items)
            and items, 240, "the results failed for good")
        assert all(i["attempts"] == 1 for i in failed), failed  # not retried in a loop
        assert all("refused the credentials (HTTP 401)" in i["last_error"] for i in failed)
        assert "s3cret" not in node.log() and "wrong-password" not in node.log()
        assert pacs.series_by_modality(study_uid) == {}
        # The operator fixes the password, restarts, and sends the failed items again.
        node.stop()
        node.config["destinations"] = [_destination(http_port, USER[1])]
        node.start()
        out = node.cli("outbox", "--retry", "web")
        assert f"{len(failed)} failed item(s) for web queued again" in out.stdout
        node.wait_for(lambda: all(i["state"] == "sent" for i in _outbox(node)) or None, 60,
                      "the requeued results sent")
        counts = pacs.series_by_modality(study_uid)
        assert counts.get("SEG") == 1 and counts.get("SR") == 1, counts
