import pytest


@pytest.fixture
def database_url(sqlite_url):
    """SQLite only: the commands' outputs do not depend on the engine (the queries are
    tested on both in tests/unit/db)."""
    return sqlite_url


@pytest.fixture
def index_env(monkeypatch, populated_index, database_url):
    """The CLI pointed at the populated index, no configuration file."""
    monkeypatch.setenv("KIDNEY_NODE_DATABASE__URL", database_url)
    monkeypatch.delenv("KIDNEY_NODE_CONFIG", raising=False)
