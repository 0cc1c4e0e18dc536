"""The running node's HTTP side as a browser or an intruder meets it (issue 18)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration

TOKEN = "kn-test-token-0123456789"


def _get(node, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:  # noqa: ANN001
    request = urllib.request.Request(node.api + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_every_response_carries_the_security_headers_and_the_docs_need_the_token(
        make_node, sqlite_url):
    """No CSP, nosniff, frame or cache header was sent on pages with patient data, and
    /docs, /redoc and /openapi.json answered without the token, loading scripts from a
    CDN."""
    node = make_node(sqlite_url)
    node.config["http"]["token"] = TOKEN
    node.start()
    answers = {path: _get(node, path) for path in
               ("/health", "/", "/api/patients", "/patients/NOBODY", "/docs", "/openapi.json")}
    answers["/ (no token)"] = _get(node, "/", token=None)
    assert {path: status for path, (status, _, _) in answers.items()} == {
        "/health": 200, "/": 200, "/api/patients": 200, "/patients/NOBODY": 404,
        "/docs": 200, "/openapi.json": 200, "/ (no token)": 401}
    for path, (_, headers, _) in answers.items():
        assert "default-src 'none'" in headers.get("content-security-policy", ""), path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers.get("x-content-type-options") == "nosniff", path
        assert headers.get("x-frame-options") == "DENY", path
        assert headers.get("cache-control") == "no-store", path

    for path in ("/docs", "/openapi.json"):
        assert _get(node, path, token=None)[0] == 401, path
    assert _get(node, "/redoc")[0] == 404
    docs = answers["/docs"][2].decode()
    assert "/api/patients/{patient_id}/volumes" in docs
    assert "<script" not in docs and "https://" not in docs and "http://" not in docs
