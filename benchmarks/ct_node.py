"""Issue 6 on real CT through the node: kidneys per side, and a CT with no kidney in view.

A node on embedded defaults (SQLite index and archive in a temporary folder; the test
config's quick trigger; device ``--device``; the cortex ensemble only with
``--cortex-models``) receives, by DCMTK ``dcmsend`` (each file in its own transfer
syntax):

1. ``derived/example_ct_dicom_from_nifti/``: the real pixels of TotalSegmentator's
   ``example_ct.nii.gz`` (3 mm isotropic, whole trunk) as a CT series whose geometry equals
   the NIfTI's. The node's stored SEG is read back (each frame placed by its own source
   reference) and scored per side against ``derived/example_ct_kidneys_R1_L2.nii.gz``
   (1 = right, 2 = left; a TotalSegmentator mask, model-made, not manual): Dice, the
   volume the node stored against the reference volume (about 193 ml right, 137 ml left),
   and the sides (each segment's centroid nearest its own reference kidney's, the right
   kidney on the patient's right, LPS x < 0 of the left).
2. ``totalseg/example_ct_dicom/``: a real Siemens CT slab of the upper abdomen (JPEG 2000
   lossless) with no kidney in it: its job must succeed with the outcome "no kidney in
   field of view" and store no result. Its anonymisation emptied the SOP Class, SOP
   Instance, Study and Series Instance UIDs (no node can store such files: the node
   answers 0xC000), so the files are sent from a copy with those UIDs put back: the SOP
   Class and Instance UIDs of the file meta, study and series UIDs derived from the
   folder's name. The pixel data is copied as it is (still JPEG 2000).

3. A synthetic contrast CT of the size a clinical thin-slice study has
   (:func:`service.synthetic.synthesize_ct`, seed ``--thin-seed``: 512 x 512 pixels of
   0.6-0.9 mm, 1 mm slices over the whole abdomen, about 330 slices), written as a DICOM
   series and sent the same way: the real CT above is small (112 slices of 3 mm), so this
   is the study the time target is checked on as well. Kidney Dice per side against the
   phantom's kidneys without the renal sinus fat, and cortex Dice per side against its
   cortex when the ensemble ran.

The jobs' timings (``segment_s`` above all) are recorded; the time target (with
``--cortex-models``) holds when both kidney studies are segmented in ``--max-segment-s``.
Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/results/ct_node``).

    python -m benchmarks.ct_node [--device cpu] [--cortex-models DIR] [--thin-seed 3]
        [--out PATH]

Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from sqlalchemy import create_engine, select

from benchmarks.graft_eval import RESULTS, _revision
from models.metrics import dice
from service.db.tables import Instance
from service.dicom.uids import derived_uid
from service.imaging.series import LoadedVolume, load_series
from service.synthetic.ct_phantom import Coverage, CtGrid, CtTissue, synthesize_ct
from service.synthetic.ct_study import write_ct_study
from service.synthetic.study import geometry_image
from tests.conftest import free_port
from tests.peers import NodeProcess, dcmtk, node_config, peer_env
from tests.segs import segment_masks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "kidney"
KIDNEY_CT = DATA / "derived" / "example_ct_dicom_from_nifti"
KIDNEY_REFERENCE = DATA / "derived" / "example_ct_kidneys_R1_L2.nii.gz"
NO_KIDNEY_CT = DATA / "totalseg" / "example_ct_dicom"
#: Segment label -> (reference label, structure the volume is stored under).
SIDES = {"Right kidney": (1, "kidney_right"), "Left kidney": (2, "kidney_left")}
NO_KIDNEY = "no kidney in field of view"


def reidentified_copy(folder: Path, out_dir: Path) -> Path:
    """Copies of ``folder``'s files with their emptied identifying UIDs put back."""
    out_dir.mkdir(parents=True)
    study = derived_uid("benchmarks.ct_node", folder.name, "study")
    series = derived_uid("benchmarks.ct_node", folder.name, "series")
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = dcmread(path)
        ds.SOPClassUID = ds.SOPClassUID or ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = ds.StudyInstanceUID or study
        ds.SeriesInstanceUID = ds.SeriesInstanceUID or series
        ds.PatientID = ds.PatientID or "TSEXCTDICOM"
        ds.save_as(out_dir / path.name, enforce_file_format=True)
    return out_dir


def start_node(work: Path, *, device: str, cortex_models: Path | None) -> NodeProcess:
    """A node on embedded defaults in ``work`` (the test config's quick trigger)."""
    config = node_config(workdir=work, database_url=f"sqlite:///{work / 'index.sqlite'}",
                         dicom_port=free_port(), http_port=free_port())
    config["processing"] = {"device": device,
                            "ct": {"cortex_models_dir": str(cortex_models)
                                   if cortex_models else None}}
    node = NodeProcess(workdir=work, config=config, log_path=work / "node.log")
    node.start()
    return node


