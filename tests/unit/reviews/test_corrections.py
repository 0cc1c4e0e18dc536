"""A reader's SEG in the archive becomes a reviewed measurement, once, and no job; what
gives none is recorded with its reason (SQLite and PostgreSQL)."""

import datetime as dt

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from sqlalchemy import func, select

from service.db import Job, JobState, Result, Study
from service.db.queries import patient_trend
from service.db.tables import InstanceOrigin, Review
from service.reviews.corrections import examine_corrections
from service.storage import InstanceStore
from service.writers.seg import MANUFACTURER
from tests.reader_segs import (
    LABEL_MAP_SEG,
    ReaderSegment,
    ohif_style_seg,
    reader_seg,
    source_slices,
)


@pytest.fixture
def archive(migrated_sessions, tmp_path):  # noqa: ANN001, ANN201
    """Six CT slices of a study the node measured (graft 50 ml, automatic)."""
    store = InstanceStore(tmp_path / "archive", migrated_sessions)
    sources = source_slices()
    for ds in sources:
        store.store_dataset(ds, origin=InstanceOrigin.RECEIVED)
    with migrated_sessions.begin() as session:
        study = session.scalar(select(Study))
        job = Job(study_pk=study.id, pipeline="ct-kidneys", state=JobState.SUCCEEDED,
                  fingerprint="f")
        session.add(job)
        session.flush()
        session.add(Result(job_pk=job.id, study_pk=study.id, structure="graft", volume_ml=50.0,
                           pipeline_name="ct-kidneys", pipeline_version="1",
                           seg_sop_instance_uid="9.9.1", seg_series_instance_uid="9.9",
                           source_series_instance_uid=str(sources[0].SeriesInstanceUID)))
    return migrated_sessions, store, sources


def _mask(z0: int, z1: int) -> np.ndarray:
    mask = np.zeros((6, 101, 122), bool)
    mask[z0:z1, 10:60, 20:100] = True
    return mask


def _examine(sessions, store):  # noqa: ANN001, ANN202
    with sessions.begin() as session:
        return [(r.action.value, r.structure, r.volume_ml, r.reviewer, r.detail)
                for r in examine_corrections(session, store.root)]


def test_a_readers_seg_gives_the_corrected_volume_once(archive):
    sessions, store, sources = archive
    seg = reader_seg(sources, [ReaderSegment("Segment 1", _mask(1, 5))])
    store.store_dataset(seg, origin=InstanceOrigin.RECEIVED)
    ((action, structure, volume, reviewer, detail),) = _examine(sessions, store)
    expected = 4 * 50 * 80 * 0.8 * 0.7 * 2.5 / 1000
    assert (action, structure, reviewer) == ("corrected", "graft", "DOE^JANE")
    assert volume == pytest.approx(expected, abs=1e-3) and "only segment" in detail
    assert _examine(sessions, store) == []  # examined once
    with sessions() as session:
        (row,) = patient_trend(session, "READER-1")
        review = session.scalar(select(Review))
        jobs = session.scalar(select(func.count(Job.id)))
    assert row["volume_ml"] == pytest.approx(expected, abs=1e-3)
    assert row["automatic_volume_ml"] == 50.0 and row["review_device"] == "OHIF Viewer 3.13.2"
    assert review.reviewed_at.replace(tzinfo=dt.UTC) == dt.datetime(2026, 12, 6, 14, 30,
                                                                     tzinfo=dt.UTC)
    assert jobs == 1


@pytest.mark.parametrize(("segments", "manufacturer", "reason"), [
    ([ReaderSegment("Liver", _mask(1, 2)), ReaderSegment("Spleen", _mask(2, 3))], "OHIF",
     "none of its segments"),
    ([ReaderSegment("Transplanted kidney (right)", _mask(1, 2))], MANUFACTURER, None),
])
def test_a_seg_that_gives_no_measurement_is_recorded_with_its_reason(
        archive, segments, manufacturer: str, reason: str | None):
    sessions, store, sources = archive
    seg = reader_seg(sources, segments, manufacturer=manufacturer)
    if reason is None:  # the node's own SEG under new UIDs: every segment AUTOMATIC
        for item in seg.SegmentSequence:
            item.SegmentAlgorithmType = "AUTOMATIC"
            item.SegmentAlgorithmName = "ct-kidneys"
            item.SegmentationAlgorithmIdentificationSequence = hd.AlgorithmIdentificationSequence(
                "ct-kidneys", codes.cid7162.ArtificialIntelligence, "1")
        reason = "copy of one of the node's own results"
    store.store_dataset(seg, origin=InstanceOrigin.RECEIVED)
    ((action, structure, volume, _who, detail),) = _examine(sessions, store)
    assert (action, structure, volume) == ("ignored", "", None)
    assert reason in detail
    with sessions() as session:
        (row,) = patient_trend(session, "READER-1")
    assert row["volume_ml"] == 50.0 and row["review"] is None


def test_a_seg_waits_for_the_studys_job_and_one_never_measured_is_ignored(
        migrated_sessions, tmp_path):
    store = InstanceStore(tmp_path / "archive", migrated_sessions)
    sources = source_slices()
    for ds in sources:
        store.store_dataset(ds, origin=InstanceOrigin.RECEIVED)
    with migrated_sessions.begin() as session:
        job = Job(study_pk=session.scalar(select(Study.id)), pipeline="ct-kidneys",
                  state=JobState.RUNNING, fingerprint="f")
        session.add(job)
    store.store_dataset(reader_seg(sources, [ReaderSegment("Kidney", _mask(1, 3))]),
                        origin=InstanceOrigin.RECEIVED)
    assert _examine(migrated_sessions, store) == []
    with migrated_sessions.begin() as session:
        session.get(Job, job.id).state = JobState.FAILED
    ((action, _s, _v, _w, detail),) = _examine(migrated_sessions, store)
    assert action == "ignored" and "no measurement of this study" in detail


def test_a_seg_as_ohif_stores_it_is_measured_by_its_labels(archive):
    """OHIF 3.13.2's layout (tests.reader_segs.ohif_style_seg): Label Map SEG, RLE, generic
    codes, the node's segment labels kept, an empty segment listed, no creator."""
    sessions, store, sources = archive
    labels = np.zeros((6, 101, 122), np.uint8)
    labels[_mask(2, 4)] = 2
    seg = ohif_style_seg(sources, labels, {1: "Right kidney", 2: "Transplanted kidney (right)"})
    assert seg.SOPClassUID == LABEL_MAP_SEG and seg.NumberOfFrames == 2
    store.store_dataset(seg, origin=InstanceOrigin.RECEIVED)
    ((action, structure, volume, reviewer, detail),) = _examine(sessions, store)
    assert (action, structure, reviewer) == ("corrected", "graft", "")
    assert volume == pytest.approx(2 * 50 * 80 * 0.8 * 0.7 * 2.5 / 1000, abs=1e-3)
    assert "matched by label" in detail
    with sessions() as session:
        assert session.scalar(select(Review)).device == "OHIF Brush"
