"""The trend plot and the mask preview: real PNGs, the right slices, the contour in place."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.reports.mask_preview import (
    choose_slices,
    preview_png,
    render_preview,
    seg_masks_by_source,
)
from service.reports.trend_plot import trend_png
from tests.segs import build_seg_case


def _image(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_choose_slices_spreads_over_the_mask_and_keeps_the_largest():
    mask = np.zeros((20, 8, 8), dtype=bool)
    for z, r in zip(range(5, 15), (1, 2, 3, 3, 4, 4, 3, 2, 2, 1), strict=True):
        mask[z, :r, :r] = True
    picks = choose_slices(mask, 3)
    assert len(picks) == 3 and picks == sorted(picks)
    assert picks[0] >= 5 and picks[-1] <= 14 and picks[0] < picks[-1]
    assert 9 in picks or 10 in picks  # a slice of largest area
    assert choose_slices(mask[:6], 3) == [5]
    assert choose_slices(np.zeros((4, 4, 4), dtype=bool)) == []


def test_render_preview_draws_red_only_on_the_outline():
    image = np.zeros((3, 60, 60), dtype=np.float32)
    image[:, 20:40, 20:40] = 100.0
    mask = image > 50
    rgb = _image(render_preview(image, mask, [1], pixel_aspect=1.0, title="t"))
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.sum() > 50  # the contour is drawn
    rows, cols = np.nonzero(red)
    # A closed outline: red on all four sides of its bounding box, not a filled square.
    centre = red[(rows.min() + rows.max()) // 2, cols.min() + 3:cols.max() - 3]
    assert not centre.any()


def test_preview_of_a_stored_seg_and_its_series(tmp_path):
    phase, labels, seg, data = build_seg_case(tmp_path, "axial-flipped", omit_empty_frames=True)
    by_source = seg_masks_by_source(seg)
    for z, ds in enumerate(phase.datasets):
        expected = labels[z].astype(bool)
        assert np.array_equal(by_source.get(str(ds.SOPInstanceUID), np.zeros_like(expected)),
                              expected)
    seg_path = tmp_path / "seg.dcm"
    seg_path.write_bytes(data)
    sources = sorted((tmp_path / "axial-flipped").rglob("*.dcm"))
    series_uid = str(phase.datasets[0].SeriesInstanceUID)
    from pydicom import dcmread
    sources = [p for p in sources
               if str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == series_uid]
    rgb = _image(preview_png(sources, seg_path, title="check"))
    assert rgb.shape[1] > 400  # three panels side by side


def test_trend_plot_marks_alerts_and_skips_undated_rows():
    rows = [{"study_date": "2025-01-01", "structure": "kidney", "volume_ml": 150.0,
             "alert": False, "baseline": True},
            {"study_date": "2025-06-01", "structure": "kidney", "volume_ml": 120.0,
             "alert": True, "baseline": False},
            {"study_date": None, "structure": "kidney", "volume_ml": 100.0, "alert": False,
             "baseline": False}]
    rgb = _image(trend_png(rows, title="Patient P"))
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.sum() > 20  # the alert ring
    calm = _image(trend_png([dict(rows[0])], title="Patient P"))
    assert not ((calm[..., 0] > 200) & (calm[..., 1] < 80) & (calm[..., 2] < 80)).any()
    empty = _image(trend_png([], title="nobody"))
    assert empty.shape[0] > 100


def test_a_patient_id_with_dollar_signs_is_plain_text_in_the_trend_title():
    """matplotlib reads "$...$" as math: ``M$\\frac{$Z`` made the trend PNG a 500."""
    import matplotlib.pyplot as plt
    import pytest

    title = r"Patient M$\frac{$Z: volume"
    figure = plt.figure()
    figure.suptitle(title)  # math text, as before
    with pytest.raises(ValueError):
        figure.savefig(io.BytesIO(), format="png")
    plt.close(figure)
    assert _image(trend_png([], title=title)).shape[0] > 0
