"""`mamori detect …`: the nightly detection pass on demand, and the review queue."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from mamori.cli.common import InstanceOpt, app, close_when_done, console, fail
from mamori.clinic import service as clinic_service
from mamori.detection import service
from mamori.errors import MamoriError
from mamori.instance import open_instance

detect_app = typer.Typer(
    help="不審アクセスの検知 / abnormal-access detection", no_args_is_help=True
)
app.add_typer(detect_app, name="detect")


@detect_app.command("run")
def run(
    since: Annotated[
        str | None, typer.Option(help="この日から読み直す（YYYY-MM-DD） / re-read from this day")
    ] = None,
    instance: InstanceOpt = None,
) -> None:
    """夜間の検知を今すぐ実行する / run the nightly pass now."""
    try:
        day = dt.date.fromisoformat(since) if since else None
    except ValueError:
        console.print("日付は YYYY-MM-DD で指定してください / dates are YYYY-MM-DD", markup=False)
        raise typer.Exit(2) from None
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            clinic = clinic_service.the_clinic(session)
            summary = service.run(session, clinic.id, tier="on-demand", since=day)
    except MamoriError as exc:
        fail(exc)
        return
    console.print(
        f"閲覧 {summary.accesses} 件のうち {summary.explained} 件を説明"
        f"（{summary.share_explained:.1%}）、新しい事例 {summary.opened} 件、"
        f"更新 {summary.updated} 件"
        f" / {summary.accesses} reads, {summary.share_explained:.1%} explained, "
        f"{summary.opened} new cases, {summary.updated} updated "
        f"(log {summary.from_seq + 1}–{summary.through_seq})",
        markup=False,
    )


@detect_app.command("cases")
def cases(
    as_user: Annotated[str, typer.Option("--as", help="院長・安全管理者のログインID / reviewer")],
    open_only: Annotated[bool, typer.Option("--open", help="未判定だけ / open cases only")] = False,
    instance: InstanceOpt = None,
) -> None:
    """確認一覧を表示する / list the review queue."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            views = service.list_cases(
                session, inst.actor(session, as_user), status="open" if open_only else None
            )
            lines = [
                f"{v.case.id}  {v.case.status:<11} {v.case.tier:<9} {v.case.score:>2}  "
                f"{','.join(v.case.rules):<12} {v.sentence}"
                for v in views
            ]
    except MamoriError as exc:
        fail(exc)
        return
    for line in lines:
        console.print(line, markup=False)
    console.print(f"{len(lines)} 件 / cases", markup=False)
