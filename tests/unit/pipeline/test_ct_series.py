"""Which CT series of a study is segmented: largest head-foot extent, then most slices."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from service.errors import PipelineError
from service.imaging.series import LoadedSeries, LoadedVolume
from service.pipeline.ct_series import choose_ct_volume, z_extent_mm


def _series(uid: str, slices: int, step_mm: float, *, coronal: bool = False) -> LoadedSeries:
    """A tiny CT series of ``slices`` 8 x 8 slices, ``step_mm`` apart (axial or coronal)."""
    image = sitk.GetImageFromArray(np.zeros((slices, 8, 8), dtype=np.float32))
    image.SetSpacing((2.0, 2.0, step_mm))
    if coronal:  # rows run along -z (head to foot), slices along +y
        image.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))
    datasets = tuple(pydicom.Dataset() for _ in range(slices))
    return LoadedSeries(uid, "CT", "", (LoadedVolume(image, datasets, None, None),))


def test_z_extent_of_axial_and_coronal_volumes():
    assert z_extent_mm(_series("1", 11, 5.0).volumes[0].image) == pytest.approx(50.0)
    # Coronal: the head-foot extent is along the rows (8 rows of 2 mm), not the slices.
    assert z_extent_mm(_series("2", 40, 1.0, coronal=True).volumes[0].image) == \
        pytest.approx(14.0)


def test_largest_extent_wins_then_more_slices_then_the_uid(caplog):
    thick = _series("1.9", 21, 5.0)  # 100 mm
    thin = _series("1.8", 81, 1.25)  # 100 mm, more slices
    short = _series("1.7", 60, 1.0)  # 59 mm
    scout = _series("1.1", 1, 1.0)
    with caplog.at_level(logging.INFO):
        chosen = choose_ct_volume([thick, short, scout, thin], min_slices=10, study_uid="5.6")
    assert chosen is thin.volumes[0]
    line = caplog.records[-1].getMessage()
    assert line.startswith("study 5.6: segmenting CT series 1.8 (81 slices, 100 mm)")
    assert "1.9 (21 slices, 100 mm)" in line and "1.1 (1 slices" in line
    twin = _series("1.85", 81, 1.25)
    order = [twin, thin]
    assert choose_ct_volume(order, min_slices=10, study_uid="5.6") is thin.volumes[0]
    assert choose_ct_volume(order[::-1], min_slices=10, study_uid="5.6") is thin.volumes[0]


def test_short_series_are_skipped_even_when_they_cover_more():
    wide_but_few = _series("1.1", 8, 20.0)  # 140 mm in 8 slices
    normal = _series("1.2", 30, 2.5)
    assert choose_ct_volume([wide_but_few, normal], min_slices=10,
                            study_uid="5.6") is normal.volumes[0]


def test_no_usable_series_names_what_was_seen():
    with pytest.raises(PipelineError, match=r"study 5\.6: no CT series with at least 10 "
                                            r"slices \(series: 1\.1 \(3 slices, 10 mm\)\)"):
        choose_ct_volume([_series("1.1", 3, 5.0)], min_slices=10, study_uid="5.6")
    with pytest.raises(PipelineError, match=r"series: none"):
        choose_ct_volume([], min_slices=10, study_uid="5.6")
