"""Logging set-up, done once by the entry point."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO") -> None:
    """Timestamped lines on stderr; pynetdicom's per-PDU chatter kept at WARNING."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: busy" is normal
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("highdicom").setLevel(logging.WARNING)
