"""staff_user.password_must_change: an initial password is the person's to replace

An initial password is handed over by someone else (printed by ``mamori init``, ``staff add``
or the administrator's screen), so it is not the person's secret: the first sign-in with it
asks for their own password (the policy applied) before anything else. Existing accounts keep
signing in as before (false).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN (SQLite allows NOT NULL with a constant default): a batch rebuild of
    # staff_user would have to drop a table every other table refers to
    op.add_column(
        "staff_user",
        sa.Column("password_must_change", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("staff_user", "password_must_change")
