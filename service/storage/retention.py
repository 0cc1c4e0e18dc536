"""Retention: received source images leave the archive after a configured age (issue 19).

What goes: the files of received instances of studies last received more than the given
number of days ago, whose job is not queued or running. What stays: everything the node
wrote (SEG, SR, RT Structure Set, overlay, its copies of a segmented phase), the SEGs,
SRs and other derived objects received (a reader's correction), every result, review and
volume, and every index row (the audit of who sent what, and the study's fingerprint, so
a purged study is never processed again). A purged row keeps its path and gets
``purged_at``. Files are deleted before their rows are marked: a purge cut short is
finished by the next one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db.tables import Instance, InstanceOrigin, Job, JobState, Series, Study, utcnow

__all__ = ["DERIVED_MODALITIES", "PurgeReport", "purge_sources"]

logger = logging.getLogger(__name__)

#: Modalities of derived objects, kept whoever made them.
DERIVED_MODALITIES = ("SEG", "SR", "RTSTRUCT", "PR", "KO")


@dataclass(frozen=True)
class PurgeReport:
    """What a purge deleted (or, dry, would delete)."""

    dry_run: bool
    cutoff: dt.datetime
    studies: tuple[str, ...]
    instances: int
    bytes: int

    def summary(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        return (f"retention {verb} {self.instances} source instance(s), "
                f"{self.bytes / 2**20:.1f} MiB, of {len(self.studies)} study(ies) last "
                f"received before {self.cutoff.isoformat(timespec='seconds')}")


def _candidates(session: Session, cutoff: dt.datetime) -> list[tuple[int, str, int, str]]:
    busy = exists().where(Job.study_pk == Study.id,
                          Job.state.in_((JobState.QUEUED, JobState.RUNNING)))
    return [tuple(row) for row in session.execute(
        select(Instance.id, Instance.path, Instance.size_bytes, Study.study_instance_uid)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .where(Instance.origin == InstanceOrigin.RECEIVED, Instance.purged_at.is_(None),
               Series.modality.not_in(DERIVED_MODALITIES), Study.last_received_at < cutoff,
               ~busy)
        .order_by(Instance.id))]


def purge_sources(sessions: sessionmaker[Session], root: Path, *, older_than_days: float,
                  dry_run: bool, now: dt.datetime | None = None) -> PurgeReport:
    """Delete (unless ``dry_run``) the source images of studies last received more than
    ``older_than_days`` ago; logged either way."""
    cutoff = (now or utcnow()) - dt.timedelta(days=older_than_days)
    with sessions() as session:
        rows = _candidates(session, cutoff)
    report = PurgeReport(dry_run, cutoff, tuple(sorted({r[3] for r in rows})), len(rows),
                         sum(r[2] for r in rows))
    if dry_run or not rows:
        logger.info("%s", report.summary())
        return report
    folders: set[Path] = set()
    done: list[int] = []
    freed = 0
    for pk, relpath, size, study in rows:
        path = root / relpath
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("retention: cannot delete %s (study %s): %s", path, study, exc)
            continue
        folders.add(path.parent)
        done.append(pk)
        freed += size
    with sessions.begin() as session:
        for start in range(0, len(done), 500):
            session.execute(update(Instance).where(Instance.id.in_(done[start:start + 500]))
                            .values(purged_at=utcnow()))
    for folder in folders:  # a series folder emptied (results live in folders of their own)
        try:
            folder.rmdir()
        except OSError:  # not empty: a derived object of the study received in it
            logger.debug("retention: %s kept (not empty)", folder)
    report = PurgeReport(False, cutoff, report.studies, len(done), freed)
    logger.info("%s", report.summary())
    return report
