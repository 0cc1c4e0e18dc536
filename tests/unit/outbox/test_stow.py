"""The STOW-RS client against a scripted HTTP server: what it sends (multipart/related of
the files, the bearer token), and how each answer of PS3.18 10.5 becomes a per-instance
outcome, permanent or worth retrying."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from service.config import Destination
from service.outbox import stow
from service.outbox.stow import stow_files
from tests.conftest import free_port
from tests.pki import make_pki


def _files(folder: Path, count: int) -> dict[Path, str]:
    found = {}
    for n in range(count):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        ds.PatientID = "P"
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        found[path] = str(ds.SOPInstanceUID)
    return found


def _sequence(tag: str, uids: list[str], reason: int | None = None) -> dict:
    items = [{"00081155": {"vr": "UI", "Value": [u]}}
             | ({} if reason is None else {"00081197": {"vr": "US", "Value": [reason]}})
             for u in uids]
    return {tag: {"vr": "SQ", "Value": items}}


class _Server:
    """Answers each POST with ``answer(uids in the request)`` -> (status, body)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.known: list[str] = []  # the SOP Instance UIDs to look for in a request
        self.answer = lambda uids: (200, _sequence("00081199", uids))


@contextmanager
def _serving(state: _Server, context: ssl.SSLContext | None = None) -> Iterator[int]:
    """An HTTP (or, with ``context``, HTTPS) server answering as ``state`` says; its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            uids = [u for u in state.known if u.encode() in body]
            state.requests.append({"path": self.path, "headers": dict(self.headers),
                                   "body": body, "uids": uids})
            status, answer = state.answer(uids)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet."""

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[tuple[_Server, int]]:
    state = _Server()
    with _serving(state) as port:
        yield state, port


def _dest(port: int, **auth: str) -> Destination:
    return Destination(name="web", dicomweb={"url": f"http://127.0.0.1:{port}/dicom-web/",
                                              "timeout_seconds": 5, **auth})


