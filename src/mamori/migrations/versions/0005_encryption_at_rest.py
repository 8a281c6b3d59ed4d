"""encryption at rest: data keys, sealed rows, blind indexes; record versions re-encryptable

Every field that identifies or describes a patient moves into one AES-256-GCM ciphertext per
row (``sealed``); search moves to keyed blind indexes. The plaintext columns are dropped, so
this revision refuses a database that already holds patient rows (none exist before 0.2:
export them as FHIR and import into a new instance).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mamori.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns of a record version that never change; only ``sealed`` may be re-encrypted.
FIXED = (
    "id, clinic_id, record_type, record_id, patient_id, version, change, status, "
    "changed_by_id, changed_at, prev_hash, content_hash"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM record_version")).scalar():
        raise RuntimeError(
            "このデータベースには暗号化されていない患者データがあります。FHIR で書き出し、"
            "新しいインスタンスに取り込んでください。 / This database holds unencrypted patient "
            "data; export it as FHIR and import it into a new instance."
        )
    op.create_table(
        "data_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(length=32), nullable=False),
        sa.Column("kek_source", sa.String(length=16), nullable=False),
        sa.Column("kek_params", sa.Text(), nullable=False),
        sa.Column("created_at", mamori.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", mamori.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_key")),
    )
    with op.batch_alter_table("allergy_intolerance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("substance_code")
        batch_op.drop_column("onset_date")
        batch_op.drop_column("substance")
        batch_op.drop_column("is_contraindication")
        batch_op.drop_column("code_system")
        batch_op.drop_column("reaction")
        batch_op.drop_column("severity")
        batch_op.drop_column("category")
        batch_op.drop_column("verification")

    with op.batch_alter_table("condition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("is_suspected")
        batch_op.drop_column("display_name")
        batch_op.drop_column("onset_date")
        batch_op.drop_column("code")
        batch_op.drop_column("is_primary")
        batch_op.drop_column("is_undisclosed")
        batch_op.drop_column("outcome")
        batch_op.drop_column("code_system")
        batch_op.drop_column("outcome_date")
        batch_op.drop_column("is_long_term")
        batch_op.drop_column("is_billing_only")
        batch_op.drop_column("icd10")

    with op.batch_alter_table("coverage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bi_insurance", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.create_index(
            batch_op.f("ix_coverage_bi_insurance"), ["bi_insurance"], unique=False
        )
        batch_op.drop_column("relationship")
        batch_op.drop_column("insurer_number")
        batch_op.drop_column("valid_from")
        batch_op.drop_column("recipient_number")
        batch_op.drop_column("symbol")
        batch_op.drop_column("copay_percent")
        batch_op.drop_column("number")
        batch_op.drop_column("kind")
        batch_op.drop_column("public_payer_number")
        batch_op.drop_column("branch")
        batch_op.drop_column("valid_to")

    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("mime_type")
        batch_op.drop_column("doc_type")
        batch_op.drop_column("title")
        batch_op.drop_column("sha256")
        batch_op.drop_column("size_bytes")

    with op.batch_alter_table("encounter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("department")

    with op.batch_alter_table("medication_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("dispensing")
        batch_op.drop_column("refill_count")
        batch_op.drop_column("rp_groups")

    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_index(batch_op.f("ix_observation_patient_code"))
        batch_op.drop_column("value")
        batch_op.drop_column("value_text")
        batch_op.drop_column("ref_low")
        batch_op.drop_column("ref_high")
        batch_op.drop_column("abnormal_flag")
        batch_op.drop_column("code_system")
        batch_op.drop_column("name")
        batch_op.drop_column("unit")
        batch_op.drop_column("code")

    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bi_number", sa.BigInteger(), nullable=False))
        batch_op.add_column(sa.Column("bi_kana2", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bi_kana4", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bi_kana", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("bi_birth", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_index(batch_op.f("ix_patient_clinic_birth"))
        batch_op.create_index("ix_patient_clinic_birth", ["clinic_id", "bi_birth"], unique=False)
        batch_op.drop_index(batch_op.f("ix_patient_clinic_kana"))
        batch_op.create_index("ix_patient_clinic_kana", ["clinic_id", "bi_kana"], unique=False)
        batch_op.drop_constraint(batch_op.f("uq_patient_clinic_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_patient_clinic_id"), ["clinic_id", "bi_number"]
        )
        batch_op.create_index("ix_patient_clinic_kana2", ["clinic_id", "bi_kana2"], unique=False)
        batch_op.create_index("ix_patient_clinic_kana4", ["clinic_id", "bi_kana4"], unique=False)
        batch_op.drop_column("patient_number")
        batch_op.drop_column("address_line")
        batch_op.drop_column("deceased_date")
        batch_op.drop_column("city")
        batch_op.drop_column("postal_code")
        batch_op.drop_column("sex")
        batch_op.drop_column("birth_date")
        batch_op.drop_column("kana_key")
        batch_op.drop_column("phone")
        batch_op.drop_column("given_name")
        batch_op.drop_column("prefecture")
        batch_op.drop_column("given_kana")
        batch_op.drop_column("family_name")
        batch_op.drop_column("family_kana")

    with op.batch_alter_table("progress_note", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("assessment")
        batch_op.drop_column("objective")
        batch_op.drop_column("plan")
        batch_op.drop_column("subjective")

    with op.batch_alter_table("record_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=False))
        batch_op.drop_column("content")
        batch_op.drop_column("reason")

    _record_version_triggers(bind.dialect.name)


def _record_version_triggers(dialect: str) -> None:
    """Insert-only stays, except that ``sealed`` may be rewritten (re-encryption). SQLite's
    batch mode rebuilt the table (dropping its triggers), so they are made again here."""
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS record_version_insert_only ON record_version")
        op.execute(
            "CREATE TRIGGER record_version_no_delete BEFORE DELETE ON record_version "
            "FOR EACH ROW EXECUTE FUNCTION mamori_insert_only()"
        )
        op.execute(
            f"CREATE TRIGGER record_version_fixed BEFORE UPDATE OF {FIXED} ON record_version "
            "FOR EACH ROW EXECUTE FUNCTION mamori_insert_only()"
        )
    else:
        for name in ("no_update", "no_delete", "fixed"):
            op.execute(f"DROP TRIGGER IF EXISTS record_version_{name}")
        op.execute(
            "CREATE TRIGGER record_version_no_delete BEFORE DELETE ON record_version "
            "BEGIN SELECT RAISE(ABORT, 'record_version is insert-only (mamori)'); END"
        )
        op.execute(
            f"CREATE TRIGGER record_version_fixed BEFORE UPDATE OF {FIXED} ON record_version "
            "BEGIN SELECT RAISE(ABORT, 'record_version is insert-only (mamori)'); END"
        )


def downgrade() -> None:
    raise RuntimeError(
        "暗号化を外す方向の移行はありません。 / There is no migration back to plaintext."
    )
