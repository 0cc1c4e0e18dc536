"""The running node on a real small filesystem (tmpfs) that fills up, goes read-only, or
is cut off mid-transfer (issue 18): every C-STORE gets Success or 0xA700, nothing
acknowledged is lost, ``/health`` says so, and the node recovers by itself."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import MRImageStorage

from tests.peers import NodeProcess, fresh_copies, indexed_instances, storescu

REQUIRE_TMPFS = os.environ.get("KIDNEY_NODE_REQUIRE_TMPFS") == "1"
_STATUS = re.compile(r"Received Store Response \(([^)]*)\)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, mounted for the test (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        print(reason)
        if REQUIRE_TMPFS:
            pytest.fail(reason + " (KIDNEY_NODE_REQUIRE_TMPFS=1)")
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _statuses(stored: subprocess.CompletedProcess) -> list[str]:
    return _STATUS.findall(stored.stderr)


def _fill(disk: Path, leave_mb: float) -> Path:
    """A filler file that leaves about ``leave_mb`` free on ``disk``."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - int(leave_mb * 1024 * 1024)))
    return filler


def _indexed(database_url: str, storage: Path) -> set[str]:
    """SOP Instance UIDs in the node's index, each checked against its archived file."""
    rows = indexed_instances(database_url)
    for uid, rel in rows.items():
        assert dcmread(storage / rel, stop_before_pixels=True).SOPInstanceUID == uid
    return set(rows)


def _incoming_files(disk: Path) -> list[Path]:
    return [p for p in (disk / "storage" / ".incoming").iterdir() if p.is_file()]


def _node_on(make_node, sqlite_url: str, disk: Path, *, min_free_mb: int) -> NodeProcess:  # noqa: ANN001
    node = make_node(sqlite_url)
    node.config["storage"] = {"root": str(disk / "storage"), "min_free_mb": min_free_mb}
    node.config["scheduler"]["stable_age_seconds"] = 3600  # reception only
    node.start()
    return node


