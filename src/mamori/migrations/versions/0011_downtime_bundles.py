"""standby_key and downtime_bundle: business continuity's bundles and their keys

The downtime bundle (the day's chart summaries, day sheet and numbered paper forms) is
encrypted with age to standby keys whose identities live off the server; each bundle written
is recorded with its destination and the downtime numbers it reserved.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mamori.db import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "standby_key",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("recipient", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name="fk_standby_key_clinic_id_clinic"
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["staff_user.id"], name="fk_standby_key_created_by_id_staff_user"
        ),
        sa.ForeignKeyConstraint(
            ["revoked_by_id"], ["staff_user.id"], name="fk_standby_key_revoked_by_id_staff_user"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_standby_key"),
        sa.UniqueConstraint("recipient", name="uq_standby_key_recipient"),
    )
    op.create_index("ix_standby_key_clinic_id", "standby_key", ["clinic_id"])
    op.create_table(
        "downtime_bundle",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("made_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("made_by_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("destinations", sa.Text(), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("first_number", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name="fk_downtime_bundle_clinic_id_clinic"
        ),
        sa.ForeignKeyConstraint(
            ["made_by_id"], ["staff_user.id"], name="fk_downtime_bundle_made_by_id_staff_user"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_downtime_bundle"),
        sa.UniqueConstraint("clinic_id", "first_number", name="uq_downtime_bundle_clinic_id"),
    )
    op.create_index("ix_downtime_bundle_clinic_id", "downtime_bundle", ["clinic_id"])


def downgrade() -> None:
    op.drop_index("ix_downtime_bundle_clinic_id", table_name="downtime_bundle")
    op.drop_table("downtime_bundle")
    op.drop_index("ix_standby_key_clinic_id", table_name="standby_key")
    op.drop_table("standby_key")
