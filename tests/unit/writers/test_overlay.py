"""Colour overlay series: valid Secondary Capture images (dciodvfy), on the source's
geometry, each segment's outline in its colour exactly along its border, the volumes and
"not for diagnosis" burnt in, only the slices around the segments."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from scipy import ndimage as ndi

from service.pipeline.base import KIDNEY_LEFT, KIDNEY_RIGHT, PipelineOutput
from service.writers.overlay import OverlayOptions, build_overlay_series
from tests.peers import dciodvfy_errors

OPTIONS = OverlayOptions(series_instance_uid="1.2.826.0.1.3680043.8.498.71",
                         series_number=9905, software_version="0.1.0")


def _two_kidneys(seg_case):  # noqa: ANN001, ANN202
    phase, labels, _, _ = seg_case("axial")
    out = np.where(labels > 0, KIDNEY_RIGHT.label, 0).astype(np.uint8)
    out[6:9, 40:52, 8:20] = KIDNEY_LEFT.label
    return phase, out


def _corner(ds) -> np.ndarray:  # noqa: ANN001
    """Where the image's first pixel begins (its outer corner), mm."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    return (np.asarray(ds.ImagePositionPatient, float)
            - 0.5 * float(ds.PixelSpacing[1]) * iop[:3] - 0.5 * float(ds.PixelSpacing[0]) * iop[3:])


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_overlay_images_are_valid_and_outline_each_segment_on_its_slice(seg_case, tmp_path,
                                                                        orientation: str):
    phase, labels, _, _ = seg_case(orientation)
    if orientation == "axial":
        phase, labels = _two_kidneys(seg_case)
    segments = (KIDNEY_RIGHT, KIDNEY_LEFT) if orientation == "axial" else (KIDNEY_RIGHT,)
    volumes = {"kidney_right": 123.4, "kidney_left": 56.7}
    output = PipelineOutput(reference=phase, labels=labels, segments=segments,
                            volumes_ml={s.structure: volumes[s.structure] for s in segments})
    images = build_overlay_series(output, pipeline_name="test", options=OPTIONS)
    holding = np.flatnonzero(labels.any(axis=(1, 2)))
    first, last = max(holding[0] - 2, 0), min(holding[-1] + 2, len(labels) - 1)
    assert len(images) == last - first + 1
    factor = 4  # 64 columns -> at least 256
    for offset, ds in enumerate(images):
        z = first + offset
        source = phase.datasets[z]
        path = tmp_path / f"{offset}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if offset == 0:
            assert dciodvfy_errors(path) == []
        ds = dcmread(io.BytesIO(path.read_bytes()))
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.BurnedInAnnotation == "YES"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert (ds.Rows, ds.Columns) == (64 * factor, 64 * factor)
        # The same field of view: the fine grid's corner is the coarse grid's corner.
        assert np.allclose(_corner(ds), _corner(source), atol=1e-3)
        rgb = ds.pixel_array.astype(int)
        for spec in segments:
            mask = np.kron(labels[z] == spec.label, np.ones((factor, factor), bool))
            drawn = (np.abs(rgb - np.asarray(spec.rgb)).sum(axis=-1) == 0)
            border = mask & ~ndi.binary_erosion(mask, iterations=2)
            drawn[:80] = border[:80] = False  # the text lines at the top
            if not mask.any():
                assert not drawn.any()
                continue
            assert drawn[border].mean() > 0.95, f"slice {z}: {spec.text} outline incomplete"
            assert (drawn & ~border).sum() == 0, f"slice {z}: colour off the outline"
    top = images[0].pixel_array[:14].astype(int)  # the notice's line, in yellow
    assert ((top[..., 0] > 180) & (top[..., 1] > 180) & (top[..., 2] < 90)).sum() > 50


def test_overlay_series_is_sent_only_where_asked_and_keeps_the_seg_order():
    from service.writers.result import ResultObjects

    objects = ResultObjects((), "seg", "sr", None, ("a", "b"))  # type: ignore[arg-type]
    assert [k for k, _ in objects.in_order()] == ["seg", "sr", "overlay", "overlay"]
