"""How well the quality-control verdict separates good results from bad ones.

Results are made by the node's own methods on generated studies with known truth, good
and deliberately bad, and each gets the node's verdict (:mod:`service.pipeline.quality`
with the default :class:`~service.config.QcSettings`):

* **CT** (``models.ct_kidneys``): synthetic abdominal CTs in the cortico-medullary and
  unenhanced phases, as rendered, with heavy noise added (sigma 45 HU), and cut by the
  field of view (the slices through the lower half of the kidneys dropped);
* **wrong structure** on the same CTs, the failure the MRI method showed on graft studies:
  a kidney-sized strip of the tissue behind the kidney (the shell 3-9 mm outside it,
  posterior half), the largest bowel-fluid loop, a psoas muscle block, a kidney-shaped
  region of the liver;
* **MRI** (``models.graft.segment_graft``, DCE + T2, CPU profile): small synthetic graft
  studies as rendered, with heavy noise (SNR 5), with the T2 moved by 12 mm (motion
  between the series), and a field of view beside the graft with no kidney in it (a
  result there is wrong whatever it is; the method may also refuse).

Each result's Dice against the truth it was meant to find is computed; the targets of
issue 16: ``review`` or ``fail`` for at least 90 % of results with Dice < 0.7, ``pass``
for at least 90 % of results with Dice >= 0.9. The thresholds were set on seeds
``--tune-seeds`` (default 1-3); the table is reported for those and, separately, for
seeds never used to set them (``--seeds``, default 11-16).

    python -m benchmarks.qc_eval [--seeds 11-16] [--tune-seeds 1-3] [--mri-seeds 21-26]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from benchmarks.graft_eval import _revision
from models.ct_kidneys import CtKidneyConfig, segment_ct_kidneys
from models.graft import segment_graft
from models.metrics import dice
from service.config import GraftSettings, QcSettings
from service.pipeline.base import KIDNEY, KIDNEY_LEFT, KIDNEY_RIGHT, PipelineOutput
from service.pipeline.mri_graft import device_profile
from service.pipeline.quality import assess_output
from service.synthetic import CtPhase, RenderSettings, synthesize_ct, synthesize_mr
from service.synthetic.ct_tissues import CtTissue
from service.synthetic.study import geometry_image

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = {"right": (1, KIDNEY_RIGHT), "left": (2, KIDNEY_LEFT)}


@dataclass(frozen=True)
class _Volume:
    """Just what :func:`assess_output` reads of a loaded volume: its image."""

    image: sitk.Image
    datasets: tuple = ()


def _verdict(image: sitk.Image, mask: np.ndarray, spec=KIDNEY,  # noqa: ANN001
             flags: tuple[str, ...] = ()) -> dict:
    output = PipelineOutput(reference=_Volume(image), segments=(spec,),
                            masks=(mask.astype(bool),), volumes_ml={spec.structure: 0.0},
                            flags=flags)
    assessment = assess_output(output, QcSettings())[spec.structure]
    return {"verdict": assessment.verdict.value, "reasons": list(assessment.reasons),
            "signals": dict(assessment.signals)}


def _ct_image(hu: np.ndarray, geometry) -> sitk.Image:  # noqa: ANN001
    return geometry_image(hu.astype(np.float32), geometry)


def _ct_rows(seed: int, phase: CtPhase, variant: str) -> list[dict]:
    ct = synthesize_ct(seed, phase=phase)
    hu = ct.hu.astype(np.float32)
    truth = ct.kidneys
    tissues = ct.tissues
    if variant == "noise":
        hu = hu + np.random.default_rng(seed).normal(0, 45, hu.shape).astype(np.float32)
    image = _ct_image(hu, ct.geometry)
    first = 0
    if variant == "cut":  # the field of view ends through the kidneys' middle
        zs = np.nonzero(truth.any(axis=(1, 2)))[0]
        first = int(zs.mean())
        image = image[:, :, first:]
    found = segment_ct_kidneys(image, CtKidneyConfig())
    rows = []
    for side, (label, spec) in SIDES.items():
        kidney = getattr(found, side)
        want = truth == label
        if kidney is None or not np.asarray(kidney.mask).any():
            continue  # nothing found: no result to judge
        mask = np.zeros(truth.shape, dtype=bool)  # Dice against the whole kidney
        mask[first:] = np.asarray(kidney.mask, dtype=bool)
        rows.append({"case": f"ct-{phase.value}-{variant}-{seed}-{side}", "seed": seed,
                     "kind": f"ct {variant}", "dice": round(dice(mask, want), 4),
                     **_verdict(image, mask[first:], spec)})
    if variant == "plain":
        rows += _wrong_structures(seed, phase, image, truth, tissues, ct.geometry.spacing_mm)
    return rows


def _wrong_structures(seed: int, phase: CtPhase, image: sitk.Image, truth: np.ndarray,
                      tissues: np.ndarray, spacing: tuple[float, float, float]) -> list[dict]:
    """Results a method could have picked instead of the right kidney (Dice ~0)."""
    sampling = tuple(float(s) for s in spacing)
    right = truth == 1
    outside = ndi.distance_transform_edt(~right, sampling=sampling)
    ys = np.nonzero(right.any(axis=(0, 2)))[0]
    back = np.zeros_like(right)
    back[:, int(ys.mean()):, :] = True  # rows grow posteriorly (LPS)
    strip = (outside > 3) & (outside <= 9) & back
    loops, n = ndi.label(tissues == CtTissue.BOWEL_FLUID)
    bowel = loops == (1 + int(np.argmax(np.bincount(loops.ravel())[1:]))) if n else None
    psoas = _kidney_sized(tissues == CtTissue.MUSCLE, right, sampling)
    liver = _kidney_sized(tissues == CtTissue.LIVER, right, sampling)
    rows = []
    for name, mask in (("strip behind kidney", strip), ("bowel loop", bowel),
                       ("muscle block", psoas), ("liver part", liver)):
        if mask is None or mask.sum() < 50:
            continue
        rows.append({"case": f"ct-{phase.value}-wrong-{name.replace(' ', '_')}-{seed}",
                     "seed": seed, "kind": f"wrong: {name}",
                     "dice": round(dice(mask, right), 4), **_verdict(image, mask)})
    return rows


def _kidney_sized(tissue: np.ndarray, kidney: np.ndarray,
                  sampling: tuple[float, ...]) -> np.ndarray | None:
    """The kidney's own shape moved onto the largest part of ``tissue`` (as a method that
    chose the wrong place but kept a kidney's shape would give), clipped to the tissue."""
    labels, n = ndi.label(tissue)
    if not n:
        return None
    part = labels == (1 + int(np.argmax(np.bincount(labels.ravel())[1:])))
    shift = np.round(np.argwhere(part).mean(axis=0) - np.argwhere(kidney).mean(axis=0))
    moved = ndi.shift(kidney.astype(np.uint8), shift, order=0) > 0
    return moved & part


