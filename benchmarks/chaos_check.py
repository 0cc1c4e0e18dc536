"""Real-data check of the MRI methods without contrast on CHAOS T2-SPIR (native kidneys).

The CHAOS T2-SPIR volumes in ``../shared/data/real/kidney/chaos_t2spir`` are native
(not transplanted) kidneys with manual masks (label 2 right, 3 left), 1.25 x 1.25 x 7.7
mm. Methods (``--method``):

* ``native`` (default): :func:`models.mr_native.segment_native_kidneys` on the whole
  volume: the pair of kidneys localised by shape and context, each grown by a seeded
  watershed; the mask of each side is compared with that side's manual mask;
* ``graft-halves``: the graft method's single-sequence variant
  (:func:`models.graft.segment_graft`, T2 as its only sequence, CPU profile), on each
  half of the volume cut at its middle column (the paper's brightest-peak region of
  interest; the first check of issue 3).

Dice, HD95, volume difference, precision and recall per kidney; seconds per case (per
half for ``graft-halves``). Cases 5 and 8 are held out: they are reported, never used to
choose anything.

    python -m benchmarks.chaos_check [--method native] [--data DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks.graft_eval import RESULTS, _revision
from benchmarks.qc_eval import _verdict
from models.graft import segment_graft
from models.metrics import dice, hd95, precision, recall, volume_difference_pct
from models.mr_native import segment_native_kidneys
from service.config import GraftSettings
from service.pipeline.base import KIDNEY_LEFT, KIDNEY_RIGHT
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


@dataclass
class _Side:
    pred: np.ndarray
    error: str | None
    seconds: float
    flags: tuple[str, ...] = ()
    pair_likeness: float | None = None


def _graft_halves(image: sitk.Image, shape: tuple[int, ...]) -> dict[str, _Side]:
    config = device_profile(GraftSettings(), cpu=True)
    out = {}
    for side, (columns, half) in halves(image).items():
        t0 = time.perf_counter()
        pred = np.zeros(shape, dtype=bool)
        error = None
        try:
            pred[:, :, columns] = segment_graft(half, None, config=config, device="cpu").mask
        except ValueError as exc:
            error = str(exc)
        out[side] = _Side(pred, error, time.perf_counter() - t0)
    return out


def _native(image: sitk.Image, shape: tuple[int, ...]) -> dict[str, _Side]:
    t0 = time.perf_counter()
    flags: tuple[str, ...] = ("no-contrast",)
    pair = None
    try:
        result = segment_native_kidneys(image)
        masks, error, pair = result.masks, None, result.pair_likeness
        flags += result.doubts()
    except ValueError as exc:
        masks, error = {}, str(exc)
    seconds = time.perf_counter() - t0
    return {side: _Side(masks.get(side, np.zeros(shape, dtype=bool)),
                        error or (None if side in masks else "side not found"), seconds,
                        flags, pair)
            for side in LABELS}


METHODS = {"native": _native, "graft-halves": _graft_halves}


def _qc(image: sitk.Image, mask: np.ndarray, side: str, flags: tuple[str, ...]) -> dict:
    """The node's QC verdict of a native kidney without contrast (as mri-kidneys-nc)."""
    side_flags = tuple(f if f == "no-contrast" else f"{side}-kidney-{f}" for f in flags)
    judged = _verdict(image, mask, spec=KIDNEY_RIGHT if side == "right" else KIDNEY_LEFT,
                      flags=side_flags)
    return {"verdict": judged["verdict"], "reasons": judged["reasons"]}


def check(case: int, data: Path, method: str = "native") -> list[dict]:
    image = sitk.ReadImage(str(data / f"image_{case}.nii.gz"), sitk.sitkFloat32)
    labels = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(data / f"label_{case}.nii.gz"))))
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    rows = []
    for side, found in METHODS[method](image, labels.shape).items():
        pred, error, seconds, flags = found.pred, found.error, found.seconds, found.flags
        truth = labels == LABELS[side]
        rows.append({
            "case": case, "side": side, "held_out": case in HELD_OUT, "method": method,
            "dice": dice(pred, truth),
            "hd95_mm": hd95(pred, truth, spacing_zyx=spacing) if pred.any() else None,
            "pkvd_pct": abs(volume_difference_pct(pred, truth, spacing_zyx=spacing)),
            "precision": precision(pred, truth), "recall": recall(pred, truth),
            "truth_ml": float(truth.sum() * np.prod(spacing) / 1000),
            "found_ml": float(pred.sum() * np.prod(spacing) / 1000),
            "seconds": round(seconds, 1), "error": error,
            "flags": list(flags), "pair_likeness": found.pair_likeness,
            **(_qc(image, pred, side, flags) if pred.any() else {}),
        })
    return rows


def summarise(rows: list[dict]) -> str:
    lines = ["| case | side | held out | Dice | HD95 (mm) | PKVD (%) | precision | recall "
             "| truth (ml) | found (ml) | s | QC |", "|" + "---|" * 12]
    for r in rows:
        hd = "n/a" if r["hd95_mm"] is None else f"{r['hd95_mm']:.1f}"
        lines.append(
            f"| {r['case']} | {r['side']} | {'yes' if r['held_out'] else 'no'} "
            f"| {r['dice']:.3f} | {hd} | {r['pkvd_pct']:.1f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['truth_ml']:.1f} | {r['found_ml']:.1f} "
            f"| {r['seconds']:.1f} | {r.get('verdict', 'n/a')} "
            f"{'; '.join(r.get('reasons', []))} |"
            + (f" error: {r['error']}" if r["error"] else ""))
    for name, keep in (("tuning cases 1, 2, 3", False), ("held-out cases 5, 8", True)):
        values = [r["dice"] for r in rows if r["held_out"] is keep]
        if values:
            lines.append(f"\nMean Dice, {name}: {np.mean(values):.3f} (n = {len(values)} kidneys)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(METHODS), default="native")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/chaos_t2spir[_graft-halves]")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no CHAOS data at {args.data}", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = RESULTS / ("chaos_t2spir" if args.method == "native"
                              else f"chaos_t2spir_{args.method}")
    code = _revision()
    rows = []
    for case in CASES:
        for row in check(case, args.data, args.method):
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
