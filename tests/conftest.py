"""Shared fixtures: free ports, databases (SQLite and the local PostgreSQL)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("KIDNEY_NODE_TEST_PG_ADMIN",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("KIDNEY_NODE_REQUIRE_POSTGRES") == "1"
AMQP_URL = os.environ.get("KIDNEY_NODE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
REQUIRE_RABBITMQ = os.environ.get("KIDNEY_NODE_REQUIRE_RABBITMQ") == "1"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that this process has not handed out before: two
    calls made before either port is bound could otherwise return the same one (CI: an
    Orthanc given one port for DICOM and HTTP did not start)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no port not handed out before in 100 tries")


def _postgres_reachable() -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except OperationalError as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    reason = _postgres_reachable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason + " (KIDNEY_NODE_REQUIRE_POSTGRES=1)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    name = "kn_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def rabbitmq() -> Iterator[tuple[str, str]]:
    """The local RabbitMQ's URL and a queue prefix of this test's own (its queues and
    exchange are deleted afterwards)."""
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the reason
        reason = f"RabbitMQ not reachable at {AMQP_URL}: {exc}"
        if REQUIRE_RABBITMQ:
            pytest.fail(reason + " (KIDNEY_NODE_REQUIRE_RABBITMQ=1)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    prefix = "kn-test-" + uuid.uuid4().hex[:12]
    try:
        yield AMQP_URL, prefix
    finally:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            channel = conn.channel()
            for kind in ("gpu", "cpu"):
                channel.queue_delete(f"{prefix}.{kind}")
            channel.exchange_delete(prefix)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def migrated_sessions(database_url: str):  # noqa: ANN201
    """A session factory on a database brought to head by Alembic."""
    from service.db import make_engine, make_sessionmaker, upgrade

    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_study(session, patient, uid, date, volumes, *, pipeline="mri-graft", time=None):  # noqa: ANN001, ANN201, PLR0913
    """Index a study with one succeeded job and a result per structure; returns the job."""
    from service.db import Job, JobState, Result, Study

    study = Study(patient=patient, study_instance_uid=uid, study_date=date, study_time=time)
    job = Job(study=study, pipeline=pipeline, state=JobState.SUCCEEDED, fingerprint=uid)
    session.add_all([study, job])
    session.flush()
    for structure, ml in volumes.items():
        session.add(Result(job_pk=job.id, study_pk=study.id, structure=structure, volume_ml=ml,
                           pipeline_name=pipeline, pipeline_version="1",
                           seg_sop_instance_uid=f"{uid}.9.{job.id}",
                           seg_series_instance_uid=f"{uid}.8",
                           source_series_instance_uid=f"{uid}.1"))
    return job


@pytest.fixture
def populated_index(migrated_sessions):  # noqa: ANN001, ANN201
    """Two patients: P1 with 3 studies indexed out of date order (one processed twice,
    the last a fall of 10.5 %), P2 with 2 stable studies."""
    import datetime as dt

    from service.db import Job, JobState, Patient, Result, Study

    with migrated_sessions() as session, session.begin():
        p = Patient(patient_id="P1", issuer="")
        q = Patient(patient_id="P2", issuer="")
        session.add_all([p, q])
        # Inserted out of date order.
        add_study(session, p, "1.3", dt.date(2025, 6, 1), {"kidney": 170.0})
        add_study(session, p, "1.1", dt.date(2025, 1, 1), {"kidney": 200.0})
        add_study(session, p, "1.2", dt.date(2025, 3, 1), {"kidney": 195.0})
        # Processed again with another pipeline: the newer result is reported.
        study = session.query(Study).filter_by(study_instance_uid="1.2").one()
        job = Job(study=study, pipeline="mri-graft-dce", state=JobState.SUCCEEDED,
                  fingerprint="again")
        session.add(job)
        session.flush()
        session.add(Result(job_pk=job.id, study_pk=study.id, structure="kidney",
                           volume_ml=190.0, pipeline_name="mri-graft-dce", pipeline_version="1",
                           seg_sop_instance_uid="1.2.9.again", seg_series_instance_uid="x",
                           source_series_instance_uid="y"))
        add_study(session, q, "2.1", dt.date(2025, 2, 1), {"kidney": 150.0})
        add_study(session, q, "2.2", dt.date(2025, 4, 1), {"kidney": 149.0})
    return migrated_sessions


