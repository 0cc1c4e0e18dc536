"""Orthanc (Debian) files the node's SEG and SR under the study of the source images."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.peers import orthanc, storescu

pytestmark = pytest.mark.integration


def test_orthanc_files_seg_and_sr_with_the_source_study(make_node, sqlite_url,
                                                         small_study_dir, tmp_path):
    study = small_study_dir
    with orthanc(tmp_path / "orthanc", dicom_port=free_port(), http_port=free_port()) as pacs:
        # The PACS holds the source images, and routes them to the node.
        assert storescu(pacs.dicom_port, list(study.files), called=pacs.aet).returncode == 0
        node = make_node(sqlite_url, destinations=[
            {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1",
             "port": pacs.dicom_port}])
        node.start()
        assert storescu(node.dicom_port, list(study.files)).returncode == 0

        counts = node.wait_for(lambda: pacs.results_filed(study.study_instance_uid), 180,
                               "the SEG and SR in Orthanc")
        studies = pacs.rest("/studies?expand")
    assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [
        study.study_instance_uid]
    assert counts["SEG"] == 1 and counts["SR"] == 1 and counts["MR"] >= 1
    patient = studies[0]["PatientMainDicomTags"]
    assert patient["PatientID"] == study.patient_id
