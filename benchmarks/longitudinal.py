"""Issue 4's longitudinal target, through a running node with real DICOM peers.

One synthetic patient with four follow-up studies of known graft volume (the same anatomy
with the graft shrunk from visit to visit, paper-protocol grids) is sent to a node by
DCMTK ``storescu``, one association per study, *out of date order*. The node runs its
default MRI pipeline (``mri-graft``, CPU profile) on each study. Then ``kidney-node volumes
PATIENT --json`` must list the four studies in date order, each volume within 5 % of the
truth, and raise its alerts on exactly the visits the true volumes call for under the same
rules (by design: the third visit, whose fall from the previous one exceeds 10 %, and the
fourth, more than 15 % below the baseline).

    python -m benchmarks.longitudinal [--seed 2000] [--out benchmarks/results/longitudinal]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.graft_eval import RESULTS, _revision
from service.synthetic import paper_protocol, write_mr_study
from service.trends import AlertRules, Measurement, volume_trend
from tests.conftest import free_port
from tests.peers import NodeProcess, node_config, storescu

PATIENT = "LONG-0001"
#: Graft volume relative to the first visit: -5 %, -15 % (alert: previous), -3.5 % (alert:
#: baseline, -22 %).
VOLUME_FACTORS = (1.0, 0.95, 0.8075, 0.78)
FIRST_DATE = dt.date(2025, 1, 14)
VISIT_DAYS = (0, 91, 189, 371)
SEND_ORDER = (2, 0, 3, 1)
TOLERANCE_PCT = 5.0


def write_visits(root: Path, seed: int) -> list:
    base = paper_protocol(seed)
    visits = []
    for k, (factor, days) in enumerate(zip(VOLUME_FACTORS, VISIT_DAYS, strict=True)):
        protocol = dataclasses.replace(base, kidney_scale=round(base.kidney_scale
                                                                * factor ** (1 / 3), 4))
        visits.append(write_mr_study(root / f"visit{k + 1}", patient_id=PATIENT, seed=seed,
                                     study_date=FIRST_DATE + dt.timedelta(days=days),
                                     protocol=protocol))
    return visits


def run(seed: int, work: Path) -> dict:
    t0 = time.perf_counter()
    visits = write_visits(work / "studies", seed)
    print(f"4 studies written in {time.perf_counter() - t0:.0f} s: true volumes "
          + ", ".join(f"{v.truth_volume_ml:.1f}" for v in visits) + " ml", flush=True)
    node = NodeProcess(work / "node", node_config(
        workdir=work / "node", database_url=f"sqlite:///{work / 'node' / 'index.db'}",
        dicom_port=free_port(), http_port=free_port(), mr_pipeline="mri-graft"),
        work / "node.log")
    (work / "node").mkdir(parents=True)
    node.start()
    try:
        t0 = time.perf_counter()
        for k in SEND_ORDER:
            sent = storescu(node.dicom_port, list(visits[k].files))
            if sent.returncode != 0:
                raise RuntimeError(f"storescu of visit {k + 1} failed: {sent.stderr[-2000:]}")
            print(f"visit {k + 1} sent ({len(visits[k].files)} instances)", flush=True)

        def finished() -> list[dict] | None:
            jobs = json.loads(node.cli("jobs", "--json").stdout)
            done = [j for j in jobs if j["state"] in ("succeeded", "failed")]
            return jobs if len(done) == len(visits) and len(jobs) == len(visits) else None

        jobs = node.wait_for(finished, 3600, "the four jobs")
        elapsed = time.perf_counter() - t0
        rows = json.loads(node.cli("volumes", PATIENT, "--json").stdout)
    finally:
        node.stop()
    return {"visits": visits, "jobs": jobs, "rows": rows, "seconds": elapsed}


def judge(visits: list, rows: list[dict], rules: AlertRules) -> dict:
    """Compare the node's rows with the truth and the alerts the true volumes raise."""
    truth = volume_trend([Measurement(v.study_instance_uid, FIRST_DATE + dt.timedelta(days=d),
                                      None, "graft", v.truth_volume_ml)
                          for v, d in zip(visits, VISIT_DAYS, strict=True)], rules)
    expected_order = [v.study_instance_uid for v in visits]
    by_uid = {r["study_instance_uid"]: r for r in rows}
    table = []
    for k, (visit, point) in enumerate(zip(visits, truth, strict=True)):
        row = by_uid.get(visit.study_instance_uid)
        error = None if row is None else \
            100.0 * (row["volume_ml"] - visit.truth_volume_ml) / visit.truth_volume_ml
        table.append({"visit": k + 1, "study_date": point.study_date,
                      "truth_ml": round(visit.truth_volume_ml, 2),
                      "node_ml": None if row is None else row["volume_ml"],
                      "error_pct": None if error is None else round(error, 2),
                      "true_change_from_previous_pct": point.change_from_previous_pct,
                      "node_change_from_previous_pct":
                          None if row is None else row["change_from_previous_pct"],
                      "true_alert": point.alert, "node_alert": None if row is None
                      else row["alert"], "node_alert_reasons":
                          None if row is None else row["alert_reasons"]})
    checks = {
        "four studies listed in date order": [r["study_instance_uid"] for r in rows]
        == expected_order,
        f"every volume within {TOLERANCE_PCT:g} % of the truth": all(
            t["error_pct"] is not None and abs(t["error_pct"]) <= TOLERANCE_PCT for t in table),
        "alerts on the visits the true volumes call for": [t["node_alert"] for t in table]
        == [t["true_alert"] for t in table],
        "the visit falling more than 10 % from the previous raises the previous-study alert":
            any("previous" in " ".join(t["node_alert_reasons"] or []) for t in table
                if t["visit"] == 3),
    }
    return {"table": table, "checks": checks}


def markdown(result: dict, judged: dict, seed: int, code: str) -> str:
    lines = [f"Longitudinal check (seed {seed}, code {code}): 4 paper-protocol studies sent "
             f"out of date order (visits {', '.join(str(k + 1) for k in SEND_ORDER)}), "
             f"mri-graft on CPU; all four jobs done {result['seconds']:.0f} s after the first "
             "send.", "",
             "| visit | date | truth (ml) | node (ml) | error (%) | true change (%) "
             "| node change (%) | true alert | node alert |", "|" + "---|" * 9]
    for t in judged["table"]:
        lines.append(f"| {t['visit']} | {t['study_date']} | {t['truth_ml']} | {t['node_ml']} "
                     f"| {t['error_pct']} | {t['true_change_from_previous_pct']} "
                     f"| {t['node_change_from_previous_pct']} | {t['true_alert']} "
                     f"| {t['node_alert']} |")
    lines.append("")
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in judged["checks"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "longitudinal")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kn-longitudinal-") as tmp:
        result = run(args.seed, Path(tmp))
    judged = judge(result["visits"], result["rows"], AlertRules())
    code = _revision()
    failed_jobs = [j for j in result["jobs"] if j["state"] != "succeeded"]
    if failed_jobs:
        judged["checks"]["every job succeeded"] = False
        print("failed jobs:", json.dumps(failed_jobs, indent=1))
    text = markdown(result, judged, args.seed, code)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"seed": args.seed, "code": code, "seconds": round(result["seconds"], 1),
         **judged, "rows": result["rows"]}, indent=1) + "\n")
    print(text)
    return 0 if all(judged["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
