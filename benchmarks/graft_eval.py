"""Table 1 of the MRI paper on synthetic studies, its ablations, time and peak memory.

Every study is a paper-protocol synthetic study (:func:`service.synthetic.paper_protocol`:
DCE 512 x 512 x 64-88 at 0.78-0.94 x 1.9-2.5 mm, T2 at 5-6 mm, rigid + deformable
misalignment), rendered in memory: the method is measured, not the DICOM round trip. All
methods see the same N4-corrected DCE volume (``--dce-volume``, default the pipeline's)
and the same region of interest (§2.1):

* ``otsu`` and ``watershed``: the classical baselines of :mod:`models.otsu` and
  :mod:`models.watershed`, inside the ROI;
* ``2d-dce``, ``3d-dce``, ``2d-dce-t2``, ``3d-dce-t2``: :func:`models.graft.segment_graft`
  without or with the registered T2; ``2d``: the 2D method of [12] as the paper compares
  it, one network fitted per slice and the kidney chosen on every slice; ``3d``: the
  paper's method.

Metrics against the ground truth in the DCE grid (§5): Dice, HD95 (mm), PKVD (%),
precision, recall; plus seconds per study and the process's peak resident memory.

The methods of one study share the same inputs, so the N4 bias fields and the T2 -> DCE
registration are computed once per study and served to the next method from a memo
(:class:`SharedPreprocessing`); a method served a memoised result is charged the seconds
that result took to compute, so its ``seconds`` are what it would take alone.
Rows are appended to a JSON-lines file as they are computed (a long run can be resumed:
rows already there are skipped), then summarised as mean ± std per method in a Markdown
table. Examples::

    python -m benchmarks.graft_eval table1 --studies 20
    python -m benchmarks.graft_eval lambda --studies 2
    python -m benchmarks.graft_eval arch --studies 2
    python -m benchmarks.graft_eval dce-volume --studies 3
    python -m benchmarks.graft_eval resolution --studies 2   # accuracy cost of the CPU grid
    python -m benchmarks.graft_eval table1 --studies 8 --methods 3d-dce-t2 --out /tmp/x.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from models import detect_roi, graft, preprocess, segment_otsu, segment_watershed
from models.dce import combine_phases, network_inputs
from models.graft import GraftConfig, segment_graft
from models.metrics import dice, hd95, precision, recall, volume_difference_pct
from models.preprocess import n4_correct
from models.roi import RegionOfInterest
from service.config import GraftSettings
from service.pipeline.mri_graft import device_profile
from service.synthetic import paper_protocol, synthesize_mr
from service.synthetic.study import geometry_image

RESULTS = Path(__file__).resolve().parent / "results"
TABLE1 = ("otsu", "watershed", "2d-dce", "3d-dce", "2d-dce-t2", "3d-dce-t2")
LAMBDAS = (0.01, 0.1, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
ARCHS = ((2, 30), (2, 50), (3, 30), (3, 50), (4, 30), (4, 50), (5, 20))
#: Clustering grids of the resolution experiment (voxel caps; 80,000 is the CPU profile).
VOXEL_CAPS = (20_000, 80_000, 320_000)
METRICS = ("dice", "hd95_mm", "pkvd_pct", "precision", "recall", "seconds")


@dataclass(frozen=True)
class Case:
    seed: int
    dce: sitk.Image
    extra: tuple[sitk.Image, ...]
    t2: sitk.Image
    truth: np.ndarray
    spacing_zyx: tuple[float, float, float]


def render(seed: int, dce_volume: str) -> Case:
    """A paper-protocol study: the DCE volume the pipeline would use, T2, truth."""
    mr = synthesize_mr(seed=seed, protocol=paper_protocol(seed))
    arr = combine_phases(list(mr.dce), how=dce_volume)
    dce = geometry_image(arr, mr.dce_geometry)
    extra = tuple(geometry_image(mr.dce[i], mr.dce_geometry)
                  for i in network_inputs(len(mr.dce), how=dce_volume))
    t2 = geometry_image(mr.t2, mr.t2_geometry)
    step, row, col = mr.dce_geometry.spacing_mm
    return Case(seed, dce, extra, t2, mr.kidney_mask.astype(bool), (step, row, col))


def _scores(pred: np.ndarray, case: Case) -> dict[str, float]:
    return {
        "dice": dice(pred, case.truth),
        "hd95_mm": hd95(pred, case.truth, spacing_zyx=case.spacing_zyx) if pred.any()
        else float("nan"),
        "pkvd_pct": abs(volume_difference_pct(pred, case.truth, spacing_zyx=case.spacing_zyx)),
        "precision": precision(pred, case.truth),
        "recall": recall(pred, case.truth),
    }


def _baseline(kind: str) -> Callable[[Case], dict]:
    def run(case: Case) -> dict:
        # N4 and the ROI are redone per baseline on purpose: each method's seconds include
        # its own preprocessing, as they would in the node.
        volume = sitk.GetArrayFromImage(n4_correct(sitk.Cast(case.dce, sitk.sitkFloat32)))
        roi = detect_roi(volume, spacing_zyx=case.spacing_zyx)
        if kind == "otsu":
            return {"mask": segment_otsu(volume, roi)}
        return {"mask": segment_watershed(volume, roi, spacing_zyx=case.spacing_zyx)}
    return run


def _graft(config: GraftConfig, use_t2: bool) -> Callable[[Case], dict]:
    def run(case: Case) -> dict:
        result = segment_graft(case.dce, case.t2 if use_t2 else None, extra_phases=case.extra,
                               config=config, device=_device())
        c = result.clustering
        return {"mask": result.mask, "iterations": c.iterations, "stopped_by": str(c.stopped_by),
                "n_labels": c.n_labels, "roi_shape": list(result.roi.shape),
                "working_shape": list(result.working_shape),
                "working_spacing_mm": [round(s, 3) for s in result.working_spacing_zyx],
                "timings_s": {k: round(v, 2) for k, v in result.timings_s.items()}}
    return run


class SharedPreprocessing:
    """Memoise N4 and the registration across the methods of one study, timing them.

    While active (a context manager), :func:`models.preprocess.n4_bias_field` (which
    :func:`~models.preprocess.n4_correct` calls) and the registration used by
    :mod:`models.graft` are served from a memo keyed by the content of their inputs.
    ``charged`` accumulates the compute seconds of every memoised result served.
    """

    def __init__(self) -> None:
        self.memo: dict[tuple, tuple[object, float]] = {}
        self.charged = 0.0
        self._undo: list[tuple[object, str, object]] = []

    @staticmethod
    def _key(value: object) -> object:
        if isinstance(value, sitk.Image):
            digest = hashlib.blake2b(np.ascontiguousarray(
                sitk.GetArrayViewFromImage(value)).tobytes(), digest_size=16).hexdigest()
            return (digest, value.GetSpacing(), value.GetOrigin(), value.GetDirection())
        if isinstance(value, RegionOfInterest):
            return (value.start, value.stop)
        return value

    def _wrap(self, function: Callable) -> Callable:
        def memoised(*args: object, **kwargs: object) -> object:
            key = (function.__name__, *map(self._key, args),
                   *sorted((k, self._key(v)) for k, v in kwargs.items()))
            if key in self.memo:
                value, seconds = self.memo[key]
                self.charged += seconds
                return value
            t0 = time.perf_counter()
            value = function(*args, **kwargs)
            self.memo[key] = (value, time.perf_counter() - t0)
            return value
        return memoised

    def __enter__(self) -> SharedPreprocessing:
        for module, name in ((preprocess, "n4_bias_field"), (graft, "n4_bias_field"),
                             (graft, "register_t2_to_dce")):
            original = getattr(module, name)
            self._undo.append((module, name, original))
            setattr(module, name, self._wrap(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, original in reversed(self._undo):
            setattr(module, name, original)
        self._undo.clear()
        self.memo.clear()


def _revision() -> str:
    """The git commit the run measures, ``+dirty`` when the tree has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    return head + ("+dirty" if dirty.strip() else "")


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def methods(experiment: str, config: GraftConfig) -> dict[str, Callable[[Case], dict]]:
    """The methods an experiment compares, by name."""
    def variant(dims: int, **clustering: float) -> GraftConfig:
        return replace(config, clustering=replace(config.clustering, spatial_dims=dims,
                                                  **clustering))

    if experiment == "table1":
        return {"otsu": _baseline("otsu"), "watershed": _baseline("watershed"),
                "2d-dce": _graft(variant(2), False), "3d-dce": _graft(variant(3), False),
                "2d-dce-t2": _graft(variant(2), True), "3d-dce-t2": _graft(variant(3), True)}
    if experiment == "lambda":
        return {f"{name} lambda={lam:g}": _graft(variant(3, lam=lam), t2)
                for lam in LAMBDAS for name, t2 in (("3d-dce", False), ("3d-dce-t2", True))}
    if experiment == "arch":
        return {f"{name} N={n} p={p}": _graft(variant(3, n_blocks=n, channels=p), t2)
                for n, p in ARCHS for name, t2 in (("3d-dce", False), ("3d-dce-t2", True))}
    if experiment == "resolution":
        return {f"3d-dce-t2 voxels={cap}": _graft(replace(variant(3), working_voxels=cap), True)
                for cap in VOXEL_CAPS}
    if experiment == "dce-volume":
        return {"3d-dce-t2": _graft(variant(3), True)}
    raise ValueError(f"unknown experiment {experiment!r}")


