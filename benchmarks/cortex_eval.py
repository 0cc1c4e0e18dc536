"""Issue 6's cortex targets on synthetic contrast CT: ensemble vs single models, and time.

Training cases and test cases are synthetic cortico-medullary CT studies
(:func:`service.synthetic.ct_phantom.synthesize_ct`, realistic 512 x 512 grids with 2.5 mm
slices) drawn from disjoint seed ranges. The training cases are written as the NIfTI
triples ``kidney-node train cortex`` reads and the seven networks (5 fold + 2 on all data)
are trained by :func:`service.cortex.train_cortex` (Adam 1e-4, batches of 10). The model
folder is loaded back through its manifest check.

On every test case the kidneys are found, then the ensemble runs as the node runs it
(:func:`models.cortex_ensemble.segment_cortex`: every coronal slice through each kidney,
each model, largest 2D component per model, pixelwise median, threshold, back in the CT
grid). Which kidneys place the crops is ``--kidneys``:

- ``method`` (default): the node's CT path. The kidney label image (1 right, 2 left, on
  the CT grid) is built from :func:`models.ct_kidneys.segment_ct_kidneys` on the test CT;
  a side the method did not find gets no cortex (its cortex Dice counts as 0) and the case
  records that side as not found, with the method's reason. The method's kidney Dice per
  side is recorded against the synthetic kidney truth without the renal sinus fat (the
  method leaves the sinus fat out by design).
- ``truth``: the ground-truth kidney masks of the phantom, which measures the cortex
  ensemble alone.

Each single model is scored through the same function and the same kidney labels given
that model alone (its largest component, thresholded). Also reported: the pipeline's
ceiling, the ground-truth cortex pushed through the crop (placed by the same kidney
labels), largest-component and uncrop steps as if it were a perfect model's output.

Targets (issue 6): ensemble cortex Dice >= 0.87; ensemble at least as good as its best
single model (mean Dice over the test cases); <= 60 s per study on the CPU, the CT
already in memory: the kidney method plus the ensemble (all 7 models, both kidneys),
each timed separately and the total checked (with ``truth`` the total is the ensemble).

Threads: torch runs with ``--threads`` (default 1). On the shared 2-core machine, with one
core busy elsewhere, two torch threads made a width-8 training step about 10x slower
(6 s instead of 0.6 s per batch of 10: the threads wait on each other); with both cores
free, 2 threads are faster for inference. The thread count is recorded with the results.

    python -m benchmarks.cortex_eval [--train-cases 12] [--test-cases 4] [--epochs 4]
        [--width 8] [--seed 0] [--threads 1] [--kidneys {method,truth}]
        [--models DIR] [--save-models DIR] [--out PATH]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from benchmarks.graft_eval import RESULTS, _revision
from models.cortex_data import (
    crop_around,
    kidney_regions,
    physical_bounds,
    resample_to_crop,
    uncrop,
)
from models.cortex_ensemble import aggregate, segment_cortex
from models.ct_kidneys import segment_ct_kidneys
from models.metrics import dice
from service.cortex import load_cortex_ensemble, train_cortex
from service.synthetic.ct_phantom import SyntheticCT, synthesize_ct
from service.synthetic.ct_study import write_ct_nifti_case
from service.synthetic.ct_tissues import CtTissue
from service.synthetic.study import geometry_image

DICE_TARGET = 0.87
SECONDS_TARGET = 60.0
TRAIN_SEED_BASE = 100_000
TEST_SEED_BASE = 200_000
SEEDS_PER_RUN = 1_000
SIDES = {1: "right", 2: "left"}
KIDNEY_SOURCES = {
    "method": "kidney method (models.ct_kidneys.segment_ct_kidneys) on the test CT",
    "truth": "ground-truth kidney masks of the phantom",
}


def case_seeds(seed: int, train_cases: int, test_cases: int) -> tuple[list[int], list[int]]:
    """Phantom seeds of the training and test cases: two disjoint ranges per run seed."""
    if not (0 < train_cases <= SEEDS_PER_RUN and 0 < test_cases <= SEEDS_PER_RUN):
        raise ValueError(f"1..{SEEDS_PER_RUN} training and test cases expected")
    train = [TRAIN_SEED_BASE + seed * SEEDS_PER_RUN + i for i in range(train_cases)]
    test = [TEST_SEED_BASE + seed * SEEDS_PER_RUN + i for i in range(test_cases)]
    assert not set(train) & set(test)
    return train, test


def write_training_cases(folder: Path, seeds: list[int]) -> None:
    """Render each training seed and write its NIfTI triple into ``folder``."""
    for s in seeds:
        write_ct_nifti_case(folder, f"synth{s}", synthesize_ct(s))


def ceiling_dice(ct: sitk.Image, kidneys: sitk.Image, truth: np.ndarray,
                 margin_mm: float = 3.0) -> float:
    """Dice of the ground truth pushed through crop, largest component, uncrop and margin."""
    truth01 = sitk.Cast(geometry_like(truth.astype(np.uint8), ct), sitk.sitkUInt8)
    out = np.zeros(truth.shape, dtype=bool)
    for region in kidney_regions(kidneys, kidneys):
        crop = crop_around(*physical_bounds(region), grid=ct)
        median, _ = aggregate(resample_to_crop(truth01, crop, label=True)[None]
                              .astype(np.float32))
        dist = sitk.SignedMaurerDistanceMap(region, insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=True)
        out |= (uncrop(median, crop, ct) > 0.5) & (sitk.GetArrayViewFromImage(dist)
                                                   <= margin_mm)
    return dice(out, truth)


def geometry_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """``array`` as an image on ``reference``'s grid."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def kidney_truth(phantom: SyntheticCT, label: int) -> np.ndarray:
    """The phantom's kidney ``label`` without its renal sinus fat (what the method segments)."""
    return (phantom.kidneys == label) & (phantom.tissues != CtTissue.SINUS_FAT)


