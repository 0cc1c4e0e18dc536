"""Reception check of pixel data: cut short, inconsistent with its attributes, missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from service.errors import IngestError
from service.storage import read_header
from service.storage.pixel_check import native_pixel_bytes


def _saved(tmp_path: Path, name: str, **changes) -> Path:
    ds = dcmread(get_testdata_file(name))
    for key, value in changes.items():
        setattr(ds, key, value)
    out = tmp_path / name
    ds.save_as(out, enforce_file_format=True)
    return out


def test_complete_native_and_encapsulated_images_pass(tmp_path):
    for name in ("MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        assert read_header(_saved(tmp_path, name)).Rows == 64


def test_file_ending_inside_the_pixel_data_is_refused(tmp_path):
    path = _saved(tmp_path, "MR_small.dcm")
    path.write_bytes(path.read_bytes()[:-1138])  # MR_small has 138 bytes after its pixels
    with pytest.raises(IngestError, match=r"Pixel Data cut short: 7192 of the 8192 bytes"):
        read_header(path)


def test_pixel_data_shorter_than_rows_times_columns_is_refused(tmp_path):
    path = _saved(tmp_path, "MR_small.dcm", Rows=128)
    with pytest.raises(IngestError, match=r"holds 8192 bytes but Rows 128 x Columns 64 .* need "
                                          r"16384"):
        read_header(path)


def test_image_without_pixel_data_is_refused_but_a_report_passes(tmp_path):
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "no-pixels.dcm", enforce_file_format=True)
    with pytest.raises(IngestError, match="an image without pixel data"):
        read_header(tmp_path / "no-pixels.dcm")
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "not-an-image.dcm", enforce_file_format=True)
    assert "PixelData" not in read_header(tmp_path / "not-an-image.dcm")


def test_truncated_encapsulated_pixel_data_is_refused(tmp_path):
    path = _saved(tmp_path, "MR_small_jp2klossless.dcm")
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(IngestError, match="encapsulated pixel data cut short"):
        read_header(path)


@pytest.mark.parametrize(("attrs", "expected"), [
    ({"Rows": 4, "Columns": 3, "BitsAllocated": 16}, 24),
    ({"Rows": 4, "Columns": 3, "BitsAllocated": 1}, 2),
    ({"Rows": 2, "Columns": 2, "BitsAllocated": 8, "SamplesPerPixel": 3,
      "NumberOfFrames": 5}, 60),
    ({"Rows": 2, "Columns": 2, "BitsAllocated": 8, "SamplesPerPixel": 3,
      "PhotometricInterpretation": "YBR_FULL_422"}, 8),
    ({"Rows": 0, "Columns": 3, "BitsAllocated": 16}, None),
    ({"Columns": 3, "BitsAllocated": 16}, None),
])
def test_native_pixel_bytes(attrs, expected):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for key, value in attrs.items():
        setattr(ds, key, value)
    assert native_pixel_bytes(ds) == expected
