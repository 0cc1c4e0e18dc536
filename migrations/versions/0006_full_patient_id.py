"""Patient ID and issuer kept whole: TEXT on PostgreSQL

The index cut both to 64 characters (LO's limit), so two Patient IDs sharing their
first 64 characters became one patient (issue 18). SQLite does not enforce a VARCHAR's
length: nothing to change there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("patient_id", "issuer")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in _COLUMNS:
        op.alter_column("patients", column, type_=sa.Text(), existing_type=sa.String(64),
                        existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in _COLUMNS:  # fails while a longer value is stored, as it should
        op.alter_column("patients", column, type_=sa.String(64), existing_type=sa.Text(),
                        existing_nullable=False)
