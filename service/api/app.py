"""Read-only HTTP API (FastAPI); it reads the index, it never writes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service import __version__
from service.db import queries
from service.trends import AlertRules

__all__ = ["create_app"]


def create_app(sessions: sessionmaker[Session], *, rules: AlertRules = AlertRules()) -> FastAPI:
    """The API over ``sessions``; OpenAPI schema at ``/openapi.json``."""
    app = FastAPI(title="kidney-node", version=__version__)

    @app.get("/health")
    def health() -> dict[str, Any]:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    @app.get("/api/jobs")
    def jobs(limit: int = 100) -> list[dict[str, Any]]:
        with sessions() as session:
            return [row.as_dict() for row in queries.list_jobs(session, limit=limit)]

    @app.get("/api/outbox")
    def outbox(limit: int = 200) -> list[dict[str, Any]]:
        with sessions() as session:
            return queries.list_outbox(session, limit=limit)

    @app.get("/api/studies/{study_instance_uid}")
    def study(study_instance_uid: str) -> dict[str, Any]:
        with sessions() as session:
            summary = queries.study_summary(session, study_instance_uid)
        if summary is None:
            raise HTTPException(404, f"study {study_instance_uid} is not known to this node")
        return summary

    @app.get("/api/patients")
    def patients(alerts: bool = False, limit: int = Query(1000, ge=1, le=100_000)
                 ) -> list[dict[str, Any]]:
        with sessions() as session:
            return queries.list_patients(session, alerts_only=alerts, rules=rules, limit=limit)

    @app.get("/api/patients/{patient_id}/volumes")
    def volumes(patient_id: str, structure: str | None = None) -> list[dict[str, Any]]:
        with sessions() as session:
            if not queries.patient_exists(session, patient_id):
                raise HTTPException(404, f"patient {patient_id} is not known to this node")
            return queries.patient_trend(session, patient_id, structure=structure, rules=rules)

    return app
