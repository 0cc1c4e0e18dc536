"""Per-patient volume query at scale: 100,000 patients x 10 studies in PostgreSQL.

Builds a fresh database with the node's own schema (Alembic ``upgrade head``), loads it by
COPY (patients, studies, one job and one kidney result per study, and a second, newer
result for 5 % of the studies, as a study processed again leaves), then times
:func:`service.db.queries.patient_trend` (what ``kidney-node volumes`` and
``GET /api/patients/{id}/volumes`` run: the query plus the trend rules) for randomly drawn
patients, one session per call as the API does. Prints and writes the latency
percentiles and the query plan (which indexes it uses).

    python -m benchmarks.trend_query [--patients 100000] [--studies 10] [--calls 2000]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

The database ``kn_bench_trend`` is dropped and made again on every run. Exit status 1
when the 95th percentile exceeds 20 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import sessionmaker

from benchmarks.graft_eval import RESULTS, _revision
from benchmarks.stats import percentile
from service.db import queries
from service.db.migrate import upgrade

DB_NAME = "kn_bench_trend"
TARGET_P95_MS = 20.0
ADMIN_URL = os.environ.get("KIDNEY_NODE_TEST_PG_ADMIN",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def load(url: str, patients: int, studies: int, seed: int = 0) -> dict[str, int]:
    """Fill the empty schema at ``url``; returns the row counts."""
    rng = random.Random(seed)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    n_results = 0
    with psycopg.connect(_libpq(url)) as conn, conn.cursor() as cur:
        with cur.copy("COPY patients (id, patient_id, issuer, created_at) FROM STDIN") as cp:
            for p in range(1, patients + 1):
                cp.write_row((p, f"P{p:07d}", "", now))
        with cur.copy("COPY studies (id, patient_pk, study_instance_uid, study_date, "
                      "study_time, first_received_at, last_received_at, is_baseline) "
                      "FROM STDIN") as cp:
            for s in range(1, patients * studies + 1):
                p, k = (s - 1) // studies + 1, (s - 1) % studies
                date = dt.date(2015, 1, 1) + dt.timedelta(days=120 * k + p % 90)
                cp.write_row((s, p, f"2.25.{p}.{k}", date, "101500", now, now, False))
        n_studies = patients * studies
        with cur.copy("COPY jobs (id, study_pk, pipeline, state, fingerprint, series_roles, "
                      "attempts, created_at) FROM STDIN") as cp:
            for s in range(1, n_studies + 1):
                cp.write_row((s, s, "mri-graft", "succeeded", f"{s:064x}", "{}", 1, now))
        with cur.copy("COPY results (id, job_pk, study_pk, structure, volume_ml, "
                      "pipeline_name, pipeline_version, seg_sop_instance_uid, "
                      "seg_series_instance_uid, source_series_instance_uid, flags, created_at) "
                      "FROM STDIN") as cp:
            rid = 0
            for s in range(1, n_studies + 1):
                for _ in range(2 if rng.random() < 0.05 else 1):
                    rid += 1
                    cp.write_row((rid, s, s, "kidney", rng.uniform(80, 250), "mri-graft",
                                  "1.0", f"2.25.9{rid}", f"2.25.8{rid}", f"2.25.7{s}", "[]",
                                  now))
            n_results = rid
        for table in ("patients", "studies", "jobs", "results"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                        f"(SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"patients": patients, "studies": n_studies, "jobs": n_studies,
            "results": n_results}


def plan(url: str, patient_id: str) -> str:
    """EXPLAIN ANALYZE of the SQL that patient_volumes sends, for one patient."""
    engine = create_engine(url)
    captured: list[tuple] = []

    def grab(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    with sessionmaker(engine)() as session:
        queries.patient_volumes(session, patient_id)
    event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = captured[-1]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        out = "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.close()
    engine.dispose()
    return out


def time_calls(url: str, patients: int, calls: int, seed: int = 1) -> list[float]:
    engine = create_engine(url, pool_size=2)
    sessions = sessionmaker(engine)
    rng = random.Random(seed)
    for _ in range(50):  # warm the pool and the caches
        with sessions() as session:
            queries.patient_trend(session, f"P{rng.randint(1, patients):07d}")
    elapsed = []
    for _ in range(calls):
        pid = f"P{rng.randint(1, patients):07d}"
        t0 = time.perf_counter()
        with sessions() as session:
            rows = queries.patient_trend(session, pid)
        elapsed.append((time.perf_counter() - t0) * 1000.0)
        if not rows:
            raise AssertionError(f"patient {pid} has no rows")
    engine.dispose()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--out", type=Path, default=RESULTS / "trend_query")
    args = parser.parse_args(argv)
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    url = args.admin_url.rsplit("/", 1)[0] + "/" + DB_NAME
    upgrade(url)
    t0 = time.perf_counter()
    counts = load(url, args.patients, args.studies)
    load_s = time.perf_counter() - t0
    print(f"loaded {counts} in {load_s:.0f} s", flush=True)
    explain = plan(url, f"P{args.patients // 2:07d}")
    ms = sorted(time_calls(url, args.patients, args.calls))

    summary = {"code": _revision(), "counts": counts, "load_seconds": round(load_s, 1),
               "calls": len(ms), "mean_ms": round(statistics.mean(ms), 2),
               "p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
               "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(ms[-1], 2),
               "target_p95_ms": TARGET_P95_MS}
    with create_engine(url).connect() as conn:
        summary["server_version"] = conn.execute(text("SHOW server_version")).scalar()
        summary["indexes"] = [f"{t}: {d}" for t, d in conn.execute(text(
            "SELECT tablename, indexdef FROM pg_indexes WHERE tablename IN "
            "('patients', 'studies', 'results') ORDER BY tablename, indexname"))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**summary, "plan": explain},
                                                        indent=1) + "\n")
    text_out = (
        f"Per-patient trend query (patient_trend), PostgreSQL {summary['server_version']}, "
        f"{counts['patients']:,} patients x {args.studies} studies ({counts['results']:,} "
        f"results), {len(ms)} calls, one session per call (code {summary['code']}):\n\n"
        f"| mean | p50 | p95 | p99 | max |\n|---|---|---|---|---|\n"
        f"| {summary['mean_ms']} ms | {summary['p50_ms']} ms | {summary['p95_ms']} ms "
        f"| {summary['p99_ms']} ms | {summary['max_ms']} ms |\n\n"
        f"Target p95 <= {TARGET_P95_MS:g} ms: "
        f"{'PASS' if summary['p95_ms'] <= TARGET_P95_MS else 'FAIL'}.\n\n"
        "Indexes on the tables it reads:\n\n" + "\n".join(f"- `{i}`" for i in summary["indexes"])
        + "\n\nPlan (EXPLAIN ANALYZE, one patient):\n\n```\n" + explain + "\n```\n")
    args.out.with_suffix(".md").write_text(text_out)
    print(text_out)
    return 0 if summary["p95_ms"] <= TARGET_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
