"""downtime_entry: which record each downtime number became after recovery (事後入力)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mamori.db import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "downtime_entry",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("record_type", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("entered_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("entered_by_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name="fk_downtime_entry_clinic_id_clinic"
        ),
        sa.ForeignKeyConstraint(
            ["entered_by_id"], ["staff_user.id"], name="fk_downtime_entry_entered_by_id_staff_user"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_downtime_entry"),
        sa.UniqueConstraint("clinic_id", "number", name="uq_downtime_entry_clinic_id"),
    )
    op.create_index("ix_downtime_entry_clinic_id", "downtime_entry", ["clinic_id"])


def downgrade() -> None:
    op.drop_index("ix_downtime_entry_clinic_id", table_name="downtime_entry")
    op.drop_table("downtime_entry")
