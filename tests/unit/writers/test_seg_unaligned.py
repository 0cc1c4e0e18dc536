"""SEG frames whose rows x columns is not a multiple of 8 (issue 17): BINARY frames would
not start on byte boundaries, which OHIF mishandles; the node writes them FRACTIONAL and
every reader here (highdicom, pydicom, dcmqi, dciodvfy) finds the same mask in place."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from pydicom import dcmread

from models import dice
from service.writers.seg import bit_aligned
from tests.peers import dciodvfy_errors
from tests.segs import dcmqi_available, dcmqi_mask

UNALIGNED = (12, 61, 37)  # 61 x 37 = 2257 pixels per frame


def test_only_frames_a_multiple_of_8_pixels_stay_binary(seg_case):
    assert bit_aligned(64, 64) and bit_aligned(122, 100) and not bit_aligned(122, 101)
    *_, aligned = seg_case("axial")
    assert dcmread(io.BytesIO(aligned)).SegmentationType == "BINARY"


@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_an_unaligned_seg_is_fractional_and_read_in_place_by_highdicom_and_pydicom(
        seg_case, orientation):
    phase, labels, seg, data = seg_case(orientation, shape=UNALIGNED)
    ds = dcmread(io.BytesIO(data))
    assert (ds.SegmentationType, ds.SegmentationFractionalType) == ("FRACTIONAL", "OCCUPANCY")
    assert (int(ds.MaximumFractionalValue), int(ds.BitsAllocated)) == (255, 8)
    assert set(np.unique(ds.pixel_array)) <= {0, 255}
    by_uid = {d.SOPInstanceUID: z for z, d in enumerate(phase.datasets)}
    frames = ds.pixel_array.reshape(-1, UNALIGNED[1], UNALIGNED[2])
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        z = by_uid[group.DerivationImageSequence[0].SourceImageSequence[0]
                   .ReferencedSOPInstanceUID]
        assert np.array_equal(frame > 0, labels[z] > 0), (orientation, z)
    volume = seg.get_volume(combine_segments=True)  # highdicom, as a viewer would
    assert int(np.count_nonzero(volume.array)) == int(np.count_nonzero(labels))


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools' dciodvfy not installed")
def test_an_unaligned_seg_passes_dciodvfy(seg_case, tmp_path):
    *_, data = seg_case("oblique", shape=UNALIGNED)
    path = tmp_path / "seg.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []


@pytest.mark.skipif(not dcmqi_available(), reason="dcmqi not installed (pip extra 'test')")
def test_dcmqi_reads_an_unaligned_seg_in_place(seg_case, tmp_path):
    phase, labels, _, data = seg_case("oblique", shape=UNALIGNED)
    assert dice(dcmqi_mask(data, phase.image, tmp_path), labels.astype(bool)) > 0.99
