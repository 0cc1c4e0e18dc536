"""Work that one process at a time should do when several share the index (the receivers
of a scaled-out node): PostgreSQL advisory locks, taken without waiting."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

__all__ = ["Chore", "one_at_a_time"]


class Chore(enum.IntEnum):
    """The advisory lock key of each chore."""

    CORRECTIONS = 0x6B6E0001  # readers' SEGs made into reviews
    PRIOR_STUDIES = 0x6B6E0002  # queries and retrievals of earlier studies
    RETENTION = 0x6B6E0003  # purging old source images
    MIGRATIONS = 0x6B6E6D67  # Alembic upgrades at start ("knmg")


@contextmanager
def one_at_a_time(engine: Engine, chore: Chore, *, wait: bool = False) -> Iterator[bool]:
    """True when this process holds ``chore`` for the block, False when another does
    (skip it this round; with ``wait``, wait for it instead). A session-level advisory
    lock on a connection of its own, released at the end of the block or when the
    process dies. SQLite: always True (one process)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": int(chore)})
            held = True
        else:
            held = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"),
                                    {"key": int(chore)}))
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": int(chore)})
                conn.commit()