def _uids(files: list[Path]) -> list[str]:
    return [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


def test_a_full_disk_answers_every_store_with_success_or_a700_and_recovers(
        make_node, sqlite_url, small_disk, small_study_dir, tmp_path):
    """With no floor, the disk fills in the middle of the transfer: pynetdicom used to
    raise and abort the association (the sender saw no status), and left the partial
    file. Now each C-STORE gets Success or 0xA700, each Success is archived and indexed,
    /health is degraded, and once space is back the refused instances go through."""
    files = fresh_copies(sorted(small_study_dir.files), tmp_path / "send", 120)
    database_url = f"sqlite:///{small_disk / 'index.sqlite'}"  # as the defaults: one disk
    node = _node_on(make_node, database_url, small_disk, min_free_mb=0)
    filler = _fill(small_disk, leave_mb=1.0)  # ~50 of the 120 fit
    stored = storescu(node.dicom_port, files, verbose=True, no_halt=True)
    statuses = _statuses(stored)
    assert len(statuses) == len(files), stored.stderr[-3000:]
    assert set(statuses) <= {"Success", "Refused: OutOfResources"}, set(statuses)
    acked = {uid for uid, st in zip(_uids(files), statuses, strict=True) if st == "Success"}
    assert 10 < len(acked) < len(files), len(acked)
    assert acked <= _indexed(database_url, small_disk / "storage")
    assert _incoming_files(small_disk) == []
    health = node.get("/health")
    assert health["status"] == "degraded", health
    assert any("No space left on device" in p for p in health["storage"]["problems"]), health
    assert "No space left on device" in node.log()

    filler.unlink()  # space is back: the node notices by itself
    health = node.get("/health")
    assert health["status"] == "ok", health
    again = storescu(node.dicom_port, files, verbose=True, no_halt=True)
    assert _statuses(again) == ["Success"] * len(files), again.stderr[-3000:]
    assert set(_uids(files)) == _indexed(database_url, small_disk / "storage")
    assert node.proc is not None and node.proc.poll() is None


def test_below_the_free_space_floor_or_read_only_stores_are_refused_before_writing(
        make_node, sqlite_url, small_disk, small_study_dir, tmp_path):
    """``storage.min_free_mb``: below it the SCP answers 0xA700 without writing; so it
    does on a read-only filesystem; both show in /health and pass when they are over."""
    files = fresh_copies(sorted(small_study_dir.files), tmp_path / "send", 10)
    node = _node_on(make_node, sqlite_url, small_disk, min_free_mb=4)
    filler = _fill(small_disk, leave_mb=3.0)
    free_before = os.statvfs(small_disk).f_bavail
    refused = storescu(node.dicom_port, files, verbose=True, no_halt=True)
    assert _statuses(refused) == ["Refused: OutOfResources"] * len(files), refused.stderr
    assert os.statvfs(small_disk).f_bavail >= free_before - 2  # nothing written
    health = node.get("/health")
    assert health["status"] == "degraded"
    assert any("less than storage.min_free_mb (4)" in p for p in health["storage"]["problems"])
    assert "less than storage.min_free_mb (4)" in node.log()

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        health = node.get("/health")
        assert health["status"] == "degraded" and health["storage"]["read_only"] is True
        read_only = storescu(node.dicom_port, files[:3], verbose=True, no_halt=True)
        assert _statuses(read_only) == ["Refused: OutOfResources"] * 3, read_only.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert node.get("/health")["status"] == "ok"
    stored = storescu(node.dicom_port, files, verbose=True, no_halt=True)
    assert _statuses(stored) == ["Success"] * len(files), stored.stderr
    assert set(_uids(files)) == _indexed(sqlite_url, small_disk / "storage")


def test_a_reception_cut_short_leaves_no_file_in_incoming(
        make_node, sqlite_url, small_disk, small_study_dir):
    """A peer that aborts in the middle of a data set used to leave its partial file in
    ``.incoming`` until the next start (4 cuts left 20 MB)."""
    node = _node_on(make_node, sqlite_url, small_disk, min_free_mb=0)
    ds = dcmread(sorted(small_study_dir.files)[0])
    ds.PixelData = ds.PixelData * 8  # several PDUs of 16 KiB
    encoded = encode(ds, True, True)  # implicit VR little endian, no file meta
    ae = AE(ae_title="CUTTER")
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2")
    for cut in range(3):
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="KIDNEYNODE")
        assert assoc.is_established
        request = C_STORE()
        request.MessageID = cut + 1
        request.AffectedSOPClassUID = MRImageStorage
        request.AffectedSOPInstanceUID = generate_uid()
        request.Priority = 2
        request.DataSet = BytesIO(encoded)
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        context_id = assoc.accepted_contexts[0].context_id
        for i, pdata in enumerate(message.encode_msg(context_id, 16384)):
            if i == 4:
                break
            assoc.dul.send_pdu(pdata)
        deadline = time.monotonic() + 5
        while not _incoming_files(small_disk) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _incoming_files(small_disk), "the reception did not start"
        assoc.abort()
        deadline = time.monotonic() + 5
        while _incoming_files(small_disk) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _incoming_files(small_disk) == [], f"cut {cut} left its file"
    assert node.log().count("reception cut short after") == 3


def test_a_job_whose_results_the_full_disk_refuses_waits_and_then_succeeds(
        make_node, sqlite_url, small_disk, small_study_dir):
    """A job that could not write its SEG used to end failed for good: the study never
    got its volume. Now it is queued again and runs once a test write succeeds."""
    node = make_node(sqlite_url)
    node.config["storage"] = {"root": str(small_disk / "storage"), "min_free_mb": 0}
    node.config["scheduler"]["storage_retry_seconds"] = 1
    node.start()
    sent = storescu(node.dicom_port, sorted(small_study_dir.files))
    assert sent.returncode == 0, sent.stderr
    filler = _fill(small_disk, leave_mb=0.02)  # before the study is stable (1.5 s)
    waiting = node.wait_for(
        lambda: next((j for j in node.get("/api/jobs") if "waiting for storage" in
                      (j["error"] or "")), None), timeout=120, what="a job waiting for storage")
    assert waiting["state"] == "queued" and waiting["attempts"] == 0, waiting
    assert "No space left on device" in waiting["error"]
    assert node.get("/health")["status"] == "degraded"
    time.sleep(3)  # it waits: the disk is still full
    (job,) = [j for j in node.get("/api/jobs") if j["id"] == waiting["id"]]
    assert job["state"] == "queued", job

    filler.unlink()
    done = node.wait_for(
        lambda: next((j for j in node.get("/api/jobs") if j["id"] == waiting["id"]
                      and j["state"] in ("succeeded", "failed")), None),
        timeout=120, what="the job to finish")
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    assert node.study(small_study_dir.study_instance_uid)["results"], "no volume"
    assert "jobs wait until the archive can be written" in node.log()
