"""CT jobs through the runner: a finding instead of a result, one side only, model files
changed under a running node. The kidney method is a stand-in built from the truth."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from service.api.app import create_app
from service.cli import main
from service.config import CtSettings, Destination, ProcessingSettings, Settings
from service.config.settings import ClassificationRules
from service.db import (
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    OutboxItem,
    Result,
    make_engine,
    make_sessionmaker,
    upgrade,
)
from service.dicom.uids import new_uid
from service.jobs.runner import JobRunner
from service.pipeline import ct_kidneys
from service.scheduler.sweep import sweep
from service.storage import InstanceStore
from service.synthetic import CtGrid, SyntheticCTStudy, synthesize_ct, write_ct_study
from tests.ct_cases import fake_cortex, fake_segmenter, tiny_model_dir

DEST = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCTStudy:
    return write_ct_study(tmp_path_factory.mktemp("ct"), synthesize_ct(seed=4,
                                                                       grid=CtGrid.small()))


def _empty_archive(tmp_path: Path, sqlite_url: str
                   ) -> tuple[Engine, sessionmaker, InstanceStore, Path]:
    """A migrated SQLite index, its archive and a folder for incoming files."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    incoming = tmp_path / "in"
    incoming.mkdir()
    return engine, sessions, InstanceStore(tmp_path / "archive", sessions), incoming


@pytest.fixture
def archive(tmp_path: Path, sqlite_url: str, study: SyntheticCTStudy
            ) -> Iterator[tuple[sessionmaker, InstanceStore]]:
    """A migrated SQLite index holding the CT study, stable (a job queued by the sweep)."""
    engine, sessions, store, incoming = _empty_archive(tmp_path, sqlite_url)
    for path in study.files:
        store.store_file(Path(shutil.copy(path, incoming / path.name)), calling_aet="CT")
    with sessions.begin() as session:
        (job,) = sweep(session, stable_age_seconds=0, rules=ClassificationRules(),
                       mr_pipeline="mri-watershed", ct_pipeline="ct-kidneys")
        assert job.pipeline == "ct-kidneys"
    yield sessions, store
    engine.dispose()


def _run(archive, ct: CtSettings | None = None) -> Job:  # noqa: ANN001
    sessions, store = archive
    settings = Settings(processing=ProcessingSettings(device="cpu", ct=ct or CtSettings()),
                        destinations=(DEST,))
    assert JobRunner(settings=settings, sessions=sessions, store=store,
                     device="cpu").run_pending() == 1
    with sessions() as session:
        return session.scalars(select(Job)).one()


def _count(sessions: sessionmaker, what) -> int:  # noqa: ANN001
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(what))


def test_no_kidney_in_view_succeeds_with_the_outcome_and_writes_nothing(
        archive, study, monkeypatch, capsys, sqlite_url):
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=()))
    job = _run(archive)
    assert job.state is JobState.SUCCEEDED and job.error is None
    assert job.outcome.startswith("no kidney in field of view (left: fake: no left")
    assert set(json.loads(job.timings)) == {"load_s", "segment_s"}
    sessions, _ = archive
    assert _count(sessions, Result) == 0 and _count(sessions, OutboxItem) == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance).where(
            Instance.origin == InstanceOrigin.GENERATED)) == 0

    # Shown wherever jobs are: the CLI table and JSON, the API's jobs and study summary.
    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", sqlite_url)
    assert main(["jobs"]) == 0
    table = capsys.readouterr().out
    assert "outcome" in table.splitlines()[0] and "no kidney in field of view" in table
    assert main(["jobs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "succeeded" and row["outcome"] == job.outcome
    client = TestClient(create_app(sessions))
    assert client.get("/api/jobs").json()[0]["outcome"] == job.outcome
    summary = client.get(f"/api/studies/{study.study_instance_uid}").json()
    assert summary["jobs"][0]["outcome"] == job.outcome and summary["results"] == []


def test_one_side_found_stores_that_side_and_flags_the_other(archive, study, monkeypatch):
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("right",)))
    job = _run(archive)
    assert job.state is JobState.SUCCEEDED and job.outcome is None
    sessions, _ = archive
    with sessions() as session:
        (result,) = session.scalars(select(Result))
        assert result.structure == "kidney_right"
        assert result.volume_ml == pytest.approx(study.truth[1].volume_ml)
        assert json.loads(result.flags) == ["left-kidney-not-found"]
        sent = session.scalars(select(OutboxItem.sop_instance_uid).order_by(OutboxItem.id))
        sent = sent.all()
        assert len(sent) == 2 and sent[0] == result.seg_sop_instance_uid  # SEG, then SR


@pytest.mark.parametrize(("queue", "device", "flagged"), [
    ("gpu+cpu", "cpu", True), ("cpu", "cpu", False), (None, "cpu", False)])
