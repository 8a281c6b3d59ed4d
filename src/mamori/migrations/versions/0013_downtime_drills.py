"""downtime_drill: the record of each downtime exercise (BCP 1-2c), evidence for the checklist

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mamori.db import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "downtime_drill",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("scenario", sa.String(length=16), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("reached", sa.Boolean(), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=True),
        sa.Column("problems", sa.Text(), nullable=False),
        sa.Column("improvement", sa.Text(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_by_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name="fk_downtime_drill_clinic_id_clinic"
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["staff_user.id"],
            name="fk_downtime_drill_recorded_by_id_staff_user",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_downtime_drill"),
    )
    op.create_index("ix_downtime_drill_clinic_id", "downtime_drill", ["clinic_id"])


def downgrade() -> None:
    op.drop_index("ix_downtime_drill_clinic_id", table_name="downtime_drill")
    op.drop_table("downtime_drill")
