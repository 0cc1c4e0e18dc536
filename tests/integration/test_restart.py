"""Nothing acknowledged is lost when the node is killed; interrupted jobs run again."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import select, update

from service.db import Instance, Job, JobState, make_engine, make_sessionmaker
from service.dicom.uids import new_uid
from tests.peers import indexed_instances

pytestmark = pytest.mark.integration


def test_sigkill_after_acknowledgements_loses_nothing(make_node, database_url, small_study_dir):
    node = make_node(database_url)
    node.config["scheduler"]["stable_age_seconds"] = 3600  # no job: only reception here
    node.start()
    files = sorted(small_study_dir.files)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="KIDNEYNODE")
    assert assoc.is_established
    acked: list[str] = []
    for path in files:
        ds = dcmread(path)
        status = assoc.send_c_store(ds)
        if status and status.Status == 0x0000:
            acked.append(str(ds.SOPInstanceUID))
        if len(acked) == 15:
            node.kill()  # SIGKILL right after an acknowledgement
            break
    assoc.abort()
    assert len(acked) == 15

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        rows = {i.sop_instance_uid: i.path for i in s.scalars(select(Instance))}
    engine.dispose()
    storage = node.workdir / "storage"
    for uid in acked:
        assert uid in rows, f"acknowledged {uid} is not indexed"
        assert (storage / rows[uid]).exists(), f"acknowledged {uid} is not on disk"
        assert dcmread(storage / rows[uid]).SOPInstanceUID == uid
    node.start()  # and the node comes back on the same archive
    assert node.study(small_study_dir.study_instance_uid)["series"] >= 1


def test_job_interrupted_by_a_restart_runs_again(make_node, sqlite_url, small_study_dir):
    from tests.peers import storescu

    node = make_node(sqlite_url)
    node.start()
    assert storescu(node.dicom_port, list(small_study_dir.files)).returncode == 0
    uid = small_study_dir.study_instance_uid
    node.wait_for(lambda: (node.study(uid) or {}).get("results"), 120, "the first result")
    node.stop()
    # As if the node had died while running the job: RUNNING, one attempt made.
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine).begin() as s:
        s.execute(update(Job).values(state=JobState.RUNNING, attempts=1,
                                     started_at=dt.datetime.now(dt.UTC)))
    engine.dispose()
    node.start()
    done = node.wait_for(
        lambda: [j for j in node.study(uid)["jobs"] if j["state"] == "succeeded"], 120,
        "the requeued job to succeed")
    assert done[0]["attempts"] == 2
    assert "interrupted" in node.log_path.read_text(errors="replace")


#: Concurrent associations and instances each sends in the SIGKILL-under-load test.
SENDERS, PER_SENDER = 4, 50


def _instance_sets(files: list[Path]) -> list[list[Dataset]]:
    """SENDERS sets of PER_SENDER copies of the study's files, each under a new SOP
    Instance UID (same study and series: the senders race to create them)."""
    sets = []
    for _ in range(SENDERS):
        copies = []
        for path in files[:PER_SENDER]:
            ds = dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
            copies.append(ds)
        sets.append(copies)
    return sets


def _send_all(port: int, sets: list[list[Dataset]], acked: list[str],
              statuses: list[int]) -> list[threading.Thread]:
    """Start one thread and association per set; each records the SOP Instance UIDs the
    node acknowledged (Success) and stops when the association dies."""
    lock = threading.Lock()

    def send(number: int, datasets: list[Dataset]) -> None:
        ae = AE(ae_title=f"MODALITY{number}")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
        # pynetdicom keeps waiting for a response after the peer died, for this long.
        ae.dimse_timeout = 5
        assoc = ae.associate("127.0.0.1", port, ae_title="KIDNEYNODE")
        if not assoc.is_established:
            return
        try:
            for ds in datasets:
                try:
                    status = assoc.send_c_store(ds)
                except RuntimeError:  # the association is gone
                    break
                code = int(status.Status) if "Status" in status else -1
                with lock:
                    statuses.append(code)
                    if code == 0x0000:
                        acked.append(str(ds.SOPInstanceUID))
                if not assoc.is_established:
                    break
        finally:
            if assoc.is_established:
                assoc.release()

    threads = [threading.Thread(target=send, args=(n, s), daemon=True)
               for n, s in enumerate(sets)]
    for thread in threads:
        thread.start()
    return threads


def test_sigkill_under_concurrent_load_loses_nothing_and_a_resend_counts_once(
        make_node, database_url, small_study_dir):
    node = make_node(database_url)
    node.config["scheduler"]["stable_age_seconds"] = 3600  # no job: only reception here
    node.start()
    sets = _instance_sets(sorted(small_study_dir.files))
    sent = {str(ds.SOPInstanceUID) for copies in sets for ds in copies}
    assert len(sent) == SENDERS * PER_SENDER

    acked: list[str] = []
    threads = _send_all(node.dicom_port, sets, acked, [])
    deadline = time.monotonic() + 60
    while len(acked) < SENDERS * PER_SENDER // 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    node.kill()  # SIGKILL while the four associations are sending
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    acked_at_kill = set(acked)
    assert SENDERS * PER_SENDER // 4 <= len(acked_at_kill) < len(sent), len(acked_at_kill)

    storage = node.workdir / "storage"
    index = indexed_instances(database_url)
    for uid in acked_at_kill:
        assert uid in index, f"acknowledged {uid} is not indexed"
        assert dcmread(storage / index[uid], stop_before_pixels=True).SOPInstanceUID == uid
    for uid, rel in index.items():  # nothing indexed without its file
        assert (storage / rel).is_file(), f"{uid} indexed but {rel} missing"
    assert set(index) <= sent

    node.start()  # same archive, same database
    # Partial files of the receptions the kill cut short (never acknowledged) are gone.
    assert [p for p in (storage / ".incoming").iterdir() if p.is_file()] == []
    statuses: list[int] = []
    acked.clear()
    for thread in _send_all(node.dicom_port, sets, acked, statuses):
        thread.join(120)
    assert statuses == [0x0000] * len(sent), sorted(set(statuses))
    assert set(acked) == sent

    index = indexed_instances(database_url)
    assert set(index) == sent and len(index) == len(sent)  # each once, none from temp files
    archived = {p.relative_to(storage).as_posix() for p in storage.rglob("*")
                if p.is_file() and ".incoming" not in p.relative_to(storage).parts}
    assert archived == set(index.values()), "files in the archive that are not indexed"
    assert all(".incoming" not in Path(rel).parts for rel in index.values())
