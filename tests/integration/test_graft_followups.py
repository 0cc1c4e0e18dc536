"""Graft follow-ups the node once failed, end to end with real peers (issue 16).

DCMTK storescu sends a study to the node, the node segments it with the real method and
sends SEG + SR to a DCMTK storescp; the test reads what arrived:

* a T2-only graft MRI (no contrast) goes to ``mri-graft-nc``;
* a pelvic CT of a transplant recipient goes to ``ct-kidneys``, which finds the graft in
  its iliac fossa.

Each SEG must hold the graft as "Transplanted kidney" (SCT 70948008) with the patient's
side it lies on, the SR its quality-control verdict, and the node's index the same
verdict and volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from service.imaging.series import load_series
from service.synthetic import (
    CtGrid,
    paper_protocol,
    synthesize_ct,
    write_ct_study,
    write_mr_study,
)
from service.synthetic.ct_anatomy import Transplant
from service.synthetic.ct_phantom import Coverage
from service.synthetic.ct_tissues import CtPhase, CtTissue
from service.writers.sr import QC_SCHEME, QC_VERDICT
from tests.ct_cases import truth_on
from tests.peers import dciodvfy_errors, node_sending_to_storescp, received, storescu
from tests.segs import segment_masks

pytestmark = pytest.mark.integration

GRAFT_CODE = "70948008"
LATERALITY = {"right": "24028007", "left": "7771000"}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def _qc_codes(sr_path: Path) -> list[str]:
    """Values of the SR's quality-control evaluations, in document order."""
    found: list[str] = []

    def walk(items) -> None:  # noqa: ANN001
        for item in items:
            if (item.get("ValueType") == "CODE"
                    and item.ConceptNameCodeSequence[0].CodeValue == QC_VERDICT.value):
                assert item.ConceptCodeSequence[0].CodingSchemeDesignator == QC_SCHEME
                found.append(str(item.ConceptCodeSequence[0].CodeValue))
            walk(item.get("ContentSequence", []))

    walk(dcmread(sr_path).ContentSequence)
    return found


def _round_trip(make_node, sqlite_url: str, files, tmp_path: Path,  # noqa: ANN001
                graft: dict | None = None) -> tuple:
    """Send ``files`` to a node whose destination is a storescp; the SEG and SR paths
    that arrived, and the node (still running) for queries."""
    dest = tmp_path / "dest"
    processing = {} if graft is None else {"graft": graft}
    with node_sending_to_storescp(make_node, sqlite_url, dest, processing=processing) as node:
        sent = storescu(node.dicom_port, list(files))
        assert sent.returncode == 0, sent.stderr
        (seg,) = node.wait_for(lambda: received(dest, SegmentationStorage), 240,
                               "the SEG at storescp")
        (sr,) = node.wait_for(lambda: received(dest, Comprehensive3DSRStorage), 30,
                              "the SR at storescp")
    return node, seg, sr


def _graft_segment(seg_path: Path):  # noqa: ANN202
    """The SEG's one graft segment: (label, side) by its codes."""
    seg = dcmread(seg_path)
    grafts = [s for s in seg.SegmentSequence
              if s.SegmentedPropertyTypeCodeSequence[0].CodeValue == GRAFT_CODE]
    assert len(grafts) == 1, [s.SegmentLabel for s in seg.SegmentSequence]
    (graft,) = grafts
    assert graft.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    modifier = graft.SegmentedPropertyTypeCodeSequence[0] \
        .SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
    side = {v: k for k, v in LATERALITY.items()}[modifier]
    return seg, str(graft.SegmentLabel), side


def _checked_row(node, patient_id: str, seg, sr_path: Path) -> dict:  # noqa: ANN001
    """The index's graft row, consistent with the SEG's and SR's verdict."""
    rows = json.loads(node.cli("volumes", patient_id, "--json").stdout)
    (row,) = [r for r in rows if r["structure"] == "graft"]
    assert row["qc_verdict"] in ("pass", "review", "fail")
    assert _qc_codes(sr_path) == [f"QC-{row['qc_verdict'].upper()}"]
    assert seg.SeriesDescription.startswith(
        "Kidney SEG" if row["qc_verdict"] == "pass" else f"QC {row['qc_verdict'].upper()}")
    return row


