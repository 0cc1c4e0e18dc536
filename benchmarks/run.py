"""Benchmarks of the spine: ingest rate and round trip through the node, and accuracy of
the classical MRI baselines on synthetic studies. Results go to benchmarks/results/.
The ``mri-graft`` method has its own evaluation: :mod:`benchmarks.graft_eval`.

Run: ``make bench`` (or ``.venv/bin/python -m benchmarks.run [--seeds N]``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from models import dice, precision, recall, volume_difference_pct
from models.volume import image_spacing_zyx
from service.db.tables import SeriesRole
from service.imaging.series import group_by_series, load_series
from service.pipeline.base import StudyInput
from service.pipeline.registry import PIPELINES
from service.synthetic import write_mr_study
from tests.conftest import free_port
from tests.peers import NodeProcess, node_config, storescp, storescu

RESULTS = Path(__file__).resolve().parent / "results"


def accuracy(seeds: int, work: Path) -> dict[str, dict[str, float]]:
    """Dice, precision, recall, PKVD and time per pipeline, mean ± std over seeds."""
    baselines = {name: PIPELINES[name] for name in ("mri-otsu", "mri-watershed")}
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in baselines}
    for seed in range(seeds):
        study = write_mr_study(work / f"acc{seed}", seed=100 + seed)
        groups = group_by_series(study.files)
        dce = load_series(groups[study.dce_series_uids[0]])
        inputs = StudyInput(study.study_instance_uid, {SeriesRole.DCE: (dce,)})
        truth = sitk.GetArrayFromImage(study.truth_mask).astype(bool)
        spacing = image_spacing_zyx(study.truth_mask)
        for name, pipeline in baselines.items():
            t0 = time.perf_counter()
            out = pipeline.run(inputs, device="cpu")
            elapsed = time.perf_counter() - t0
            pred = out.labels.astype(bool)
            scores[name].append({
                "dice": dice(pred, truth), "precision": precision(pred, truth),
                "recall": recall(pred, truth),
                "pkvd": volume_difference_pct(pred, truth, spacing_zyx=spacing),
                "seconds": elapsed})
    summary = {}
    for name, rows in scores.items():
        summary[name] = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            summary[name][key] = round(statistics.mean(values), 4)
            summary[name][key + "_std"] = round(statistics.pstdev(values), 4)
    return summary


def round_trip(work: Path) -> dict[str, float]:
    """One synthetic study through a node on embedded defaults (SQLite) to a storescp."""
    study = write_mr_study(work / "rt", seed=7)
    dest_port = free_port()
    node_dir = work / "node"
    node_dir.mkdir()
    node = NodeProcess(workdir=node_dir, log_path=node_dir / "node.log", config=node_config(
        workdir=node_dir, database_url=f"sqlite:///{node_dir / 'index.sqlite'}",
        dicom_port=free_port(), http_port=free_port(),
        destinations=[{"name": "d", "ae_title": "DEST", "host": "127.0.0.1",
                       "port": dest_port}]))
    stable = node.config["scheduler"]["stable_age_seconds"]
    with storescp(dest_port, work / "dest"):
        node.start()
        try:
            t0 = time.perf_counter()
            sent = storescu(node.dicom_port, list(study.files))
            t_send = time.perf_counter() - t0
            if sent.returncode:
                raise RuntimeError(sent.stderr)
            node.wait_for(lambda: any((work / "dest").iterdir()), 300, "the SEG")
            t_round = time.perf_counter() - t0
            job = node.get("/api/jobs")[0]
        finally:
            node.stop()
    return {"instances": len(study.files), "send_seconds": round(t_send, 3),
            "instances_per_second": round(len(study.files) / t_send, 1),
            "round_trip_seconds": round(t_round, 2), "stable_age_seconds": stable,
            "job_timings": job["timings"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {
            "machine": {"cpu_count": os.cpu_count(),
                        "python": platform.python_version(), "numpy": np.__version__},
            "round_trip": round_trip(work),
            "accuracy": accuracy(args.seeds, work),
        }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "spine.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
