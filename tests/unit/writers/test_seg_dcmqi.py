"""An independent reader (dcmqi's segimage2itkimage) puts our SEG where the mask was."""

from __future__ import annotations

import pytest

from models import dice
from tests.segs import dcmqi_available, dcmqi_mask


@pytest.mark.skipif(not dcmqi_available(), reason="dcmqi not installed (pip extra 'test')")
@pytest.mark.parametrize("orientation", ["axial", "axial-flipped", "coronal", "sagittal",
                                         "oblique"])
@pytest.mark.parametrize("omit_empty_frames", [True, False])
def test_dcmqi_reads_the_mask_in_place(seg_case, tmp_path, orientation, omit_empty_frames):
    phase, labels, _, data = seg_case(orientation, omit_empty_frames=omit_empty_frames)
    read_back = dcmqi_mask(data, phase.image, tmp_path)
    assert dice(read_back, labels.astype(bool)) > 0.99, orientation