def test_t2_only_graft_mri_gets_a_graft_segment_with_its_side_and_verdict(
        make_node, sqlite_url, tmp_path):
    study = write_mr_study(tmp_path / "mr", patient_id="IT-NC-0001", seed=5,
                           include_dce=False)
    # A coarser clustering grid and fewer iterations than the CPU profile's: the method's
    # accuracy is benchmarked (benchmarks.graft_nocontrast_eval), this checks the path.
    node, seg_path, sr_path = _round_trip(
        make_node, sqlite_url, study.files, tmp_path,
        graft={"cpu_working_voxels": 25_000, "cpu_max_iterations": 30})
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    seg, label, side = _graft_segment(seg_path)
    job = node.study(study.study_instance_uid)["jobs"][-1]
    assert job["pipeline"] == "mri-graft-nc" and job["state"] == "succeeded"

    t2 = load_series([p for p in study.files
                      if dcmread(p, stop_before_pixels=True).SeriesInstanceUID
                      == seg.ReferencedSeriesSequence[0].SeriesInstanceUID])
    masks = segment_masks(seg_path, t2.volumes[0])
    truth = sitk.GetArrayFromImage(study.t2_truth_mask) > 0
    dice = _dice(masks[label], truth)
    # The side the truth lies on, from its centroid against the field of view's centre
    # (the phantom's body is centred in it), in patient x (LPS: + is the patient's left).
    row = _checked_row(node, study.patient_id, seg, sr_path)
    assert "no-contrast" in row["flags"]
    # A no-contrast result is not held to an edge at its border (qc.nocontrast_*).
    assert not any("gradient" in reason for reason in row["qc_reasons"])
    print(f"\nT2-only graft: Dice {dice:.3f}, {row['volume_ml']:.1f} ml vs truth "
          f"{study.t2_truth_volume_ml:.1f} ml, side {side}, QC {row['qc_verdict']} "
          f"{row['qc_reasons']}")
    # The no-contrast method is not yet accurate (benchmarks/results/graft_nocontrast.md):
    # what must hold is that a wrong answer is never passed by quality control, and that
    # a graft it found lies on its true side (the phantom's is in the right iliac fossa).
    if dice < 0.7:
        assert row["qc_verdict"] in ("review", "fail"), (dice, row)
        assert not row["in_trend"]
    if dice >= 0.7:
        assert side == "right"


def test_a_t1_dixon_graft_mri_without_t2_gets_a_graft_segment_on_the_in_phase_series(
        make_node, sqlite_url, tmp_path):
    """No contrast and no T2: the four Dixon series only (synthetic seed 140 at the paper's
    resolution, benchmarks.graft_nocontrast_eval --t1-only). The node takes the in-phase
    series as the reference (its grid is the SEG's), the other three as channels."""
    study = write_mr_study(tmp_path / "mr", patient_id="IT-NC-0002", seed=140,
                           protocol=paper_protocol(140), include_dce=False,
                           include_t2=False, dixon=True)
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path)
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    seg, label, side = _graft_segment(seg_path)
    job = node.study(study.study_instance_uid)["jobs"][-1]
    assert job["pipeline"] == "mri-graft-nc" and job["state"] == "succeeded"
    reference = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert reference == study.dixon_series_uids["in"]
    series = load_series([p for p in study.files
                          if dcmread(p, stop_before_pixels=True).SeriesInstanceUID
                          == reference])
    dice = _dice(segment_masks(seg_path, series.volumes[0])[label],
                 sitk.GetArrayFromImage(study.truth_mask) > 0)
    row = _checked_row(node, study.patient_id, seg, sr_path)
    assert {"no-contrast", "t1-only", "multi-contrast"} <= set(row["flags"])
    print(f"\nT1 Dixon only: Dice {dice:.3f}, {row['volume_ml']:.1f} ml vs truth "
          f"{study.truth_volume_ml:.1f} ml, side {side}, QC {row['qc_verdict']} "
          f"{row['qc_reasons']}")
    # As for T2 alone: a wrong answer is never passed, a right one is on its side.
    if dice < 0.7:
        assert row["qc_verdict"] in ("review", "fail"), (dice, row)
    else:
        assert side == "right"