def method_kidneys(ct: sitk.Image) -> tuple[np.ndarray, dict[str, str]]:
    """Kidney labels (1 right, 2 left) of the kidney method on ``ct``'s grid, and the reasons
    given for the sides it did not find."""
    found = segment_ct_kidneys(ct)
    labels = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    for label, side in SIDES.items():
        kidney = getattr(found, side)
        if kidney is not None:
            labels[kidney.mask & (labels == 0)] = label
    return labels, dict(found.reasons)


def evaluate_case(seed: int, models: list[torch.nn.Module],
                  kidney_source: str = "method") -> dict[str, Any]:
    """Kidneys, ensemble and single-model cortex Dice on one test case, and the times."""
    phantom: SyntheticCT = synthesize_ct(seed)
    ct = geometry_image(phantom.hu, phantom.geometry)
    truth = phantom.cortex > 0
    t0 = time.perf_counter()
    if kidney_source == "method":
        kidney_labels, reasons = method_kidneys(ct)
    elif kidney_source == "truth":
        kidney_labels, reasons = phantom.kidneys.astype(np.uint8), {}
    else:
        raise ValueError(f"unknown kidney source {kidney_source!r}")
    kidneys = geometry_like(kidney_labels, ct)
    t1 = time.perf_counter()
    labels = segment_cortex(ct, kidneys, models)
    t2 = time.perf_counter()
    per_side = {side: round(dice(labels == side, phantom.cortex == side), 4)
                for side in (1, 2) if (phantom.cortex == side).any()}
    kidney_dice = {name: (round(dice(kidney_labels == label, kidney_truth(phantom, label)), 4)
                          if kidney_source == "method" else None)
                   for label, name in SIDES.items()}
    singles = [dice(segment_cortex(ct, kidneys, [m]) > 0, truth) for m in models]
    ml = float(np.prod(phantom.geometry.spacing_mm)) / 1000
    return {"kind": "case", "seed": seed, "kidneys": kidney_source,
            "kidneys_found": {name: bool((kidney_labels == label).any())
                              for label, name in SIDES.items()},
            "kidney_reasons": reasons,
            "kidney_dice": kidney_dice,
            "kidney_ml": {name: round(float((kidney_labels == label).sum()) * ml, 1)
                          for label, name in SIDES.items()},
            "kidney_ml_truth_no_sinus_fat": {
                name: round(float(kidney_truth(phantom, label).sum()) * ml, 1)
                for label, name in SIDES.items()},
            "ensemble_dice": round(dice(labels > 0, truth), 4),
            "ensemble_dice_by_side": {SIDES[k]: v for k, v in per_side.items()},
            "single_dice": [round(d, 4) for d in singles],
            "ceiling_dice": round(ceiling_dice(ct, kidneys, truth), 4),
            "kidney_seconds": round(t1 - t0, 2) if kidney_source == "method" else None,
            "inference_seconds": round(t2 - t1, 2),
            "total_seconds": round(t2 - t0, 2),
            "cortex_ml_truth": round(float(truth.sum()) * ml, 1),
            "cortex_ml_ensemble": round(float((labels > 0).sum()) * ml, 1)}


