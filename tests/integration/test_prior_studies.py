"""A patient's earlier studies fetched from the PACS (issue 20, item 1), with Orthanc as
the PACS: the node's first measurement of a patient makes it ask Orthanc (C-FIND) and
retrieve the earlier studies (C-MOVE to itself, or C-GET), which it then measures, so the
trend starts at the earliest study."""

from __future__ import annotations

import datetime as dt
import re
import urllib.error
from pathlib import Path

import pytest

from service.config import PacsSettings
from service.dicom.qr_scu import find
from service.errors import PacsError
from service.priors.planning import study_query
from service.synthetic import write_mr_study
from tests.conftest import free_port
from tests.peers import orthanc, storescu

pytestmark = pytest.mark.integration

PATIENT = "PRIOR-0001"


def _studies(folder: Path, dates: list[dt.date], patient_id: str = PATIENT) -> list:
    """Small synthetic DCE + T2 studies of one patient, one per date."""
    return [write_mr_study(folder / f"study{i}", patient_id=patient_id, study_date=date,
                           seed=40 + i)
            for i, date in enumerate(dates)]


def _to_orthanc(pacs, studies) -> None:  # noqa: ANN001
    for study in studies:
        sent = storescu(pacs.dicom_port, list(study.files), called=pacs.aet)
        assert sent.returncode == 0, sent.stderr


def _priors(pacs_port: int, **settings) -> dict:  # noqa: ANN003
    return {"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port},
            "poll_interval_seconds": 0.5, "retry_seconds": 1, **settings}


def _measured(node, patient: str, count: int) -> list | None:  # noqa: ANN001
    """The patient's trend once it holds ``count`` studies (None before; the patient is
    unknown until the first is measured)."""
    try:
        rows = node.get(f"/api/patients/{patient}/volumes")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return rows if len({r["study_instance_uid"] for r in rows}) == count else None


def _moves_served(log: Path) -> int:
    """C-MOVE requests Orthanc's log says it served."""
    return len(re.findall(r"Move-SCU request received for AET", log.read_text(errors="replace")))


def test_a_first_measurement_fetches_the_four_earlier_studies_and_the_trend_lists_five(
        make_node, sqlite_url, tmp_path):
    dates = [dt.date(2022, 5, 2), dt.date(2023, 1, 9), dt.date(2023, 11, 20),
             dt.date(2024, 8, 5), dt.date(2025, 6, 30)]
    earlier = _studies(tmp_path / "studies", dates[:4])
    (new,) = _studies(tmp_path / "new", dates[4:])
    # (the new study has the same patient; its own folder keeps its UIDs apart)
    node = make_node(sqlite_url)
    pacs_dicom = free_port()
    modalities = {"node": [node.config["dicom"]["ae_title"], "127.0.0.1",
                           node.config["dicom"]["port"]]}
    with orthanc(tmp_path / "orthanc", dicom_port=pacs_dicom, http_port=free_port(),
                 modalities=modalities, verbose=True) as pacs:
        _to_orthanc(pacs, earlier)
        node.config["prior_studies"] = _priors(pacs_dicom, max_studies_per_hour=4)
        node.start()
        sent = storescu(node.dicom_port, list(new.files))
        assert sent.returncode == 0, sent.stderr

        def five():  # noqa: ANN202
            rows = node.get(f"/api/patients/{PATIENT}/volumes")
            return rows if len({r["study_instance_uid"] for r in rows}) == 5 else None

        rows = node.wait_for(five, 600, "five measurements in the trend")
        studies = [r["study_instance_uid"] for r in rows]
        assert studies == [s.study_instance_uid for s in [*earlier, new]]
        assert [r["study_date"] for r in rows] == [d.isoformat() for d in dates]

        status = node.get(f"/api/patients/{PATIENT}/priors")
        (request,) = status["requests"]
        assert request["reason"] == "first-measurement"
        fetched = [s for s in status["studies"] if s["state"] == "retrieved"]
        assert [s["study_instance_uid"] for s in fetched] == \
            [s.study_instance_uid for s in earlier]
        for row, study in zip(fetched, earlier, strict=True):
            assert row["instances"] == len(study.files)
            assert row["attempts"] == 1
        # One retrieval at a time (prior_studies.max_concurrent_retrievals 1), oldest first.
        spans = [(dt.datetime.fromisoformat(s["started_at"]),
                  dt.datetime.fromisoformat(s["finished_at"])) for s in fetched]
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end
        # The earlier studies' jobs ran after the new study's, at a lower priority.
        jobs = sorted(node.get("/api/jobs"), key=lambda j: j["id"])
        assert jobs[0]["study_instance_uid"] == new.study_instance_uid
        moves = _moves_served(tmp_path / "orthanc" / "orthanc.log")
        assert moves == sum(s["series"] for s in fetched)  # one C-MOVE per series

        # Asked again (CLI): the PACS is queried, nothing is fetched twice.
        node.cli("backfill", PATIENT)
        again = node.wait_for(
            lambda: (s := node.get(f"/api/patients/{PATIENT}/priors"))["requests"][0][
                "summary"] and s, 60, "the second request answered")
        assert "0 to fetch" in again["requests"][0]["summary"], again["requests"][0]
        assert len(again["studies"]) == len(status["studies"])
        assert _moves_served(tmp_path / "orthanc" / "orthanc.log") == moves
        counted = node.get(f"/api/patients/{PATIENT}/volumes")
        assert len({r["study_instance_uid"] for r in counted}) == 5


