"""Alembic, driven from code: upgrade, current-vs-head check, models-vs-database check."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mamori.db import Base
from mamori.errors import InstanceError
from mamori.models import load_all

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current(engine: Engine) -> None:
    """Refuse to serve a database that is not at the code's schema revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise InstanceError(
            f"データベースの版（{current}）がプログラム（{head}）と一致しません。"
            "`mamori db upgrade` を実行してください。",
            f"Database schema {current} does not match the code ({head}); run `mamori db upgrade`.",
        )


def model_differences(engine: Engine) -> list[Any]:
    """Differences between the models and the migrated database (empty when in sync)."""

    load_all()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


# Rows of these tables are only ever inserted; the application role gets no UPDATE on them.
APPEND_ONLY_TABLES = frozenset(
    {
        "audit_event",
        "audit_event_patient",
        "audit_event_user",
        "audit_review",
        "record_version",
        "standby_merge",  # a standby's log merged: the record that it was, never changed
    }
)
# …except that the ciphertext of a record version may be re-encrypted under a new data key
# (``mamori keys rotate --reencrypt``); what it decrypts to is fixed by the version's hash.
RESEALABLE_TABLES = frozenset({"record_version"})
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_role_name(role: str) -> None:
    if not _ROLE.match(role):
        raise InstanceError("ロール名が正しくありません。", "Invalid role name.")


def grant_app_role(engine: Engine, role: str) -> dict[str, str]:
    """PostgreSQL: give the application's login role exactly what it needs, run as the owner.

    No table gets DELETE or TRUNCATE (records are never destroyed); the append-only tables get
    SELECT and INSERT only. So even with the triggers dropped, the application's credentials
    cannot rewrite the audit log or record history. Returns table → granted privileges.
    """
    if engine.dialect.name != "postgresql":
        raise InstanceError(
            "ロール権限は PostgreSQL でのみ設定できます。", "Role grants apply to PostgreSQL only."
        )
    check_role_name(role)

    load_all()
    granted: dict[str, str] = {}
    with engine.begin() as conn:
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT ON alembic_version TO "{role}"')
        for table in Base.metadata.sorted_tables:
            privileges = (
                "SELECT, INSERT" if table.name in APPEND_ONLY_TABLES else "SELECT, INSERT, UPDATE"
            )
            if table.name in RESEALABLE_TABLES:
                # re-encryption under a new data key rewrites the ciphertext and nothing else
                privileges += ", UPDATE (sealed)"
            conn.exec_driver_sql(f'REVOKE ALL ON "{table.name}" FROM "{role}"')
            conn.exec_driver_sql(f'GRANT {privileges} ON "{table.name}" TO "{role}"')
            granted[table.name] = privileges
    return granted