def summarise(cases: list[dict[str, Any]], manifest: dict[str, Any],
              train_seconds: float | None) -> dict[str, Any]:
    """Means over the test cases and the three target checks."""
    ens = statistics.fmean(c["ensemble_dice"] for c in cases)
    singles = [statistics.fmean(c["single_dice"][m] for c in cases)
               for m in range(len(cases[0]["single_dice"]))]
    seconds = [c["inference_seconds"] for c in cases]
    totals = [c["total_seconds"] for c in cases]
    kidney_seconds = [c["kidney_seconds"] for c in cases if c["kidney_seconds"] is not None]
    names = [m["name"] for m in manifest["models"]]
    best = int(np.argmax(singles))
    checks = {
        f"ensemble cortex Dice (mean) >= {DICE_TARGET}": ens >= DICE_TARGET,
        "ensemble >= best single model (mean Dice)": ens >= singles[best],
        f"kidneys + ensemble <= {SECONDS_TARGET:g} s per study (slowest case)":
            max(totals) <= SECONDS_TARGET,
    }
    kidney_dice = {side: [c["kidney_dice"][side] for c in cases
                          if c["kidney_dice"][side] is not None] for side in SIDES.values()}
    return {"kind": "summary", "ensemble_mean_dice": round(ens, 4),
            "ensemble_min_dice": round(min(c["ensemble_dice"] for c in cases), 4),
            "single_mean_dice": dict(zip(names, (round(s, 4) for s in singles), strict=True)),
            "best_single": names[best], "best_single_mean_dice": round(singles[best], 4),
            "ceiling_mean_dice": round(statistics.fmean(c["ceiling_dice"] for c in cases), 4),
            "inference_seconds_mean": round(statistics.fmean(seconds), 2),
            "inference_seconds_max": round(max(seconds), 2),
            "kidney_seconds_mean": (round(statistics.fmean(kidney_seconds), 2)
                                    if kidney_seconds else None),
            "kidney_seconds_max": round(max(kidney_seconds), 2) if kidney_seconds else None,
            "total_seconds_mean": round(statistics.fmean(totals), 2),
            "total_seconds_max": round(max(totals), 2),
            "kidney_mean_dice": {side: round(statistics.fmean(v), 4) if v else None
                                 for side, v in kidney_dice.items()},
            "kidneys_not_found": sum(not found for c in cases
                                     for found in c["kidneys_found"].values()),
            "train_seconds": None if train_seconds is None else round(train_seconds, 1),
            "checks": checks}


