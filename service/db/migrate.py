"""Apply Alembic migrations programmatically (``kidney-node db upgrade`` and ``serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from service.db.locks import Chore, one_at_a_time

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]

#: The ``migrations`` package, wherever it is installed (a wheel, or the source tree).
MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the repository's ``migrations/`` for ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. On PostgreSQL under an advisory lock:
    processes that start together (the receivers and workers of a scaled-out node)
    migrate one after the other; the first does the work, the others find it at head."""
    from service.db.engine import make_engine  # creates the SQLite folder

    engine = make_engine(url)
    try:
        with one_at_a_time(engine, Chore.MIGRATIONS, wait=True):
            command.upgrade(alembic_config(url), revision)
    finally:
        engine.dispose()
