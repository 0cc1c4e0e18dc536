"""What an operations team reads from the running node, against what the test did (a CT
study stored by DCMTK's storescu, an instance the node cannot understand, an association
from an unknown AE title, the result sent to storescp, a clinician reading the patient
through a proxy that names them): ``/metrics``, read with prometheus-client's own
parser, and the audit trail (who sent which instance, what was sent where, who read
which patient)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.conftest import free_port
from tests.peers import storescp, storescu

pytestmark = pytest.mark.integration


def _get(api: str, path: str, user: str | None = None) -> object:
    request = urllib.request.Request(api + path, headers={"X-Remote-User": user} if user
                                     else {})
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        return json.load(resp)


def _samples(api: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as resp:  # noqa: S310
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _unreadable_instance(port: int) -> int:
    """A CT instance without Study Instance UID: the node answers 0xC000."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.PatientID = generate_uid(), "CT", "IT-METRICS"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_metrics_and_audit_tell_what_the_node_received_ran_sent_and_showed(
        make_node, sqlite_url, tmp_path):
    study = write_ct_study(tmp_path / "ct", synthesize_ct(1, grid=CtGrid.small()),
                           patient_id="IT-METRICS")
    files = list(study.files)
    dest_port = free_port()
    with storescp(dest_port, tmp_path / "dest"):
        node = make_node(sqlite_url, allowed_calling_aets=["STORESCU"], destinations=[
            {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}])
        node.config["http"]["audit_user_header"] = "X-Remote-User"
        node.config["log_format"] = "json"
        node.start()
        assert storescu(node.dicom_port, files).returncode == 0
        assert storescu(node.dicom_port, files[:1], calling="INTRUDER").returncode != 0
        assert _unreadable_instance(node.dicom_port) == 0xC000

        def all_sent() -> list | None:
            sends = (node.study(study.study_instance_uid) or {}).get("sends", [])
            return sends if len(sends) == 2 and all(s["state"] == "sent" for s in sends) \
                else None

        node.wait_for(all_sent, 120, "the SEG and SR sent")
        samples = _samples(node.api)
        uid = study.study_instance_uid
        _get(node.api, "/api/patients/IT-METRICS/volumes", user="dr.house")
        received = _get(node.api, f"/api/audit/received?study={uid}")
        by_peer = _get(node.api, "/api/audit/received?peer=STORESCU")
        by_address = _get(node.api, "/api/audit/received?peer=127.0.0.1")
        sent = _get(node.api, f"/api/audit/sent?study={uid}")
        reads = _get(node.api, "/api/audit/access?patient_id=IT-METRICS")
        log = node.log()
        summary = node.study(study.study_instance_uid)
        storage = Path(node.config["storage"]["root"])
    print({k: v for k, v in samples.items() if k[0].startswith("kidney_node")
           and "_bucket" not in k[0] and "_created" not in k[0]})
    assert samples[("kidney_node_stores_total", (("status", "0x0000"),))] == len(files)
    assert samples[("kidney_node_stores_total", (("status", "0xC000"),))] == 1
    assert samples[("kidney_node_associations_total", (("outcome", "accepted"),))] == 2
    assert samples[("kidney_node_associations_total", (("outcome", "rejected"),))] == 1
    assert samples[("kidney_node_jobs", (("pipeline", "ct-kidneys"), ("state", "succeeded")))] \
        == 1
    for stage in ("load", "segment", "qc", "write"):
        key = ("kidney_node_job_stage_seconds_count", (("pipeline", "ct-kidneys"),
                                                         ("stage", stage)))
        assert samples[key] == 1, stage
    verdicts = {k[1]: v for k, v in samples.items() if k[0] == "kidney_node_results"}
    assert sum(verdicts.values()) == len(summary["results"])
    for result in summary["results"]:
        key = (("structure", result["structure"]), ("verdict", result["qc_verdict"]))
        assert verdicts[key] >= 1
    assert samples[("kidney_node_outbox_items", (("destination", "pacs"), ("state", "sent")))] \
        == 2
    on_disk = [p for p in storage.rglob("*.dcm") if ".incoming" not in p.parts]
    assert samples[("kidney_node_archive_instances", ())] == len(on_disk) == len(files) + 2
    assert samples[("kidney_node_archive_bytes", ())] == sum(p.stat().st_size for p in on_disk)
    assert samples[("kidney_node_archive_free_bytes", ())] > 0
    assert samples[("kidney_node_index_up", ())] == 1
    # Audit: who sent which instance; what was sent where, when, with what outcome; who
    # read the patient.
    sop_uids = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {r["sop_instance_uid"] for r in received} == sop_uids
    assert {(r["calling_aet"], r["peer_address"]) for r in received} == {
        ("STORESCU", "127.0.0.1")}
    assert {r["sop_instance_uid"] for r in by_peer} == sop_uids
    assert {r["sop_instance_uid"] for r in by_address} == sop_uids
    assert sorted(s["sop_instance_uid"] for s in sent) == sorted(
        s["sop_instance_uid"] for s in summary["sends"])
    assert {(s["destination"], s["ae_title"], s["address"], s["state"]) for s in sent} == {
        ("pacs", "DEST", f"127.0.0.1:{dest_port}", "sent")}
    assert all(s["sent_at"] for s in sent)
    (read,) = [r for r in reads if r["user"] == "dr.house"]
    assert (read["path"], read["status"], read["client"]) == (
        "/api/patients/IT-METRICS/volumes", 200, "127.0.0.1")
    # The log as JSON lines (log_format: json), the rejection of the unknown AE in it.
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [line for line in log.splitlines() if line[:2] == "20"]  # no text lines
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    assert any(r["level"] == "WARNING" and "INTRUDER" in r["message"] for r in records)
