"""The clinic's programme: the MHLW checklist's answers (a versioned record), account reviews,
duties done, training sessions, BCP approvals and acknowledgements, the equipment and vendor
ledgers, the clinic's own lines of the information inventory

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mamori.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_review",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("reviewer_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("reviewed_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("accounts", sa.Integer(), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("finding", sa.String(length=1000), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_account_review_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["staff_user.id"],
            name=op.f("fk_account_review_reviewer_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_review")),
    )
    with op.batch_alter_table("account_review", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_review_clinic_id"), ["clinic_id"], unique=False
        )

    op.create_table(
        "asset",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("os", sa.String(length=100), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("patch_state", sa.String(length=200), nullable=False),
        sa.Column("antivirus", sa.String(length=100), nullable=False),
        sa.Column("remote_maintenance", sa.Boolean(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("last_seen_at", mamori.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("stocktaken_on", sa.Date(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_asset_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["staff_user.id"], name=op.f("fk_asset_updated_by_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset")),
    )
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_asset_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "bcp_approval",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("approved_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("approved_on", sa.Date(), nullable=False),
        sa.Column("review_on", sa.Date(), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["approved_by_id"],
            ["staff_user.id"],
            name=op.f("fk_bcp_approval_approved_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_bcp_approval_clinic_id_clinic")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bcp_approval")),
    )
    with op.batch_alter_table("bcp_approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bcp_approval_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "checklist_answer",
        sa.Column("fiscal_year", sa.Integer(), nullable=False),
        sa.Column("form", sa.String(length=12), nullable=False),
        sa.Column("item_id", sa.String(length=16), nullable=False),
        sa.Column("edition", sa.String(length=40), nullable=False),
        sa.Column("item_set_sha256", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.String(length=8), nullable=False),
        sa.Column("checked_on", sa.Date(), nullable=False),
        sa.Column("checked_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("target_on", sa.Date(), nullable=True),
        sa.Column("proposed", sa.String(length=8), nullable=False),
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("created_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checked_by_id"],
            ["staff_user.id"],
            name=op.f("fk_checklist_answer_checked_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_checklist_answer_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_checklist_answer_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_checklist_answer_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checklist_answer")),
        sa.UniqueConstraint(
            "clinic_id",
            "fiscal_year",
            "form",
            "item_id",
            name=op.f("uq_checklist_answer_clinic_id"),
        ),
    )
    op.create_table(
        "duty_done",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("duty", sa.String(length=24), nullable=False),
        sa.Column("done_on", sa.Date(), nullable=False),
        sa.Column("done_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("recorded_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_duty_done_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["done_by_id"], ["staff_user.id"], name=op.f("fk_duty_done_done_by_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duty_done")),
    )
    with op.batch_alter_table("duty_done", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_duty_done_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "inventory_entry",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("classification", sa.String(length=120), nullable=False),
        sa.Column("location", sa.String(length=300), nullable=False),
        sa.Column("protection", sa.String(length=300), nullable=False),
        sa.Column("keep", sa.String(length=200), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_inventory_entry_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_inventory_entry_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_entry")),
        sa.UniqueConstraint("clinic_id", "name", name=op.f("uq_inventory_entry_clinic_id")),
    )
    op.create_table(
        "training_session",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("material", sa.String(length=300), nullable=False),
        sa.Column("attendees", sa.JSON(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=True),
        sa.Column("clicked", sa.Integer(), nullable=True),
        sa.Column("reported", sa.Integer(), nullable=True),
        sa.Column("recorded_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("recorded_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_training_session_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["staff_user.id"],
            name=op.f("fk_training_session_recorded_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_session")),
    )
    with op.batch_alter_table("training_session", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_training_session_clinic_id"), ["clinic_id"], unique=False
        )

    op.create_table(
        "vendor",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("contract", sa.String(length=200), nullable=False),
        sa.Column("maintains", sa.String(length=300), nullable=False),
        sa.Column("remote_route", sa.String(length=200), nullable=False),
        sa.Column("sds_received_on", sa.Date(), nullable=True),
        sa.Column("checklist_received_on", sa.Date(), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=False),
        sa.Column("reviewed_on", sa.Date(), nullable=True),
        sa.Column("accounts", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_vendor_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["staff_user.id"], name=op.f("fk_vendor_updated_by_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vendor")),
    )
    with op.batch_alter_table("vendor", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vendor_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "bcp_acknowledgement",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("approval_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("read_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["bcp_approval.id"],
            name=op.f("fk_bcp_acknowledgement_approval_id_bcp_approval"),
        ),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_bcp_acknowledgement_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_bcp_acknowledgement_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bcp_acknowledgement")),
        sa.UniqueConstraint(
            "approval_id", "user_id", name=op.f("uq_bcp_acknowledgement_approval_id")
        ),
    )
    with op.batch_alter_table("bcp_acknowledgement", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bcp_acknowledgement_clinic_id"), ["clinic_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("bcp_acknowledgement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bcp_acknowledgement_clinic_id"))

    op.drop_table("bcp_acknowledgement")
    with op.batch_alter_table("vendor", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vendor_clinic_id"))

    op.drop_table("vendor")
    with op.batch_alter_table("training_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_session_clinic_id"))

    op.drop_table("training_session")
    op.drop_table("inventory_entry")
    with op.batch_alter_table("duty_done", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duty_done_clinic_id"))

    op.drop_table("duty_done")
    op.drop_table("checklist_answer")
    with op.batch_alter_table("bcp_approval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bcp_approval_clinic_id"))

    op.drop_table("bcp_approval")
    with op.batch_alter_table("asset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_asset_clinic_id"))

    op.drop_table("asset")
    with op.batch_alter_table("account_review", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_review_clinic_id"))

    op.drop_table("account_review")
