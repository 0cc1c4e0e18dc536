"""the MRI graft methods' results are the structure "graft", as the CT graft's

Before issue 16 the MRI pipelines (mri-graft*, mri-otsu, mri-watershed: all segment the
kidney graft) stored their volume as structure "kidney". The graft found on CT is
"graft"; one name keeps a patient followed by MRI and CT on one trend.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_results = sa.table("results", sa.column("structure", sa.String),
                    sa.column("pipeline_name", sa.String))


def upgrade() -> None:
    op.execute(_results.update()
               .where(_results.c.structure == "kidney",
                      _results.c.pipeline_name.like("mri-%"))
               .values(structure="graft"))


def downgrade() -> None:
    op.execute(_results.update()
               .where(_results.c.structure == "graft",
                      _results.c.pipeline_name.like("mri-%"))
               .values(structure="kidney"))
