"""Apply Alembic migrations programmatically (``kidney-node db upgrade`` and ``serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

import migrations

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


#: PostgreSQL advisory lock held while migrating: processes that start together (the
#: receivers and workers of a scaled-out node) migrate one after the other; the first
#: does the work, the others find the database at head.
_MIGRATION_LOCK = 0x6B6E6D67  # "knmg"


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``."""
    from service.db.engine import make_engine  # creates the SQLite folder

    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            command.upgrade(alembic_config(url), revision)
            return
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            conn.commit()
            try:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                             {"key": _MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()
