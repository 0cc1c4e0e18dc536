"""HTTP API (FastAPI) and the clinicians' pages. They read the index; the one thing they
write is a reader's review (accept or reject an automatic result: ``POST
/api/studies/{uid}/reviews``, and the form of the patient page).

When a bearer token is configured, every route but ``/health`` (and the empty
``/favicon.ico``) needs it, as an
``Authorization: Bearer`` header or a ``kidney_node_token`` cookie (for the pages in a
browser); the API's documentation (``/docs``, a plain page, and ``/openapi.json``)
included. The node refuses to bind the API off the loopback interface without a token.
Every response carries :data:`SECURITY_HEADERS`: pages and data about patients are
neither framed, sniffed, cached nor allowed to load anything from elsewhere. A request
that writes and comes from a browser must come from the node's own pages
(``Sec-Fetch-Site``, ``Origin``, ``Referer``), else 403: no cross-site request forgery.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service import __version__
from service.api import schemas
from service.api.pages import (
    HANDLER_SHA256,
    STYLE_SHA256,
    api_docs_page,
    patient_list_page,
    patient_page,
    patient_query,
)
from service.db import audit, queries
from service.errors import AmbiguousPatientError, KidneyNodeError, PriorRequestRefused
from service.metrics import CONTENT_TYPE, NodeMetrics
from service.priors.backfill import request_priors
from service.priors.status import prior_status
from service.reports.mask_preview import preview_png, seg_source_series
from service.reports.trend_plot import trend_png
from service.reviews.decisions import ReviewRefused, decide
from service.storage.space import StorageHealth
from service.trends import AlertRules

__all__ = ["SECURITY_HEADERS", "TOKEN_COOKIE", "create_app"]

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "kidney_node_token"
_PNG = {"content-type": "image/png"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; img-src 'self'; style-src {STYLE_SHA256}; "
                                f"script-src 'unsafe-hashes' {HANDLER_SHA256}; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


#: The bearer scheme, declared in the OpenAPI schema (the check is :func:`_token_check`).
_BEARER = HTTPBearer(auto_error=False, description="http.token of the node's settings")


def _token_check(token: str | None) -> Callable[..., None]:
    def check(request: Request,
              credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else \
            request.cookies.get(TOKEN_COOKIE, "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


#: Requests that read no patient data: not in the access log.
_NOT_AUDITED = frozenset({"/health", "/metrics", "/favicon.ico", "/docs", "/openapi.json"})
#: Largest review form or JSON body read (bytes).
_MAX_REVIEW_BODY = 16_384


class ReviewRequest(BaseModel):
    """A reader's decision on a study's automatic result."""

    decision: str = Field(description="accept or reject")
    reviewer: str = Field(min_length=1, max_length=255, description="who decides")
    structure: str | None = Field(None, description="one structure (default: every one)")
    comment: str | None = Field(None, max_length=2000)


def _same_origin(request: Request) -> None:
    """Refuse a browser's write that does not come from the node's own pages.

    Browsers say where a request comes from: ``Sec-Fetch-Site`` (every current browser),
    which must be "same-origin"; else ``Origin`` (or ``Referer``), which must be the
    node's origin ("null", what a browser sends under the pages' no-referrer policy, is
    not). A request with none of them is not a browser's (a script, which needs the token
    when one is configured)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site != "same-origin":
            raise HTTPException(403, f"a write must come from the node's own page ({site})")
        return
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is not None and urlsplit(source).netloc != request.headers.get("host", ""):
        raise HTTPException(403, f"a write must come from the node's own page, not {source}")


