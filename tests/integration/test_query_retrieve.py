"""The node as a query/retrieve SCP (issue 20, item 2), asked by DCMTK's findscu, getscu
and movescu: C-FIND at every level with wild cards and ranges, the node's SEG and SR
retrieved by C-GET and by C-MOVE to a known AE, an unknown move destination refused, and
a calling AE outside the allow list refused as for C-STORE."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from tests.conftest import free_port
from tests.peers import dcmtk, orthanc, peer_env, received, storescp, storescu

pytestmark = pytest.mark.integration


def _scu(tool: str, port: int, keys: dict[str, str], out: Path, *extra: str,
         calling: str = "FINDSCU", root: str = "-S") -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    args = [dcmtk(tool), root, "-aet", calling, "-aec", "KIDNEYNODE", *extra,
            *[a for k, v in keys.items() for a in ("-k", f"{k}={v}")], "127.0.0.1", str(port)]
    return subprocess.run(args, cwd=out, env=peer_env(), capture_output=True, text=True,
                          timeout=120)


def _found(port: int, keys: dict[str, str], out: Path, **kw: str) -> list:
    done = _scu("findscu", port, keys, out, "-X", **kw)
    assert done.returncode == 0, done.stderr
    answers = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    for p in out.glob("rsp*.dcm"):
        p.unlink()
    return answers


def test_findscu_getscu_and_movescu_reach_the_archive_and_the_results(
        make_node, sqlite_url, small_study_dir, tmp_path):
    dest_port = free_port()
    node = make_node(sqlite_url)
    node.config["dicom"]["allowed_calling_aets"] = ["STORESCU", "FINDSCU", "GETSCU", "MOVESCU"]
    node.config["dicom"]["move_destinations"] = [
        {"ae_title": "VIEWER", "host": "127.0.0.1", "port": dest_port}]
    node.start()
    study = small_study_dir
    uid = study.study_instance_uid
    assert storescu(node.dicom_port, list(study.files)).returncode == 0
    series_keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": uid, "Modality": "",
                   "SeriesInstanceUID": "", "NumberOfSeriesRelatedInstances": ""}
    work = tmp_path / "find"
    answers = node.wait_for(
        lambda: (a := _found(node.dicom_port, series_keys, work))
        and {"SEG", "SR"} <= {x.Modality for x in a} and a, 240, "the SEG and SR series")
    sent = {str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in study.files}
    assert sent <= {str(a.SeriesInstanceUID) for a in answers}
    assert all(a.RetrieveAETitle == "KIDNEYNODE" and a.QueryRetrieveLevel == "SERIES"
               for a in answers)
    by_series = {}
    for p in study.files:
        s = str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        by_series[s] = by_series.get(s, 0) + 1
    for a in answers:
        if str(a.SeriesInstanceUID) in by_series:
            assert int(a.NumberOfSeriesRelatedInstances) == by_series[str(a.SeriesInstanceUID)]

    # Study level, patient root: wild card on the ID, a date range, the modalities.
    header = dcmread(study.files[0], stop_before_pixels=True)
    date = str(header.StudyDate)
    (hit,) = _found(node.dicom_port, {"QueryRetrieveLevel": "STUDY",
                                      "PatientID": study.patient_id[:3] + "*",
                                      "StudyDate": f"{date}-", "StudyInstanceUID": "",
                                      "PatientName": "", "ModalitiesInStudy": ""}, work,
                    root="-P")
    assert hit.StudyInstanceUID == uid and hit.PatientName == header.PatientName
    assert {"MR", "SEG", "SR"} <= set(hit.ModalitiesInStudy)
    assert _found(node.dicom_port, {"QueryRetrieveLevel": "STUDY", "PatientID": "NOBODY*",
                                    "StudyInstanceUID": ""}, work) == []
    assert _found(node.dicom_port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                    "StudyDate": "-19000101"}, work) == []
    (patient,) = _found(node.dicom_port, {"QueryRetrieveLevel": "PATIENT",
                                          "PatientID": study.patient_id,
                                          "NumberOfPatientRelatedStudies": ""}, work, root="-P")
    assert int(patient.NumberOfPatientRelatedStudies) == 1

    # C-GET of the SEG series: the requestor receives it on its own association.
    seg_series = next(str(a.SeriesInstanceUID) for a in answers if a.Modality == "SEG")
    got = tmp_path / "get"
    done = _scu("getscu", node.dicom_port, {"QueryRetrieveLevel": "SERIES",
                                            "StudyInstanceUID": uid,
                                            "SeriesInstanceUID": seg_series}, got,
                "-od", str(got), "-v", calling="GETSCU")
    assert done.returncode == 0, done.stderr
    found = [dcmread(p) for p in got.iterdir() if p.is_file()]
    assert len(found) == 1, done.stdout + done.stderr + node.log()[-3000:]
    (seg,) = found
    assert seg.SOPClassUID == SegmentationStorage and seg.StudyInstanceUID == uid

    # C-MOVE of the whole study to a known AE: every instance, results included.
    moved = tmp_path / "moved"
    with storescp(dest_port, moved, ae_title="VIEWER"):
        done = _scu("movescu", node.dicom_port, {"QueryRetrieveLevel": "STUDY",
                                                 "StudyInstanceUID": uid}, tmp_path / "mv",
                    "-aem", "VIEWER", calling="MOVESCU")
        assert done.returncode == 0, done.stderr
        total = sum(int(a.NumberOfSeriesRelatedInstances) for a in answers)
        files = [p for p in moved.iterdir() if p.is_file() and not p.name.startswith(".")]
        files = [p for p in files if "#" not in p.name]
        assert len(received(moved, SegmentationStorage)) == 1
        assert len(received(moved, Comprehensive3DSRStorage)) == 1
        assert len(files) == total
        # An AE the node does not know is refused: 0xA801, nothing sent.
        done = _scu("movescu", node.dicom_port, {"QueryRetrieveLevel": "STUDY",
                                                 "StudyInstanceUID": uid}, tmp_path / "mv2",
                    "-aem", "ELSEWHERE", "-v", calling="MOVESCU")
        assert "Refused: MoveDestinationUnknown" in done.stdout + done.stderr
    assert "not in dicom.move_destinations" in node.log()

    # Every query and retrieve that reached the patient is in the access log.
    reads = node.get(f"/api/audit/access?patient_id={study.patient_id}")
    seen = {(r["user"], r["method"]) for r in reads}
    assert {("FINDSCU", "C-FIND"), ("GETSCU", "C-GET"), ("MOVESCU", "C-MOVE")} <= seen, reads
    assert all(r["client"] == "127.0.0.1" for r in reads if r["method"].startswith("C-"))
    moves = [r for r in reads if r["method"] == "C-MOVE"]
    assert moves and all(r["path"].startswith("C-MOVE to VIEWER STUDY") and
                         r["study_instance_uid"] == uid for r in moves), moves

    # A calling AE outside the allow list is refused at association, as for C-STORE.
    done = _scu("findscu", node.dicom_port, series_keys, work, "-v", calling="INTRUDER")
    assert "Association Rejected" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not list(work.glob("rsp*.dcm"))


def test_orthanc_queries_the_node_and_retrieves_its_results(make_node, sqlite_url,
                                                            small_study_dir, tmp_path):
    """Orthanc, with the node as one of its modalities, finds the study on the node and
    pulls it by C-MOVE to itself: its copy then holds the node's SEG and SR."""
    orthanc_dicom, node_port = free_port(), free_port()
    node = make_node(sqlite_url)
    node.config["dicom"]["port"] = node_port
    node.config["dicom"]["move_destinations"] = [
        {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_dicom}]
    node.start()
    uid = small_study_dir.study_instance_uid
    assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
    work = tmp_path / "find"
    node.wait_for(lambda: {"SEG", "SR"} <= {a.Modality for a in _found(
        node.dicom_port, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": uid,
                          "Modality": ""}, work)}, 240, "the results in the node's archive")
    with orthanc(tmp_path / "orthanc", dicom_port=orthanc_dicom, http_port=free_port(),
                 modalities={"kidneynode": ["KIDNEYNODE", "127.0.0.1", node_port]}) as pacs:
        query = pacs.rest("/modalities/kidneynode/query", {
            "Level": "Study", "Query": {"PatientID": small_study_dir.patient_id,
                                        "StudyInstanceUID": ""}})
        answers = pacs.rest(f"/queries/{query['ID']}/answers?expand")
        assert [a["0020,000d"]["Value"] for a in answers] == [uid]
        pacs.rest(f"/queries/{query['ID']}/answers/0/retrieve",
                  {"TargetAet": "ORTHANC", "Synchronous": True})
        counts = pacs.series_by_modality(uid)
        assert counts.get("SEG") == 1 and counts.get("SR") == 1 and counts.get("MR"), counts
