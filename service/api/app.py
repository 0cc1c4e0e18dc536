"""Read-only HTTP API (FastAPI) and the clinicians' pages; it reads the index, never writes.

When a bearer token is configured, every route but ``/health`` needs it, as an
``Authorization: Bearer`` header or a ``kidney_node_token`` cookie (for the pages in a
browser); the API's documentation (``/docs``, a plain page, and ``/openapi.json``)
included. The node refuses to bind the API off the loopback interface without a token.
Every response carries :data:`SECURITY_HEADERS`: pages and data about patients are
neither framed, sniffed, cached nor allowed to load anything from elsewhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service import __version__
from service.api.pages import (
    HANDLER_SHA256,
    STYLE_SHA256,
    api_docs_page,
    patient_list_page,
    patient_page,
)
from service.db import queries
from service.errors import AmbiguousPatientError, KidneyNodeError
from service.reports.mask_preview import preview_png, seg_source_series
from service.reports.trend_plot import trend_png
from service.storage.space import StorageHealth
from service.trends import AlertRules

__all__ = ["SECURITY_HEADERS", "TOKEN_COOKIE", "create_app"]

TOKEN_COOKIE = "kidney_node_token"
_PNG = {"content-type": "image/png"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; img-src 'self'; style-src {STYLE_SHA256}; "
                                f"script-src 'unsafe-hashes' {HANDLER_SHA256}; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _token_check(token: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else \
            request.cookies.get(TOKEN_COOKIE, "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


def create_app(sessions: sessionmaker[Session], *, rules: AlertRules = AlertRules(),
               storage_root: Path | None = None, token: str | None = None,
               storage_health: StorageHealth | None = None) -> FastAPI:
    """The API over ``sessions``; OpenAPI schema at ``/openapi.json``.

    ``storage_root`` (the archive) serves the mask previews; without it they answer 404.
    ``storage_health`` is reported by ``/health``.
    """
    app = FastAPI(title="kidney-node", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    guarded = [Depends(_token_check(token))]

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", dependencies=guarded, response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(api_docs_page(app.openapi()))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """``status`` "ok", or "degraded" with the reasons under ``storage.problems``
        (the archive refuses instances, or a write failed lately); a database that does
        not answer is a 500."""
        with sessions() as session:
            session.execute(text("SELECT 1"))
        answer: dict[str, Any] = {"status": "ok", "version": __version__}
        if storage_health is not None:
            storage = storage_health.status()
            answer["storage"] = storage
            if storage["problems"]:
                answer["status"] = "degraded"
        return answer

    @app.get("/api/jobs", dependencies=guarded)
    def jobs(limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        with sessions() as session:
            return [row.as_dict() for row in queries.list_jobs(session, limit=limit)]

    @app.get("/api/outbox", dependencies=guarded)
    def outbox(limit: int = Query(200, ge=1, le=10_000)) -> list[dict[str, Any]]:
        with sessions() as session:
            return queries.list_outbox(session, limit=limit)

    @app.get("/api/studies/{study_instance_uid}", dependencies=guarded)
    def study(study_instance_uid: str) -> dict[str, Any]:
        with sessions() as session:
            summary = queries.study_summary(session, study_instance_uid)
        if summary is None:
            raise HTTPException(404, f"study {study_instance_uid} is not known to this node")
        return summary

    @app.get("/api/studies/{study_instance_uid}/preview.png", dependencies=guarded,
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def preview(study_instance_uid: str) -> Response:
        with sessions() as session:
            files = queries.result_files(session, study_instance_uid)
            if files is None or storage_root is None:
                raise HTTPException(404, f"study {study_instance_uid} has no stored result")
            sources = files.source_paths
            try:
                # The SEG may be on the node's copies of the segmented phase.
                on = seg_source_series(storage_root / files.seg_path)
            except (KidneyNodeError, OSError) as exc:
                raise HTTPException(500, f"study {study_instance_uid}: no preview: {exc}") \
                    from exc
            if on != files.source_series_instance_uid:
                sources = queries.series_paths(session, on) or sources
        try:
            png = preview_png([storage_root / p for p in sources], storage_root / files.seg_path,
                              title=f"{files.pipeline}: study {study_instance_uid}")
        except (KidneyNodeError, OSError, ValueError) as exc:
            raise HTTPException(500, f"study {study_instance_uid}: no preview: {exc}") from exc
        return Response(png, headers=_PNG)

    @app.get("/api/patients", dependencies=guarded)
    def patients(alerts: bool = False, limit: int = Query(1000, ge=1, le=100_000)
                 ) -> list[dict[str, Any]]:
        with sessions() as session:
            return queries.list_patients(session, alerts_only=alerts, rules=rules, limit=limit)

    def _trend(patient_id: str, issuer: str | None, structure: str | None
               ) -> tuple[str, list[dict[str, Any]]]:
        """The issuer (given, or the only one holding ``patient_id``) and the trend."""
        with sessions() as session:
            try:
                issuer = queries.resolve_issuer(session, patient_id, issuer)
            except AmbiguousPatientError as exc:
                raise HTTPException(409, f"{exc}: name one with ?issuer=") from exc
            if issuer is None:
                raise HTTPException(404, f"patient {patient_id} is not known to this node")
            return issuer, queries.patient_trend(session, patient_id, issuer,
                                                 structure=structure, rules=rules)

    def _trend_png(patient_id: str, issuer: str | None, structure: str | None) -> Response:
        issuer, rows = _trend(patient_id, issuer, structure)
        name = f"{patient_id} (issuer {issuer})" if issuer else patient_id
        return Response(trend_png(rows, title=f"Patient {name}: volume"), headers=_PNG)

    # A patient by path (scripts: /api/patients/P123/volumes; "/" allowed in the ID),
    # or by query (the pages' links: any ID, an empty one included). ``issuer`` is
    # needed only when the ID is held under several issuers (else 409).
    @app.get("/api/patients/{patient_id:path}/volumes", dependencies=guarded)
    def volumes(patient_id: str, issuer: str | None = None, structure: str | None = None
                ) -> list[dict[str, Any]]:
        return _trend(patient_id, issuer, structure)[1]

    @app.get("/api/patient/volumes", dependencies=guarded)
    def volumes_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None,
                         structure: str | None = None) -> list[dict[str, Any]]:
        return _trend(patient_id, issuer, structure)[1]

    @app.get("/api/patients/{patient_id:path}/volumes.png", dependencies=guarded,
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def volumes_png(patient_id: str, issuer: str | None = None, structure: str | None = None
                    ) -> Response:
        return _trend_png(patient_id, issuer, structure)

    @app.get("/api/patient/volumes.png", dependencies=guarded, response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    def volumes_png_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None,
                             structure: str | None = None) -> Response:
        return _trend_png(patient_id, issuer, structure)

    @app.get("/", dependencies=guarded, response_class=HTMLResponse)
    def index(alerts: bool = False) -> HTMLResponse:
        with sessions() as session:
            rows = queries.list_patients(session, alerts_only=alerts, rules=rules)
        return HTMLResponse(patient_list_page(rows))

    @app.get("/patients/{patient_id:path}", dependencies=guarded, response_class=HTMLResponse)
    def patient(patient_id: str, issuer: str | None = None) -> HTMLResponse:
        return HTMLResponse(patient_page(patient_id, *_trend(patient_id, issuer, None)))

    @app.get("/patient", dependencies=guarded, response_class=HTMLResponse)
    def patient_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None
                         ) -> HTMLResponse:
        return HTMLResponse(patient_page(patient_id, *_trend(patient_id, issuer, None)))

    return app
