"""Real-data check of the graft method, single-sequence variant, on CHAOS T2-SPIR.

The CHAOS T2-SPIR volumes in ``../shared/data/real/kidney/chaos_t2spir`` are native
(not transplanted) kidneys with manual masks (label 2 right, 3 left), 1.25 x 1.25 x 7.7
mm. The graft method looks for one kidney in a region of interest, so each volume is cut
at its middle column into the patient's right and left halves (by the image direction,
not by the labels) and :func:`models.graft.segment_graft` runs on each half with the T2 as
its only sequence, CPU profile, settings as in the node. Dice, HD95, volume difference,
precision and recall per kidney against the manual mask of that side.

Cases 5 and 8 are held out: they are reported, never used to choose anything.

    python -m benchmarks.chaos_check [--data DIR] [--out benchmarks/results/chaos_t2spir]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.graft_eval import RESULTS, _revision
from models.graft import segment_graft
from models.metrics import dice, hd95, precision, recall, volume_difference_pct
from service.config import GraftSettings
from service.pipeline.mri_graft import device_profile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "kidney" / "chaos_t2spir"
CASES = (1, 2, 3, 5, 8)
HELD_OUT = (5, 8)
LABELS = {"right": 2, "left": 3}


def halves(image: sitk.Image) -> dict[str, tuple[slice, sitk.Image]]:
    """The patient's right and left halves of an axial volume, split at the middle column.

    In SimpleITK's LPS world, +x points to the patient's left: columns whose physical x
    grows with the index run from right to left.
    """
    nx = image.GetSize()[0]
    mid = nx // 2
    first, second = slice(0, mid), slice(mid, nx)
    left_to_right = image.GetDirection()[0] < 0  # index x grows towards the patient's right
    right, left = (second, first) if left_to_right else (first, second)
    return {"right": (right, image[right.start:right.stop, :, :]),
            "left": (left, image[left.start:left.stop, :, :])}


def check(case: int, data: Path) -> list[dict]:
    image = sitk.ReadImage(str(data / f"image_{case}.nii.gz"), sitk.sitkFloat32)
    labels = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(data / f"label_{case}.nii.gz"))))
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    config = device_profile(GraftSettings(), cpu=True)
    rows = []
    for side, (columns, half) in halves(image).items():
        truth = labels == LABELS[side]
        t0 = time.perf_counter()
        pred = np.zeros(truth.shape, dtype=bool)
        error = None
        try:
            result = segment_graft(half, None, config=config, device="cpu")
            pred[:, :, columns] = result.mask
        except ValueError as exc:
            error = str(exc)
        seconds = time.perf_counter() - t0
        rows.append({
            "case": case, "side": side, "held_out": case in HELD_OUT,
            "dice": dice(pred, truth),
            "hd95_mm": hd95(pred, truth, spacing_zyx=spacing) if pred.any() else None,
            "pkvd_pct": abs(volume_difference_pct(pred, truth, spacing_zyx=spacing)),
            "precision": precision(pred, truth), "recall": recall(pred, truth),
            "truth_ml": float(truth.sum() * np.prod(spacing) / 1000),
            "found_ml": float(pred.sum() * np.prod(spacing) / 1000),
            "seconds": round(seconds, 1), "error": error,
        })
    return rows


def summarise(rows: list[dict]) -> str:
    lines = ["| case | side | held out | Dice | HD95 (mm) | PKVD (%) | precision | recall "
             "| truth (ml) | found (ml) | s |", "|" + "---|" * 11]
    for r in rows:
        hd = "n/a" if r["hd95_mm"] is None else f"{r['hd95_mm']:.1f}"
        lines.append(
            f"| {r['case']} | {r['side']} | {'yes' if r['held_out'] else 'no'} "
            f"| {r['dice']:.3f} | {hd} | {r['pkvd_pct']:.1f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['truth_ml']:.1f} | {r['found_ml']:.1f} "
            f"| {r['seconds']:.1f} |" + (f" error: {r['error']}" if r["error"] else ""))
    for name, keep in (("tuning cases 1, 2, 3", False), ("held-out cases 5, 8", True)):
        values = [r["dice"] for r in rows if r["held_out"] is keep]
        if values:
            lines.append(f"\nMean Dice, {name}: {np.mean(values):.3f} (n = {len(values)} kidneys)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos_t2spir")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no CHAOS data at {args.data}", file=sys.stderr)
        return 2
    code = _revision()
    rows = []
    for case in CASES:
        for row in check(case, args.data):
            row["code"] = code
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = summarise(rows)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