def test_an_api_request_fetches_a_new_patients_studies_by_c_get(make_node, sqlite_url,
                                                                 tmp_path):
    """C-GET needs no route back to the node at the PACS: Orthanc knows the node only as
    a peer allowed to query and retrieve. The patient is not in the node yet."""
    patient = "PRIOR-0002"
    earlier = _studies(tmp_path / "studies", [dt.date(2021, 2, 3), dt.date(2024, 4, 5)],
                       patient_id=patient)
    node = make_node(sqlite_url)
    pacs_dicom = free_port()
    # Orthanc answers C-FIND/C-GET of a known AE only; the port it lists is never used.
    modalities = {"node": [node.config["dicom"]["ae_title"], "127.0.0.1", 9]}
    with orthanc(tmp_path / "orthanc", dicom_port=pacs_dicom, http_port=free_port(),
                 modalities=modalities) as pacs:
        _to_orthanc(pacs, earlier)
        node.config["prior_studies"] = _priors(pacs_dicom, retrieve="get")
        node.start()
        with pytest.raises(Exception, match="404"):
            node.get(f"/api/patients/{patient}/volumes")
        answer = node.post(f"/api/patients/{patient}/priors", {})
        assert answer["requests"][0]["reason"] == "api"

        rows = node.wait_for(lambda: _measured(node, patient, 2), 300,
                             "both earlier studies measured")
        assert [r["study_instance_uid"] for r in rows] == \
            [s.study_instance_uid for s in earlier]
        status = node.get(f"/api/patients/{patient}/priors")
        assert [s["state"] for s in status["studies"]] == ["retrieved", "retrieved"]
        received = node.get("/api/audit/received")
        assert {r["calling_aet"] for r in received} == {"ORTHANC"}


def test_a_pacs_down_at_the_first_measurement_is_asked_again_until_it_answers(
        make_node, sqlite_url, tmp_path):
    patient = "PRIOR-0003"
    earlier, new = _studies(tmp_path / "studies", [dt.date(2020, 9, 1), dt.date(2025, 9, 1)],
                            patient_id=patient)
    node = make_node(sqlite_url)
    pacs_dicom = free_port()
    node.config["prior_studies"] = _priors(pacs_dicom)
    node.start()
    sent = storescu(node.dicom_port, list(new.files))
    assert sent.returncode == 0, sent.stderr

    def failed_query():  # noqa: ANN202
        requests = node.get(f"/api/patients/{patient}/priors")["requests"]
        return requests and requests[0]["error"] and requests[0]

    request = node.wait_for(failed_query, 300, "the query to the PACS (down) to fail")
    assert "unreachable" in request["error"] and request["queried_at"] is None
    assert len(node.get(f"/api/patients/{patient}/volumes")) == 1  # the new study only
    modalities = {"node": [node.config["dicom"]["ae_title"], "127.0.0.1",
                           node.config["dicom"]["port"]]}
    with orthanc(tmp_path / "orthanc", dicom_port=pacs_dicom, http_port=free_port(),
                 modalities=modalities) as pacs:
        _to_orthanc(pacs, [earlier])

        def two():  # noqa: ANN202
            rows = node.get(f"/api/patients/{patient}/volumes")
            return rows if len({r["study_instance_uid"] for r in rows}) == 2 else None

        rows = node.wait_for(two, 300, "the earlier study fetched once the PACS is up")
    assert [r["study_instance_uid"] for r in rows] == \
        [earlier.study_instance_uid, new.study_instance_uid]
    status = node.get(f"/api/patients/{patient}/priors")
    assert status["requests"][0]["error"] is None
    assert status["requests"][0]["attempts"] >= 2


def test_a_pacs_over_tls_is_queried_and_retrieved_over_tls(make_node, sqlite_url, tmp_path):
    """Orthanc's DICOM port speaks TLS only and wants the node's client certificate: the
    CLI's request is answered and the study fetched by C-GET over it."""
    from tests.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    patient = "PRIOR-0004"
    (earlier,) = _studies(tmp_path / "studies", [dt.date(2019, 4, 1)], patient_id=patient)
    node = make_node(sqlite_url)
    pacs_dicom = free_port()
    modalities = {"node": [node.config["dicom"]["ae_title"], "127.0.0.1", 9]}
    with orthanc(tmp_path / "orthanc", dicom_port=pacs_dicom, http_port=free_port(),
                 modalities=modalities, tls_pki=pki) as pacs:
        pacs.upload(list(earlier.files))
        # The same query in the clear finds nothing: the port speaks TLS only.
        plain = PacsSettings(ae_title="ORTHANC", host="127.0.0.1", port=pacs_dicom)
        with pytest.raises(PacsError):
            find(plain, study_query(patient, "", modalities=("MR",), since=None),
                 calling_aet="KIDNEYNODE", timeout=5)
        node.config["prior_studies"] = {**_priors(pacs_dicom, retrieve="get"), "pacs": {
            "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_dicom,
            "tls": {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
                    "key_file": str(pki / "client.key")}}}
        node.start()
        node.cli("backfill", patient)
        rows = node.wait_for(lambda: _measured(node, patient, 1), 300,
                             "the study fetched over TLS")
    assert [r["study_instance_uid"] for r in rows] == [earlier.study_instance_uid]
