"""Whole-kidney CT segmentation without weights (issue 6): real and synthetic CT.

Runs :func:`models.ct_kidneys.segment_ct_kidneys` on

* the real TotalSegmentator example CT (``../shared/data/real/kidney/totalseg/example_ct``,
  3 mm, whole trunk, both kidneys complete) against the relabelled reference
  ``derived/example_ct_kidneys_R1_L2.nii.gz`` (1 right, 2 left; model-made by
  TotalSegmentator --fast). Targets: Dice >= 0.85 per side, volume within 10 %;
* the same CT stored feet first, resampled to 0.8 x 0.8 x 5 mm, and with Gaussian noise
  of sigma 25 HU added (robustness checks, no target);
* the real 30-slice slab ``example_ct_sm`` (kidneys cut off at the lower edge: reported,
  no target);
* the real JPEG 2000 slab ``example_ct_dicom`` (upper abdomen, no kidney): both sides must
  come back empty (the node's "no kidney in field of view");
* synthetic CTs (:func:`service.synthetic.ct_phantom.synthesize_ct`, 512 x 512 grids of
  0.6-0.9 mm pixels, 2.5 mm slices, seeds ``--seeds``) in the cortico-medullary phase and,
  on the same seeds, in each phase of ``--phases`` (unenhanced, nephrographic, excretory:
  the same anatomy and noise, other HU), against the synthetic kidneys without the renal
  sinus fat (reference segmentations leave the sinus fat out, and so does the method).

Sides are checked through the masks' physical centres: the right kidney must lie on the
patient's right (DICOM LPS x < 0 relative to the left one).

    python -m benchmarks.ct_kidneys_eval [--seeds 1-10]
        [--phases unenhanced,nephrographic,excretory] [--out benchmarks/results/ct_kidneys]

Exit status 1 when a real-CT target is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from benchmarks.graft_eval import RESULTS, _revision
from models.ct_kidneys import CtKidneys, segment_ct_kidneys
from service.synthetic.ct_phantom import synthesize_ct
from service.synthetic.ct_tissues import CtPhase, CtTissue
from service.synthetic.study import geometry_image

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "kidney"
SIDES = (("right", 1), ("left", 2))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def _centre_x(image: sitk.Image, mask: np.ndarray) -> float:
    k, j, i = np.argwhere(mask).mean(axis=0)
    return image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))[0]


def evaluate(name: str, image: sitk.Image, labels: np.ndarray | None) -> dict[str, Any]:
    """One case: the method's kidneys against ``labels`` (1 right, 2 left) if given."""
    t0 = time.perf_counter()
    found: CtKidneys = segment_ct_kidneys(image)
    seconds = time.perf_counter() - t0
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    row: dict[str, Any] = {"case": name, "seconds": round(seconds, 2),
                           "reasons": found.reasons}
    for side, label in SIDES:
        kidney = getattr(found, side)
        ref = labels == label if labels is not None else None
        entry: dict[str, Any] = {"found": kidney is not None}
        if ref is not None and ref.any():
            entry["reference_ml"] = round(float(ref.sum()) * voxel_ml, 1)
        if kidney is not None:
            entry.update(volume_ml=round(kidney.volume_ml, 1), score=round(kidney.score, 3),
                         touches_edge=kidney.touches_edge)
            if ref is not None and ref.any():
                entry["dice"] = round(_dice(kidney.mask, ref), 3)
                entry["volume_error"] = round(kidney.volume_ml / entry["reference_ml"] - 1, 3)
        row[side] = entry
    if found.right is not None and found.left is not None:
        row["sides_right"] = _centre_x(image, found.right.mask) < _centre_x(image,
                                                                           found.left.mask)
    return row


def real_cases() -> list[tuple[str, sitk.Image, np.ndarray | None]]:
    """The real CTs that are present (the shared data may be absent)."""
    cases = []
    ct = REAL / "totalseg" / "example_ct.nii.gz"
    ref = REAL / "derived" / "example_ct_kidneys_R1_L2.nii.gz"
    if ct.exists() and ref.exists():
        cases.append(("real example_ct", sitk.ReadImage(str(ct), sitk.sitkFloat32),
                      sitk.GetArrayFromImage(sitk.ReadImage(str(ref)))))
        cases.extend(_variants(*cases[-1][1:]))
    slab = REAL / "totalseg" / "example_ct_sm.nii.gz"
    slab_seg = REAL / "totalseg" / "example_seg.nii.gz"
    if slab.exists() and slab_seg.exists():
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(slab_seg)))
        labels = np.where(seg == 2, 1, np.where(seg == 3, 2, 0)).astype(np.uint8)
        cases.append(("real example_ct_sm (kidneys cut off)",
                      sitk.ReadImage(str(slab), sitk.sitkFloat32), labels))
    dicom = REAL / "totalseg" / "example_ct_dicom"
    if dicom.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom)))
        cases.append(("real example_ct_dicom (no kidney)",
                      sitk.Cast(reader.Execute(), sitk.sitkFloat32), None))
    return cases


