"""record_version.import_batch: the audit trail can check what a bulk import wrote

A bulk import (synthetic data, a migration from another system) writes one audit event per
batch with a Merkle root over the batch's version hashes, not one event per version. Until now
nothing tied a version row to its batch, so the root was never checked and a consistent rewrite
of an imported record passed every verification. Each imported version now names its batch;
``mamori audit verify`` recomputes every batch's root from the rows. Versions imported before
this revision have no batch: their events are reported as unchecked (``audit verify`` says so).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("record_version", sa.Column("import_batch", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_record_version_import_batch",
        "record_version",
        ["import_batch"],
        unique=False,
        sqlite_where=sa.text("import_batch IS NOT NULL"),
        postgresql_where=sa.text("import_batch IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_record_version_import_batch", table_name="record_version")
    op.drop_column("record_version", "import_batch")
