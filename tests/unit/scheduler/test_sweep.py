import datetime as dt

from pydicom import uid
from sqlalchemy import select

from service.config import ClassificationRules
from service.db.tables import (
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    Patient,
    Series,
    Study,
    utcnow,
)
from service.jobs.runner import recover_interrupted_jobs
from service.scheduler.sweep import sweep

RULES = ClassificationRules()
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _add_series(session, study, series_uid, desc, n, *, origin=InstanceOrigin.RECEIVED,
                sop=str(uid.MRImageStorage), modality="MR", at=T0):
    series = Series(study=study, series_instance_uid=series_uid, modality=modality,
                    description=desc)
    session.add(series)
    for i in range(n):
        session.add(Instance(series=series, sop_instance_uid=f"{series_uid}.{i}",
                             sop_class_uid=sop, transfer_syntax_uid="1.2.840.10008.1.2.1",
                             path=f"x/{series_uid}.{i}", size_bytes=1, origin=origin))
    study.last_received_at = at


def _study(session, uid_="1.2.3"):
    study = Study(patient=Patient(patient_id="P1", issuer=""), study_instance_uid=uid_,
                  last_received_at=T0)
    session.add(study)
    return study


def _sweep(session, now):
    return sweep(session, stable_age_seconds=60, rules=RULES, mr_pipeline="mri-watershed",
                 ct_pipeline="ct-kidneys", now=now)


def test_stable_study_gets_one_job_and_a_resend_none(migrated_sessions):
    with migrated_sessions.begin() as s:
        study = _study(s)
        _add_series(s, study, "1.2.3.1", "DCE dyn", 4)
    with migrated_sessions.begin() as s:
        assert _sweep(s, T0 + dt.timedelta(seconds=30)) == []  # not stable yet
    with migrated_sessions.begin() as s:
        jobs = _sweep(s, T0 + dt.timedelta(seconds=61))
        assert [(j.pipeline, j.state) for j in jobs] == [("mri-watershed", JobState.QUEUED)]
    with migrated_sessions.begin() as s:
        assert _sweep(s, T0 + dt.timedelta(seconds=120)) == []  # nothing new
    # The PACS resends the same instances: the store does not restart the clock, but even
    # if something touched it, the fingerprint is unchanged.
    with migrated_sessions.begin() as s:
        s.scalar(select(Study)).last_received_at = T0 + dt.timedelta(seconds=130)
    with migrated_sessions.begin() as s:
        assert _sweep(s, T0 + dt.timedelta(seconds=300)) == []


def test_new_series_after_the_job_triggers_again(migrated_sessions):
    with migrated_sessions.begin() as s:
        study = _study(s)
        _add_series(s, study, "1.2.3.1", "DCE dyn", 4)
    with migrated_sessions.begin() as s:
        assert len(_sweep(s, T0 + dt.timedelta(seconds=61))) == 1
    with migrated_sessions.begin() as s:
        study = s.scalar(select(Study))
        _add_series(s, study, "1.2.3.2", "T2 TSE", 3, at=T0 + dt.timedelta(seconds=200))
    with migrated_sessions.begin() as s:
        assert _sweep(s, T0 + dt.timedelta(seconds=230)) == []  # not stable again yet
    with migrated_sessions.begin() as s:
        jobs = _sweep(s, T0 + dt.timedelta(seconds=261))
        assert len(jobs) == 1
        roles = jobs[0].series_roles
        assert '"1.2.3.2": "t2"' in roles and '"1.2.3.1": "dce"' in roles


def test_our_own_seg_does_not_retrigger(migrated_sessions):
    with migrated_sessions.begin() as s:
        study = _study(s)
        _add_series(s, study, "1.2.3.1", "DCE dyn", 4)
    with migrated_sessions.begin() as s:
        assert len(_sweep(s, T0 + dt.timedelta(seconds=61))) == 1
    with migrated_sessions.begin() as s:
        study = s.scalar(select(Study))
        _add_series(s, study, "1.2.3.9", "Kidney SEG", 1, origin=InstanceOrigin.GENERATED,
                    sop=str(uid.SegmentationStorage), modality="SEG",
                    at=T0 + dt.timedelta(seconds=100))
    with migrated_sessions.begin() as s:
        assert _sweep(s, T0 + dt.timedelta(seconds=200)) == []


def test_study_without_pipeline_gets_a_failed_job_saying_why(migrated_sessions):
    with migrated_sessions.begin() as s:
        study = _study(s, "9.8.7")
        _add_series(s, study, "9.8.7.1", "T2 TSE", 3)
    with migrated_sessions.begin() as s:
        (job,) = _sweep(s, T0 + dt.timedelta(seconds=61))
        assert job.state is JobState.FAILED and job.pipeline is None
        assert "9.8.7" in job.error and "no DCE" in job.error


def test_interrupted_jobs_are_requeued_then_given_up(migrated_sessions):
    with migrated_sessions.begin() as s:
        study = _study(s)
        s.add(Job(study=study, pipeline="p", fingerprint="f", state=JobState.RUNNING,
                  attempts=1, created_at=utcnow()))
        s.add(Job(study=study, pipeline="p", fingerprint="g", state=JobState.RUNNING,
                  attempts=3, created_at=utcnow()))
    with migrated_sessions.begin() as s:
        assert recover_interrupted_jobs(s, max_attempts=3) == 1
    with migrated_sessions() as s:
        states = {j.fingerprint: (j.state, j.error) for j in s.scalars(select(Job))}
    assert states["f"] == (JobState.QUEUED, None)
    assert states["g"][0] is JobState.FAILED and "interrupted 3 times" in states["g"][1]


def test_a_study_fetched_from_the_pacs_gets_a_job_of_lower_priority(migrated_sessions):
    from service.db.tables import PriorRequest, PriorState, PriorStudy
    from service.domain import PRIOR_JOB_PRIORITY

    with migrated_sessions.begin() as s:
        new = _study(s, "1.2.3")
        _add_series(s, new, "1.2.3.1", "DCE dyn", 4)
        old = Study(patient=new.patient, study_instance_uid="1.2.4", last_received_at=T0)
        _add_series(s, old, "1.2.4.1", "DCE dyn", 4)
        request = PriorRequest(patient_id="P1", issuer="", reason="cli")
        s.add(request)
        s.flush()
        s.add(PriorStudy(request_pk=request.id, study_instance_uid="1.2.4",
                         state=PriorState.RETRIEVED))
    with migrated_sessions.begin() as s:
        jobs = {j.study.study_instance_uid: j.priority
                for j in _sweep(s, T0 + dt.timedelta(seconds=61))}
    assert jobs == {"1.2.3": 0, "1.2.4": PRIOR_JOB_PRIORITY}
