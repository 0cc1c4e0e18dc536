"""The default ``mri-graft`` method (DCE + T2) on unseen studies, each scanned twice.

Issue 16's target: on at least 30 paper-protocol studies drawn from seeds never used for
tuning (3001 on; the tuning and Table 1 runs used seeds below 1100), no study below Dice
0.80, mean Dice at least 0.95, and the same study *scanned again* (bias fields, noise,
T2 motion and deformation drawn again: ``synthesize_mr(scan_draw=1)``; the T2 slab's
spacing, thickness and count drawn again: ``paper_protocol(t2_draw=1)``) giving the same
answer. Each run is the method as the node's CPU profile runs it (``GraftSettings()``,
the pipeline's DCE volume and extra phases), with the QC verdict the node would give.

Rows are appended to a JSON-lines file as they are computed (a run can be resumed);
the Markdown table gives per study both scans' Dice, volumes and verdicts, and the
summary: minimum and mean Dice, the Dice and volume differences between scans, and how
the QC verdict separates the results under 0.80 from the others.

With ``--renal-sinus`` the grafts have their renal sinus fat, outside the truth (as real
kidneys' masks: :class:`service.synthetic.shapes.Kidney`).

    python -m benchmarks.graft_stability [--seeds 3001-3030] [--draws 0,1] [--threads 2]
        [--renal-sinus]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.graft_eval import RESULTS, _revision
from benchmarks.qc_eval import _verdict
from benchmarks.rows import append_row, load_rows, seed_list
from models.dce import DceVolume, combine_phases, network_inputs
from models.graft import segment_graft
from models.metrics import dice, volume_difference_pct
from service.config import GraftSettings
from service.pipeline.mri_graft import device_profile
from service.synthetic import paper_protocol, synthesize_mr
from service.synthetic.study import geometry_image


def run_study(seed: int, draw: int, *, renal_sinus: bool = False) -> dict:
    """Render one scan of study ``seed``, segment it as the node does, score it."""
    settings = GraftSettings()
    mr = synthesize_mr(seed=seed, protocol=paper_protocol(seed, t2_draw=draw), scan_draw=draw,
                       renal_sinus=renal_sinus)
    how = DceVolume(settings.dce_volume)
    dce = geometry_image(combine_phases(list(mr.dce), how=how), mr.dce_geometry)
    extra = [geometry_image(mr.dce[i], mr.dce_geometry)
             for i in network_inputs(len(mr.dce), how=how)]
    t2 = geometry_image(mr.t2.astype(np.float32), mr.t2_geometry)
    truth = mr.kidney_mask.astype(bool)
    spacing = mr.dce_geometry.spacing_mm
    row = {"seed": seed, "draw": draw, "renal_sinus": renal_sinus,
           "t2_shape": list(mr.t2.shape),
           "t2_spacing_mm": list(mr.t2_geometry.spacing_mm),
           "truth_ml": float(truth.sum() * np.prod(spacing) / 1000.0)}
    started = time.perf_counter()
    try:
        result = segment_graft(dce, t2, extra_phases=extra,
                               config=device_profile(settings, cpu=True))
    except ValueError as exc:
        row.update(error=str(exc), dice=0.0, verdict="fail", reasons=[f"no result: {exc}"],
                   seconds=round(time.perf_counter() - started, 1))
        return row
    mask = result.mask
    judged = _verdict(dce, mask)
    row.update(
        dice=round(dice(mask, truth), 4),
        found_ml=round(float(mask.sum() * np.prod(spacing) / 1000.0), 1),
        volume_diff_pct=round(volume_difference_pct(mask, truth, spacing_zyx=spacing), 2),
        stopped_by=str(result.clustering.stopped_by),
        iterations=result.clustering.iterations,
        verdict=judged["verdict"], reasons=judged["reasons"],
        seconds=round(time.perf_counter() - started, 1), error=None)
    return row


def summary(rows: list[dict], threads: int) -> str:
    by_seed: dict[int, dict[int, dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["draw"]] = r
    draws = sorted({r["draw"] for r in rows})
    head = " | ".join(f"Dice {d} | ml {d} | QC {d}" for d in draws)
    lines = [f"| seed | truth ml | {head} | seconds |",
             "|---|---|" + "---|---|---|" * len(draws) + "---|"]
    for seed in sorted(by_seed):
        scans = by_seed[seed]
        cells = []
        for d in draws:
            r = scans.get(d)
            cells.append(" | ".join(("–", "–", "–") if r is None else (
                f"{r['dice']:.3f}", f"{r.get('found_ml', 0):.0f}", r["verdict"])))
        secs = "/".join(f"{s['seconds']:.0f}" for s in scans.values())
        truth = next(iter(scans.values()))["truth_ml"]
        lines.append(f"| {seed} | {truth:.0f} | {' | '.join(cells)} | {secs} |")
    dices = np.array([r["dice"] for r in rows])
    pairs = [s for s in by_seed.values() if len(s) >= 2]
    ddice = np.array([abs(s[draws[0]]["dice"] - s[draws[1]]["dice"]) for s in pairs]) \
        if len(draws) >= 2 else np.array([])
    dvol = np.array([abs(s[draws[0]].get("found_ml", 0) - s[draws[1]].get("found_ml", 0))
                     / s[draws[0]]["truth_ml"] * 100 for s in pairs]) \
        if len(draws) >= 2 else np.array([])
    bad = [r for r in rows if r["dice"] < 0.8]
    good = [r for r in rows if r["dice"] >= 0.9]
    lines += [
        "",
        f"{len(by_seed)} studies, {len(rows)} scans ({len(pairs)} studies scanned twice), "
        f"seeds {min(by_seed)}-{max(by_seed)}, none used for tuning"
        f"{'; grafts with their renal sinus' if any(r.get('renal_sinus') for r in rows) else ''}.",
        "",
        f"- minimum Dice {dices.min():.3f} (target: none below 0.80); scans below 0.80: "
        f"{len(bad)}",
        f"- mean Dice {dices.mean():.3f} ± {dices.std():.3f} (target ≥ 0.95)",
    ]
    if len(ddice):
        lines.append(f"- same study scanned again: |Dice difference| mean {ddice.mean():.3f}, "
                     f"max {ddice.max():.3f}; |volume difference| mean {dvol.mean():.1f} % "
                     f"of the truth, max {dvol.max():.1f} %; studies whose two scans differ "
                     f"by more than 5 % in volume: {int((dvol > 5).sum())}")
    lines.append(f"- QC: scans below Dice 0.80 given review or fail: "
                 f"{sum(r['verdict'] != 'pass' for r in bad)}/{len(bad)}; scans with Dice "
                 f"≥ 0.90 given pass: {sum(r['verdict'] == 'pass' for r in good)}/{len(good)}")
    secs = np.array([r["seconds"] for r in rows])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    lines += ["", f"Seconds per scan: mean {secs.mean():.0f}, max {secs.max():.0f} (target "
              f"≤ 120). Peak resident memory of the process (rendering included): {peak:.2f} "
              f"GB. Machine: {platform.machine()}, {threads} torch threads, CPU profile; the "
              "machine's 2 cores were shared with other work during the run, so seconds are "
              "upper bounds.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3001-3030")
    parser.add_argument("--draws", default="0,1", help="scan draws per study")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "graft_stability")
    parser.add_argument("--renal-sinus", action="store_true",
                        help="grafts with their renal sinus fat (outside the truth)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    jsonl = args.out.with_suffix(".jsonl")
    rows = load_rows(jsonl)
    done = {(r["seed"], r["draw"]) for r in rows}
    revision = _revision()
    for seed in seed_list(args.seeds):
        for draw in (int(d) for d in args.draws.split(",")):
            if (seed, draw) in done:
                continue
            row = run_study(seed, draw, renal_sinus=args.renal_sinus)
            row["commit"] = revision
            rows.append(row)
            append_row(jsonl, row)
            print(f"seed {seed} draw {draw}: Dice {row['dice']:.3f} {row['verdict']} "
                  f"{row['seconds']} s", flush=True)
    args.out.with_suffix(".md").write_text(summary(rows, args.threads))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
