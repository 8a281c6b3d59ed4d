"""standby_merge: each read-only standby's log segment merged back into the main log, once;
downtime_bundle.closed_at/closed_by_id: the numbers of a bundle never entered, closed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mamori.db import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "standby_merge",
        sa.Column("segment_sha256", sa.String(length=64), nullable=False),
        sa.Column("copy_id", sa.String(length=36), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("base_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("head_chain", sa.LargeBinary(length=32), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("merged_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("merged_by_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_by_id"], ["staff_user.id"], name="fk_standby_merge_merged_by_id_staff_user"
        ),
        sa.PrimaryKeyConstraint("segment_sha256", name="pk_standby_merge"),
    )
    op.create_index("ix_standby_merge_copy_id", "standby_merge", ["copy_id"])
    with op.batch_alter_table("downtime_bundle") as batch:
        batch.add_column(sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("closed_by_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_downtime_bundle_closed_by_id_staff_user", "staff_user", ["closed_by_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("downtime_bundle") as batch:
        batch.drop_constraint("fk_downtime_bundle_closed_by_id_staff_user", type_="foreignkey")
        batch.drop_column("closed_by_id")
        batch.drop_column("closed_at")
    op.drop_index("ix_standby_merge_copy_id", table_name="standby_merge")
    op.drop_table("standby_merge")
