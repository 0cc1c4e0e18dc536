"""One way through a study: the running node and ``kidney-node segment`` (same settings)
give the same result for the same study: the same SEG (SOP Instance and Series UIDs,
frames and pixels), the same SR UID, the same volumes (issue 19, item 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from service.synthetic import CtGrid, synthesize_ct, write_ct_study
from tests.peers import node_sending_to_storescp, received, storescu

pytestmark = pytest.mark.integration


def _ct(tmp_path: Path) -> list[Path]:
    return list(write_ct_study(tmp_path / "ct", synthesize_ct(1, grid=CtGrid.small()),
                               patient_id="IT-ONE-PATH").files)


@pytest.mark.parametrize("case", ["CT", "MR, DCE in one series"])
def test_the_node_and_the_offline_command_give_the_same_result(case: str, make_node,
                                                                sqlite_url, small_study_dir,
                                                                tmp_path):
    files = _ct(tmp_path) if case == "CT" else list(small_study_dir.files)
    with node_sending_to_storescp(make_node, sqlite_url, tmp_path / "dest") as node:
        assert storescu(node.dicom_port, files).returncode == 0
        (seg_path,) = node.wait_for(lambda: received(tmp_path / "dest", SegmentationStorage),
                                    180, "the node's SEG")
        (sr_path,) = node.wait_for(
            lambda: received(tmp_path / "dest", Comprehensive3DSRStorage), 30, "the SR")
        study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        volumes = {r["structure"]: r["volume_ml"] for r in node.study(study_uid)["results"]}
        source = Path(os.path.commonpath(files))
        offline = node.cli("segment", str(source), "--out", str(tmp_path / "offline"))
    result = json.loads((tmp_path / "offline" / "result.json").read_text())
    ours, theirs = dcmread(seg_path), dcmread(tmp_path / "offline" / "seg.dcm")
    print(f"{case}: node SEG {ours.SOPInstanceUID}, offline SEG {theirs.SOPInstanceUID}; "
          f"volumes node {volumes}, offline {result['volumes_ml']}\n{offline.stdout}")
    assert theirs.SOPInstanceUID == ours.SOPInstanceUID
    assert theirs.SeriesInstanceUID == ours.SeriesInstanceUID
    assert result["sr_sop_instance_uid"] == str(dcmread(sr_path).SOPInstanceUID)
    assert np.array_equal(theirs.pixel_array, ours.pixel_array)
    frames = [str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
              for f in ours.PerFrameFunctionalGroupsSequence]
    assert frames == [
        str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for f in theirs.PerFrameFunctionalGroupsSequence]
    assert result["volumes_ml"] == pytest.approx(volumes, abs=1e-3)
