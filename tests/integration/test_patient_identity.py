"""Patient identity through the running node (issue 18): the index keys a patient by the
whole Patient ID and its issuer, and every patient is reached from the pages, the API
and the CLI, whatever its ID holds."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.peers import NodeProcess, storescu

LONG = "A" * 64
#: (Patient ID as sent, Issuer of Patient ID) -> the ID as the node lists it.
PATIENTS: dict[tuple[str | tuple[str, ...], str], str] = {
    (LONG + "1", ""): LONG + "1",  # the first 64 characters are shared
    (LONG + "2", ""): LONG + "2",
    ("GRAFT/2024/17", ""): "GRAFT/2024/17",  # "/" is allowed in an LO value
    ("", ""): "",  # Patient ID is type 2: present, may be empty
    ("..", ""): "..",
    (r"M$\frac{$Z", ""): r"M$\frac{$Z",  # matplotlib math text in a plot title
    (("MV1", "MV2"), ""): "MV1\\MV2",  # VM 1, but sent with two values
    ("SAME", "HOSP-A"): "SAME",  # one ID, two issuers: two patients
    ("SAME", "HOSP-B"): "SAME",
}


def _one_study_each(template: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for i, (patient_id, issuer) in enumerate(PATIENTS):
        ds = dcmread(template)
        ds.PatientID = list(patient_id) if isinstance(patient_id, tuple) else patient_id
        if issuer:
            ds.IssuerOfPatientID = issuer
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{i}.dcm")
        ds.save_as(files[-1])
    return files


def _get(node: NodeProcess, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(node.api + path, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_every_patient_is_kept_apart_and_reached_from_the_pages_api_and_cli(
        make_node, sqlite_url, small_study_dir, tmp_path):
    files = _one_study_each(sorted(small_study_dir.files)[0], tmp_path / "send")
    node = make_node(sqlite_url)
    node.config["scheduler"]["stable_age_seconds"] = 3600  # identity only: no job
    node.start()
    sent = storescu(node.dicom_port, files)
    assert sent.returncode == 0, sent.stderr

    listed = {(p["patient_id"], p["issuer"]) for p in node.get("/api/patients")}
    assert listed == {(shown, issuer) for (_, issuer), shown in PATIENTS.items()}

    status, page = _get(node, "/")
    assert status == 200
    links = [unescape(h) for h in re.findall(r'href="(/patient\?[^"]+)"', page.decode())]
    assert len(links) == len(PATIENTS)
    for link in links:
        status, html = _get(node, urllib.parse.quote(link, safe="/?=&%"))
        assert status == 200, (link, status, html[:300])
        (src,) = re.findall(r'<img id="trend"[^>]* src="([^"]+)"', html.decode())
        status, png = _get(node, unescape(src))
        assert status == 200 and png.startswith(b"\x89PNG"), (link, status, png[:300])

    # By path, as a script would: "/" in the ID is the ID's.
    assert _get(node, "/api/patients/GRAFT/2024/17/volumes") == (200, b"[]")
    assert _get(node, "/patients/GRAFT%2F2024%2F17")[0] == 200
    # One ID under two issuers: the issuer must be named.
    assert _get(node, "/api/patients/SAME/volumes")[0] == 409
    assert _get(node, "/api/patients/SAME/volumes?issuer=HOSP-B") == (200, b"[]")
    assert _get(node, "/api/patients/SAME/volumes?issuer=OTHER")[0] == 404
    ambiguous = node.cli("volumes", "SAME", check=False)
    assert ambiguous.returncode == 2 and "--issuer" in ambiguous.stderr
    named = node.cli("volumes", "SAME", "--issuer", "HOSP-A", check=False)
    assert named.returncode == 0, named.stderr
    assert node.cli("volumes", LONG, check=False).returncode == 1  # a prefix is no patient
