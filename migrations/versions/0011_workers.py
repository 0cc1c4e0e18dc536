"""workers: jobs run by kidney-node worker processes through a broker

Issue 21: with ``broker.url`` set, receivers publish each job's id to a Celery queue and
workers on other machines claim and run it. The job row stays the record of truth: it
says which worker ran it, which queue it was published to and when. Each worker keeps a
row with its heartbeat; a worker silent past the timeout is ``lost`` and its job queued
again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("queue", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("dispatched_at", _TS, nullable=True))
    op.create_table(
        "workers",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("queues", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=True),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("queue")
        batch_op.drop_column("worker")