def send_and_wait(node: NodeProcess, folder: Path, timeout: float) -> dict[str, Any]:
    """Send every file of ``folder``; the study's summary once its job has ended."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    study_uid = str(load_series(files).volumes[0].datasets[0].StudyInstanceUID)
    t0 = time.perf_counter()
    # DCMTK's dcmsend proposing each file's own transfer syntax only: DCMTK cannot
    # decompress JPEG 2000, and storescu's proposals let the node pick an uncompressed one.
    sent = subprocess.run([dcmtk("dcmsend"), "--decompress-never", "-aet", "BENCHSCU", "-aec",
                           node.config["dicom"]["ae_title"], "127.0.0.1", str(node.dicom_port),
                           *map(str, files)], env=peer_env(), capture_output=True, text=True,
                          timeout=600)
    if sent.returncode:
        raise RuntimeError(f"dcmsend failed on {folder}: {sent.stderr[-2000:]}")

    def ended() -> dict[str, Any] | None:
        summary = node.study(study_uid)
        jobs = (summary or {}).get("jobs", [])
        return summary if jobs and jobs[-1]["state"] in ("succeeded", "failed") else None

    summary = node.wait_for(ended, timeout, f"the job of {folder.name}")
    summary["instances"] = len(files)
    summary["round_trip_seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def stored_seg(node: NodeProcess, seg_uid: str) -> Path:
    """Path of the SEG the node stored in its archive."""
    engine = create_engine(node.config["database"]["url"])
    with engine.connect() as conn:
        rel = conn.scalar(select(Instance.path).where(Instance.sop_instance_uid == seg_uid))
    engine.dispose()
    if rel is None:
        raise RuntimeError(f"SEG {seg_uid} is not in the node's index")
    return Path(node.config["storage"]["root"]) / rel


def centroid_mm(volume: LoadedVolume, mask: np.ndarray) -> np.ndarray:
    """Patient position (LPS, mm) of a (z, y, x) mask's centroid."""
    z, y, x = np.argwhere(mask).mean(axis=0)
    return np.asarray(volume.image.TransformContinuousIndexToPhysicalPoint((x, y, z)))


def score_kidneys(summary: dict[str, Any], seg_path: Path) -> dict[str, Any]:
    """Dice, volumes and sides of the node's SEG against the reference mask."""
    volume = load_series(sorted(p for p in KIDNEY_CT.rglob("*") if p.is_file())).volumes[0]
    reference_image = sitk.ReadImage(str(KIDNEY_REFERENCE))
    reference = sitk.GetArrayFromImage(sitk.Resample(
        reference_image, volume.image, sitk.Transform(), sitk.sitkNearestNeighbor))
    voxel_ml = float(np.prod(volume.image.GetSpacing())) / 1000.0
    masks = segment_masks(seg_path, volume)
    stored = {r["structure"]: r for r in summary["results"]}
    sides: dict[str, Any] = {}
    for label, (value, structure) in SIDES.items():
        truth = reference == value
        row = stored.get(structure)
        found = masks.get(label)
        entry: dict[str, Any] = {"reference_ml": round(float(truth.sum()) * voxel_ml, 1),
                                 "found": found is not None and row is not None}
        if entry["found"]:
            own = np.linalg.norm(centroid_mm(volume, found) - centroid_mm(volume, truth))
            other = np.linalg.norm(centroid_mm(volume, found)
                                   - centroid_mm(volume, reference == 3 - value))
            entry.update(
                dice=round(dice(found, truth), 4), node_ml=round(row["volume_ml"], 1),
                volume_error_pct=round(100.0 * (row["volume_ml"] / entry["reference_ml"] - 1),
                                       1),
                centroid_x_mm=round(float(centroid_mm(volume, found)[0]), 1),
                centroid_error_mm=round(float(own), 1), nearest_own_side=bool(own < other),
                flags=row["flags"])
        sides[label.split()[0].lower()] = entry
    return sides


def thin_study(seed: int, out_dir: Path) -> tuple[Path, Path, Path]:
    """A 1 mm synthetic contrast CT of the abdomen written as DICOM; the series folder and
    its kidney (without sinus fat) and cortex truths as NIfTI (1 right, 2 left)."""
    ct = synthesize_ct(seed, grid=CtGrid(slice_spacing_mm=1.0, coverage=Coverage.ABDOMEN))
    study = write_ct_study(out_dir, ct, patient_id=f"BENCHTHIN{seed}")
    kidneys = np.where(ct.tissues == CtTissue.SINUS_FAT, 0, ct.kidneys).astype(np.uint8)
    kidneys_path = out_dir / "truth_kidneys_without_sinus_fat.nii.gz"
    sitk.WriteImage(geometry_image(kidneys, ct.geometry), str(kidneys_path))
    return study.files[0].parent, kidneys_path, study.cortex_path


