"""An independent reader (dcmqi's segimage2itkimage) puts our SEG where the mask was."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from models import dice

TOOL = Path(sys.executable).parent / "segimage2itkimage"


@pytest.mark.skipif(not TOOL.exists() and not shutil.which("segimage2itkimage"),
                    reason="dcmqi not installed (pip extra 'test')")
@pytest.mark.parametrize("orientation", ["axial", "axial-flipped", "coronal", "sagittal",
                                         "oblique"])
@pytest.mark.parametrize("omit_empty_frames", [True, False])
def test_dcmqi_reads_the_mask_in_place(seg_case, tmp_path, orientation, omit_empty_frames):
    phase, labels, _, data = seg_case(orientation, omit_empty_frames=omit_empty_frames)
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(data)
    out = tmp_path / "dcmqi"
    out.mkdir()
    run = subprocess.run([str(TOOL if TOOL.exists() else shutil.which("segimage2itkimage")),
                          "--inputDICOM", str(seg_path), "--outputDirectory", str(out),
                          "-t", "nrrd", "-p", "seg"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    (segment,) = sorted(out.glob("seg-*.nrrd"))
    image = sitk.ReadImage(str(segment))
    on_source = sitk.Resample(image, phase.image, sitk.Transform(), sitk.sitkNearestNeighbor)
    read_back = sitk.GetArrayFromImage(on_source) > 0
    assert dice(read_back, labels.astype(bool)) > 0.99, orientation
