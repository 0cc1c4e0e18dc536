"""Retention's choice: old received images go; a received SEG stays; a study whose job
is still queued waits; a dry run deletes nothing (SQLite and PostgreSQL)."""

import datetime as dt

import numpy as np
from sqlalchemy import select

from service.db import Job, JobState, Study
from service.db.tables import Instance, InstanceOrigin
from service.storage import InstanceStore
from service.storage.retention import purge_sources
from tests.reader_segs import ReaderSegment, reader_seg, source_slices


def test_only_old_received_images_of_idle_studies_are_purged(migrated_sessions, tmp_path):
    store = InstanceStore(tmp_path / "archive", migrated_sessions)
    old, busy = source_slices(), source_slices()
    for ds in [*old, *busy]:
        store.store_dataset(ds, origin=InstanceOrigin.RECEIVED)
    mask = np.zeros((6, 101, 122), bool)
    mask[2:4, 10:20, 10:20] = True
    seg = store.store_dataset(reader_seg(old, [ReaderSegment("Kidney", mask)]),
                              origin=InstanceOrigin.RECEIVED)
    with migrated_sessions.begin() as session:
        for study in session.scalars(select(Study)):
            study.last_received_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
            if study.study_instance_uid == busy[0].StudyInstanceUID:
                session.add(Job(study_pk=study.id, pipeline="ct-kidneys",
                                state=JobState.QUEUED, fingerprint="f"))
    dry = purge_sources(migrated_sessions, store.root, older_than_days=10, dry_run=True)
    assert (dry.dry_run, dry.instances, dry.studies) == (True, 6, (old[0].StudyInstanceUID,))
    assert all(store.root.joinpath(p).exists() for p in _paths(migrated_sessions))
    assert purge_sources(migrated_sessions, store.root, older_than_days=60,
                         dry_run=False).instances == 0  # not old enough
    sizes = {p.name: p.stat().st_size for p in store.root.rglob("*.dcm")}
    done = purge_sources(migrated_sessions, store.root, older_than_days=10, dry_run=False)
    assert done.instances == 6 and dry.bytes == done.bytes == sum(
        sizes[f"{ds.SOPInstanceUID}.dcm"] for ds in old)
    with migrated_sessions() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.path,
                                      Instance.purged_at)).all()
    purged = {uid for uid, _p, at in rows if at is not None}
    assert purged == {str(ds.SOPInstanceUID) for ds in old}
    for uid, path, at in rows:
        assert store.root.joinpath(path).exists() == (at is None), uid
    assert seg.path.exists()


def _paths(sessions) -> list[str]:  # noqa: ANN001
    with sessions() as session:
        return list(session.scalars(select(Instance.path)))