def test_a_gpu_job_run_by_a_cpu_worker_says_the_cpu_profile_ran(archive, study, monkeypatch,
                                                                queue, device, flagged):
    """broker.cpu_fallback_seconds: a job published to the GPU queue and taken by a CPU
    worker; its result is flagged ``cpu-profile``, and the job names the worker."""
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("right",)))
    sessions, store = archive
    with sessions.begin() as session:
        session.scalars(select(Job)).one().queue = queue
    settings = Settings(processing=ProcessingSettings(device=device), destinations=(DEST,))
    runner = JobRunner(settings=settings, sessions=sessions, store=store, device=device,
                       worker="cpu-worker-1")
    with sessions() as session:
        job_id = session.scalars(select(Job.id)).one()
    assert runner.run_job(job_id) is JobState.SUCCEEDED
    assert runner.run_job(job_id) is None  # a second message for it: left alone
    with sessions() as session:
        (result,) = session.scalars(select(Result))
        assert ("cpu-profile" in json.loads(result.flags)) is flagged
        job = session.get(Job, job_id)
        assert (job.worker, job.device, job.attempts) == ("cpu-worker-1", device, 1)


def test_a_job_taken_over_while_it_ran_is_recorded_by_its_new_worker_only(
        archive, study, monkeypatch):
    """A worker paused past the heartbeat timeout: the reaper queued its job and worker B
    claimed it. When A ends, it records nothing (B will, with the same UIDs)."""
    sessions, store = archive
    segment = fake_segmenter(study.kidneys_path, sides=("right",))

    def taken_over_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003
        with sessions.begin() as session:
            session.scalars(select(Job)).one().worker = "worker-b"
        return segment(*args, **kwargs)

    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", taken_over_meanwhile)
    runner = JobRunner(settings=Settings(processing=ProcessingSettings(device="cpu"),
                                         destinations=(DEST,)),
                       sessions=sessions, store=store, device="cpu", worker="worker-a")
    with sessions() as session:
        job_id = session.scalars(select(Job.id)).one()
    assert runner.run_job(job_id) is JobState.RUNNING  # still B's
    assert _count(sessions, Result) == 0 and _count(sessions, OutboxItem) == 0
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.worker, job.finished_at) == (JobState.RUNNING, "worker-b",
                                                            None)


def test_volumes_per_structure_with_the_cortex(archive, study, monkeypatch, tmp_path):
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    monkeypatch.setattr(ct_kidneys, "segment_cortex", fake_cortex(study.cortex_path))
    _run(archive, CtSettings(cortex_models_dir=tiny_model_dir(tmp_path / "m")))
    sessions, _ = archive
    with sessions() as session:
        volumes = {r.structure: r.volume_ml for r in session.scalars(select(Result))}
    assert volumes == pytest.approx({
        "kidney_right": study.truth[1].volume_ml, "kidney_left": study.truth[2].volume_ml,
        "cortex_right": study.truth[1].cortex_volume_ml,
        "cortex_left": study.truth[2].cortex_volume_ml})


def test_changed_model_file_fails_the_job_with_its_message(archive, study, monkeypatch,
                                                           tmp_path):
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    folder = tiny_model_dir(tmp_path / "m")
    (folder / "model_0.pt").write_bytes(b"not the trained weights")
    job = _run(archive, CtSettings(cortex_models_dir=folder))
    assert job.state is JobState.FAILED
    assert job.error.startswith(f"study {study.study_instance_uid}: ")
    assert f"{folder / 'model_0.pt'}: sha256 mismatch: manifest says" in job.error
    sessions, _ = archive
    assert _count(sessions, Result) == 0 and _count(sessions, OutboxItem) == 0


def test_a_ct_series_that_cannot_load_is_skipped_when_another_loads(
        tmp_path, sqlite_url, study, monkeypatch, caplog):
    """A two-slice CT series (a localizer-like leftover) cannot be loaded: the job goes on
    with the study's other CT series."""
    engine, sessions, store, incoming = _empty_archive(tmp_path, sqlite_url)
    short_series = new_uid()
    for n, path in enumerate(study.files):
        store.store_file(Path(shutil.copy(path, incoming / path.name)), calling_aet="CT")
        if n < 2:
            ds = dcmread(path)
            ds.SeriesInstanceUID = short_series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
            ds.save_as(incoming / f"short{n}.dcm", enforce_file_format=True)
            store.store_file(incoming / f"short{n}.dcm", calling_aet="CT")
    with sessions.begin() as session:
        sweep(session, stable_age_seconds=0, rules=ClassificationRules(),
              mr_pipeline="mri-watershed", ct_pipeline="ct-kidneys")
    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys", fake_segmenter(study.kidneys_path))
    with caplog.at_level(logging.WARNING):
        job = _run((sessions, store))
    engine.dispose()
    assert job.state is JobState.SUCCEEDED, job.error
    assert f"skipping ct series {short_series}" in caplog.text