def test_t2_with_dixon_channels_segments_the_graft_where_the_best_seed_is_not_it(
        make_node, sqlite_url, tmp_path):
    """T2 + the four Dixon series, with ``nocontrast_t1`` on (synthetic seed 11 at the
    paper's resolution: seeded by the localisation's best candidate, Dice 0.020; seeded by
    the grown T2 region, 0.821 in benchmarks/results/graft_nocontrast_dixon_seeded)."""
    study = write_mr_study(tmp_path / "mr", patient_id="IT-NC-0004", seed=11,
                           protocol=paper_protocol(11), include_dce=False,
                           lymphocele=True, dixon=True)
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path,
                                          graft={"nocontrast_t1": True})
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    seg, label, side = _graft_segment(seg_path)
    job = node.study(study.study_instance_uid)["jobs"][-1]
    assert job["pipeline"] == "mri-graft-nc" and job["state"] == "succeeded"
    reference = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert reference == study.t2_series_uid
    t2 = load_series([p for p in study.files
                      if dcmread(p, stop_before_pixels=True).SeriesInstanceUID == reference])
    dice = _dice(segment_masks(seg_path, t2.volumes[0])[label],
                 sitk.GetArrayFromImage(study.t2_truth_mask) > 0)
    row = _checked_row(node, study.patient_id, seg, sr_path)
    assert {"no-contrast", "multi-contrast"} <= set(row["flags"])
    assert "t1-only" not in row["flags"]
    print(f"\nT2 + Dixon: Dice {dice:.3f}, {row['volume_ml']:.1f} ml vs truth "
          f"{study.t2_truth_volume_ml:.1f} ml, side {side}, QC {row['qc_verdict']} "
          f"{row['qc_reasons']}")
    assert dice >= 0.7 and side == "right"

def test_a_t2_only_graft_grown_unlike_a_kidney_is_sent_to_review(make_node, sqlite_url,
                                                                  tmp_path):
    # Synthetic seed 12 at the paper's T2 resolution (benchmarks.graft_nocontrast_eval): a
    # fragment of the graft grows to about 68 ml (Dice 0.63), a region unlike a whole
    # kidney. The method's doubt must reach the index, the SEG and the SR as a review.
    study = write_mr_study(tmp_path / "mr", patient_id="IT-NC-0012", seed=12,
                           protocol=paper_protocol(12), include_dce=False)
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path)
    seg, _, _ = _graft_segment(seg_path)
    row = _checked_row(node, study.patient_id, seg, sr_path)
    print(f"\nT2-only seed 12: {row['volume_ml']:.1f} ml, QC {row['qc_verdict']} "
          f"{row['qc_reasons']}")
    assert "not-kidney-shaped" in row["flags"]
    assert row["qc_verdict"] == "review" and not row["in_trend"]
    assert "method flag not-kidney-shaped" in row["qc_reasons"]


