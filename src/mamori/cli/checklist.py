"""`mamori checklist status|report`: the MHLW checklist of a fiscal year from the command line
— each item's answer and mamori's proposal with its evidence, and the printout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mamori.cli.common import InstanceOpt, app, close_when_done, console, fail
from mamori.clinic.service import clinic_of, staff_names
from mamori.errors import MamoriError
from mamori.instance import open_instance
from mamori.programme import accounts, bcp, checklist, ledgers
from mamori.programme.report_pdf import render_bcp, render_checklist

checklist_app = typer.Typer(
    help="サイバーセキュリティ対策チェックリスト / the MHLW checklist", no_args_is_help=True
)
app.add_typer(checklist_app, name="checklist")

AsUser = Annotated[str, typer.Option("--as", help="院長・安全管理者・監査のログインID")]
Year = Annotated[int | None, typer.Option(help="年度（2025 = 令和7年度、既定: 今年度）")]
Form = Annotated[str, typer.Option(help="clinic（医療機関確認用）| vendor（事業者確認用）")]


@checklist_app.command("status")
def status(
    as_user: AsUser, year: Year = None, form: Form = "clinic", instance: InstanceOpt = None
) -> None:
    """各項目の回答と mamori の案・根拠を表示する / show answers, proposals and evidence."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        fy = year or checklist.fiscal_year_of(checklist.today())
        with inst.transaction(write=True) as session:
            v = checklist.view(session, inst.actor(session, as_user), inst.settings, fy, form)
            lines = [f"{v.items.title} {checklist.nendo(fy)}（項目: {v.items.edition}）"]
            if v.carried:
                lines.append(
                    f"  ※ {checklist.nendo(fy)}版の項目は未収録: {v.items.edition}の項目で確認"
                )
            for r in v.rows:
                a = r.answer
                done = (
                    f"{checklist.ANSWERS[a.answer][0]} {a.checked_on}"
                    + (f" 目標 {a.target_on}" if a.target_on else "")
                    if a
                    else "未回答"
                )
                lines.append(f"{r.item.no:<5} [{done}] {r.item.text}")
                if r.proposal is not None:
                    mark = "要再確認 " if r.changed else ""
                    answer = (
                        checklist.ANSWERS[r.proposal.answer][0] if r.proposal.answer else "参考"
                    )
                    lines.append(f"      {mark}案: {answer} — {r.proposal.ja}")
            lines.append(f"{v.answered}/{len(v.rows)} 回答済み、要再確認 {len(v.changed)} 件")
    except MamoriError as exc:
        fail(exc)
        return
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


@checklist_app.command("report")
def report(
    as_user: AsUser,
    out: Annotated[Path, typer.Option(help="出力する PDF ファイル")],
    year: Year = None,
    form: Form = "clinic",
    instance: InstanceOpt = None,
) -> None:
    """立入検査用に印刷する（根拠の別紙付き）/ the printout for the inspection."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        fy = year or checklist.fiscal_year_of(checklist.today())
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            v = checklist.view(session, actor, inst.settings, fy, form)
            body = render_checklist(
                v, clinic_of(session, actor), actor.display_name, staff_names(session, actor)
            )
        out.write_bytes(body)
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{out}（{v.answered}/{len(v.rows)} 回答済み）", markup=False)


accounts_app = typer.Typer(help="アカウント棚卸し / the account review", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")


@accounts_app.command("review")
def accounts_review(as_user: AsUser, instance: InstanceOpt = None) -> None:
    """有効なアカウントと確認すること（未使用・退職・期限切れ・管理者権限）を表示する /
    list the active accounts and what to check (record the review on the screen)."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            rows = accounts.review_list(session, actor)
            last = accounts.last_review(session, actor)
            lines = []
            for r in rows:
                mark = "要判断 " if r.needs_decision else "       "
                seen = f"{r.last_sign_in:%Y-%m-%d}" if r.last_sign_in else "なし"
                lines.append(f"{mark}{r.login_id:<16} {r.name}（{r.role_ja}）  最終ログイン {seen}")
            flags = [", ".join(accounts.FLAGS[f][0] for f in r.flags) for r in rows]
            when = f"{last.reviewed_at:%Y-%m-%d}" if last else "なし"
    except MamoriError as exc:
        fail(exc)
        return
    for line, f in zip(lines, flags, strict=True):
        console.print(f"{line}  {f}", markup=False, soft_wrap=True)
    need = sum(1 for r in rows if r.needs_decision)
    console.print(
        f"{len(rows)} 件、要判断 {need} 件、前回の棚卸し {when}"
        "（記録は画面「アカウント棚卸し」で）",
        markup=False,
    )


ledger_app = typer.Typer(
    help="機器台帳・委託先台帳の CSV / the equipment and vendor ledgers as CSV",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")
Which = Annotated[str, typer.Argument(help="assets（機器台帳）| vendors（委託先台帳）")]


def _which(which: str) -> str:
    if which not in ("assets", "vendors"):
        console.print("assets か vendors を指定してください / assets or vendors", markup=False)
        raise typer.Exit(2)
    return which


@ledger_app.command("export")
def ledger_export(
    which: Which,
    as_user: AsUser,
    out: Annotated[Path, typer.Option(help="出力する CSV（UTF-8、Excel で開ける BOM 付き）")],
    instance: InstanceOpt = None,
) -> None:
    """台帳を CSV に書き出す / write a ledger as CSV."""
    _which(which)
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            actor = inst.actor(session, as_user)
            text = (
                ledgers.export_assets(session, actor)
                if which == "assets"
                else ledgers.export_vendors(session, actor)
            )
        out.write_text("\ufeff" + text, encoding="utf-8")
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{out}（{text.count(chr(10)) - 1} 行）", markup=False)


@ledger_app.command("import")
def ledger_import(
    which: Which,
    file: Annotated[Path, typer.Argument(help="取り込む CSV（UTF-8 または Shift_JIS）")],
    as_user: AsUser,
    instance: InstanceOpt = None,
) -> None:
    """CSV を台帳に取り込む（同じ名称は上書き、全部か何もしないか）/ import a CSV."""
    _which(which)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp932")  # Excel's Japanese CSV
        except UnicodeDecodeError:
            console.print(
                "文字コードが読めません（UTF-8 または Shift_JIS の CSV）/ unreadable encoding",
                markup=False,
            )
            raise typer.Exit(2) from None
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            count = (
                ledgers.import_assets(session, actor, text)
                if which == "assets"
                else ledgers.import_vendors(session, actor, text)
            )
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{count} 行を取り込みました / {count} rows imported", markup=False)


bcp_app = typer.Typer(help="事業継続計画 / the cyber-BCP", no_args_is_help=True)
app.add_typer(bcp_app, name="bcp")


@bcp_app.command("report")
def bcp_report(
    as_user: AsUser,
    out: Annotated[Path, typer.Option(help="出力する PDF ファイル")],
    instance: InstanceOpt = None,
) -> None:
    """BCP を現在の設定と記録から作って印刷する / print the BCP as it stands."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            actor = inst.actor(session, as_user)
            doc = bcp.document(session, actor, inst.settings)
            body = render_bcp(doc, actor.display_name)
        out.write_bytes(body)
    except MamoriError as exc:
        fail(exc)
        return
    state = (
        f"第{doc.approval.version}版（承認 {doc.approval.approved_on}）"
        if doc.approval
        else "未承認"
    )
    console.print(
        f"{out}  {state}" + ("  不足: " + "、".join(doc.missing) if doc.missing else ""),
        markup=False,
    )