def test_files_go_as_multipart_related_with_the_bearer_token(server, tmp_path):
    state, port = server
    files = _files(tmp_path, 3)
    state.known = list(files.values())
    outcome = stow_files(files, destination=_dest(port, token="t" * 20))
    assert outcome == dict.fromkeys(files)
    (request,) = state.requests
    assert request["path"] == "/dicom-web/studies"
    assert request["headers"]["Authorization"] == "Bearer " + "t" * 20
    content_type = request["headers"]["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = content_type.rsplit("=", 1)[1].encode()
    assert request["body"].count(b"--" + boundary + b"\r\n") == 3
    assert request["body"].endswith(b"--" + boundary + b"--\r\n")
    for path in files:
        assert path.read_bytes() in request["body"]


def test_a_partial_store_tells_each_instance_apart(server, tmp_path):
    state, port = server
    files = _files(tmp_path, 4)
    uids = list(files.values())
    state.known = uids
    # 202: the first two stored, the third out of resources, the fourth refused.
    failed = [{"00081155": {"vr": "UI", "Value": [uids[2]]},
               "00081197": {"vr": "US", "Value": [0xA700]}},
              {"00081155": {"vr": "UI", "Value": [uids[3]]},
               "00081197": {"vr": "US", "Value": [0xC000]}}]
    state.answer = lambda got: (202, _sequence("00081199", uids[:2])
                                | {"00081198": {"vr": "SQ", "Value": failed}})
    outcome = stow_files(files, destination=_dest(port))
    paths = list(files)
    assert outcome[paths[0]] is None and outcome[paths[1]] is None
    assert not outcome[paths[2]].permanent and "0xA700" in str(outcome[paths[2]])
    assert outcome[paths[3]].permanent and "0xC000" in str(outcome[paths[3]])


@pytest.mark.parametrize("status, permanent, words", [
    (401, True, "refused the credentials (HTTP 401)"),
    (403, True, "refused the credentials (HTTP 403)"),
    (404, True, "HTTP 404"),
    (503, False, "HTTP 503"),
    (500, False, "HTTP 500"),
])
def test_a_refusal_of_the_request_applies_to_every_file(server, tmp_path, status, permanent,
                                                        words):
    state, port = server
    files = _files(tmp_path, 2)
    state.known = list(files.values())
    state.answer = lambda got: (status, None)
    outcome = stow_files(files, destination=_dest(port, token="t" * 20))
    assert set(outcome) == set(files)
    for error in outcome.values():
        assert error is not None and error.permanent is permanent and words in str(error)
        assert "t" * 20 not in str(error)


def test_an_answer_that_leaves_an_instance_out_is_retried(server, tmp_path):
    state, port = server
    files = _files(tmp_path, 2)
    uids = list(files.values())
    state.known = uids
    state.answer = lambda got: (200, _sequence("00081199", uids[:1]))
    outcome = stow_files(files, destination=_dest(port))
    first, second = files
    assert outcome[first] is None
    assert not outcome[second].permanent and "without" in str(outcome[second])


def test_large_sends_are_split_and_an_unreachable_endpoint_is_transient(server, tmp_path,
                                                                        monkeypatch):
    state, port = server
    files = _files(tmp_path, 5)
    state.known = list(files.values())
    monkeypatch.setattr(stow, "MAX_REQUEST_BYTES", 2 * max(p.stat().st_size for p in files))
    assert stow_files(files, destination=_dest(port)) == dict.fromkeys(files)
    assert [len(r["uids"]) for r in state.requests] == [2, 2, 1]
    closed = stow_files(files, destination=_dest(free_port()))
    assert all(e is not None and not e.permanent and "unreachable" in str(e)
               for e in closed.values())


@pytest.mark.parametrize("fields, words", [
    ({"dicomweb": {"url": "ftp://x/dicom-web"}}, "http:// or https://"),
    ({"dicomweb": {"url": "http://u:p@x/dicom-web"}}, "not in the URL"),
    ({"dicomweb": {"url": "http://x", "token": "t" * 20, "username": "u", "password": "p"}},
     "not both"),
    ({"dicomweb": {"url": "http://x", "username": "u"}}, "both username and password"),
    ({"dicomweb": {"url": "http://x"}, "ae_title": "PACS"}, "not both"),
    ({"ae_title": "PACS", "host": "h"}, "port missing"),
])
def test_a_destination_is_either_dicom_or_dicomweb(fields, words):
    with pytest.raises(ValidationError, match=words):
        Destination(name="d", **fields)


def test_the_password_is_not_shown_with_the_settings():
    dest = Destination(name="d", dicomweb={"url": "https://x:8443/dicom-web",
                                           "username": "u", "password": "hunter2-secret"})
    assert "hunter2" not in repr(dest) and "hunter2" not in dest.model_dump_json()
    assert dest.address == ("", "x", 8443)


def test_a_config_error_on_a_dicomweb_destination_does_not_repeat_its_token():
    from service.config import load_settings
    from service.errors import ConfigError

    bad = ('[{"name": "web", "ae_title": "PACS", "dicomweb": {"url": "http://x",'
           ' "token": "very-secret-token-123"}}]')
    with pytest.raises(ConfigError, match="not both") as caught:
        load_settings(environ={"KIDNEY_NODE_DESTINATIONS": bad})
    assert "very-secret" not in str(caught.value)


def test_https_checks_the_certificate_against_the_ca_file(tmp_path):
    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    state = _Server()
    files = _files(tmp_path, 1)
    state.known = list(files.values())
    with _serving(state, context) as port:
        url = f"https://127.0.0.1:{port}/dicom-web"
        trusted = Destination(name="web", dicomweb={"url": url, "ca_file": pki / "ca.pem"})
        assert stow_files(files, destination=trusted) == dict.fromkeys(files)
        rogue = Destination(name="web", dicomweb={"url": url, "ca_file": pki / "rogue-ca.pem"})
        (error,) = stow_files(files, destination=rogue).values()
        assert error is not None and not error.permanent
        assert "certificate" in str(error).lower()
    assert len(state.requests) == 1  # nothing sent to the server the CA does not vouch for
