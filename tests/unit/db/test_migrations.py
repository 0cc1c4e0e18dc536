from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.db import Base, make_engine, upgrade


def test_migrations_match_the_orm(database_url):
    """`alembic upgrade head` builds exactly the schema the ORM declares, on both engines."""
    upgrade(database_url)
    upgrade(database_url)  # idempotent
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(
            conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_results_of_the_mri_graft_methods_become_the_graft(database_url):
    """0005: "kidney" results of the MRI methods (all segment the graft) are renamed
    "graft", the CT's native kidneys keep their names; 0004 left them unassessed."""
    from sqlalchemy import text

    upgrade(database_url, "0003")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO patients (id, patient_id, issuer, created_at) "
                          "VALUES (1, 'P', '', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO studies (id, patient_pk, study_instance_uid, "
                          "first_received_at, last_received_at) "
                          "VALUES (1, 1, '1.2.3', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs (id, study_pk, state, attempts, fingerprint, "
                          "series_roles, created_at) VALUES (1, 1, 'succeeded', 1, 'f', '{}', "
                          "CURRENT_TIMESTAMP)"))
        for pk, structure, pipeline in ((1, "kidney", "mri-graft"),
                                        (2, "kidney", "mri-watershed"),
                                        (3, "kidney_right", "ct-kidneys")):
            conn.execute(text(
                "INSERT INTO results (id, job_pk, study_pk, structure, volume_ml, "
                "pipeline_name, pipeline_version, seg_sop_instance_uid, "
                "seg_series_instance_uid, source_series_instance_uid, flags, created_at) "
                f"VALUES ({pk}, 1, 1, '{structure}', 150.0, '{pipeline}', '1', '1.1', "
                "'1.2', '1.3', '[]', CURRENT_TIMESTAMP)"))
    upgrade(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT structure, qc_verdict, qc_reasons FROM results "
                                 "ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("graft", None, "[]"), ("graft", None, "[]"),
                                        ("kidney_right", None, "[]")]


def test_processes_starting_together_migrate_once(postgres_url):
    """A scaled-out node's receivers and workers all migrate at start: on PostgreSQL an
    advisory lock makes them take turns, so none fails on a table another just made."""
    import threading

    from sqlalchemy import create_engine, text

    from service.db import upgrade

    errors = []

    def migrate() -> None:
        try:
            upgrade(postgres_url)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    from alembic.script import ScriptDirectory

    from service.db.migrate import MIGRATIONS_DIR, alembic_config

    head = ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
    assert versions == [(head,)] and MIGRATIONS_DIR.is_dir()