def markdown(run: dict[str, Any], cases: list[dict[str, Any]], summary: dict[str, Any],
             manifest: dict[str, Any]) -> str:
    """The results page."""
    names = [m["name"] for m in manifest["models"]]
    roles = {m["name"]: m["role"] + ("" if m["fold"] is None else f" {m['fold']}")
             for m in manifest["models"]}
    train = manifest["training"]
    method = run["kidneys"] == "method"
    lines = [
        f"# Cortex ensemble on synthetic contrast CT (code {run['code']})", "",
        f"Run seed {run['seed']}: {run['train_cases']} training cases "
        f"({train.get('slices')} coronal slices), {run['test_cases']} test cases, disjoint "
        f"phantom seeds; width {manifest['architecture']['width']}, "
        f"{train.get('epochs')} epochs per network, Adam lr {train.get('lr')}, batches of "
        f"{train.get('batch_size')}, no pre-training; {run['host']}, torch "
        f"{run['torch']} on {run['device']} with {run['threads']} threads.", "",
        f"**Kidneys used to place the crops: {run['kidney_crops']}** "
        f"(`--kidneys {run['kidneys']}`)"
        + (". These figures are the node's CT path: kidney method, then cortex ensemble."
           if method else ". These figures measure the cortex ensemble alone, not the "
           "node's CT path.")
        + " Cortex Dice is computed in 3D on the CT grid (both kidneys, binary cortex). "
        "Single models go through the same inference and the same kidney labels with the "
        "model alone (largest component, threshold). *Ceiling*: the ground-truth cortex "
        "pushed through crop (placed by the same kidney labels), largest component and "
        "uncrop.", "",
        "| test case | ensemble | " + " | ".join(f"{n} ({roles[n]})" for n in names)
        + " | ceiling |",
        "|" + "---|" * (len(names) + 3)]
    for c in cases:
        lines.append(f"| {c['seed']} | **{c['ensemble_dice']:.4f}** | "
                     + " | ".join(f"{d:.4f}" for d in c["single_dice"])
                     + f" | {c['ceiling_dice']:.4f} |")
    lines.append(f"| mean | **{summary['ensemble_mean_dice']:.4f}** | "
                 + " | ".join(f"{summary['single_mean_dice'][n]:.4f}" for n in names)
                 + f" | {summary['ceiling_mean_dice']:.4f} |")
    lines += ["", "Kidneys and time per study (the CT already in memory). Kidney Dice: the "
              "kidney labels used against the phantom's kidneys without the renal sinus fat "
              + ("(method)." if method else "(not computed for ground-truth kidneys)."), "",
              "| test case | kidney Dice right | kidney Dice left | kidneys found | "
              "kidney method (s) | ensemble, 7 models (s) | total (s) |",
              "|---|---|---|---|---|---|---|"]
    for c in cases:
        missing = [f"{side} not found ({c['kidney_reasons'].get(side, 'no reason given')})"
                   for side, ok in c["kidneys_found"].items() if not ok]
        lines.append(f"| {c['seed']} | {_num(c['kidney_dice']['right'])} | "
                     f"{_num(c['kidney_dice']['left'])} | "
                     f"{'; '.join(missing) or 'both'} | {_num(c['kidney_seconds'], 1)} | "
                     f"{c['inference_seconds']:.1f} | **{c['total_seconds']:.1f}** |")
    lines.append(f"| mean | {_num(summary['kidney_mean_dice']['right'])} | "
                 f"{_num(summary['kidney_mean_dice']['left'])} | "
                 f"{summary['kidneys_not_found']} missed | "
                 f"{_num(summary['kidney_seconds_mean'], 1)} | "
                 f"{summary['inference_seconds_mean']:.1f} | "
                 f"**{summary['total_seconds_mean']:.1f}** |")
    val = [f"{m['name']} {m.get('validation_dice', m.get('training_dice')):.3f}"
           + ("" if "validation_dice" in m else " (training)") for m in manifest["models"]]
    seconds = summary["train_seconds"]
    if seconds is not None:
        trained = f"{seconds:.0f} s"
    elif train.get("seconds") is not None:
        trained = (f"not run here (--models); {train['seconds']:.0f} s when the folder was "
                   "trained (its manifest)")
    else:
        trained = "not run (--models)"
    lines += ["", f"- training: {trained}"
              f" for the 7 networks including slice extraction; last-epoch Dice on the "
              f"held-out fold (slices, threshold 0.5): {', '.join(val)}",
              f"- best single model: {summary['best_single']} "
              f"({summary['best_single_mean_dice']:.4f})",
              "- per study: "
              + ("kidney method not run (ground-truth kidneys)"
                 if summary["kidney_seconds_mean"] is None else
                 f"kidney method mean {summary['kidney_seconds_mean']:.1f} s, slowest "
                 f"{summary['kidney_seconds_max']:.1f} s")
              + "; ensemble (all models, "
              f"both kidneys) mean {summary['inference_seconds_mean']:.1f} s, slowest "
              f"{summary['inference_seconds_max']:.1f} s; total mean "
              f"{summary['total_seconds_mean']:.1f} s, slowest "
              f"{summary['total_seconds_max']:.1f} s (target <= {SECONDS_TARGET:g} s)", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in summary["checks"].items()]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals, or a dash when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: see the module docstring)")
    parser.add_argument("--kidneys", choices=sorted(KIDNEY_SOURCES), default="method",
                        help="kidney labels that place the crops: the kidney method on the "
                        "test CT (default) or the phantom's ground truth")
    parser.add_argument("--models", type=Path, help="evaluate this model folder, no training")
    parser.add_argument("--save-models", type=Path, help="keep the trained model folder here")
    parser.add_argument("--out", type=Path, default=RESULTS / "cortex_eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(args.threads)
    code = _revision()  # at the start: the tree may change while the run goes on
    train_seeds, test_seeds = case_seeds(args.seed, args.train_cases, args.test_cases)
    with tempfile.TemporaryDirectory(prefix="kn-cortex-eval-") as tmp:
        train_seconds = None
        model_dir = args.models
        if model_dir is None:
            model_dir = args.save_models or Path(tmp) / "model"
            t0 = time.perf_counter()
            write_training_cases(Path(tmp) / "train", train_seeds)
            print(f"{len(train_seeds)} training cases written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            t0 = time.perf_counter()
            train_cortex(Path(tmp) / "train", model_dir, epochs=args.epochs, width=args.width,
                         seed=args.seed)
            train_seconds = time.perf_counter() - t0
        ensemble = load_cortex_ensemble(model_dir)
        cases = []
        for s in test_seeds:
            cases.append(evaluate_case(s, ensemble.models, args.kidneys))
            c = cases[-1]
            print(f"test case {s}: kidneys {args.kidneys} "
                  + " ".join(f"{k} {_num(v)}" for k, v in c["kidney_dice"].items())
                  + f", ensemble {c['ensemble_dice']:.4f}, single "
                  + " ".join(f"{d:.4f}" for d in c["single_dice"])
                  + f", ceiling {c['ceiling_dice']:.4f}, kidneys "
                  f"{_num(c['kidney_seconds'], 1)} s + ensemble "
                  f"{c['inference_seconds']:.1f} s = {c['total_seconds']:.1f} s", flush=True)
    manifest = ensemble.manifest
    summary = summarise(cases, manifest, train_seconds)
    if args.models is not None:  # the training cases are the model folder's
        names = [c["case"] for c in manifest["training"].get("cases", [])]
        train_seeds = [int(n[5:]) if n.startswith("synth") and n[5:].isdigit() else n
                       for n in names]
    run = {"kind": "run", "code": code, "seed": args.seed,
           "train_cases": len(train_seeds), "test_cases": args.test_cases,
           "train_seeds": train_seeds, "test_seeds": test_seeds,
           "width": ensemble.spec.width, "epochs": manifest["training"].get("epochs"),
           "slices": manifest["training"].get("slices"),
           "models": str(args.models) if args.models else None,
           "kidneys": args.kidneys, "kidney_crops": KIDNEY_SOURCES[args.kidneys],
           "host": f"{platform.machine()} {platform.node()}", "torch": torch.__version__,
           "device": "cpu", "threads": torch.get_num_threads(),
           "validation": {m["name"]: m.get("validation_dice", m.get("training_dice"))
                          for m in manifest["models"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".jsonl"), "w") as f:
        for row in (run, *cases, summary):
            f.write(json.dumps(row) + "\n")
    text = markdown(run, cases, summary, manifest)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
