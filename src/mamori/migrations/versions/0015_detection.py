"""Detection of abnormal access: the roster, staff household facts and staff–patient links,
the 電話対応 log (a versioned record), the ledger of unexplained accesses, cases and passes

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mamori.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "detection_run",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("tier", sa.String(length=12), nullable=False),
        sa.Column("started_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("from_seq", sa.Integer(), nullable=False),
        sa.Column("through_seq", sa.Integer(), nullable=False),
        sa.Column("accesses", sa.Integer(), nullable=False),
        sa.Column("explained", sa.Integer(), nullable=False),
        sa.Column("cases_opened", sa.Integer(), nullable=False),
        sa.Column("cases_updated", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_detection_run_clinic_id_clinic")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_run")),
    )
    with op.batch_alter_table("detection_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_detection_run_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "detection_access",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("patient_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("weak", sa.Boolean(), nullable=False),
        sa.Column("dormant", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_detection_access_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_detection_access_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_access")),
        sa.UniqueConstraint(
            "user_id", "patient_id", "day", name=op.f("uq_detection_access_user_id")
        ),
    )
    with op.batch_alter_table("detection_access", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_detection_access_clinic_id"), ["clinic_id"], unique=False
        )
        batch_op.create_index(
            "ix_detection_access_patient_day", ["patient_id", "day"], unique=False
        )

    op.create_table(
        "detection_case",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("patient_id", mamori.db.CachedUuid(), nullable=True),
        sa.Column("tier", sa.String(length=12), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("first_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by_id", mamori.db.CachedUuid(), nullable=True),
        sa.Column("reviewed_at", mamori.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("suppress_until", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_detection_case_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by_id"],
            ["staff_user.id"],
            name=op.f("fk_detection_case_reviewed_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_detection_case_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_case")),
    )
    with op.batch_alter_table("detection_case", schema=None) as batch_op:
        batch_op.create_index(
            "ix_detection_case_clinic_status", ["clinic_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_detection_case_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_detection_case_user_id"), ["user_id"], unique=False)

    op.create_table(
        "staff_profile",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("notice_at", mamori.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("left_on", sa.Date(), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_staff_profile_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_staff_profile_updated_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_staff_profile_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_profile")),
        sa.UniqueConstraint("user_id", name=op.f("uq_staff_profile_user_id")),
    )
    with op.batch_alter_table("staff_profile", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_profile_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "staff_roster",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("start_minute", sa.Integer(), nullable=True),
        sa.Column("end_minute", sa.Integer(), nullable=True),
        sa.Column("entered_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("entered_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_staff_roster_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["entered_by_id"],
            ["staff_user.id"],
            name=op.f("fk_staff_roster_entered_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_staff_roster_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_roster")),
        sa.UniqueConstraint("user_id", "day", name=op.f("uq_staff_roster_user_id")),
    )
    with op.batch_alter_table("staff_roster", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_roster_clinic_id"), ["clinic_id"], unique=False)

    op.create_table(
        "contact_log",
        sa.Column("patient_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("channel", sa.String(length=12), nullable=False),
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
            ["clinic_id"], ["clinic.id"], name=op.f("fk_contact_log_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_contact_log_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_contact_log_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_contact_log_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_log")),
    )
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_log_clinic_id"), ["clinic_id"], unique=False)
        batch_op.create_index(
            "ix_contact_log_patient_created", ["patient_id", "created_at"], unique=False
        )

    op.create_table(
        "staff_patient_link",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("user_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("patient_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("relation", sa.String(length=12), nullable=False),
        sa.Column("created_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("created_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_staff_patient_link_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_staff_patient_link_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_staff_patient_link_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["staff_user.id"], name=op.f("fk_staff_patient_link_user_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_patient_link")),
        sa.UniqueConstraint("user_id", "patient_id", name=op.f("uq_staff_patient_link_user_id")),
    )
    with op.batch_alter_table("staff_patient_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_staff_patient_link_clinic_id"), ["clinic_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_staff_patient_link_patient_id"), ["patient_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("staff_patient_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_patient_link_patient_id"))
        batch_op.drop_index(batch_op.f("ix_staff_patient_link_clinic_id"))

    op.drop_table("staff_patient_link")
    with op.batch_alter_table("contact_log", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_log_patient_created")
        batch_op.drop_index(batch_op.f("ix_contact_log_clinic_id"))

    op.drop_table("contact_log")
    with op.batch_alter_table("staff_roster", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_roster_clinic_id"))

    op.drop_table("staff_roster")
    with op.batch_alter_table("staff_profile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_profile_clinic_id"))

    op.drop_table("staff_profile")
    with op.batch_alter_table("detection_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detection_case_user_id"))
        batch_op.drop_index(batch_op.f("ix_detection_case_patient_id"))
        batch_op.drop_index("ix_detection_case_clinic_status")

    op.drop_table("detection_case")
    with op.batch_alter_table("detection_access", schema=None) as batch_op:
        batch_op.drop_index("ix_detection_access_patient_day")
        batch_op.drop_index(batch_op.f("ix_detection_access_clinic_id"))

    op.drop_table("detection_access")
    with op.batch_alter_table("detection_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detection_run_clinic_id"))

    op.drop_table("detection_run")