def test_quality_control_verdict_is_stored_sent_and_shown(archive, study, monkeypatch,
                                                           capsys, sqlite_url):
    """A verdict the settings force to "review" (a native kidney must be >= 1000 ml):
    stored with its reasons, said in the SEG and SR, shown by the API and CLI, and the
    measurement is kept out of the trend."""
    from service.config import QcSettings

    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("right", "left")))
    sessions, store = archive
    settings = Settings(processing=ProcessingSettings(device="cpu"), destinations=(DEST,),
                        qc=QcSettings(native_volume_ml_review=(1000.0, 2000.0)))
    assert JobRunner(settings=settings, sessions=sessions, store=store,
                     device="cpu").run_pending() == 1
    with sessions() as session:
        results = session.scalars(select(Result).order_by(Result.id)).all()
        assert [r.qc_verdict for r in results] == ["review", "review"]
        reasons = json.loads(results[0].qc_reasons)
        assert any(r.startswith("volume ") and "< 1000 ml" in r for r in reasons)
        assert json.loads(results[0].qc_signals)["thickness_mm"] > 10
        seg_path = store.path_of(session.scalar(select(Instance.path).where(
            Instance.sop_instance_uid == results[0].seg_sop_instance_uid)))
        job = session.scalars(select(Job)).one()
        assert "qc_s" in json.loads(job.timings)
    seg = dcmread(seg_path)
    assert seg.SeriesDescription.startswith("QC REVIEW - ")
    assert all(s.SegmentDescription.startswith("QC REVIEW: volume") for s in seg.SegmentSequence)

    client = TestClient(create_app(sessions))
    summary = client.get(f"/api/studies/{study.study_instance_uid}").json()
    assert {r["qc_verdict"] for r in summary["results"]} == {"review"}
    patient = seg.PatientID
    rows = client.get(f"/api/patients/{patient}/volumes").json()
    assert rows and all(r["qc_verdict"] == "review" and not r["in_trend"] for r in rows)
    (listed,) = client.get("/api/patients").json()
    assert listed["needs_review"] == ["kidney_left", "kidney_right"]
    assert listed["latest_volumes_ml"] == {}
    page = client.get(f"/patients/{patient}").text
    assert 'data-qc="review"' in page and "not in trend" in page

    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", sqlite_url)
    assert main(["volumes", patient]) == 0
    out = capsys.readouterr().out
    assert "REVIEW (not in trend)" in out and "QC review: volume" in out


def test_a_ct_without_the_graft_of_a_graft_patient_is_flagged(archive, study, monkeypatch):
    """The patient's earlier study measured a graft (150 ml, accepted): a CT whose result
    holds only the native kidneys says so (flag graft-not-found), since the graft's
    trend gets no point from it."""
    import datetime as dt

    from service.db import Study

    monkeypatch.setattr(ct_kidneys, "segment_ct_kidneys",
                        fake_segmenter(study.kidneys_path, sides=("right", "left")))
    sessions, _ = archive
    with sessions.begin() as session:
        this = session.scalars(select(Study)).one()
        earlier = Study(patient_pk=this.patient_pk, study_instance_uid="1.2.826.0.1.99",
                        study_date=dt.date(2020, 1, 1))
        session.add(earlier)
        session.flush()
        job = Job(study_pk=earlier.id, pipeline="mri-graft", state=JobState.SUCCEEDED,
                  fingerprint="f", attempts=1)
        session.add(job)
        session.flush()
        session.add(Result(job_pk=job.id, study_pk=earlier.id, structure="graft",
                           volume_ml=150.0, pipeline_name="mri-graft", pipeline_version="1",
                           seg_sop_instance_uid="1.2.3", seg_series_instance_uid="1.2.4",
                           source_series_instance_uid="1.2.5", qc_verdict="pass"))
    sessions, store = archive
    assert JobRunner(settings=Settings(processing=ProcessingSettings(device="cpu"),
                                       destinations=(DEST,)),
                     sessions=sessions, store=store, device="cpu").run_pending() == 1
    with sessions() as session:
        done = session.scalars(select(Job).where(Job.pipeline == "ct-kidneys")).one()
    assert done.state is JobState.SUCCEEDED
    with sessions() as session:
        rows = session.scalars(select(Result).where(Result.job_pk == done.id)).all()
    assert {r.structure for r in rows} == {"kidney_right", "kidney_left"}
    assert all("graft-not-found" in json.loads(r.flags) for r in rows)
