"""quality control verdict and reasons of each result

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Results written before quality control keep NULL: "not assessed".
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qc_verdict", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("qc_reasons", sa.Text(), server_default="[]",
                                      nullable=False))
        batch_op.add_column(sa.Column("qc_signals", sa.Text(), server_default="{}",
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("qc_signals")
        batch_op.drop_column("qc_reasons")
        batch_op.drop_column("qc_verdict")
