"""A reader accepts or rejects a study's automatic result (page, API, CLI)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Review, ReviewAction, Study, utcnow
from service.errors import KidneyNodeError
from service.reviews.corrections import latest_results

__all__ = ["DECISIONS", "ReviewRefused", "decide"]

#: What a reader may decide about an automatic result.
DECISIONS = {"accept": ReviewAction.ACCEPTED, "reject": ReviewAction.REJECTED}


class ReviewRefused(KidneyNodeError):
    """A review that cannot be recorded; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decide(session: Session, study_instance_uid: str, decision: str, *, reviewer: str,
           device: str, structure: str | None = None, comment: str | None = None,
           origin: str | None = None) -> list[Review]:
    """Record ``decision`` ("accept" or "reject") on the study's latest automatic result of
    ``structure`` (of every structure when None), by ``reviewer`` now. Does not commit.

    Raises
    ------
    ReviewRefused
        An unknown decision or study, no reviewer's name, or no result to review.
    """
    action = DECISIONS.get(decision)
    if action is None:
        raise ReviewRefused(f"decision must be one of {', '.join(DECISIONS)}, not "
                            f"{decision!r}", 422)
    reviewer = reviewer.strip()
    if not reviewer:
        raise ReviewRefused("a review needs the reviewer's name", 422)
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        raise ReviewRefused(f"study {study_instance_uid} is not known to this node", 404)
    results = latest_results(session, study.id)
    if structure is not None:
        results = {k: v for k, v in results.items() if k == structure}
    if not results:
        what = f"no {structure} result" if structure else "no result"
        raise ReviewRefused(f"study {study_instance_uid} has {what} to review", 409)
    reviews = [Review(study_pk=study.id, result_pk=result.id, structure=name, action=action,
                      reviewer=reviewer[:255], device=device, reviewed_at=utcnow(),
                      origin=origin, comment=comment or None)
               for name, result in sorted(results.items())]
    session.add_all(reviews)
    return reviews
