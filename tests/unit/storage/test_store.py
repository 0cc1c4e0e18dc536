from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from service.db import Instance, Patient, Study
from service.db.tables import InstanceOrigin
from service.errors import DatasetMismatchError, IngestError
from service.storage import InstanceStore, instance_relpath, safe_component


@pytest.mark.parametrize("uid, ok", [
    ("1.2.840.113619.2.55.3", True),
    ("../../etc/passwd", False),
    ("1.2/3", False),
    ("1." + "2" * 70, False),
    ("", False),
])
def test_safe_component(uid, ok):
    out = safe_component(uid)
    assert (out == uid) is ok
    assert "/" not in out and out not in ("", ".", "..")
    if not ok:
        assert out.startswith("x-") and len(out) == 42


def test_relpath_cannot_escape_the_root():
    rel = instance_relpath("../../a", "/abs/b", "..")
    assert not rel.is_absolute()
    assert all(part not in ("..", "") for part in rel.parts)


@pytest.fixture
def store(tmp_path, sqlite_url):
    from service.db import make_engine, make_sessionmaker, upgrade

    upgrade(sqlite_url)
    return InstanceStore(tmp_path / "archive", make_sessionmaker(make_engine(sqlite_url)))


def _copy_of(name: str, tmp_path: Path, **changes) -> Path:
    ds = dcmread(get_testdata_file(name))
    for key, value in changes.items():
        setattr(ds, key, value)
    out = tmp_path / f"in-{len(list(tmp_path.iterdir()))}.dcm"
    ds.save_as(out)
    return out


def test_store_moves_file_into_layout_and_indexes_it(store, tmp_path):
    src = _copy_of("MR_small.dcm", tmp_path)
    uid = str(dcmread(src).SOPInstanceUID)
    stored = store.store_file(src, expected_sop_uid=uid, calling_aet="MOD")
    assert stored.is_new and stored.path.exists() and not src.exists()
    assert stored.path.is_relative_to(store.root)
    with store.sessions() as s:
        inst = s.scalar(select(Instance).where(Instance.sop_instance_uid == uid))
        assert inst.calling_aet == "MOD"
        assert inst.origin is InstanceOrigin.RECEIVED
        assert store.path_of(inst.path) == stored.path


def test_resend_is_idempotent_and_keeps_the_stability_clock(store, tmp_path):
    first = store.store_file(_copy_of("MR_small.dcm", tmp_path))
    with store.sessions() as s:
        clock = s.scalar(select(Study.last_received_at))
    again = store.store_file(_copy_of("MR_small.dcm", tmp_path))
    assert first.path == again.path and not again.is_new
    with store.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 1
        assert s.scalar(select(func.count(Patient.id))) == 1
        assert s.scalar(select(Study.last_received_at)) == clock


def test_uid_with_path_characters_stays_inside_the_archive(store, tmp_path):
    src = _copy_of("MR_small.dcm", tmp_path, StudyInstanceUID="../../../../tmp/evil",
                   SeriesInstanceUID="1.2.3/../../x")
    stored = store.store_file(src)
    assert stored.path.resolve().is_relative_to(store.root)
    assert stored.path.parent.parent.name.startswith("x-")


def test_missing_uid_is_refused_with_the_uid_named(store, tmp_path):
    src = _copy_of("MR_small.dcm", tmp_path)
    ds = dcmread(src)
    del ds.StudyInstanceUID
    ds.save_as(src)
    with pytest.raises(IngestError, match="StudyInstanceUID"):
        store.store_file(src, expected_sop_uid=str(ds.SOPInstanceUID))
    assert src.exists()  # nothing is lost: the caller still has the file


def test_not_dicom_is_refused(store, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(IngestError, match="unreadable header"):
        store.store_file(junk, expected_sop_uid="1.2.3")


def test_dataset_contradicting_the_request_is_a_mismatch(store, tmp_path):
    src = _copy_of("MR_small.dcm", tmp_path)
    with pytest.raises(DatasetMismatchError, match="1.2.3.4"):
        store.store_file(src, expected_sop_uid="1.2.3.4")
    uid = str(dcmread(src).SOPInstanceUID)
    with pytest.raises(DatasetMismatchError, match="differs from the request"):
        store.store_file(src, expected_sop_uid=uid, expected_sop_class="1.2.840.10008.5.1.4.1.1.2")


def test_resend_under_another_series_moves_the_instance(store, tmp_path):
    first = _copy_of("MR_small.dcm", tmp_path)
    ds = dcmread(first)
    uid, old_series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    old = store.store_file(first, expected_sop_uid=uid)
    corrected = _copy_of("MR_small.dcm", tmp_path, StudyInstanceUID="1.2.826.0.1.3680043.8.498.7",
                         SeriesInstanceUID="1.2.826.0.1.3680043.8.498.8")
    moved = store.store_file(corrected, expected_sop_uid=uid)
    assert moved.is_new and moved.path != old.path
    assert moved.path.exists() and not old.path.exists()  # no orphan file left behind
    with store.sessions() as s:
        (inst,) = s.scalars(select(Instance).where(Instance.sop_instance_uid == uid))
        assert inst.series.series_instance_uid == "1.2.826.0.1.3680043.8.498.8"
        assert inst.series.study.study_instance_uid == "1.2.826.0.1.3680043.8.498.7"
        assert store.path_of(inst.path) == moved.path
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
        assert old_series != inst.series.series_instance_uid


def test_nul_in_text_attributes_is_dropped_from_the_index(tmp_path, database_url):
    from service.db import make_engine, make_sessionmaker, upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    store = InstanceStore(tmp_path / "archive", make_sessionmaker(engine))
    src = _copy_of("MR_small.dcm", tmp_path, PatientID="P\x0042",
                   StudyDescription="ab\x00cd")
    store.store_file(src)  # PostgreSQL refuses NUL in text: the index keeps the rest
    with store.sessions() as s:
        assert s.scalar(select(Patient.patient_id)) == "P42"
        assert s.scalar(select(Study.description)) == "abcd"
    engine.dispose()


def test_partial_files_of_interrupted_receptions_are_discarded(store):
    (store.incoming / "tmpabc.dcm").write_bytes(b"\0" * 300)
    assert store.discard_incoming() == 1
    assert list(store.incoming.iterdir()) == []
