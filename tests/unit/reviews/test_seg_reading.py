"""A reader's SEG measured: every Segmentation Type, frames off byte boundaries, repeated
planes counted once, segments matched to the node's structures."""

import copy

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.sr.codedict import codes

from service.pipeline.base import RENAL_CORTEX, TRANSPLANTED_KIDNEY
from service.reviews.seg_reading import (
    ForeignSegError,
    match_structures,
    measure_segments,
    slice_step_mm,
)
from tests.reader_segs import ReaderSegment, reader_seg, source_slices

SHAPE = (6, 101, 122)


def _blob(z0: int, z1: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, bool)
    mask[z0:z1, 20:70, 30:90] = rng.random((z1 - z0, 50, 60)) > 0.3
    return mask


def _round_trip(seg):  # noqa: ANN001, ANN202 - as a file, the way the node reads it
    buffer = DicomBytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return dcmread(DicomBytesIO(buffer.getvalue()))


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_every_segmentation_type_gives_the_exact_voxel_count(kind: str):
    sources = source_slices()
    graft, other = _blob(1, 5, 1), _blob(0, 2, 2) & ~_blob(1, 5, 1)
    seg = _round_trip(reader_seg(sources, [
        ReaderSegment("Graft", graft, TRANSPLANTED_KIDNEY, codes.SCT.Right),
        ReaderSegment("Something", other)], kind=kind))
    measures = {m.number: m for m in measure_segments(seg)}
    assert measures[1].voxels == int(graft.sum()) and measures[1].planes == 4
    assert measures[2].voxels == int(other.sum())
    assert measures[1].pixel_area_mm2 == pytest.approx(0.8 * 0.7)
    assert measures[1].side == "right" and measures[1].property_type == ("70948008", "SCT")
    assert measures[1].volume_ml(2.5) == pytest.approx(graft.sum() * 0.56 * 2.5 / 1000)
    assert slice_step_mm(sources) == pytest.approx(2.5)


def test_a_plane_given_twice_counts_once():
    """A SEG on a DCE whose phases share their planes names each plane once per phase."""
    sources = source_slices()
    mask = _blob(1, 4, 3)
    seg = _round_trip(reader_seg(sources, [ReaderSegment("Kidney", mask, codes.SCT.Kidney)],
                                 kind="FRACTIONAL"))
    shifted = np.roll(mask, 3, axis=2)  # the second "phase" moved: the union counts
    frames = seg.pixel_array.reshape(-1, *SHAPE[1:])
    z_of = [round((float(item.PlanePositionSequence[0].ImagePositionPatient[2]) - 100) / 2.5)
            for item in seg.PerFrameFunctionalGroupsSequence]  # highdicom's frame order
    again = (shifted[z_of] * 200).astype(np.uint8)
    seg.PixelData = frames.tobytes() + again.tobytes()
    seg.PerFrameFunctionalGroupsSequence = [
        *seg.PerFrameFunctionalGroupsSequence,
        *[copy.deepcopy(item) for item in seg.PerFrameFunctionalGroupsSequence]]
    seg.NumberOfFrames = 2 * len(frames)
    (measure,) = measure_segments(seg)
    assert measure.voxels == int((mask | shifted).sum())
    phases = sources + [s.copy() for s in sources]
    assert slice_step_mm(phases) == pytest.approx(2.5)


def test_segments_match_by_code_then_label_then_as_the_only_one():
    sources = source_slices()
    m = _blob(1, 3, 4)
    seg = _round_trip(reader_seg(sources, [
        ReaderSegment("anything", m, codes.SCT.Kidney, codes.SCT.Left),
        ReaderSegment("Right renal cortex", m),  # generic code, the node's label
        ReaderSegment("cortex", m, RENAL_CORTEX, codes.SCT.Right),  # same structure again
        ReaderSegment("Liver", m)]))
    matched = match_structures(measure_segments(seg), ["graft"])
    assert matched == {1: ("kidney_left", "code")}  # 2 and 3 both claim cortex_right
    (only,) = measure_segments(_round_trip(reader_seg(sources, [ReaderSegment("Segment 1",
                                                                                m)])))
    assert match_structures([only], ["graft"]) == {1: ("graft", "only segment")}
    assert match_structures([only], ["kidney_left", "kidney_right"]) == {}


def test_an_unreadable_seg_says_why():
    seg = _round_trip(reader_seg(source_slices(), [ReaderSegment("Kidney", _blob(1, 3, 5))]))
    seg.SegmentationType = "SOMETHING"
    with pytest.raises(ForeignSegError, match="SOMETHING"):
        measure_segments(seg)
    del seg.PerFrameFunctionalGroupsSequence[0]
    seg.SegmentationType = "BINARY"
    with pytest.raises(ForeignSegError, match="per-frame"):
        measure_segments(seg)