def create_app(sessions: sessionmaker[Session], *, rules: AlertRules = AlertRules(),
               storage_root: Path | None = None, token: str | None = None,
               storage_health: StorageHealth | None = None,
               metrics: NodeMetrics | None = None, audit_reads: bool = True,
               audit_user_header: str | None = None, pacs: str | None = None,
               heartbeat_timeout_s: float = 60.0) -> FastAPI:
    """The API over ``sessions``; OpenAPI schema at ``/openapi.json``.

    ``storage_root`` (the archive) serves the mask previews; without it they answer 404.
    ``storage_health`` is reported by ``/health``; ``metrics`` by ``/metrics`` (else 404).
    ``audit_reads``: every request but ``_NOT_AUDITED`` goes into the access log, with the
    user ``audit_user_header`` names (set by an authenticating proxy). ``pacs`` names the
    PACS asked for earlier studies (``prior_studies.pacs``); without it a request for them
    answers 409. ``heartbeat_timeout_s``: a worker silent longer is shown ``lost``.
    """
    app = FastAPI(title="kidney-node", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    guarded = [Depends(_token_check(token))]

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if audit_reads and request.url.path not in _NOT_AUDITED:
            await run_in_threadpool(_audit, request, response.status_code)
        return response

    def _audit(request: Request, status: int) -> None:
        """One access-log row; a failure is logged and the answer still goes out (the
        clinicians' pages stay up when the index is busy)."""
        params = request.scope.get("path_params") or {}
        query = request.url.query
        try:
            with sessions.begin() as session:
                audit.record_access(
                    session, user=(request.headers.get(audit_user_header, "")
                                   if audit_user_header else ""),
                    client=request.client.host if request.client else "",
                    method=request.method,
                    path=request.url.path + (f"?{query}" if query else ""),
                    patient_id=params.get("patient_id", request.query_params.get("id")),
                    study_instance_uid=params.get("study_instance_uid"), status=status)
        except SQLAlchemyError as exc:
            logger.error("access log: cannot record %s %s: %s", request.method,
                         request.url.path, exc)

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", dependencies=guarded, response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(api_docs_page(app.openapi()))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        """No icon (browsers ask for one on every page: an empty answer, not a 404)."""
        return Response(status_code=204)

    @app.get("/health")
    def health() -> schemas.HealthAnswer:
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

    @app.get("/metrics", dependencies=guarded, response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    def prometheus() -> Response:
        """Prometheus metrics (text format): C-STORE answers, associations, job stage
        durations; jobs, verdicts, reviews, outbox and archive as the index holds them."""
        if metrics is None:
            raise HTTPException(404, "this API has no metrics")
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/api/audit/received", dependencies=guarded)
    def audit_received(study: str | None = None, peer: str | None = None,
                       limit: int = Query(1000, ge=1, le=100_000)
                       ) -> list[schemas.ReceivedInstance]:
        """Instances received, newest first: of a study, and/or from a peer (calling AE
        title or address)."""
        with sessions() as session:
            return audit.received_instances(session, study_instance_uid=study, peer=peer,
                                            limit=limit)

    @app.get("/api/audit/sent", dependencies=guarded)
    def audit_sent(study: str | None = None, destination: str | None = None,
                   limit: int = Query(1000, ge=1, le=100_000)) -> list[schemas.SentObject]:
        """Result objects sent or to send: where, when, outcome."""
        with sessions() as session:
            return audit.sent_objects(session, study_instance_uid=study,
                                      destination=destination, limit=limit)

    @app.get("/api/audit/access", dependencies=guarded)
    def audit_access(patient_id: str | None = None, user: str | None = None,
                     limit: int = Query(1000, ge=1, le=100_000)) -> list[schemas.AccessRead]:
        """Reads of patient data through this API and its pages: who, when, what."""
        with sessions() as session:
            return audit.access_records(session, patient_id=patient_id, user=user,
                                        limit=limit)

    @app.get("/api/jobs", dependencies=guarded)
    def jobs(limit: int = Query(100, ge=1, le=10_000)) -> list[queries.JobRow]:
        with sessions() as session:
            return [row.as_dict() for row in queries.list_jobs(session, limit=limit)]

    @app.get("/api/workers", dependencies=guarded)
    def workers() -> list[queries.WorkerRow]:
        """The ``kidney-node worker`` processes of a scaled-out node (empty without one):
        device, queues, heartbeat and its age, the job running now, jobs done."""
        with sessions() as session:
            return [asdict(row) for row in queries.list_workers(
                session, heartbeat_timeout_s=heartbeat_timeout_s)]

    @app.get("/api/outbox", dependencies=guarded)
    def outbox(limit: int = Query(200, ge=1, le=10_000)) -> list[schemas.SendOut]:
        with sessions() as session:
            return queries.list_outbox(session, limit=limit)

    @app.get("/api/studies/{study_instance_uid}", dependencies=guarded)
    def study(study_instance_uid: str) -> schemas.StudyOut:
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
                raise HTTPException(404, f"study {study_instance_uid} has no stored result, "
                                         "or its source images were purged (retention)")
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
                 ) -> list[schemas.PatientOut]:
        with sessions() as session:
            return queries.list_patients(session, alerts_only=alerts, rules=rules, limit=limit)

    def _issuer(session: Session, patient_id: str, issuer: str | None) -> str:
        """The issuer (given, or the only one holding ``patient_id``); else 404 or 409."""
        try:
            found = queries.resolve_issuer(session, patient_id, issuer)
        except AmbiguousPatientError as exc:
            raise HTTPException(409, f"{exc}: name one with ?issuer=") from exc
        if found is None:
            raise HTTPException(404, f"patient {patient_id} is not known to this node")
        return found

    def _trend(patient_id: str, issuer: str | None, structure: str | None
               ) -> tuple[str, list[dict[str, Any]]]:
        """The issuer (given, or the only one holding ``patient_id``) and the trend."""
        with sessions() as session:
            issuer = _issuer(session, patient_id, issuer)
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
                ) -> list[schemas.TrendRow]:
        return _trend(patient_id, issuer, structure)[1]

    @app.get("/api/patient/volumes", dependencies=guarded)
    def volumes_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None,
                         structure: str | None = None) -> list[schemas.TrendRow]:
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

    def _decide(study_instance_uid: str, body: ReviewRequest, request: Request, device: str
                ) -> list[dict[str, Any]]:
        client = request.client.host if request.client else None
        try:
            with sessions.begin() as session:
                reviews = decide(session, study_instance_uid, body.decision,
                                 reviewer=body.reviewer, device=device,
                                 structure=body.structure, comment=body.comment,
                                 origin=client)
                session.flush()
                return [queries.review_dict(r) for r in reviews]
        except ReviewRefused as exc:
            raise HTTPException(exc.status, str(exc)) from exc

    @app.post("/api/studies/{study_instance_uid}/reviews", dependencies=guarded,
              status_code=201)
    def review(study_instance_uid: str, body: ReviewRequest, request: Request
               ) -> list[schemas.ReviewOut]:
        """Accept or reject the study's automatic result (of one structure, or all): a
        rejected result leaves the trend, an accepted one counts whatever its quality
        control verdict. Every review is kept (``/api/patient/history``)."""
        _same_origin(request)
        return _decide(study_instance_uid, body, request, "API")

    @app.post("/patient/review", dependencies=guarded, include_in_schema=False)
    async def review_form(request: Request) -> RedirectResponse:
        _same_origin(request)
        raw = await request.body()
        if len(raw) > _MAX_REVIEW_BODY:
            raise HTTPException(413, "review form too large")
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        try:
            body = ReviewRequest(decision=form.get("decision", ""),
                                 reviewer=form.get("reviewer", "").strip(),
                                 structure=form.get("structure") or None,
                                 comment=form.get("comment") or None)
        except ValueError as exc:
            raise HTTPException(422, f"review form: {exc}") from exc
        _decide(form.get("study", ""), body, request, "web page")
        where = patient_query(form.get("id", ""), form.get("issuer", ""))
        return RedirectResponse(f"/patient?{where}", status_code=303)

    def _history(patient_id: str, issuer: str | None) -> list[dict[str, Any]]:
        with sessions() as session:
            return queries.patient_history(session, patient_id,
                                           _issuer(session, patient_id, issuer))

    @app.get("/api/patients/{patient_id:path}/history", dependencies=guarded)
    def history(patient_id: str, issuer: str | None = None) -> list[schemas.HistoryEvent]:
        """Every measurement of the patient: automatic results and reviews."""
        return _history(patient_id, issuer)

    @app.get("/api/patient/history", dependencies=guarded)
    def history_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None
                         ) -> list[schemas.HistoryEvent]:
        return _history(patient_id, issuer)

    def _priors(patient_id: str, issuer: str | None, request: Request | None
                ) -> dict[str, Any]:
        """The patient's prior-study requests and studies; with ``request`` (a POST) a new
        request first. A patient the node does not hold yet may be asked for."""
        if request is not None:
            _same_origin(request)
            if pacs is None:
                raise HTTPException(409, "prior_studies.pacs is not set: the node has no "
                                         "PACS to ask")
        with sessions.begin() as session:
            try:
                held = queries.resolve_issuer(session, patient_id, issuer)
            except AmbiguousPatientError as exc:
                raise HTTPException(409, f"{exc}: name one with ?issuer=") from exc
            issuer = held if held is not None else (issuer or "")
            if request is not None:
                try:
                    request_priors(session, patient_id=patient_id, issuer=issuer,
                                   reason="api")
                except PriorRequestRefused as exc:
                    raise HTTPException(422, str(exc)) from exc
            return prior_status(session, patient_id, issuer)

    @app.get("/api/patients/{patient_id:path}/priors", dependencies=guarded)
    def priors(patient_id: str, issuer: str | None = None) -> dict[str, Any]:
        """The patient's earlier studies asked of the PACS, and how their retrieval went."""
        return _priors(patient_id, issuer, None)

    @app.post("/api/patients/{patient_id:path}/priors", dependencies=guarded,
              status_code=202)
    def request_prior_studies(patient_id: str, request: Request, issuer: str | None = None
                              ) -> dict[str, Any]:
        """Ask the PACS for the patient's earlier studies now; the node fetches those it
        can segment (oldest first, within prior_studies' limits) and measures them."""
        return _priors(patient_id, issuer, request)

    @app.get("/api/patient/priors", dependencies=guarded)
    def priors_by_query(patient_id: str = Query(alias="id"), issuer: str | None = None
                        ) -> dict[str, Any]:
        return _priors(patient_id, issuer, None)

    @app.post("/api/patient/priors", dependencies=guarded, status_code=202)
    def request_prior_studies_by_query(request: Request, patient_id: str = Query(alias="id"),
                                       issuer: str | None = None) -> dict[str, Any]:
        return _priors(patient_id, issuer, request)

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
