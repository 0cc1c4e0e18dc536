"""Fixtures of the writer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.segs import SegCase, build_seg_case


@pytest.fixture
def seg_case(tmp_path: Path) -> Callable[..., SegCase]:
    def make(orientation: str = "axial", *, omit_empty_frames: bool = True,
             shape: tuple[int, int, int] = (16, 64, 64)) -> SegCase:
        return build_seg_case(tmp_path, orientation, omit_empty_frames=omit_empty_frames,
                              shape=shape)
    return make
