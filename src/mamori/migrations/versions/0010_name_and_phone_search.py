"""patient: blind indexes for finding a patient by name as written, given name and phone

Reception searches by 漢字 (佐藤), by a given name alone and by phone number, as well as by
kana. Like the kana indexes these are keyed, truncated HMACs (16 bits: each value stands for
many patients; candidates are decrypted and tested exactly). Rows written before this
revision get their values at the next start of the server (``patients/indexes.py``), which
holds the key this migration does not.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("bi_family", "bi_given", "bi_given_kana", "bi_phone")
INDEXES = {
    "bi_family": "ix_patient_clinic_family",
    "bi_given": "ix_patient_clinic_given",
    "bi_given_kana": "ix_patient_clinic_given_kana",
    "bi_phone": "ix_patient_clinic_phone",
}


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("patient", sa.Column(column, sa.Integer(), nullable=True))
        op.create_index(INDEXES[column], "patient", ["clinic_id", column], unique=False)


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(INDEXES[column], table_name="patient")
        op.drop_column("patient", column)
