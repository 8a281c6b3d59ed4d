"""What every command module shares: the Typer application and its command groups, the
consoles, the ``--instance`` option and the bilingual failure. Command modules register on
these; ``cli/main.py`` imports every command module, so ``mamori.cli.main:app`` has them all."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mamori.errors import MamoriError
from mamori.instance import Instance, open_instance

app = typer.Typer(
    help="mamori（守り）電子カルテ / security-first EHR for small clinics",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="データベース / database", no_args_is_help=True)
staff_app = typer.Typer(help="職員アカウント / staff accounts", no_args_is_help=True)
token_app = typer.Typer(
    help="連携用APIトークン / API tokens for integrations", no_args_is_help=True
)
export_app = typer.Typer(help="書き出し / export", no_args_is_help=True)
audit_app = typer.Typer(help="監査証跡 / audit trail", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")
app.add_typer(token_app, name="token")
app.add_typer(export_app, name="export")
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="暗号鍵 / encryption keys", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
backup_app = typer.Typer(help="バックアップ / backup", no_args_is_help=True)
app.add_typer(backup_app, name="backup")

console = Console()
err = Console(stderr=True)

InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--instance",
        "-i",
        help="インスタンスのディレクトリ（既定: $MAMORI_HOME）",
        show_default=False,
    ),
]


def fail(exc: MamoriError) -> NoReturn:
    # the messages are text, never markup: "[[backup.targets]]" or a name in brackets stays
    err.print(
        f"[bold red]エラー:[/] {escape(exc.ja)}\n[red]Error:[/] {escape(exc.en)}", soft_wrap=True
    )
    raise typer.Exit(2)


def instance_or_fail(option: str | None, *, check_schema: bool = True) -> Instance:
    """The instance named by --instance / MAMORI_HOME, or a clear bilingual error and exit 2.

    When the command ends, the events it appended are signed into a checkpoint
    (``Instance.close``)."""
    try:
        inst = open_instance(option, check_schema=check_schema)
    except MamoriError as exc:
        fail(exc)
    if check_schema:
        close_when_done(inst)
    return inst


_OPENED: list[Instance] = []


def close_when_done(inst: Instance) -> None:
    """Sign the command's events into a checkpoint as the command ends, whether it succeeded
    or not (``close_instances``, which the root command registers on its context)."""
    _OPENED.append(inst)


def close_instances() -> None:
    while _OPENED:
        for problem in _OPENED.pop().close():
            err.print(
                f"[bold red]監査チェックポイント / audit checkpoint:[/] {problem}", soft_wrap=True
            )


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
