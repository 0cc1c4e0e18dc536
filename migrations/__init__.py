"""Alembic migrations of the node's index, shipped inside the installed package
(service.db.migrate finds them by this package, not by a path in the source tree)."""
