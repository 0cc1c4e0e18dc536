"""Retention through the running node: two CT studies processed and sent; one aged by
400 days in the index. The scheduler's dry run (storage.retention.dry_run) names it and
deletes nothing; ``kidney-node purge --apply`` then deletes its source images only: its
volumes, SEG and SR stay queryable and on disk, its audit rows stay, no job is made for
it, and the other study is not touched."""

from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.peers import node_sending_to_storescp, storescu

pytestmark = pytest.mark.integration


def _files(storage: Path, study_uid: str) -> set[Path]:
    return {p for p in (storage / study_uid).rglob("*.dcm")}


def test_old_source_images_are_purged_and_the_results_stay(make_node, sqlite_url, tmp_path):
    old = write_ct_study(tmp_path / "old", synthesize_ct(1, grid=CtGrid.small()),
                         patient_id="IT-RETAIN-OLD")
    young = write_ct_study(tmp_path / "young", synthesize_ct(6, grid=CtGrid.small()),
                           patient_id="IT-RETAIN-NEW")
    with node_sending_to_storescp(make_node, sqlite_url, tmp_path / "dest") as node:
        node.stop()
        node.config["storage"]["retention"] = {"source_days": 365, "dry_run": True,
                                               "interval_hours": 0.0005}
        node.start()
        for study in (old, young):
            assert storescu(node.dicom_port, list(study.files)).returncode == 0

        def both_sent() -> bool:
            sends = [s for st in (old, young)
                     for s in (node.study(st.study_instance_uid) or {}).get("sends", [])]
            return len(sends) == 4 and all(s["state"] == "sent" for s in sends)

        node.wait_for(both_sent, 180, "both studies' SEG and SR sent")
        storage = Path(node.config["storage"]["root"])
        before = {s.study_instance_uid: _files(storage, s.study_instance_uid)
                  for s in (old, young)}
        volumes = node.get("/api/patients/IT-RETAIN-OLD/volumes")
        engine = create_engine(sqlite_url)
        with engine.begin() as conn:  # the study was received 400 days ago
            conn.execute(text("UPDATE studies SET last_received_at = :t, first_received_at = :t "
                              "WHERE study_instance_uid = :u"),
                         {"t": dt.datetime.now(dt.UTC) - dt.timedelta(days=400),
                          "u": old.study_instance_uid})
        n = len(old.files)
        node.wait_for(lambda: f"would purge {n} source instance(s)" in node.log(), 30,
                      "the scheduler's dry run")
        assert {s: _files(storage, s) for s in before} == before  # nothing deleted

        dry = node.cli("purge", "--older-than-days", "365")
        assert f"would purge {n} source instance(s)" in dry.stdout
        assert old.study_instance_uid in dry.stdout
        assert young.study_instance_uid not in dry.stdout
        done = node.cli("purge", "--older-than-days", "365", "--apply")
        assert f"purged {n} source instance(s)" in done.stdout, done.stdout

        left = {p.stem for p in _files(storage, old.study_instance_uid)}
        sent = {s["sop_instance_uid"] for s in node.study(old.study_instance_uid)["sends"]}
        assert left == sent  # the SEG and the SR, nothing of the CT
        assert _files(storage, young.study_instance_uid) == before[young.study_instance_uid]
        assert node.get("/api/patients/IT-RETAIN-OLD/volumes") == volumes
        summary = node.study(old.study_instance_uid)
        assert len(summary["results"]) == 2 and len(summary["jobs"]) == 1
        received = node.get(f"/api/audit/received?study={old.study_instance_uid}")
        assert len(received) == n  # who sent them is still on record
        with pytest.raises(urllib.error.HTTPError) as gone:
            node.get(f"/api/studies/{old.study_instance_uid}/preview.png")
        assert gone.value.code == 404
        time.sleep(3)  # several sweeps: the purged study is not processed again
        assert len(node.study(old.study_instance_uid)["jobs"]) == 1
        again = node.cli("purge", "--older-than-days", "365", "--apply")
        assert "purged 0 source instance(s)" in again.stdout
        # The PACS sends the old study again: its images are held again, not reprocessed.
        assert storescu(node.dicom_port, list(old.files)).returncode == 0
        assert len(_files(storage, old.study_instance_uid)) == n + 2
        time.sleep(3)
        assert len(node.study(old.study_instance_uid)["jobs"]) == 1
        with urllib.request.urlopen(  # noqa: S310 - the preview works again
                f"{node.api}/api/studies/{old.study_instance_uid}/preview.png") as resp:
            assert resp.status == 200 and resp.read(4) == b"\x89PNG"
