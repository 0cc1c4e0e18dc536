"""Throughput of a scaled-out node: studies per minute with 1 and with 2 workers.

One receiver (``kidney-node receive``) and a real RabbitMQ and PostgreSQL (the local
services); N copies of a small synthetic DCE + T2 study (new UIDs each) are sent first,
with no worker running, so every job is queued and published; then K workers start and
the clock runs from the first job's start to the last job's end (the job rows' own
timestamps). Rounds alternate 1, 2, 1, 2... workers, each on a fresh database and queue.
The CPU pipeline is ``mri-watershed`` unless ``--pipeline`` says otherwise. Writes
``benchmarks/results/scale_out.json`` and ``scale_out.md``.

    python -m benchmarks.scale_out [--studies 24] [--rounds 2] [--pipeline mri-watershed]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from kombu import Connection
from sqlalchemy import create_engine, func, select, text

from service.db import make_engine, make_sessionmaker
from service.db.tables import Job, JobState
from service.synthetic import write_mr_study
from service.synthetic.copies import study_copies

ROOT = Path(__file__).resolve().parents[1]
NODE = Path(sys.executable).parent / "kidney-node"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
RESULTS = ROOT / "benchmarks" / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _round(workers: int, studies: list[list[Path]], pipeline: str, work: Path) -> dict:
    name = "kn_bench_" + uuid.uuid4().hex[:10]
    prefix = "kn-bench-" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    folder = work / name
    folder.mkdir()
    dicom_port, http_port = _free_port(), _free_port()
    config = {
        "dicom": {"ae_title": "KIDNEYNODE", "host": "127.0.0.1", "port": dicom_port},
        "http": {"host": "127.0.0.1", "port": http_port},
        "storage": {"root": str(folder / "archive")},
        "database": {"url": url},
        "scheduler": {"stable_age_seconds": 1.0, "sweep_interval_seconds": 0.5},
        "processing": {"device": "cpu", "mr_pipeline": pipeline},
        "broker": {"url": AMQP, "queue_prefix": prefix, "queue": "cpu"},
        "log_level": "WARNING",
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    procs: list[subprocess.Popen] = []
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)

    def start(*args: str) -> subprocess.Popen:
        log = open(folder / f"{args[0]}-{len(procs)}.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen([str(NODE), "--config", str(folder / "config.yaml"),
                                       *args], stdout=log, stderr=subprocess.STDOUT,
                                      cwd=folder))
        return procs[-1]

    try:
        start("receive")
        _wait(lambda: _http_up(http_port), 60, "the receiver")
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda files: subprocess.run(
                ["/usr/bin/storescu", "-aec", "KIDNEYNODE", "127.0.0.1", str(dicom_port),
                 *map(str, files)], capture_output=True).returncode, studies))
        assert codes == [0] * len(studies), codes

        def published() -> bool:
            with sessions() as s:
                return s.scalar(select(func.count(Job.id)).where(
                    Job.dispatched_at.is_not(None))) == len(studies)

        _wait(published, 120, "every job published")
        for n in range(workers):
            start("worker", "--name", f"w{n}")

        def finished() -> bool:
            with sessions() as s:
                return s.scalar(select(func.count(Job.id)).where(
                    Job.state.in_([JobState.SUCCEEDED, JobState.FAILED]))) == len(studies)

        _wait(finished, 1800, "every job to end")
        with sessions() as s:
            first, last = s.execute(select(func.min(Job.started_at),
                                           func.max(Job.finished_at))).one()
            failed = s.scalar(select(func.count(Job.id)).where(
                Job.state == JobState.FAILED))
            per_worker = dict(s.execute(select(Job.worker, func.count(Job.id))
                                        .group_by(Job.worker)).all())
        seconds = (last - first).total_seconds()
        return {"workers": workers, "studies": len(studies), "seconds": round(seconds, 2),
                "per_minute": round(60 * len(studies) / seconds, 2), "failed": failed,
                "jobs_per_worker": per_worker}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        with Connection(AMQP) as conn:
            channel = conn.channel()
            for kind in ("gpu", "cpu"):
                channel.queue_delete(f"{prefix}.{kind}")
            channel.exchange_delete(prefix)
        shutil.rmtree(folder, ignore_errors=True)


def _http_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pipeline", default="mri-watershed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        study = write_mr_study(work / "study", patient_id="BENCH", seed=3)
        studies = study_copies(list(study.files), work / "copies", args.studies)
        rounds = []
        for _ in range(args.rounds):
            for workers in (1, 2):
                rounds.append(_round(workers, studies, args.pipeline, work))
                print(json.dumps(rounds[-1]), flush=True)
    rates = {k: [r["per_minute"] for r in rounds if r["workers"] == k] for k in (1, 2)}
    medians = {k: statistics.median(v) for k, v in rates.items()}
    ratio = medians[2] / medians[1]
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale_out.json").write_text(json.dumps(
        {"code": code, "pipeline": args.pipeline, "rounds": rounds, "medians": medians,
         "ratio": ratio, "cpus": os.cpu_count()}, indent=2))
    lines = [
        "# Scale-out throughput: workers on one receiver",
        "",
        f"{args.studies} copies of a small synthetic DCE + T2 study (110 instances each), "
        f"pipeline `{args.pipeline}` on the CPU, {os.cpu_count()} cores; one "
        "`kidney-node receive`, RabbitMQ and PostgreSQL local; every job queued before "
        "the workers start; seconds from the first job's start to the last job's end. "
        f"Code {code}. `python -m benchmarks.scale_out --studies {args.studies} "
        f"--rounds {args.rounds}`.",
        "",
        "| Workers | Studies/min per round | Median | Jobs per worker |",
        "|---|---|---|---|",
    ]
    for k in (1, 2):
        per = "; ".join(json.dumps(r["jobs_per_worker"]) for r in rounds if r["workers"] == k)
        lines.append(f"| {k} | {', '.join(f'{v:.1f}' for v in rates[k])} | "
                     f"{medians[k]:.1f} | {per} |")
    lines += ["", f"- 2 workers / 1 worker: **{ratio:.2f}x** (target >= 1.6)"]
    (RESULTS / "scale_out.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
