"""The quality-control verdict in what the node sends: the SEG and the SR say it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from scipy import ndimage as ndi

from models.qc import Verdict
from service.config import QcSettings
from service.imaging.series import group_by_series, load_series
from service.pipeline.base import KIDNEY, PipelineOutput
from service.pipeline.quality import Assessment, assess_output
from service.synthetic import write_mr_study
from service.writers.seg import SegOptions, build_segmentation
from service.writers.sr import QC_VALUES, QC_VERDICT, SrOptions, build_volume_report
from tests.peers import dciodvfy_errors


def _output(tmp_path, *, strip: bool) -> PipelineOutput:
    """The true kidney of a small synthetic study, or a thin strip of it."""
    study = write_mr_study(tmp_path / "in", seed=3, include_t2=False)  # kidney in view
    (paths,) = group_by_series(study.files).values()
    phase = load_series(paths).volumes[-1]
    truth = sitk.Resample(study.truth_mask, phase.image, sitk.Transform(),
                          sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    if strip:  # two columns of the kidney only: a sheet, as the MRI method once chose
        columns = np.nonzero(labels.any(axis=(0, 1)))[0]
        labels[..., : columns[len(columns) // 2]] = 0
        labels[..., columns[len(columns) // 2] + 2:] = 0
    return PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                          volumes_ml={"kidney": 1.0})


def _objects(output, quality):
    seg = build_segmentation(
        output, pipeline_name="test", pipeline_version="1",
        family=codes.cid7162.MorphologicalOperations, quality=quality,
        options=SegOptions("1.2.3.1", "1.2.3.2", 9901, "KIDNEY^NODE", "0.1.0"))
    sr = build_volume_report(output, seg, pipeline_name="test", pipeline_version="1",
                             quality=quality,
                             options=SrOptions("1.2.3.3", "1.2.3.4", 9902, "1.2.3.5", "0.1.0"))
    return seg, sr


def _evaluations(sr) -> list[tuple[str, str]]:
    found = []

    def walk(items):
        for item in items:
            if item.get("ValueType") == "CODE":
                found.append((item.ConceptNameCodeSequence[0].CodeValue,
                              item.ConceptCodeSequence[0].CodeValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return [f for f in found if f[0] == QC_VERDICT.value]


def test_the_true_kidney_passes_and_a_strip_fails_in_seg_and_sr(tmp_path):
    good = _output(tmp_path / "good", strip=False)
    good_qc = assess_output(good, QcSettings(volume_ml_review=(1.0, 500.0)))
    assert good_qc["kidney"].verdict is Verdict.PASS, good_qc["kidney"]
    seg, sr = _objects(good, good_qc)
    assert seg.SeriesDescription == "Kidney SEG (test)"
    assert "SegmentDescription" not in seg.SegmentSequence[0]
    assert _evaluations(sr) == [(QC_VERDICT.value, QC_VALUES[Verdict.PASS].value)]

    bad = _output(tmp_path / "bad", strip=True)
    bad_qc = assess_output(bad, QcSettings(volume_ml_review=(1.0, 500.0)))
    assert bad_qc["kidney"].verdict is Verdict.FAIL
    assert any("thickness" in r for r in bad_qc["kidney"].reasons)
    seg, sr = _objects(bad, bad_qc)
    assert seg.SeriesDescription.startswith("QC FAIL - Kidney SEG")
    assert seg.SegmentSequence[0].SegmentDescription.startswith("QC FAIL: ")
    assert sr.SeriesDescription.startswith("QC FAIL - ")
    assert _evaluations(sr) == [(QC_VERDICT.value, QC_VALUES[Verdict.FAIL].value)]
    for obj, name in ((seg, "seg"), (sr, "sr")):
        path = tmp_path / f"{name}.dcm"
        obj.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name


def test_review_is_said_and_no_verdict_writes_as_before(tmp_path):
    output = _output(tmp_path, strip=False)
    review = {"kidney": Assessment(Verdict.REVIEW, ("volume 30.0 ml < 40 ml",))}
    seg, sr = _objects(output, review)
    assert seg.SeriesDescription == "QC REVIEW - Kidney SEG (test)"
    assert seg.SegmentSequence[0].SegmentDescription == "QC REVIEW: volume 30.0 ml < 40 ml"
    assert _evaluations(sr) == [(QC_VERDICT.value, QC_VALUES[Verdict.REVIEW].value)]
    seg, sr = _objects(output, None)
    assert seg.SeriesDescription == "Kidney SEG (test)" and _evaluations(sr) == []
    assert assess_output(output, QcSettings(enabled=False)) == {}


def test_no_contrast_results_are_not_held_to_an_edge_at_their_border():
    # A graft on T2 without fat suppression: its border against fat is a soft step, its
    # inside striped (bright medulla); the boundary-gradient check says "no edge" of every
    # such result, good or bad, so a no-contrast result is not held to it.
    z, y, x = np.mgrid[:40, :96, :96]
    spacing = 2.0
    kidney = ((z - 20) / 14) ** 2 + ((y - 48) / 16) ** 2 + ((x - 48) / 11) ** 2 <= 1
    core = ((z - 20) / 10) ** 2 + ((y - 48) / 10) ** 2 + ((x - 48) / 6) ** 2 <= 1
    values = 450.0 + ndi.gaussian_filter(100.0 * kidney, 3.0)
    values += np.where(core & (y % 6 < 3), 300.0, 0.0)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((spacing,) * 3)

    class _Reference:
        datasets = ()

    reference = _Reference()
    reference.image = image

    def judged(flags: tuple[str, ...]) -> Assessment:
        output = PipelineOutput(reference=reference, labels=kidney.astype(np.uint8),
                                segments=(KIDNEY,), volumes_ml={"kidney": 1.0}, flags=flags)
        return assess_output(output, QcSettings())["kidney"]

    plain, no_contrast = judged(()), judged(("no-contrast",))
    assert any("gradient" in r for r in plain.reasons)
    assert not any("gradient" in r for r in no_contrast.reasons)
    assert plain.signals["gradient_ratio"] == no_contrast.signals["gradient_ratio"] < 1.2
    strict = QcSettings(nocontrast_gradient_ratio_review=1.2)
    output = PipelineOutput(reference=reference, labels=kidney.astype(np.uint8),
                            segments=(KIDNEY,), volumes_ml={"kidney": 1.0},
                            flags=("no-contrast",))
    assert any("gradient" in r for r in assess_output(output, strict)["kidney"].reasons)
    # The method's own doubt about the whole result reaches the segment's verdict.
    doubted = judged(("no-contrast", "not-kidney-shaped"))
    assert doubted.verdict is Verdict.REVIEW
    assert "method flag not-kidney-shaped" in doubted.reasons
    assert "method flag not-kidney-shaped" not in no_contrast.reasons
