"""The acceptance path with real peers: DCMTK storescu → node → DCMTK storescp."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from service.imaging.series import group_by_series
from tests.conftest import free_port
from tests.peers import (
    chromium_dom,
    dciodvfy_errors,
    dcmtk,
    peer_env,
    phase_copies,
    received,
    result_count,
    storescp,
    storescu,
)

pytestmark = pytest.mark.integration


def _segs_in(folder: Path) -> list[Path]:
    return received(folder, SegmentationStorage)


def _reports_in(folder: Path) -> list[Path]:
    return received(folder, Comprehensive3DSRStorage)


def test_echo_and_called_ae_check(make_node, sqlite_url):
    node = make_node(sqlite_url)
    node.start()
    ok = subprocess.run([dcmtk("echoscu"), "-aec", "KIDNEYNODE", "127.0.0.1",
                         str(node.dicom_port)], env=peer_env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    wrong = subprocess.run([dcmtk("echoscu"), "-aec", "NOTUS", "127.0.0.1",
                            str(node.dicom_port)], env=peer_env(), capture_output=True, text=True)
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr


def test_round_trip_seg_reaches_destination(make_node, database_url, small_study_dir, tmp_path):
    study = small_study_dir
    dest_port = free_port()
    with storescp(dest_port, tmp_path / "dest"):
        node = make_node(database_url, destinations=[
            {"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}])
        node.start()
        t0 = time.perf_counter()
        sent = storescu(node.dicom_port, list(study.files))
        t_send = time.perf_counter() - t0
        assert sent.returncode == 0, sent.stderr
        segs = node.wait_for(lambda: _segs_in(tmp_path / "dest"), 120, "the SEG at storescp")
        t_round = time.perf_counter() - t0
        reports = node.wait_for(lambda: _reports_in(tmp_path / "dest"), 30,
                                "the volume report (SR) at storescp")
    print(f"\nround trip ({database_url.split(':')[0]}): {len(study.files)} instances sent in "
          f"{t_send:.2f} s ({len(study.files) / t_send:.0f} instances/s), "
          f"SEG at destination after {t_round:.1f} s")
    assert len(segs) == 1
    assert dciodvfy_errors(segs[0]) == []
    seg = hd.seg.segread(segs[0])
    # The DCE holds every phase in one series: the SEG references the segmented phase's
    # copies, a series of their own that the destination received, each naming its original.
    copies = phase_copies(tmp_path / "dest")
    assert len(copies) == result_count(study) - 2
    (copied_series,) = {str(c.SeriesInstanceUID) for c in copies.values()}
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [copied_series]
    dce = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
           for p in group_by_series(study.files)[study.dce_series_uids[0]]}
    assert {str(c.SourceImageSequence[0].ReferencedSOPInstanceUID)
            for c in copies.values()} <= dce
    assert all("SourceImageSequence" in f.DerivationImageSequence[0]
               for f in seg.PerFrameFunctionalGroupsSequence)
    assert seg.StudyInstanceUID == study.study_instance_uid
    assert seg.ContentCreatorName == "KIDNEY^NODE"

    rows = json.loads(node.cli("volumes", study.patient_id, "--json").stdout)
    assert [r["study_instance_uid"] for r in rows] == [study.study_instance_uid]
    row = rows[0]
    assert row["structure"] == "graft" and row["study_date"]
    assert row["seg_sop_instance_uid"] == seg.SOPInstanceUID
    # The job stored the result's quality flags (a JSON list in the index).
    assert isinstance(row["flags"], list) and all(isinstance(f, str) for f in row["flags"])
    # Quality control ran in the node: a verdict with its reasons, said in the SEG, and
    # the first study is the trend's baseline only when it was accepted.
    assert row["qc_verdict"] in ("pass", "review", "fail")
    assert bool(row["qc_reasons"]) == (row["qc_verdict"] != "pass")
    assert row["in_trend"] == (row["qc_verdict"] == "pass")
    assert row["baseline"] is row["in_trend"] and row["change_from_previous_pct"] is None
    assert seg.SeriesDescription.startswith(
        "Kidney SEG" if row["qc_verdict"] == "pass" else f"QC {row['qc_verdict'].upper()} - ")
    print(f"volume {row['volume_ml']:.1f} ml, truth {study.truth_volume_ml:.1f} ml, "
          f"QC {row['qc_verdict']}: {'; '.join(row['qc_reasons'])}")
    # A sanity range only: this test runs the fast watershed baseline, which leaks into the
    # bowel touching the graft; accuracy is checked on mri-graft (test_graft_round_trip).
    assert 0.5 * study.truth_volume_ml < row["volume_ml"] < 2.0 * study.truth_volume_ml

    # The SR sent with the SEG: valid, same study, its volume the one in the index.
    assert len(reports) == 1
    assert dciodvfy_errors(reports[0]) == []
    sr = hd.sr.srread(reports[0])
    assert sr.StudyInstanceUID == study.study_instance_uid
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    (volume,) = group.get_measurements()
    assert volume.value == pytest.approx(row["volume_ml"], abs=1e-3)

    # The clinician's page, in a real browser: the trend chart loads, the study is listed
    # with its volume, and its mask preview is a picture.
    dom = chromium_dom(f"{node.api}/patients/{study.patient_id}")
    assert 'data-chart="loaded"' in dom
    assert f'data-study="{study.study_instance_uid}"' in dom
    assert f"{row['volume_ml']:.1f}" in dom
    # The verdict on the page, and the patient list naming what needs a person's look.
    assert f'data-qc="{row["qc_verdict"]}"' in dom
    (listed,) = json.loads(node.cli("patients", "--json").stdout)
    assert listed["needs_review"] == ([] if row["in_trend"] else ["graft"])
    preview_url = f"{node.api}/api/studies/{study.study_instance_uid}/preview.png"
    assert f'href="{preview_url[len(node.api):]}"' in dom
    with urllib.request.urlopen(preview_url, timeout=60) as resp:  # noqa: S310
        assert resp.headers["content-type"] == "image/png"
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"

    jobs = json.loads(node.cli("jobs", "--json").stdout)
    assert [j["state"] for j in jobs] == ["succeeded"]
    # No patient name or ID in the node's log (INFO level).
    log = node.log_path.read_text(errors="replace")
    assert "succeeded on study" in log
    assert study.patient_id not in log and "Synthetic^Graft" not in log
    # The same study sent again unchanged makes no second job.
    assert storescu(node.dicom_port, list(study.files)).returncode == 0
    time.sleep(3 * node.config["scheduler"]["stable_age_seconds"])
    assert len(json.loads(node.cli("jobs", "--json").stdout)) == 1


def test_unknown_calling_ae_is_rejected(make_node, sqlite_url, small_study_dir):
    node = make_node(sqlite_url, allowed_calling_aets=["MODALITY"])
    node.start()
    refused = storescu(node.dicom_port, list(small_study_dir.files)[:2], calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert "association rejected: calling AE 'INTRUDER'" in node.log()
    accepted = storescu(node.dicom_port, list(small_study_dir.files)[:2], calling="MODALITY")
    assert accepted.returncode == 0, accepted.stderr
    assert node.study(small_study_dir.study_instance_uid)["series"] >= 1


def test_destination_down_at_first_gets_the_seg_later(make_node, sqlite_url, small_study_dir,
                                                       tmp_path):
    dest_port = free_port()
    node = make_node(sqlite_url, destinations=[
        {"name": "late", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}])
    node.start()
    assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0

    def failed_attempts():
        sends = (node.study(small_study_dir.study_instance_uid) or {}).get("sends", [])
        return [s for s in sends if s["attempts"] >= 2 and s["state"] == "pending"]

    pending = node.wait_for(failed_attempts, 120, "failed send attempts")
    assert "unreachable" in pending[0]["last_error"]
    with storescp(dest_port, tmp_path / "dest"):
        node.wait_for(lambda: _segs_in(tmp_path / "dest"), 60, "the SEG after the destination "
                      "came up")
    # The row is marked sent once the association is released, just after the file lands.
    node.wait_for(lambda: [s["state"] for s in node.study(
        small_study_dir.study_instance_uid)["sends"]] == ["sent"] * result_count(small_study_dir),
                  30, "every result's send marked sent")
