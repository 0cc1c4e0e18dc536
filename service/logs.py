"""Logging set-up, done once by the entry point."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

__all__ = ["JsonFormatter", "OneLineFormatter", "configure_logging"]


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class OneLineFormatter(logging.Formatter):
    """Each message on one line: control characters (a newline in a calling AE title or a
    Patient ID) are written escaped, so a peer cannot forge log lines. Tracebacks, added
    after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = _escaped(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: ANN001, N802 - logging's names
        """The traceback, with its exceptions' messages (a peer's bytes, often) escaped."""
        text = super().formatException(ei)
        exc, seen = ei[1], set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            raw = str(exc)
            if _CONTROL.search(raw):
                text = text.replace(raw, _escaped(raw))
            exc = exc.__cause__ or exc.__context__
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback) when there is one. JSON escapes every
    control character, so a peer's bytes cannot forge a line either."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _escaped(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Timestamped lines on stderr (:class:`OneLineFormatter`, or :class:`JsonFormatter`
    when ``fmt`` is "json"); pynetdicom's per-PDU chatter kept at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: busy" is normal
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("highdicom").setLevel(logging.WARNING)
