"""API tokens for integrations: every token expires and has a scope; integration accounts

``staff_user.kind`` tells a person's account from an integration's (which has no password and
never signs in). ``api_token.scope`` lists the permissions a token may use, ``issued_by`` who
issued it. Tokens issued before this revision had neither an expiry nor a scope and were handed
to every account at ``init``/``staff add``: they are revoked here, and the director issues
scoped, expiring ones where an integration needs them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMNs, as in 0007 (a batch rebuild of staff_user would drop a referenced table)
    op.add_column(
        "staff_user",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="person"),
    )
    op.add_column("api_token", sa.Column("scope", sa.Text(), nullable=True))
    op.add_column("api_token", sa.Column("issued_by", sa.Uuid(), nullable=True))
    op.execute(
        "UPDATE api_token SET revoked_at = CURRENT_TIMESTAMP "
        "WHERE revoked_at IS NULL AND (expires_at IS NULL OR scope IS NULL)"
    )


def downgrade() -> None:
    op.drop_column("api_token", "issued_by")
    op.drop_column("api_token", "scope")
    op.drop_column("staff_user", "kind")
