"""Incidents: the register (a versioned record), its timeline, notices to patients, the
playbooks and the contact chart

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mamori.db

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incident",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=12), nullable=False),
        sa.Column("knew_on", sa.Date(), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=True),
        sa.Column("reporter_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("owner_id", mamori.db.CachedUuid(), nullable=True),
        sa.Column("source", sa.String(length=80), nullable=False),
        sa.Column("steps", sa.String(length=8000), nullable=False),
        sa.Column("malicious", sa.Boolean(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("reportable", sa.String(length=8), nullable=False),
        sa.Column("decided_by_id", mamori.db.CachedUuid(), nullable=True),
        sa.Column("decided_on", sa.Date(), nullable=True),
        sa.Column("prompt_sent_on", sa.Date(), nullable=True),
        sa.Column("final_sent_on", sa.Date(), nullable=True),
        sa.Column("published_on", sa.Date(), nullable=True),
        sa.Column("closed_on", sa.Date(), nullable=True),
        sa.Column("entries", sa.Integer(), nullable=False),
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
            ["clinic_id"], ["clinic.id"], name=op.f("fk_incident_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["staff_user.id"], name=op.f("fk_incident_created_by_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["staff_user.id"], name=op.f("fk_incident_decided_by_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["staff_user.id"], name=op.f("fk_incident_owner_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["reporter_id"], ["staff_user.id"], name=op.f("fk_incident_reporter_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["staff_user.id"], name=op.f("fk_incident_updated_by_id_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident")),
        sa.UniqueConstraint("clinic_id", "number", name=op.f("uq_incident_clinic_id")),
    )
    op.create_table(
        "incident_contact",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=12), nullable=False),
        sa.Column("duty", sa.String(length=24), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_incident_contact_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_contact_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_contact")),
    )
    with op.batch_alter_table("incident_contact", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_incident_contact_clinic_id"), ["clinic_id"], unique=False
        )

    op.create_table(
        "incident_playbook",
        sa.Column("id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("clinic_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("updated_by_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("updated_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinic.id"], name=op.f("fk_incident_playbook_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_playbook_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_playbook")),
        sa.UniqueConstraint("clinic_id", "kind", name=op.f("uq_incident_playbook_clinic_id")),
    )
    op.create_table(
        "incident_entry",
        sa.Column("incident_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("step_no", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("owner_id", mamori.db.CachedUuid(), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
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
            ["clinic_id"], ["clinic.id"], name=op.f("fk_incident_entry_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_entry_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incident.id"], name=op.f("fk_incident_entry_incident_id_incident")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["staff_user.id"], name=op.f("fk_incident_entry_owner_id_staff_user")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_entry_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_entry")),
    )
    with op.batch_alter_table("incident_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_incident_entry_incident_created", ["incident_id", "created_at"], unique=False
        )

    op.create_table(
        "incident_notice",
        sa.Column("incident_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("patient_id", mamori.db.CachedUuid(), nullable=False),
        sa.Column("method", sa.String(length=12), nullable=False),
        sa.Column("sent_on", sa.Date(), nullable=False),
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
            ["clinic_id"], ["clinic.id"], name=op.f("fk_incident_notice_clinic_id_clinic")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_notice_created_by_id_staff_user"),
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incident.id"], name=op.f("fk_incident_notice_incident_id_incident")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_incident_notice_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"],
            ["staff_user.id"],
            name=op.f("fk_incident_notice_updated_by_id_staff_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_notice")),
        sa.UniqueConstraint(
            "incident_id", "patient_id", name=op.f("uq_incident_notice_incident_id")
        ),
    )
    with op.batch_alter_table("incident_notice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_incident_notice_clinic_id"), ["clinic_id"], unique=False
        )
        batch_op.create_index("ix_incident_notice_patient", ["patient_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("incident_notice", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_notice_patient")
        batch_op.drop_index(batch_op.f("ix_incident_notice_clinic_id"))

    op.drop_table("incident_notice")
    with op.batch_alter_table("incident_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_entry_incident_created")

    op.drop_table("incident_entry")
    op.drop_table("incident_playbook")
    with op.batch_alter_table("incident_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_contact_clinic_id"))

    op.drop_table("incident_contact")
    op.drop_table("incident")