def score_thin(summary: dict[str, Any], seg_path: Path, series: Path, kidneys_path: Path,
               cortex_path: Path) -> dict[str, Any]:
    """Kidney and cortex Dice per side of the node's SEG on the synthetic study."""
    volume = load_series(sorted(p for p in series.iterdir() if p.is_file())).volumes[0]

    def truth(path: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(path)), volume.image,
                                                    sitk.Transform(),
                                                    sitk.sitkNearestNeighbor))

    kidneys, cortex = truth(kidneys_path), truth(cortex_path)
    masks = segment_masks(seg_path, volume)
    out: dict[str, Any] = {"slices": len(volume.datasets),
                           "spacing_mm": [round(v, 3) for v in volume.image.GetSpacing()],
                           "flags": sorted({f for r in summary["results"] for f in r["flags"]})}
    for side, value in (("right", 1), ("left", 2)):
        name = side.capitalize()
        kidney = masks.get(f"{name} kidney")
        out[f"{side}_kidney_dice"] = (round(dice(kidney, kidneys == value), 4)
                                      if kidney is not None else None)
        found = masks.get(f"{name} renal cortex")
        out[f"{side}_cortex_dice"] = (round(dice(found, cortex == value), 4)
                                      if found is not None else None)
    return out


def checks(sides: dict[str, Any], no_kidney: dict[str, Any], *, min_dice: float,
           max_volume_error_pct: float) -> dict[str, bool]:
    """The benchmark's pass/fail lines."""
    out = {}
    for side, entry in sides.items():
        out[f"{side} kidney found"] = entry["found"]
        out[f"{side} kidney Dice >= {min_dice}"] = entry.get("dice", 0.0) >= min_dice
        out[f"{side} kidney volume within {max_volume_error_pct:g} %"] = \
            abs(entry.get("volume_error_pct", 1e9)) <= max_volume_error_pct
        out[f"{side} kidney on its own side"] = entry.get("nearest_own_side", False)
    if sides["right"]["found"] and sides["left"]["found"]:
        out["right kidney on the patient's right (LPS x below the left's)"] = \
            sides["right"]["centroid_x_mm"] < sides["left"]["centroid_x_mm"]
    job = no_kidney["job"]
    out["no-kidney CT: job succeeded"] = job["state"] == "succeeded"
    out[f"no-kidney CT: outcome '{NO_KIDNEY}'"] = (job["outcome"] or "").startswith(NO_KIDNEY)
    out["no-kidney CT: no result stored"] = no_kidney["results"] == 0
    return out


