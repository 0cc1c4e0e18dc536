"""Bad input at job level: a broken DCE series fails its own study's job, with an error
naming the study, the series and the reason, and the next study's job still succeeds."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from service.config import ProcessingSettings, Settings
from service.config.settings import ClassificationRules
from service.db import Job, JobState, Result, Study, make_engine, make_sessionmaker, upgrade
from service.dicom.uids import new_uid
from service.imaging import group_by_series
from service.jobs.runner import JobRunner
from service.scheduler.sweep import sweep
from service.storage import InstanceStore
from service.synthetic import SyntheticStudy, write_mr_study

#: The fast watershed baseline, as in the node's plumbing tests.
PIPELINE = "mri-watershed"
SHAPE = (16, 64, 64)

Mutation = Callable[[list[pydicom.Dataset]], list[pydicom.Dataset]]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticStudy, SyntheticStudy]:
    """A good study and the study to break (single-series DCE of 3 phases, plus T2)."""
    root = tmp_path_factory.mktemp("runner-studies")
    good = write_mr_study(root / "good", patient_id="GOOD", seed=2, shape=SHAPE, phases=3)
    bad = write_mr_study(root / "bad", patient_id="BAD", seed=5, shape=SHAPE, phases=3)
    return good, bad


def _positions(datasets: list[pydicom.Dataset]) -> list[float]:
    """Each slice's position along the normal, rounded to 0.01 mm."""
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return [round(float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)), 2)
            for ds in datasets]


def _other_frame_of_reference(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """One slice position (in every phase) acquired in another Frame of Reference."""
    along = _positions(datasets)
    moved, frame = sorted(set(along))[5], new_uid()
    for ds, position in zip(datasets, along, strict=True):
        if position == moved:
            ds.FrameOfReferenceUID = frame
    return datasets


def _missing_slice(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The third slice position never arrived, in any phase."""
    along = _positions(datasets)
    lost = sorted(set(along))[2]
    return [ds for ds, position in zip(datasets, along, strict=True) if position != lost]


def _two_slices(datasets: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Only two slice positions per phase: too small to segment."""
    along = _positions(datasets)
    kept = set(sorted(set(along))[:2])
    return [ds for ds, position in zip(datasets, along, strict=True) if position in kept]


CASES = [
    pytest.param(_other_frame_of_reference, r"different FrameOfReferenceUID values",
                 id="mixed-frames-of-reference"),
    pytest.param(_missing_slice, r"non-uniform slice spacing: .*missing slices\?",
                 id="missing-slice"),
    pytest.param(_two_slices, r"2 slice\(s\) per phase, at least 3 are needed", id="two-slices"),
]


def _store_study(store: InstanceStore, study: SyntheticStudy, work: Path,
                 mutate: Mutation | None = None) -> None:
    """Store the study's files as the SCP does (copies in a temp folder, moved into the
    archive), its DCE series changed by ``mutate``."""
    work.mkdir(parents=True)
    groups = group_by_series(study.files)
    for series_uid, paths in groups.items():
        datasets = [pydicom.dcmread(p) for p in paths]
        if mutate is not None and series_uid in study.dce_series_uids:
            datasets = mutate(datasets)
        for n, ds in enumerate(datasets):
            temp = work / f"{series_uid}-{n}.dcm"
            ds.save_as(temp, enforce_file_format=True)
            store.store_file(temp, expected_sop_uid=str(ds.SOPInstanceUID),
                             expected_sop_class=str(ds.SOPClassUID), calling_aet="MODALITY")


@pytest.fixture
def archive(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[sessionmaker, InstanceStore]]:
    """A migrated SQLite index and an empty archive."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    yield sessions, InstanceStore(tmp_path / "archive", sessions)
    engine.dispose()


def _queue_all(sessions: sessionmaker, store: InstanceStore) -> JobRunner:
    """Queue a job per stable study; the runner that will run them."""
    with sessions.begin() as session:
        sweep(session, stable_age_seconds=0, rules=ClassificationRules(), mr_pipeline=PIPELINE,
              ct_pipeline="ct-kidneys")
    settings = Settings(processing=ProcessingSettings(device="cpu", mr_pipeline=PIPELINE))
    return JobRunner(settings=settings, sessions=sessions, store=store, device="cpu")


@pytest.mark.parametrize(("mutate", "reason"), CASES)
def test_broken_dce_fails_its_own_job_and_the_next_study_succeeds(
    tmp_path: Path, archive: tuple[sessionmaker, InstanceStore],
    studies: tuple[SyntheticStudy, SyntheticStudy], mutate: Mutation, reason: str,
) -> None:
    good, bad = studies
    sessions, store = archive
    # The broken study arrives first, so its job runs first.
    _store_study(store, bad, tmp_path / "in-bad", mutate)
    _store_study(store, good, tmp_path / "in-good")
    runner = _queue_all(sessions, store)
    assert runner.run_pending() == 2

    with sessions() as session:
        jobs = {uid: job for job, uid in session.execute(
            select(Job, Study.study_instance_uid).join(Study, Job.study_pk == Study.id))}
        failed, succeeded = jobs[bad.study_instance_uid], jobs[good.study_instance_uid]
        assert failed.state is JobState.FAILED, failed.error
        assert failed.error.startswith(f"study {bad.study_instance_uid}: "), failed.error
        (dce_uid,) = bad.dce_series_uids
        assert f"series {dce_uid}: " in failed.error
        assert re.search(reason, failed.error), failed.error
        assert failed.finished_at is not None and failed.attempts == 1
        assert session.scalars(select(Result).where(Result.job_pk == failed.id)).all() == []

        assert succeeded.state is JobState.SUCCEEDED, succeeded.error
        assert succeeded.error is None
        (result,) = session.scalars(select(Result).where(Result.job_pk == succeeded.id))
        assert result.structure == "graft" and result.volume_ml > 0
        assert result.source_series_instance_uid in good.dce_series_uids
    assert runner.run_pending() == 0  # nothing left queued or stuck


def test_an_unexpected_error_fails_the_job_instead_of_leaving_it_running(
    tmp_path: Path, archive: tuple[sessionmaker, InstanceStore],
    studies: tuple[SyntheticStudy, SyntheticStudy], monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, _ = studies
    sessions, store = archive
    _store_study(store, good, tmp_path / "in-good")
    runner = _queue_all(sessions, store)

    def broken(_self, _work):  # noqa: ANN001, ANN202 - a bug no handler expects
        raise KeyError("boom")

    monkeypatch.setattr(JobRunner, "_load", broken)
    assert runner.run_pending() == 1
    with sessions() as session:
        (job,) = session.scalars(select(Job))
        assert job.state is JobState.FAILED
        assert job.error == f"study {good.study_instance_uid}: internal error KeyError: 'boom'"
