"""Nothing acknowledged is lost when the node is killed; interrupted jobs run again."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import select, update

from service.db import Instance, Job, JobState, make_engine, make_sessionmaker

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
    assert "interrupted" in node.log()
