"""prior studies: a patient's earlier studies fetched from the PACS; job priority

Issue 20 (item 1): when the node first measures a patient (or on demand) it asks the PACS
for the patient's earlier studies and retrieves those it can segment, at a lower priority
than new studies. One row per earlier study: none is fetched twice.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_PATIENT_TEXT = sa.String(64).with_variant(sa.Text(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False,
                                      server_default="0"))
    op.create_table(
        "prior_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", _PATIENT_TEXT, nullable=False),
        sa.Column("issuer", _PATIENT_TEXT, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("queried_at", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prior_requests")),
    )
    op.create_index("ix_prior_requests_patient", "prior_requests", ["patient_id", "issuer"])
    op.create_table(
        "prior_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("modalities", sa.String(64), nullable=False),
        sa.Column("description", sa.String(64), nullable=True),
        sa.Column("series_uids", sa.Text(), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=True),
        sa.Column("state", sa.Enum("queued", "retrieving", "retrieved", "skipped", "failed",
                                   name="prior_state", native_enum=False, length=16),
                  nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("instances_retrieved", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["request_pk"], ["prior_requests.id"],
                                name=op.f("fk_prior_studies_request_pk_prior_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prior_studies")),
        sa.UniqueConstraint("study_instance_uid",
                            name=op.f("uq_prior_studies_study_instance_uid")),
    )
    op.create_index("ix_prior_studies_state_due", "prior_studies",
                    ["state", "next_attempt_at"])
    op.create_index(op.f("ix_prior_studies_request_pk"), "prior_studies", ["request_pk"])


def downgrade() -> None:
    op.drop_index(op.f("ix_prior_studies_request_pk"), table_name="prior_studies")
    op.drop_index("ix_prior_studies_state_due", table_name="prior_studies")
    op.drop_table("prior_studies")
    op.drop_index("ix_prior_requests_patient", table_name="prior_requests")
    op.drop_table("prior_requests")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("priority")