def _done(path: Path) -> set[tuple[int, str, str]]:
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["seed"], r["method"], r["dce_volume"]) for r in rows}


def run(experiment: str, seeds: Iterable[int], out: Path, *, dce_volumes: list[str],
        config: GraftConfig, only: Iterable[str] = ()) -> None:
    """Append one JSON row per (study, method, DCE volume) not yet in ``out``.

    ``only`` restricts the experiment to the methods named (all when empty).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    table = methods(experiment, config)
    only = list(only)
    unknown = sorted(set(only) - set(table))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} for {experiment!r}: {sorted(table)}")
    if only:
        table = {name: table[name] for name in only}
    code = _revision()
    for seed in seeds:
        for dce_volume in dce_volumes:
            todo = [m for m in table if (seed, m, dce_volume) not in done]
            if not todo:
                continue
            t0 = time.perf_counter()
            case = render(seed, dce_volume)
            print(f"seed {seed} ({dce_volume}): rendered in {time.perf_counter() - t0:.1f} s, "
                  f"truth {case.truth.sum() * np.prod(case.spacing_zyx) / 1000:.1f} ml, "
                  f"DCE {case.dce.GetSize()}", flush=True)
            with SharedPreprocessing() as shared:
                for name in todo:
                    _one(name, table[name], case, shared, out=out, code=code,
                         dce_volume=dce_volume)


def _one(name: str, method: Callable[[Case], dict], case: Case, shared: SharedPreprocessing,
         *, out: Path, code: str, dce_volume: str) -> None:
    """Run one method on one study and append its row."""
    seed = case.seed
    shared.charged = 0.0
    t0 = time.perf_counter()
    try:
        extra = method(case)
        error = None
    except ValueError as exc:  # the method found no kidney: a failure, scored 0
        extra, error = {"mask": np.zeros_like(case.truth)}, str(exc)
    seconds = time.perf_counter() - t0 + shared.charged
    row = {"seed": seed, "method": name, "dce_volume": dce_volume, "code": code,
           **_scores(extra.pop("mask"), case), "seconds": round(seconds, 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                / 1024, 1),
           "error": error, **extra}
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"  {name:28s} Dice {row['dice']:.3f}  HD95 {row['hd95_mm']:.2f} mm  "
          f"PKVD {row['pkvd_pct']:.1f} %  {seconds:.1f} s"
          + (f"  error: {error}" if error else ""), flush=True)


def summarise(path: Path) -> str:
    """Markdown table: mean ± std of every metric per (method, DCE volume)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["dce_volume"]), []).append(r)
    head = ("| method | DCE volume | n | Dice | HD95 (mm) | PKVD (%) | precision | recall "
            "| seconds | failures |")
    lines = [head, "|" + "---|" * 10]
    order = {name: k for k, name in enumerate(TABLE1)}
    for (method, volume), rs in sorted(groups.items(),
                                       key=lambda g: order.get(g[0][0], len(order))):
        cells = []
        for key in METRICS:
            values = [r[key] for r in rs if r[key] == r[key]]  # NaN (empty mask) left out
            if not values:
                cells.append("n/a")
                continue
            scale = 100.0 if key in ("dice", "precision", "recall") else 1.0
            std = statistics.pstdev(values) * scale if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values) * scale:.2f} ± {std:.2f}")
        failures = sum(1 for r in rs if r.get("error"))
        lines.append(f"| {method} | {volume} | {len(rs)} | " + " | ".join(cells)
                     + f" | {failures} |")
    peak = max(r["peak_rss_mb"] for r in rows)
    lines.append("")
    lines.append(f"Dice, precision and recall in %. Peak resident memory of the process "
                 f"(rendering included): {peak / 1024:.2f} GB. Machine: {platform.machine()}, "
                 f"{torch.get_num_threads()} torch threads, device {_device()}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment",
                        choices=("table1", "lambda", "arch", "dce-volume", "resolution"))
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--dce-volume", nargs="+", default=None,
                        help="DCE input(s): phases, last, mean-post, max-post (default: the "
                             "pipeline's; the dce-volume experiment runs all four)")
    parser.add_argument("--full-resolution", action="store_true",
                        help="cluster at native resolution even on the CPU")
    parser.add_argument("--methods", nargs="+", default=(),
                        help="run only these methods of the experiment")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = GraftSettings()
    volumes = args.dce_volume or (["phases", "last", "mean-post", "max-post"]
                                  if args.experiment == "dce-volume" else [settings.dce_volume])
    out = args.out or RESULTS / f"graft_{args.experiment}.jsonl"
    seeds = range(args.first_seed, args.first_seed + args.studies)
    run(args.experiment, seeds, out, dce_volumes=volumes,
        config=device_profile(settings, cpu=_device() == "cpu" and not args.full_resolution),
        only=args.methods)
    table = summarise(out)
    out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