def markdown(run: dict[str, Any], sides: dict[str, Any], kidney: dict[str, Any],
             no_kidney: dict[str, Any], thin: dict[str, Any], verdicts: dict[str, bool]
             ) -> str:
    """The results page."""
    lines = [
        f"# CT kidneys through the node on real CT (code {run['code']})", "",
        f"{run['host']}, device {run['device']}, cortex ensemble: "
        f"{run['cortex_models'] or 'none'}; trigger stable age {run['stable_age_seconds']} s."
        " Reference: TotalSegmentator's mask of the same CT (model-made), relabelled "
        "1 = right, 2 = left.", "",
        "| side | Dice | node ml | reference ml | volume error | centroid error (mm) | flags |",
        "|---|---|---|---|---|---|---|"]
    for side, e in sides.items():
        if not e["found"]:
            lines.append(f"| {side} | not found | | {e['reference_ml']} | | | |")
            continue
        lines.append(f"| {side} | {e['dice']:.3f} | {e['node_ml']} | {e['reference_ml']} | "
                     f"{e['volume_error_pct']:+.1f} % | {e['centroid_error_mm']} | "
                     f"{', '.join(e['flags']) or '-'} |")
    lines += [
        "", f"- kidney CT ({kidney['instances']} instances): job {kidney['job']['state']}, "
        f"timings {kidney['job']['timings']}, round trip {kidney['round_trip_seconds']} s",
        f"- no-kidney CT ({no_kidney['instances']} instances, JPEG 2000): job "
        f"{no_kidney['job']['state']}, outcome \"{no_kidney['job']['outcome']}\", timings "
        f"{no_kidney['job']['timings']}",
        f"- thin-slice synthetic CT (seed {thin['seed']}, {thin['instances']} instances, "
        f"spacing {thin.get('spacing_mm')} mm): job {thin['job']['state']}, timings "
        f"{thin['job']['timings']}, round trip {thin['round_trip_seconds']} s; kidney Dice "
        f"right {thin.get('right_kidney_dice')}, left {thin.get('left_kidney_dice')}; cortex "
        f"Dice right {thin.get('right_cortex_dice')}, left {thin.get('left_cortex_dice')}; "
        f"flags {', '.join(thin.get('flags', [])) or '-'}", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in verdicts.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="processing.device of the node")
    parser.add_argument("--cortex-models", type=Path,
                        help="processing.ct.cortex_models_dir (default: none)")
    # Issue 6's targets on this CT: Dice >= 0.85 per side, volume within 10 %, and
    # <= 60 s of segmentation per study on this CPU (checked with --cortex-models only:
    # the target is for all 7 networks).
    parser.add_argument("--min-dice", type=float, default=0.85)
    parser.add_argument("--max-volume-error-pct", type=float, default=10.0)
    parser.add_argument("--max-segment-s", type=float, default=60.0)
    parser.add_argument("--thin-seed", type=int, default=3,
                        help="phantom seed of the thin-slice synthetic study")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per job")
    parser.add_argument("--out", type=Path, default=RESULTS / "ct_node")
    args = parser.parse_args(argv)
    for path in (KIDNEY_CT, KIDNEY_REFERENCE, NO_KIDNEY_CT):
        if not path.exists():
            print(f"missing {path}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="kn-ct-node-") as tmp:
        node = start_node(Path(tmp), device=args.device, cortex_models=args.cortex_models)
        try:
            kidney = send_and_wait(node, KIDNEY_CT, args.timeout)
            kidney_job = kidney["jobs"][-1]
            if kidney_job["state"] != "succeeded" or not kidney["results"]:
                print(f"kidney CT: job {kidney_job['state']}: {kidney_job['error']} "
                      f"{kidney_job['outcome']}", file=sys.stderr)
                sides = {s.split()[0].lower(): {"found": False, "reference_ml": None}
                         for s in SIDES}
            else:
                seg_uid = kidney["results"][0]["seg_sop_instance_uid"]
                sides = score_kidneys(kidney, stored_seg(node, seg_uid))
            no_kidney = send_and_wait(
                node, reidentified_copy(NO_KIDNEY_CT, Path(tmp) / NO_KIDNEY_CT.name),
                args.timeout)
            series, kidneys_path, cortex_path = thin_study(args.thin_seed, Path(tmp) / "thin")
            thin = send_and_wait(node, series, args.timeout)
            thin_summary: dict[str, Any] = {
                "seed": args.thin_seed, "instances": thin["instances"],
                "job": thin["jobs"][-1], "round_trip_seconds": thin["round_trip_seconds"]}
            if thin["results"]:
                thin_summary.update(score_thin(
                    thin, stored_seg(node, thin["results"][0]["seg_sop_instance_uid"]),
                    series, kidneys_path, cortex_path))
        finally:
            node.stop()
        stable = node.config["scheduler"]["stable_age_seconds"]
    kidney_summary = {"instances": kidney["instances"], "job": kidney["jobs"][-1],
                      "round_trip_seconds": kidney["round_trip_seconds"]}
    no_kidney_summary = {"instances": no_kidney["instances"], "job": no_kidney["jobs"][-1],
                         "results": len(no_kidney["results"]),
                         "round_trip_seconds": no_kidney["round_trip_seconds"]}
    verdicts = checks(sides, no_kidney_summary, min_dice=args.min_dice,
                      max_volume_error_pct=args.max_volume_error_pct)
    verdicts["thin-slice synthetic CT: both kidneys found"] = (
        thin_summary.get("right_kidney_dice") is not None
        and thin_summary.get("left_kidney_dice") is not None)
    times = [(summary["job"].get("timings") or {}).get("segment_s")
             for summary in (kidney_summary, thin_summary)]
    if args.cortex_models is not None:
        verdicts[f"real and thin-slice CT each segmented (kidneys + 7-network cortex) in <= "
                 f"{args.max_segment_s:g} s"] = all(t is not None and t <= args.max_segment_s
                                                    for t in times)
    run = {"code": _revision(), "host": f"{platform.machine()} {platform.node()}",
           "device": args.device, "stable_age_seconds": stable,
           "cortex_models": str(args.cortex_models) if args.cortex_models else None}
    report = {"run": run, "kidney_ct": {**kidney_summary, "sides": sides},
              "no_kidney_ct": no_kidney_summary, "thin_ct": thin_summary, "checks": verdicts}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(run, sides, kidney_summary, no_kidney_summary, thin_summary, verdicts)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
