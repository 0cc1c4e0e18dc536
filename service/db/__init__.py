"""Database: tables, engine, migrations, queries."""

from service.db.engine import make_engine, make_sessionmaker
from service.db.migrate import upgrade
from service.db.tables import (
    Base,
    Instance,
    InstanceOrigin,
    Job,
    JobState,
    OutboxItem,
    Patient,
    Result,
    SendState,
    Series,
    SeriesRole,
    Study,
)

__all__ = [
    "Base",
    "Instance",
    "InstanceOrigin",
    "Job",
    "JobState",
    "OutboxItem",
    "Patient",
    "Result",
    "SendState",
    "Series",
    "SeriesRole",
    "Study",
    "make_engine",
    "make_sessionmaker",
    "upgrade",
]
