"""Auto-routing from a real PACS: Orthanc forwards every stable study to the node, which
sends its SEG and SR back to Orthanc, filed with the study (README: "PACS routing")."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import free_port
from tests.peers import orthanc, storescu

pytestmark = pytest.mark.integration

#: The routing rule of the README: every study that became stable goes to the node.
#: (Through the REST route: Debian's Orthanc 1.10's Lua ``SendToModality`` fails to read
#: the stored files, "Unable to read attachment".)
ROUTING_LUA = """
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/kidneynode/store', studyId)
end
"""


def test_orthanc_routes_stable_studies_and_gets_the_results_back(make_node, sqlite_url,
                                                                   small_study_dir, tmp_path):
    study = small_study_dir
    node_port = free_port()
    node = make_node(sqlite_url)
    node.config["dicom"]["port"] = node_port
    with orthanc(tmp_path / "orthanc", dicom_port=free_port(), http_port=free_port(),
                 modalities={"kidneynode": ["KIDNEYNODE", "127.0.0.1", node_port]},
                 lua=ROUTING_LUA) as pacs:
        node.config["destinations"] = [{"name": "pacs", "ae_title": pacs.aet,
                                        "host": "127.0.0.1", "port": pacs.dicom_port}]
        node.start()
        # The modality stores into the PACS only.
        assert storescu(pacs.dicom_port, list(study.files), called=pacs.aet).returncode == 0

        counts = node.wait_for(lambda: pacs.results_filed(study.study_instance_uid), 240,
                               "the SEG and SR routed back to Orthanc")
        # Orthanc sees the study change (SEG, SR arrived), waits for it to be stable again
        # and routes it once more: the node must take that resend without a second job.
        def routed_twice() -> bool:
            jobs = pacs.rest("/jobs?expand")
            return sum(j["Type"] == "DicomModalityStore" and j["State"] == "Success"
                       for j in jobs) >= 2

        node.wait_for(routed_twice, 60, "Orthanc routing the study a second time")
        time.sleep(3 * node.config["scheduler"]["stable_age_seconds"] + 1)
        jobs = json.loads(node.cli("jobs", "--json").stdout)
        final = pacs.series_by_modality(study.study_instance_uid)
        segs = pacs.rest("/tools/find", {"Level": "Instance", "Query": {
            "StudyInstanceUID": study.study_instance_uid, "Modality": "SEG"}})
    assert counts["SEG"] == 1 and counts["SR"] == 1
    assert final == counts
    assert len(segs) == 1
    assert [j["state"] for j in jobs] == ["succeeded"]
