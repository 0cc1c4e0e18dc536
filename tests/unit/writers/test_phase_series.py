"""One phase of a DCE stored as one series: sent as a series of its own, which the SEG and
SR reference (OHIF 3.13 freezes on a SEG of one phase of a 4D series, issue 17)."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.config import ProcessingSettings
from service.imaging.series import group_by_series, load_series, phase_images
from service.pipeline.base import KIDNEY, PipelineOutput
from service.synthetic import write_mr_study
from service.writers.result import ResultUids, build_result_objects
from tests.peers import dciodvfy_errors

PIPELINE = SimpleNamespace(name="test-pipeline", version="9.9",
                           family=codes.cid7162.MorphologicalOperations)
UIDS = ResultUids("1.2.826.0.1.3680043.8.498.51", "1.2.826.0.1.3680043.8.498.52",
                  "1.2.826.0.1.3680043.8.498.53", "1.2.826.0.1.3680043.8.498.54",
                  "1.2.826.0.1.3680043.8.498.55", phase_series="1.2.826.0.1.3680043.8.498.56")


@pytest.fixture
def dce(tmp_path):
    study = write_mr_study(tmp_path / "mr", seed=1, include_t2=False, shape=(8, 32, 32))
    (paths,) = group_by_series(study.files).values()
    series = load_series(paths)
    assert len(series.volumes) > 1  # every phase in one series
    return series.volumes[-1], paths


def _output(phase) -> PipelineOutput:  # noqa: ANN001
    labels = np.zeros(phase.image.GetSize()[::-1], dtype=np.uint8)
    labels[2:6, 10:20, 12:22] = KIDNEY.label
    return PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                          volumes_ml={"kidney": 12.5})


def test_the_segmented_phase_is_copied_and_referenced(dce, tmp_path):
    phase, paths = dce
    images = phase_images(phase, paths)
    assert [i.SOPInstanceUID for i in images] == [d.SOPInstanceUID for d in phase.datasets]
    objects = build_result_objects(_output(phase), PIPELINE, ProcessingSettings(), UIDS,
                                   phase_images=images)
    copies = objects.phase_images
    assert len(copies) == len(images)
    assert {c.SeriesInstanceUID for c in copies} == {UIDS.phase_series}
    assert {int(c.SeriesNumber) for c in copies} == {ProcessingSettings().phase_series_number}
    originals = {str(i.SOPInstanceUID) for i in images}
    for copy, image in zip(copies, images, strict=True):
        assert str(copy.SOPInstanceUID) not in originals
        assert copy.PixelData == image.PixelData
        assert copy.ImagePositionPatient == image.ImagePositionPatient
        assert (copy.StudyInstanceUID, copy.PatientID) == (image.StudyInstanceUID,
                                                           image.PatientID)
        assert list(copy.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert copy.SourceImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
        assert "TemporalPositionIdentifier" not in copy
        assert "NumberOfTemporalPositions" not in copy
    # Run again (a job retried): the same UIDs, so a receiver sees duplicates, not new images.
    again = build_result_objects(_output(phase), PIPELINE, ProcessingSettings(), UIDS,
                                 phase_images=images)
    assert [c.SOPInstanceUID for c in again.phase_images] == [c.SOPInstanceUID for c in copies]

    copied = {str(c.SOPInstanceUID) for c in copies}
    seg = objects.seg
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [UIDS.phase_series]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID in copied
    sr = hd.sr.srread(io.BytesIO(_bytes(objects.sr)))
    (planar,) = sr.content.get_planar_roi_measurement_groups()
    assert planar.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
        in copied
    if shutil.which("dciodvfy"):
        path = tmp_path / "copy.dcm"
        copies[0].save_as(path, enforce_file_format=True)
        original = tmp_path / "original.dcm"
        images[0].save_as(original, enforce_file_format=True)
        assert dcmread(path).Modality == "MR"
        assert set(dciodvfy_errors(path)) <= set(dciodvfy_errors(original))


def test_a_series_of_one_phase_needs_no_copy(dce):
    phase, paths = dce
    own = {str(d.SOPInstanceUID) for d in phase.datasets}
    alone = [p for p in paths if str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) in own]
    assert phase_images(phase, alone) == []
    objects = build_result_objects(_output(phase), PIPELINE, ProcessingSettings(), UIDS)
    assert objects.phase_images == ()
    assert [s.SeriesInstanceUID for s in objects.seg.ReferencedSeriesSequence] == [
        phase.datasets[0].SeriesInstanceUID]


def _bytes(ds) -> bytes:  # noqa: ANN001
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
