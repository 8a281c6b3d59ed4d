"""drop indexes no query uses: three on record_version, patient's clinic_id, audit_event's tag

Every look-up of ``record_version`` names the record's type and ID (a record's history,
``verify``, the audit trail's check of a version's hash), which the unique
(record_type, record_id, version) index serves; the single-column indexes on clinic_id,
record_id and patient_id served nothing, yet each versioned write updated all three. On the
M clinic they held 208 MB and half the time of the table's ``integrity_check`` (13.4 → 6.8 s),
which a restore runs. ``patient.clinic_id`` alone is the prefix of every other patient index.
``audit_event.tag``: reviews reach events through ``audit_event_patient``/``_user`` and filter
by tag among those; every event, read or write, paid a page for an index nothing read.

Only indexes are dropped: no row changes. SQLite keeps the freed pages for later growth
(``VACUUM`` returns them to the file system).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = (
    ("record_version", "ix_record_version_clinic_id", "clinic_id"),
    ("record_version", "ix_record_version_patient_id", "patient_id"),
    ("record_version", "ix_record_version_record_id", "record_id"),
    ("patient", "ix_patient_clinic_id", "clinic_id"),
    ("audit_event", "ix_audit_event_tag", "tag"),
)


def upgrade() -> None:
    for table, name, _column in DROPPED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for table, name, column in DROPPED:
        op.create_index(name, table, [column], unique=False)
