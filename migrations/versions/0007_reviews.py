"""reviews: a reader's acceptance, rejection or correction of a measurement

Issue 17 (item 5): a radiologist's corrected SEG, or an automatic result accepted or
rejected on the page or API, becomes the record; every review is kept. Instances get an
index on their SOP class: each sweep looks for the few received SEGs among the images.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=True),
        sa.Column("structure", sa.String(length=64), nullable=False),
        sa.Column("action", sa.Enum("accepted", "rejected", "corrected", "ignored",
                                    name="review_action", native_enum=False, length=16),
                  nullable=False),
        sa.Column("volume_ml", sa.Float(), nullable=True),
        sa.Column("reviewer", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seg_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("seg_series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("origin", sa.String(length=255), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["result_pk"], ["results.id"],
                                name=op.f("fk_reviews_result_pk_results")),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"],
                                name=op.f("fk_reviews_study_pk_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_result_pk"), ["result_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_seg_sop_instance_uid"),
                              ["seg_sop_instance_uid"], unique=False)
        batch_op.create_index("ix_reviews_study_structure", ["study_pk", "structure"],
                              unique=False)
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_sop_class_uid"), ["sop_class_uid"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_sop_class_uid"))
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_study_structure")
        batch_op.drop_index(batch_op.f("ix_reviews_seg_sop_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_reviews_result_pk"))
    op.drop_table("reviews")