def test_pelvic_ct_finds_the_graft_in_its_iliac_fossa(make_node, sqlite_url, tmp_path):
    grid = CtGrid(matrix=128, in_plane_spacing_mm=2.8, slice_spacing_mm=4.0,
                  coverage=Coverage.PELVIS)
    ct = synthesize_ct(1, grid=grid, phase=CtPhase.UNENHANCED,
                       transplant=Transplant(graft_side="left"))
    study = write_ct_study(tmp_path / "ct", ct, patient_id="IT-GCT-0001")
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path)
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []
    seg, label, side = _graft_segment(seg_path)
    assert side == "left"
    # A pelvic field of view holds no native kidney: the graft is the only segment.
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [label]
    volume = load_series(list(study.files)).volumes[0]
    masks = segment_masks(seg_path, volume)
    dice = _dice(masks[label], truth_on(volume.image, study.graft_path) > 0)
    # The volume is parenchyma and collecting system, as reference segmentations draw a
    # kidney: the truth without its sinus fat.
    parenchyma = ct.graft & (ct.tissues != CtTissue.SINUS_FAT)
    truth_ml = float(parenchyma.sum()) * float(np.prod(ct.geometry.spacing_mm)) / 1000.0
    row = _checked_row(node, study.patient_id, seg, sr_path)
    # The node noticed the CT has no contrast and says so on the result.
    assert "unenhanced" in row["flags"]
    print(f"\npelvic graft CT: Dice {dice:.3f}, {row['volume_ml']:.1f} ml vs {truth_ml:.1f}, "
          f"side {side}, QC {row['qc_verdict']} {row['qc_reasons']}")
    assert dice >= 0.8
    assert row["volume_ml"] == pytest.approx(truth_ml, rel=0.10)


def _ct_graft_round_trip(make_node, sqlite_url: str, tmp_path: Path, seed: int,  # noqa: ANN001
                         phase: CtPhase, coverage: Coverage) -> tuple:
    """A synthetic graft CT (256 x 256, 3 mm slices) through the node: the node, the SEG
    and SR paths, the phantom, its graft's Dice against the truth (with its sinus fat)."""
    grid = CtGrid(matrix=256, slice_spacing_mm=3.0, coverage=coverage)
    ct = synthesize_ct(seed, grid=grid, phase=phase, transplant=Transplant())
    study = write_ct_study(tmp_path / "ct", ct, patient_id=f"IT-GCT-{seed:04d}")
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path)
    seg, label, side = _graft_segment(seg_path)
    assert side == ct.graft_side.name.lower()
    volume = load_series(list(study.files)).volumes[0]
    dice = _dice(segment_masks(seg_path, volume)[label],
                 truth_on(volume.image, study.graft_path) > 0)
    return node, seg, sr_path, ct, study, dice


@pytest.mark.parametrize(("seed", "phase", "coverage"), [
    (141, CtPhase.NEPHROGRAPHIC, Coverage.PELVIS),  # against the iliopsoas: was +13 %
    (148, CtPhase.CORTICOMEDULLARY, Coverage.ABDOMEN_PELVIS),  # outer cortex: was -21 %
])
def test_a_contrast_ct_graft_volume_reaches_the_trend_within_10_percent(
        make_node, sqlite_url, tmp_path, seed, phase, coverage):
    """The graft volume the node indexes for the trend, for two grafts whose outline the
    rim drew wrong: one layer of the iliopsoas taken (seed 141), the bright outer cortex
    of a cortico-medullary graft left out (seed 148)."""
    node, _, sr_path, ct, study, dice = _ct_graft_round_trip(
        make_node, sqlite_url, tmp_path, seed, phase, coverage)
    parenchyma = ct.graft & (ct.tissues != CtTissue.SINUS_FAT)
    truth_ml = float(parenchyma.sum()) * float(np.prod(ct.geometry.spacing_mm)) / 1000.0
    rows = json.loads(node.cli("volumes", study.patient_id, "--json").stdout)
    (row,) = [r for r in rows if r["structure"] == "graft"]
    assert f"QC-{row['qc_verdict'].upper()}" in _qc_codes(sr_path)
    print(f"\n{phase} graft CT seed {seed}: Dice {dice:.3f} (truth with its sinus fat), "
          f"{row['volume_ml']:.1f} ml vs {truth_ml:.1f}, QC {row['qc_verdict']} "
          f"{row['qc_reasons']}")
    assert dice >= 0.85
    assert row["volume_ml"] == pytest.approx(truth_ml, rel=0.10)


