"""``kidney-node`` command line."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from service import __version__
from service.config import Destination, Settings, load_settings
from service.errors import AmbiguousPatientError, ConfigError, KidneyNodeError
from service.logs import configure_logging

__all__ = ["main"]

logger = logging.getLogger("kidney-node")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kidney-node", description=__doc__)
    p.add_argument("--config", type=Path, help="YAML config file (else KIDNEY_NODE_CONFIG)")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the node (migrates the database first); with "
                   "broker.url set, as `receive`")
    sub.add_parser("receive", help="scaled out: SCP, trigger, sender and API; jobs go to "
                   "workers through broker.url")
    worker = sub.add_parser("worker", help="scaled out: run jobs taken from broker.url")
    worker.add_argument("--queues", default=None,
                        help="comma-separated: gpu, cpu (default: gpu with CUDA, else cpu)")
    worker.add_argument("--name", default=None, help="worker name (default host:pid)")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply Alembic migrations")
    seg = sub.add_parser("segment", help="segment a folder of DICOM files offline")
    seg.add_argument("input_dir", type=Path)
    seg.add_argument("--out", type=Path, required=True)
    seg.add_argument("--pipeline", help="pipeline name (default: by series classification)")
    vol = sub.add_parser("volumes", help="kidney volumes of a patient over time")
    vol.add_argument("patient_id")
    vol.add_argument("--issuer", help="Issuer of Patient ID, when the ID is held under "
                                      "several issuers")
    vol.add_argument("--structure", help="only this structure (e.g. kidney)")
    vol.add_argument("--format", choices=("table", "csv", "json"), default="table")
    vol.add_argument("--json", action="store_true", help="same as --format json")
    patients = sub.add_parser("patients", help="patients with their latest volumes")
    patients.add_argument("--alerts", action="store_true",
                          help="only patients whose latest study raised an alert")
    patients.add_argument("--json", action="store_true")
    patients.add_argument("--limit", type=int, default=1000)
    base = sub.add_parser("baseline", help="mark a study as its patient's baseline")
    base.add_argument("study_instance_uid")
    base.add_argument("--clear", action="store_true",
                      help="remove the mark (the first study is the baseline again)")
    review = sub.add_parser("review", help="accept or reject a study's automatic result")
    review.add_argument("study_instance_uid")
    review.add_argument("decision", choices=("accept", "reject"))
    review.add_argument("--by", required=True, help="the reviewer's name")
    review.add_argument("--structure", help="one structure (default: every one)")
    review.add_argument("--comment")
    history = sub.add_parser("history", help="every measurement and review of a patient")
    history.add_argument("patient_id")
    history.add_argument("--issuer", help="Issuer of Patient ID, when the ID is held under "
                                          "several issuers")
    history.add_argument("--json", action="store_true")
    purge = sub.add_parser("purge", help="retention: delete the source images of old "
                                         "studies (results and volumes kept)")
    purge.add_argument("--older-than-days", type=_positive_int,
                       help="default: storage.retention.source_days")
    purge.add_argument("--apply", action="store_true",
                       help="delete (without it: say what would be deleted)")
    audit = sub.add_parser("audit", help="the audit trail: received, sent, read")
    audit.add_argument("what", choices=("received", "sent", "access"),
                       help="instances received, result objects sent, reads of patient data")
    audit.add_argument("--study", help="one study (received, sent)")
    audit.add_argument("--peer", help="one sender: calling AE title or address (received)")
    audit.add_argument("--destination", help="one destination (sent)")
    audit.add_argument("--patient", help="one Patient ID (access)")
    audit.add_argument("--user", help="one user (access)")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--json", action="store_true")
    jobs = sub.add_parser("jobs", help="recent jobs")
    jobs.add_argument("--json", action="store_true")
    jobs.add_argument("--limit", type=int, default=50)
    workers = sub.add_parser("workers", help="scaled out: the worker processes and their "
                             "heartbeats")
    workers.add_argument("--json", action="store_true")
    outbox = sub.add_parser("outbox", help="results queued for the destinations")
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument("--retry", metavar="DESTINATION",
                        help="send again what failed for good to DESTINATION (once fixed)")
    backfill = sub.add_parser("backfill", help="fetch a patient's earlier studies from the "
                                               "PACS (prior_studies.pacs)")
    backfill.add_argument("patient_id")
    backfill.add_argument("--issuer", help="Issuer of Patient ID (default: the one the node "
                                           "holds the patient under, else none)")
    backfill.add_argument("--status", action="store_true",
                          help="only show what was asked of the PACS and fetched")
    backfill.add_argument("--json", action="store_true")
    train = sub.add_parser("train", help="train a model from annotated data")
    train_sub = train.add_subparsers(dest="train_model", required=True)
    cortex = train_sub.add_parser("cortex", help="the renal-cortex ensemble (7 U-Nets)")
    cortex.add_argument("data_dir", type=Path,
                        help="<case>_ct.nii.gz + <case>_cortex.nii.gz [+ <case>_kidneys.nii.gz]")
    cortex.add_argument("--out", type=Path, required=True, help="model folder to write")
    cortex.add_argument("--epochs", type=_positive_int, default=30)
    # Width 8: 7 networks infer a study in about 20 s on one CPU core; width 16 takes
    # over the 60 s budget (benchmarks/results/cortex_eval.md).
    cortex.add_argument("--width", type=_positive_int, default=8,
                        help="channels of the top level")
    cortex.add_argument("--seed", type=int, default=0)
    demo = sub.add_parser("demo", help="send a synthetic study to the running node")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--timeout", type=float, default=300.0)
    return p


def _sessions(settings: Settings):  # noqa: ANN202
    from service.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings.database.url))


def _print_table(rows: list[dict], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "") if r.get(c) is not None else "").ljust(widths[c])
                        for c in columns))


def _cmd_serve(settings: Settings) -> int:
    from service.node import Node

    node = Node(settings)
    node.start()
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    try:
        node.wait()
    except KeyboardInterrupt:
        node.stop()
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from service.jobs.worker import WorkerProcess

    if settings.broker.url is None:
        raise ConfigError("kidney-node worker needs broker.url (amqp://...)")
    queues = None
    if args.queues:
        queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
        if not queues or set(queues) - {"gpu", "cpu"}:
            raise ConfigError(f"--queues: gpu and/or cpu, got {args.queues!r}")
    return WorkerProcess(settings, queues=queues, name=args.name).run()


def _cmd_segment(settings: Settings, args: argparse.Namespace) -> int:
    from service.jobs.device import resolve_device
    from service.offline import segment_folder

    result = segment_folder(args.input_dir, args.out, pipeline_name=args.pipeline,
                            rules=settings.classification, processing=settings.processing,
                            device=resolve_device(settings.processing.device),
                            qc=settings.qc, ae_title=settings.dicom.ae_title)
    for structure, ml in result.volumes_ml.items():
        qc = result.qc.get(structure)
        verdict = "" if qc is None else f" (QC {qc['verdict']}" + (
            f": {'; '.join(qc['reasons'])})" if qc["reasons"] else ")")
        print(f"{structure}: {ml:.1f} ml{verdict}")
    if result.seg_path is None:
        print(f"{result.finding}; wrote {result.result_path}")
    else:
        print(f"wrote {result.seg_path} and {result.result_path}")
    return 0


def _cmd_volumes(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import patient_trend

    rules = _alert_rules(settings)
    with _sessions(settings)() as session:
        ambiguous, issuer = _issuer(session, args)
        if ambiguous:
            return 2
        known = issuer is not None
        rows = patient_trend(session, args.patient_id, issuer or "", structure=args.structure,
                             rules=rules) if known else []
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        columns = [c for c in rows[0] if c != "alert_reasons"] if rows else []
        rows = [{k: "; ".join(v) if isinstance(v, list) else v for k, v in r.items()}
                for r in rows]
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore",
                                lineterminator="\n")
        if rows:
            writer.writeheader()
            writer.writerows(rows)
    elif not rows:
        print(f"no volumes for patient {args.patient_id}"
              + ("" if known else " (no study of this patient on this node)"))
    else:
        table = [{**r, "vs_previous_pct": r["change_from_previous_pct"],
                  "vs_baseline_pct": r["change_from_baseline_pct"],
                  "alert": "ALERT" if r["alert"] else "",
                  "qc": _qc_cell(r),
                  "review": f"{r['review']} by {r['reviewed_by']}" if r["review"] else ""}
                 for r in rows]
        _print_table(table, ["study_date", "structure", "volume_ml", "vs_previous_pct",
                             "vs_baseline_pct", "alert", "qc", "review", "pipeline",
                             "study_instance_uid"])
        for r in rows:
            if r["qc_reasons"]:
                print(f"{r['study_date'] or '-'} {r['structure']} QC {r['qc_verdict']}: "
                      + "; ".join(r["qc_reasons"]))
    return 0 if known else 1


def _issuer(session, args: argparse.Namespace) -> tuple[bool, str | None]:  # noqa: ANN001
    """(ambiguous, issuer): the issuer of ``args.patient_id`` (``--issuer``, or the only
    one holding the ID; None when the node holds none); ambiguous (said on stderr) when
    several hold it and no ``--issuer`` was given."""
    from service.db.queries import resolve_issuer

    try:
        return False, resolve_issuer(session, args.patient_id, args.issuer)
    except AmbiguousPatientError as exc:
        print(f"{exc}: name one with --issuer", file=sys.stderr)
        return True, None


def _qc_cell(row: dict) -> str:
    """The verdict, marked when the measurement is left out of the trend."""
    verdict = row.get("qc_verdict") or "not assessed"
    return verdict if row.get("in_trend", True) else f"{verdict.upper()} (not in trend)"


def _alert_rules(settings: Settings):  # noqa: ANN202
    from service.trends import AlertRules

    return AlertRules.from_settings(settings.trends)


def _cmd_patients(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import list_patients

    with _sessions(settings)() as session:
        rows = list_patients(session, alerts_only=args.alerts, rules=_alert_rules(settings),
                             limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no patient with an alert" if args.alerts else "no patient")
    else:
        table = [{**r, "latest_volumes_ml": ", ".join(f"{k} {v:g}" for k, v in
                                                      r["latest_volumes_ml"].items()),
                  "alert": "ALERT" if r["alert"] else "",
                  "needs_review": ", ".join(r["needs_review"])} for r in rows]
        _print_table(table, ["patient_id", "studies", "last_study_date", "latest_volumes_ml",
                             "alert", "needs_review"])
    return 0


def _cmd_baseline(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.baseline import set_baseline

    with _sessions(settings).begin() as session:
        patient = set_baseline(session, args.study_instance_uid, baseline=not args.clear)
    state = "no longer the baseline" if args.clear else "the baseline"
    print(f"study {args.study_instance_uid} is {state} of patient {patient}")
    return 0


def _cmd_review(settings: Settings, args: argparse.Namespace) -> int:
    from service.reviews.decisions import ReviewRefused, decide

    try:
        with _sessions(settings).begin() as session:
            reviews = decide(session, args.study_instance_uid, args.decision,
                             reviewer=args.by, device="CLI", structure=args.structure,
                             comment=args.comment)
            done = [f"{r.structure} {r.action.value}" for r in reviews]
    except ReviewRefused as exc:
        print(f"kidney-node: {exc}", file=sys.stderr)
        return 1
    print(f"study {args.study_instance_uid}: {', '.join(done)} by {args.by}")
    return 0


def _cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import patient_history

    with _sessions(settings)() as session:
        ambiguous, issuer = _issuer(session, args)
        if ambiguous:
            return 2
        rows = [] if issuer is None else patient_history(session, args.patient_id, issuer)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no measurement of patient {args.patient_id}")
    else:
        table = [{**r, "by": r.get("reviewer") or r.get("pipeline") or "",
                  "reported": "*" if r["reported"] else "",
                  "note": r.get("detail") or r.get("comment") or ""} for r in rows]
        _print_table(table, ["study_date", "structure", "kind", "volume_ml", "by",
                             "reported", "recorded_at", "note"])
    return 0 if issuer is not None else 1


def _cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    from service.storage.retention import purge_sources

    days = args.older_than_days or settings.storage.retention.source_days
    if days is None:
        print("kidney-node: no age given: --older-than-days N or "
              "storage.retention.source_days", file=sys.stderr)
        return 2
    report = purge_sources(_sessions(settings), settings.storage.root,
                           older_than_days=days, dry_run=not args.apply)
    print(report.summary())
    for uid in report.studies:
        print(f"  study {uid}")
    if report.dry_run and report.instances:
        print("dry run: nothing deleted (--apply deletes)")
    return 0


_AUDIT_COLUMNS = {
    "received": ["received_at", "calling_aet", "peer_address", "study_instance_uid",
                 "sop_instance_uid"],
    "sent": ["queued_at", "destination", "address", "state", "sent_at", "attempts",
             "sop_instance_uid", "last_error"],
    "access": ["at", "user", "client", "method", "path", "status"],
}


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from service.db import audit

    with _sessions(settings)() as session:
        if args.what == "received":
            rows = audit.received_instances(session, study_instance_uid=args.study,
                                            peer=args.peer, limit=args.limit)
        elif args.what == "sent":
            rows = audit.sent_objects(session, study_instance_uid=args.study,
                                      destination=args.destination, limit=args.limit)
        else:
            rows = audit.access_records(session, patient_id=args.patient, user=args.user,
                                        limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(rows, _AUDIT_COLUMNS[args.what])
    else:
        print("nothing recorded")
    return 0


def _cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import list_jobs

    with _sessions(settings)() as session:
        rows = [r.as_dict() for r in list_jobs(session, limit=args.limit)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["id", "state", "pipeline", "attempts", "created_at",
                            "device", "worker", "study_instance_uid", "outcome", "error"])
    return 0


def _cmd_workers(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from service.db.queries import list_workers

    with _sessions(settings)() as session:
        rows = [asdict(r) for r in list_workers(
            session, heartbeat_timeout_s=settings.broker.heartbeat_timeout_seconds)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table([{**r, "queues": ",".join(r["queues"])} for r in rows],
                     ["name", "state", "device", "queues", "heartbeat_age_s", "job_id",
                      "jobs_done", "hostname", "version"])
    return 0


def _cmd_outbox(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import list_outbox
    from service.outbox.sender import requeue_failed

    if args.retry is not None:
        with _sessions(settings).begin() as session:
            count = requeue_failed(session, args.retry)
        print(f"{count} failed item(s) for {args.retry} queued again")
        return 0
    with _sessions(settings)() as session:
        rows = list_outbox(session)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["id", "state", "destination", "attempts", "sop_instance_uid",
                            "last_error"])
    return 0


def _cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from service.db.queries import resolve_issuer
    from service.priors.backfill import request_priors
    from service.priors.status import prior_status

    if not args.status and settings.prior_studies.pacs is None:
        raise ConfigError("prior_studies.pacs is not set: the node has no PACS to ask")
    with _sessions(settings).begin() as session:
        issuer = args.issuer if args.issuer is not None else (
            resolve_issuer(session, args.patient_id) or "")
        if not args.status:
            request = request_priors(session, patient_id=args.patient_id, issuer=issuer,
                                     reason="cli")
            print(f"request {request.id}: the node asks "
                  f"{settings.prior_studies.pacs.label} within "  # type: ignore[union-attr]
                  f"{settings.prior_studies.poll_interval_seconds:g} s; "
                  f"`kidney-node backfill {args.patient_id} --status` shows what it fetches",
                  file=sys.stderr)
        status = prior_status(session, args.patient_id, issuer)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for r in status["requests"]:
        print(f"request {r['id']} ({r['reason']}, {r['created_at']}): "
              + (r["summary"] or r["error"] or "not answered yet"))
    _print_table(status["studies"], ["study_date", "modalities", "state", "pipeline",
                                     "instances", "attempts", "study_instance_uid", "detail"])
    return 0


def _cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from service.cortex import train_cortex

    manifest = train_cortex(args.data_dir, args.out, epochs=args.epochs, width=args.width,
                            seed=args.seed)
    print(f"wrote {manifest}")
    return 0


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from service.dicom.scu import send_files
    from service.synthetic import write_mr_study

    node = Destination(name="node", ae_title=settings.dicom.ae_title, host=args.host,
                       port=settings.dicom.port)
    api = f"http://{settings.http.host if settings.http.host != '0.0.0.0' else '127.0.0.1'}" \
          f":{settings.http.port}"  # noqa: S104
    with tempfile.TemporaryDirectory() as tmp:
        study = write_mr_study(Path(tmp), patient_id="DEMO-0001")
        t0 = time.perf_counter()
        outcome = send_files(list(study.files), destination=node, calling_aet="DEMO",
                             timeout=30)
        failed = [str(e) for e in outcome.values() if e is not None]
        if failed:
            print(f"sending the demo study failed: {failed[0]}", file=sys.stderr)
            return 1
        print(f"sent {len(study.files)} instances of study {study.study_instance_uid} "
              f"to {node.ae_title}@{node.host}:{node.port} in {time.perf_counter() - t0:.1f} s;"
              f" waiting for the result (stable age {settings.scheduler.stable_age_seconds} s)")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{api}/api/studies/{study.study_instance_uid}",
                                            timeout=5) as resp:  # noqa: S310 - our own API
                    summary = json.load(resp)
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                summary = None
            if summary:
                failed_jobs = [j for j in summary["jobs"] if j["state"] == "failed"]
                if summary["results"]:
                    for r in summary["results"]:
                        qc = r.get("qc_verdict") or "not assessed"
                        reasons = "; ".join(r.get("qc_reasons") or [])
                        print(f"{r['structure']}: {r['volume_ml']:.1f} ml by {r['pipeline']} "
                              f"(truth {study.truth_volume_ml:.1f} ml), "
                              f"QC {qc}{': ' + reasons if reasons else ''}, "
                              f"round trip {time.perf_counter() - t0:.1f} s")
                    return 0
                if failed_jobs:
                    print(f"the job failed: {failed_jobs[-1]['error']}", file=sys.stderr)
                    return 1
            time.sleep(1.0)
    print(f"no result within {args.timeout:.0f} s", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kidney-node`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "receive" and settings.broker.url is None:
            raise ConfigError("kidney-node receive needs broker.url (amqp://...); without "
                              "a broker, `kidney-node serve` runs the jobs itself")
        if args.command in ("serve", "receive"):
            return _cmd_serve(settings)
        if args.command == "db":
            from service.db import upgrade

            upgrade(settings.database.url)
            print("database is at the latest revision")
            return 0
        handler = {"segment": _cmd_segment, "volumes": _cmd_volumes, "patients": _cmd_patients,
                   "baseline": _cmd_baseline, "review": _cmd_review,
                   "history": _cmd_history, "audit": _cmd_audit, "purge": _cmd_purge,
                   "jobs": _cmd_jobs, "backfill": _cmd_backfill, "worker": _cmd_worker,
                   "workers": _cmd_workers,
                   "outbox": _cmd_outbox, "train": _cmd_train, "demo": _cmd_demo}[args.command]
        return handler(settings, args)
    except KidneyNodeError as exc:
        print(f"kidney-node: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
