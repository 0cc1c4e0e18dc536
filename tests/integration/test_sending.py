"""Results sent by the running node to destinations configured with TLS, or moved (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from tests.conftest import free_port
from tests.peers import received, result_count, storescp, storescu
from tests.pki import make_pki

pytestmark = pytest.mark.integration


def _sends(node, study) -> list[dict]:  # noqa: ANN001
    return (node.study(study.study_instance_uid) or {}).get("sends", [])


def _delivered(node, study, folder: Path) -> None:  # noqa: ANN001
    node.wait_for(lambda: received(folder, SegmentationStorage)
                  and received(folder, Comprehensive3DSRStorage), 120, "the SEG and the SR")
    node.wait_for(lambda: [s["state"] for s in _sends(node, study)]
                  == ["sent"] * result_count(study), 30, "every result's send marked sent")


def test_a_tls_destination_receives_the_results_over_tls(make_node, sqlite_url,
                                                         small_study_dir, tmp_path):
    """The outbox rebuilt each destination without its TLS settings: against a TLS-only
    storescp the results stayed pending for ever ("wrong version number"), and a plain
    listener on that port got them in the clear."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    with storescp(port, tmp_path / "dest", ae_title="TLSDEST", tls_pki=pki):
        node = make_node(sqlite_url, destinations=[
            {"name": "pacs", "ae_title": "TLSDEST", "host": "127.0.0.1", "port": port,
             "tls": {"ca_file": str(pki / "ca.pem")}}])
        node.start()
        assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
        _delivered(node, small_study_dir, tmp_path / "dest")
    assert f"(TLSDEST@127.0.0.1:{port}, TLS)" in node.log()


def test_results_queued_for_a_destination_follow_it_when_it_moves(make_node, sqlite_url,
                                                                  small_study_dir, tmp_path):
    """Items queued while a destination was at its old address kept that address for ever;
    they now go where the configuration says it is, and wait (not lost, not sent
    elsewhere) while it names no such destination."""
    old_port, new_port = free_port(), free_port()
    node = make_node(sqlite_url, destinations=[
        {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": old_port}])
    node.start()
    assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
    node.wait_for(lambda: len(_sends(node, small_study_dir)) == result_count(small_study_dir)
                  and all(s["attempts"] >= 1 for s in _sends(node, small_study_dir)), 120,
                  "failed sends to the old address")
    node.stop()
    node.config["destinations"] = []
    node.start()
    node.wait_for(lambda: all("no longer configured" in (s["last_error"] or "")
                              for s in _sends(node, small_study_dir)), 30,
                  "the sends waiting for a destination no longer configured")
    assert [s["state"] for s in _sends(node, small_study_dir)] == [
        "pending"] * result_count(small_study_dir)
    node.stop()
    node.config["destinations"] = [
        {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": new_port}]
    node.config["sender"]["retry_max_seconds"] = 1
    with storescp(new_port, tmp_path / "dest"):
        node.start()
        _delivered(node, small_study_dir, tmp_path / "dest")
