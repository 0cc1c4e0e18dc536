from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.db import Base, make_engine, upgrade


def test_migrations_match_the_orm(database_url):
    """`alembic upgrade head` builds exactly the schema the ORM declares, on both engines."""
    upgrade(database_url)
    upgrade(database_url)  # idempotent
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(
            conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []
