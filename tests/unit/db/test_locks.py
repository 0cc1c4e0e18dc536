"""Chores one receiver at a time does when several share the index."""

import threading

from service.db import make_engine
from service.db.locks import Chore, one_at_a_time


def test_a_chore_held_by_one_process_is_skipped_by_another(postgres_url):
    first, second = make_engine(postgres_url), make_engine(postgres_url)
    try:
        with one_at_a_time(first, Chore.CORRECTIONS) as mine:
            assert mine
            seen = []
            # Another receiver (its own connections), while the first holds the chore:
            thread = threading.Thread(target=lambda: seen.extend(
                _try(second, chore) for chore in (Chore.CORRECTIONS, Chore.RETENTION)))
            thread.start()
            thread.join()
            assert seen == [False, True]  # that chore skipped, another one free
        assert _try(second, Chore.CORRECTIONS)  # released at the end of the block
    finally:
        first.dispose()
        second.dispose()


def test_one_process_always_holds_its_chores_on_sqlite(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        with one_at_a_time(engine, Chore.PRIOR_STUDIES) as outer, \
                one_at_a_time(engine, Chore.PRIOR_STUDIES) as inner:
            assert outer and inner
    finally:
        engine.dispose()


def _try(engine, chore) -> bool:  # noqa: ANN001
    with one_at_a_time(engine, chore) as mine:
        return mine