def _variants(image: sitk.Image, labels: np.ndarray
              ) -> list[tuple[str, sitk.Image, np.ndarray | None]]:
    """The real example altered as other scanners would store it: robustness checks."""
    ref = sitk.GetImageFromArray(labels)
    ref.CopyInformation(image)
    flipped = sitk.Flip(image, [False, False, True])
    out = [("real example_ct, stored feet first", flipped,
            sitk.GetArrayFromImage(sitk.Flip(ref, [False, False, True])))]
    spacing = (0.8, 0.8, 5.0)
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(),
                                                     spacing, strict=True)]
    fine = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         spacing, image.GetDirection(), -1024.0, sitk.sitkFloat32)
    fine_ref = sitk.Resample(ref, fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    out.append(("real example_ct resampled to 0.8 x 0.8 x 5 mm", fine,
                sitk.GetArrayFromImage(fine_ref)))
    noisy = sitk.GetArrayFromImage(image) + np.random.default_rng(0).normal(
        0.0, 25.0, labels.shape).astype(np.float32)
    noisy_image = sitk.GetImageFromArray(noisy)
    noisy_image.CopyInformation(image)
    out.append(("real example_ct + noise sigma 25 HU", noisy_image, labels))
    return out


def synthetic_case(seed: int, phase: CtPhase = CtPhase.CORTICOMEDULLARY
                   ) -> tuple[str, sitk.Image, np.ndarray]:
    ct = synthesize_ct(seed, phase=phase)
    labels = np.where(ct.tissues == CtTissue.SINUS_FAT, 0, ct.kidneys).astype(np.uint8)
    image = sitk.Cast(geometry_image(ct.hu, ct.geometry), sitk.sitkFloat32)
    suffix = "" if phase == CtPhase.CORTICOMEDULLARY else f", {phase}"
    return f"synthetic seed {seed}{suffix}", image, labels


def _phase_of(case: str) -> str:
    return case.split(", ")[1] if ", " in case else str(CtPhase.CORTICOMEDULLARY)


def _cell(entry: dict[str, Any]) -> str:
    if not entry["found"]:
        return "not found"
    text = f"{entry['volume_ml']:.0f} ml"
    if "dice" in entry:
        text = f"Dice {entry['dice']:.3f}, {text} vs {entry['reference_ml']:.0f} " \
               f"({entry['volume_error']:+.0%})"
    return text + (", touches edge" if entry.get("touches_edge") else "")


def markdown(run: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Whole kidneys on CT without weights (issue 6)", "",
        f"Code {run['revision']}, {run['platform']}; command `{run['command']}`.",
        "Reference kidneys: real CT, TotalSegmentator --fast (model-made); synthetic, the "
        "phantom's kidneys without the renal sinus fat.", "",
        "| case | right | left | sides right | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {_cell(r['right'])} | {_cell(r['left'])} | "
                     f"{r.get('sides_right', '–')} | {r['seconds']:.1f} |")
    synthetic = [r for r in rows if r["case"].startswith("synthetic")]
    if synthetic:
        lines += ["", "Synthetic kidneys per contrast phase (a kidney not found counts "
                      "as Dice 0 in the mean):", "",
                  "| phase | kidneys | not found | mean Dice | min Dice | volume error "
                  "within 10 % |", "|---|---|---|---|---|---|"]
    for phase in dict.fromkeys(_phase_of(r["case"]) for r in synthetic):
        entries = [r[s] for r in synthetic if _phase_of(r["case"]) == phase
                   for s, _ in SIDES]
        dices = [e.get("dice", 0.0) for e in entries]
        close = sum(abs(e.get("volume_error", 1.0)) <= 0.10 for e in entries)
        lines.append(f"| {phase} | {len(entries)} | "
                     f"{sum(not e['found'] for e in entries)} | {np.mean(dices):.3f} | "
                     f"{min(dices):.3f} | {close} |")
    lines += ["", "Targets (real example_ct): Dice >= 0.85 per side and volume within 10 %; "
                  "the no-kidney slab finds nothing.", ""]
    for check, ok in run["targets"].items():
        lines.append(f"- {check}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines) + "\n"


def targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for r in rows:
        if r["case"] == "real example_ct":
            for side, _ in SIDES:
                e = r[side]
                out[f"real {side} Dice >= 0.85"] = e.get("dice", 0.0) >= 0.85
                out[f"real {side} volume within 10 %"] = abs(e.get("volume_error", 1.0)) <= 0.10
            out["real sides right"] = bool(r.get("sides_right"))
        if r["case"].startswith("real example_ct_dicom"):
            out["no kidney found in the no-kidney slab"] = not (r["right"]["found"]
                                                                or r["left"]["found"])
    return out


def _seeds(text: str) -> list[int]:
    """Seeds from ``"1-10"``, ``"4"`` or a comma-separated list of either."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-10", help="synthetic seeds, e.g. 1-10")
    parser.add_argument("--phases", default="unenhanced,nephrographic,excretory",
                        help="contrast phases run on the same seeds besides the "
                             "cortico-medullary one (comma-separated; '' for none)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ct_kidneys")
    args = parser.parse_args(argv)
    phases = [CtPhase.CORTICOMEDULLARY, *(CtPhase(p) for p in args.phases.split(",") if p)]
    rows = []
    for name, image, labels in real_cases():
        rows.append(evaluate(name, image, labels))
        print(json.dumps(rows[-1]), flush=True)
    for phase in phases:
        for seed in _seeds(args.seeds):
            rows.append(evaluate(*synthetic_case(seed, phase)))
            print(json.dumps(rows[-1]), flush=True)
    run = {"revision": _revision(), "platform": platform.platform(),
           "command": "python -m benchmarks.ct_kidneys_eval " + " ".join(argv or sys.argv[1:]),
           "targets": targets(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"run": run, "cases": rows}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(run, rows))
    print(markdown(run, rows))
    return 0 if all(run["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
