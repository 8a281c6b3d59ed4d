"""Alembic, driven from code: upgrade, current-vs-head check, models-vs-database check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mamori.errors import InstanceError

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
    from mamori.db import Base
    from mamori.models import load_all

    load_all()
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))