def _mri_rows(seed: int, variant: str) -> list[dict]:
    settings = RenderSettings(dce_snr=5.0, t2_snr=5.0) if variant == "noise" else None
    # "no-kidney": a small field of view on the body's centre, beside the graft.
    where = {"shape": (24, 64, 64), "grid_centre": "body"} if variant == "no-kidney" else {}
    mr = synthesize_mr(seed=seed, settings=settings, **where)
    dce = geometry_image(mr.dce[-1].astype(np.float32), mr.dce_geometry)
    t2 = geometry_image(mr.t2.astype(np.float32), mr.t2_geometry)
    if variant == "motion":
        t2.SetOrigin(tuple(o + d for o, d in zip(t2.GetOrigin(), (12.0, 0.0, 6.0),
                                                  strict=True)))
    config = device_profile(GraftSettings(), cpu=True)
    extra = [geometry_image(p.astype(np.float32), mr.dce_geometry) for p in mr.dce[1:-1]]
    try:
        result = segment_graft(dce, t2, extra_phases=extra, config=config)
    except ValueError as exc:
        return [{"case": f"mri-{variant}-{seed}", "seed": seed, "kind": f"mri {variant}",
                 "dice": None, "verdict": None, "reasons": [f"no result: {exc}"],
                 "signals": {}}]
    mask = result.mask
    return [{"case": f"mri-{variant}-{seed}", "seed": seed, "kind": f"mri {variant}",
             "dice": round(dice(mask, mr.kidney_mask), 4), **_verdict(dce, mask)}]


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def confusion(rows: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Counts by Dice band (< 0.7, 0.7-0.9, >= 0.9) and verdict."""
    table = {band: {"pass": 0, "review": 0, "fail": 0}
             for band in ("dice < 0.7", "0.7 <= dice < 0.9", "dice >= 0.9")}
    for r in rows:
        if r["dice"] is None:
            continue
        band = ("dice < 0.7" if r["dice"] < 0.7 else
                "dice >= 0.9" if r["dice"] >= 0.9 else "0.7 <= dice < 0.9")
        table[band][r["verdict"]] += 1
    return table


def _targets(table: dict[str, dict[str, int]]) -> tuple[float, float]:
    bad, good = table["dice < 0.7"], table["dice >= 0.9"]
    caught = (bad["review"] + bad["fail"]) / max(1, sum(bad.values()))
    passed = good["pass"] / max(1, sum(good.values()))
    return caught, passed


def summarise(rows: list[dict], *, tune: set[int], header: str) -> str:
    lines = [header, ""]
    for name, subset in (("tuning seeds", [r for r in rows if r["seed"] in tune]),
                         ("held-out seeds", [r for r in rows if r["seed"] not in tune]),
                         ("all", rows)):
        table = confusion(subset)
        caught, passed = _targets(table)
        lines += [f"## {name}: {sum(sum(v.values()) for v in table.values())} results", "",
                  "| Dice band | pass | review | fail |", "|---|---|---|---|"]
        lines += [f"| {band} | {c['pass']} | {c['review']} | {c['fail']} |"
                  for band, c in table.items()]
        lines += ["", f"- Dice < 0.7 flagged review or fail: {100 * caught:.0f} % "
                      f"(target >= 90 %): {'PASS' if caught >= 0.9 else 'MISS'}",
                  f"- Dice >= 0.9 given pass: {100 * passed:.0f} % (target >= 90 %): "
                  f"{'PASS' if passed >= 0.9 else 'MISS'}", ""]
    lines += ["## Every result", "", "| case | Dice | verdict | reasons |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['dice']} | {r['verdict']} | "
              f"{'; '.join(r['reasons'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="11-16", help="CT seeds never used for tuning")
    parser.add_argument("--tune-seeds", default="1-3", help="CT seeds the limits were set on")
    parser.add_argument("--mri-seeds", default="21-24")
    parser.add_argument("--out", type=Path, default=RESULTS / "qc_eval")
    args = parser.parse_args(argv)
    tune = set(_seeds(args.tune_seeds))
    rows: list[dict] = []
    started = time.perf_counter()
    for seed in sorted(tune | set(_seeds(args.seeds))):
        for phase in (CtPhase.CORTICOMEDULLARY, CtPhase.UNENHANCED):
            for variant in ("plain", "noise", "cut"):
                t0 = time.perf_counter()
                new = _ct_rows(seed, phase, variant)
                print(f"{phase.value} {variant} seed {seed}: "
                      + ", ".join(f"{r['kind']} {r['dice']} {r['verdict']}" for r in new)
                      + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
                rows += new
    for seed in _seeds(args.mri_seeds):
        for variant in ("plain", "noise", "motion", "no-kidney"):
            t0 = time.perf_counter()
            new = _mri_rows(seed, variant)
            print(f"mri {variant} seed {seed}: "
                  + ", ".join(f"{r['dice']} {r['verdict']}" for r in new)
                  + f" ({time.perf_counter() - t0:.1f} s)", flush=True)
            rows += new
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (f"# Quality control: verdict against Dice\n\ncommit {_revision()}; "
              f"{len(rows)} results; {time.perf_counter() - started:.0f} s in all, "
              f"peak memory {peak_mb:.0f} MB. MRI seeds {args.mri_seeds} are reported with "
              f"the held-out ones (never used to set the limits).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = summarise(rows, tune=tune, header=header)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text[: text.index("## Every result")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