def test_an_excretory_ct_graft_joined_by_bright_veins_reaches_the_destination(
        make_node, sqlite_url, tmp_path):
    """Excretory pelvic CT (synthetic seed 107, 256 x 256, 3 mm slices): the iliac veins
    are as bright as the graft and joined its region, which was then too irregular to be
    taken for a graft (no result). Scored on its body, the graft is found and sent."""
    node, seg, sr_path, _, study, dice = _ct_graft_round_trip(
        make_node, sqlite_url, tmp_path, 107, CtPhase.EXCRETORY, Coverage.PELVIS)
    row = _checked_row(node, study.patient_id, seg, sr_path)
    print(f"\nexcretory graft CT seed 107: Dice {dice:.3f}, {row['volume_ml']:.1f} ml, "
          f"QC {row['qc_verdict']} {row['qc_reasons']}")
    assert dice >= 0.8


def test_an_abdomen_pelvis_ct_holds_the_graft_and_both_atrophic_natives(
        make_node, sqlite_url, tmp_path):
    """Abdomen-pelvis CT of a transplant recipient (synthetic seed 134, nephrographic):
    the graft and the two end-stage native kidneys each get a segment of their own. The
    native search, made for adult kidneys, misses both natives (41 and 57 ml; best scores
    0.14 and 0.20 < 0.2); beside a graft each side without a native is searched again
    for an atrophic one."""
    grid = CtGrid(matrix=256, slice_spacing_mm=3.0, coverage=Coverage.ABDOMEN_PELVIS)
    ct = synthesize_ct(134, grid=grid, phase=CtPhase.NEPHROGRAPHIC, transplant=Transplant())
    study = write_ct_study(tmp_path / "ct", ct, patient_id="IT-GCT-0134")
    node, seg_path, sr_path = _round_trip(make_node, sqlite_url, study.files, tmp_path)
    assert dciodvfy_errors(seg_path) == []
    seg, label, side = _graft_segment(seg_path)
    assert side == ct.graft_side.name.lower()
    assert sorted(s.SegmentLabel for s in seg.SegmentSequence) == sorted(
        ["Right kidney", "Left kidney", label])
    volume = load_series(list(study.files)).volumes[0]
    masks = segment_masks(seg_path, volume)
    natives = truth_on(volume.image, study.kidneys_path)
    graft = truth_on(volume.image, study.graft_path) > 0
    voxel_ml = float(np.prod(ct.geometry.spacing_mm)) / 1000.0
    parenchyma = ct.kidneys * (ct.tissues != CtTissue.SINUS_FAT)
    rows = json.loads(node.cli("volumes", study.patient_id, "--json").stdout)
    by_structure = {r["structure"]: r for r in rows}
    assert sorted(by_structure) == ["graft", "kidney_left", "kidney_right"]
    for name, value in (("right", 1), ("left", 2)):
        mask = masks[f"{name.capitalize()} kidney"]
        dice = _dice(mask, natives == value)
        truth_ml = float((parenchyma == value).sum()) * voxel_ml
        row = by_structure[f"kidney_{name}"]
        print(f"\natrophic {name} native: Dice {dice:.3f}, {row['volume_ml']:.1f} ml vs "
              f"{truth_ml:.1f}, QC {row['qc_verdict']} {row['qc_reasons']}")
        assert truth_ml < 80.0  # an end-stage kidney, not an adult one
        assert dice >= 0.75
        assert row["volume_ml"] == pytest.approx(truth_ml, rel=0.15)
        assert not (mask & graft).any()
    assert _dice(masks[label], graft) >= 0.85
    # The SR holds one quality-control evaluation per structure, as the index does.
    assert sorted(_qc_codes(sr_path)) == sorted(f"QC-{r['qc_verdict'].upper()}" for r in rows)
