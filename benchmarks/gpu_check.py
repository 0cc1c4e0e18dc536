"""The GPU path, ready to measure (issue 21): the MRI method at native resolution and the
CT kidneys with the cortex ensemble on CUDA, run as a ``kidney-node worker`` runs a job,
checked against the CPU profile.

For each study (a synthetic DCE + T2 graft MRI, a synthetic contrast CT):

1. the study is stored in a fresh archive and SQLite index and the sweep queues its job;
2. :meth:`service.jobs.runner.JobRunner.run_job` (what a worker runs for each message)
   runs it on ``--device`` (``cuda``): the job's own stage timings (load, segment, QC,
   write), the peak GPU memory (``torch.cuda.max_memory_allocated``), the volumes;
3. the same study again on the CPU (the CPU profile: MRI on its working grid): per
   segment, the Dice of the two SEGs' masks on the source images, and both volumes.

The cortex ensemble is ``--cortex-models DIR``, else one trained here briefly on the
CPU (7 networks, 2 synthetic cases, 1 epoch): its figures measure speed, not accuracy. Without
CUDA the command says so and exits 2, unless ``--device cpu`` (a dry run of the plumbing,
both runs on the CPU). Writes ``benchmarks/results/gpu_check.json`` and ``.md``.

    python -m benchmarks.gpu_check [--device cuda] [--cortex-models DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from sqlalchemy import select

from service.config import Settings
from service.db import Instance, Job, Result, make_engine, make_sessionmaker, upgrade
from service.jobs.runner import JobRunner
from service.scheduler.sweep import sweep
from service.storage import InstanceStore
from service.synthetic import synthesize_ct, write_ct_study, write_mr_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _seg_masks(path: Path) -> dict[str, set[tuple[str, int, int]]]:
    """Segment label -> the (source SOP Instance UID, row, column) of its pixels."""
    ds = dcmread(path)
    frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    threshold = 127 if ds.SegmentationType == "FRACTIONAL" else 0
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    shared = ds.SharedFunctionalGroupsSequence[0]
    masks: dict[str, set[tuple[str, int, int]]] = {}
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        ident = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        label = labels[int(ident[0].ReferencedSegmentNumber)]
        source = str(item.DerivationImageSequence[0].SourceImageSequence[0]
                     .ReferencedSOPInstanceUID)
        rows, cols = np.nonzero(frame > threshold)
        masks.setdefault(label, set()).update(zip([source] * len(rows), rows.tolist(),
                                                  cols.tolist(), strict=True))
    return masks


def _run(files: list[Path], settings: Settings, device: str, work: Path) -> dict:
    """Store ``files``, queue the job, run it as a worker does; the job's figures."""
    import torch

    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'index.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store = InstanceStore(work / "archive", sessions)
    try:
        for path in files:
            store.store_file(Path(shutil.copy(path, store.incoming / path.name)),
                             calling_aet="GPUCHECK")
        with sessions.begin() as session:
            (job,) = sweep(session, stable_age_seconds=0, rules=settings.classification,
                           mr_pipeline=settings.processing.mr_pipeline,
                           ct_pipeline=settings.processing.ct_pipeline)
            session.flush()
            job_id = job.id
        runner = JobRunner(settings=settings, sessions=sessions, store=store, device=device,
                           worker="gpu-check")
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        state = runner.run_job(job_id)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        with sessions() as session:
            job = session.get(Job, job_id)
            results = session.scalars(select(Result).where(Result.job_pk == job_id)).all()
            seg_uid = results[0].seg_sop_instance_uid if results else None
            seg_path = None if seg_uid is None else store.path_of(session.scalar(
                select(Instance.path).where(Instance.sop_instance_uid == seg_uid)))
            return {"device": device, "state": str(state), "error": job.error,
                    "seconds": round(seconds, 2), "timings": json.loads(job.timings or "{}"),
                    "peak_gpu_mib": None if peak is None else round(peak, 1),
                    "volumes_ml": {r.structure: round(r.volume_ml, 2) for r in results},
                    "flags": json.loads(results[0].flags) if results else [],
                    "masks": {} if seg_path is None else _seg_masks(seg_path)}
    finally:
        engine.dispose()


def _dice(a: set, b: set) -> float:
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


def _tiny_ensemble(work: Path) -> Path:
    """A cortex ensemble of the node's shape (7 networks) trained here briefly, on the
    CPU, from 2 synthetic cases and 1 epoch: its figures measure speed, not accuracy."""
    from benchmarks.cortex_eval import write_training_cases
    from service.cortex import train_cortex

    data = work / "cortex-data"
    write_training_cases(data, seeds=[1, 2])
    out = work / "cortex-models"
    train_cortex(data, out, epochs=1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cortex-models", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: GPU figures are missing (run this where a GPU is lent; "
              "--device cpu runs the plumbing on the CPU)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mr = write_mr_study(work / "mr", patient_id="GPU-MR", seed=args.seed)
        ct = write_ct_study(work / "ct", synthesize_ct(seed=args.seed))
        models = args.cortex_models or _tiny_ensemble(work)
        base = {"processing": {"ct": {"cortex_models_dir": str(models)}}}
        report = {}
        for name, files in (("mri-graft", list(mr.files)), ("ct-kidneys", list(ct.files))):
            runs = {}
            for key, device in (("device", args.device), ("cpu profile", "cpu")):
                settings = Settings.model_validate(
                    {**base, "processing": {**base["processing"], "device": device}})
                runs[key] = _run(files, settings, device, work / f"{name}-{len(runs)}")
            fast, cpu = runs["device"], runs["cpu profile"]
            dice = {label: round(_dice(fast["masks"].get(label, set()),
                                       cpu["masks"].get(label, set())), 4)
                    for label in sorted(set(fast["masks"]) | set(cpu["masks"]))}
            for run in runs.values():
                run.pop("masks")
            report[name] = {"runs": runs, "dice_vs_cpu_profile": dice}
            print(json.dumps({name: report[name]}, indent=1), flush=True)
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device.startswith("cuda") else "_dry_run"
    (RESULTS / f"gpu_check{suffix}.json").write_text(json.dumps(
        {"code": code, "device": name, "report": report}, indent=2))
    lines = [f"# GPU check on {name}", "",
             f"Code {code}. `python -m benchmarks.gpu_check --device {args.device}`.", "",
             "| Study | Device | Total s | Stages (s) | Peak GPU MiB | Volumes (ml) | "
             "Dice vs CPU profile |", "|---|---|---|---|---|---|---|"]
    for study, entry in report.items():
        for key, run in entry["runs"].items():
            stages = ", ".join(f"{k.removesuffix('_s')} {v:.1f}"
                               for k, v in run["timings"].items())
            lines.append(f"| {study} | {run['device']} ({key}) | {run['seconds']:.1f} | "
                         f"{stages} | {run['peak_gpu_mib'] or '-'} | {run['volumes_ml']} | "
                         f"{entry['dice_vs_cpu_profile'] if key == 'device' else ''} |")
    (RESULTS / f"gpu_check{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
