"""A SEG built from a small synthetic MR series, for the writer and report tests."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.sr.codedict import codes

from service.imaging.series import LoadedVolume, group_by_series, load_series
from service.pipeline.base import KIDNEY, PipelineOutput
from service.synthetic import write_mr_study
from service.writers.seg import SegOptions, build_segmentation

SegCase = tuple[LoadedVolume, np.ndarray, hd.seg.Segmentation, bytes]


def build_seg_case(root: Path, orientation: str, *, omit_empty_frames: bool,
                   shape: tuple[int, int, int] = (16, 64, 64)) -> SegCase:
    """Source phase (of ``shape``: slices, rows, columns), truth labels, the SEG read
    back, and the SEG's bytes."""
    folder = root / (orientation if shape == (16, 64, 64)
                     else f"{orientation}-{'x'.join(map(str, shape))}")
    study = write_mr_study(folder, orientation=orientation, seed=1, include_t2=False,
                           shape=shape)
    (dce_paths,) = group_by_series(study.files).values()
    phase = load_series(dce_paths).volumes[-1]
    truth = sitk.Resample(study.truth_mask, phase.image, sitk.Transform(),
                          sitk.sitkNearestNeighbor)
    labels = sitk.GetArrayFromImage(truth).astype(np.uint8)
    assert labels.any()
    output = PipelineOutput(reference=phase, labels=labels, segments=(KIDNEY,),
                            volumes_ml={"kidney": 1.0})
    seg = build_segmentation(
        output, pipeline_name="test-pipeline", pipeline_version="9.9",
        family=codes.cid7162.MorphologicalOperations,
        options=SegOptions(series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5",
                           series_number=9901, content_creator="KIDNEY^NODE",
                           software_version="0.1.0", omit_empty_frames=omit_empty_frames))
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return phase, labels, hd.seg.segread(io.BytesIO(buffer.getvalue())), buffer.getvalue()


def segment_masks(seg_path: Path, volume: LoadedVolume) -> dict[str, np.ndarray]:
    """Each segment of a stored SEG on its source series' grid (z, y, x), by segment label.

    Frames are placed by their own Source Image Sequence (which source slice), never by
    their order, so this checks the SEG the way a viewer reads it.
    """
    seg = dcmread(seg_path)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    z_of = {ds.SOPInstanceUID: z for z, ds in enumerate(volume.datasets)}
    shape = (len(volume.datasets), int(seg.Rows), int(seg.Columns))
    masks = {label: np.zeros(shape, dtype=bool) for label in labels.values()}
    frames = seg.pixel_array.reshape(-1, *shape[1:])
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        # With one segment highdicom may put its identification in the shared groups.
        ident = group if "SegmentIdentificationSequence" in group else shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        masks[labels[number]][z_of[source.ReferencedSOPInstanceUID]] |= frame.astype(bool)
    return masks


def write_seg_and_sr(output: PipelineOutput, root: Path, uid_root: str) -> dict[str, Path]:
    """Build the SEG and SR of ``output`` as the CT pipeline would (algorithm "ct-test",
    family Morphological Operations) and save them as ``seg.dcm`` and ``sr.dcm`` in
    ``root``; the instances' UIDs are ``uid_root`` + ".1" ... ".5"."""
    from service.writers.sr import SrOptions, build_volume_report

    seg = build_segmentation(output, pipeline_name="ct-test", pipeline_version="1",
                             family=codes.cid7162.MorphologicalOperations,
                             options=SegOptions(f"{uid_root}.1", f"{uid_root}.2", 9901,
                                                "KIDNEY^NODE", "0.1.0"))
    sr = build_volume_report(output, seg, pipeline_name="ct-test", pipeline_version="1",
                             options=SrOptions(f"{uid_root}.3", f"{uid_root}.4", 9902,
                                               f"{uid_root}.5", "0.1.0"))
    paths = {}
    for name, obj in (("seg", seg), ("sr", sr)):
        paths[name] = root / f"{name}.dcm"
        obj.save_as(paths[name], enforce_file_format=True)
    return paths


#: dcmqi's SEG reader, installed by the pip extra "test" beside the interpreter.
DCMQI = Path(sys.executable).parent / "segimage2itkimage"


def dcmqi_available() -> bool:
    return DCMQI.exists() or shutil.which("segimage2itkimage") is not None


def dcmqi_mask(seg_bytes: bytes, reference: sitk.Image, workdir: Path) -> np.ndarray:
    """The (one-segment) SEG as dcmqi's ``segimage2itkimage`` reads it, resampled onto
    ``reference``'s grid (z, y, x) as a bool mask."""
    seg_path = workdir / "seg.dcm"
    seg_path.write_bytes(seg_bytes)
    out = workdir / "dcmqi"
    out.mkdir()
    tool = str(DCMQI if DCMQI.exists() else shutil.which("segimage2itkimage"))
    run = subprocess.run([tool, "--inputDICOM", str(seg_path), "--outputDirectory", str(out),
                          "-t", "nrrd", "-p", "seg"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    (segment,) = sorted(out.glob("seg-*.nrrd"))
    on_source = sitk.Resample(sitk.ReadImage(str(segment)), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(on_source) > 0
