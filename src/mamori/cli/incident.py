"""`mamori incident …`: the register from the command line — open, list, show, the
affected-patient list, and the report folder (the PPC draft, the letters, the contact chart and
a verifiable audit bundle of the events the list is made of)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Annotated

import typer

from mamori.audit.bundle import BundleRefused
from mamori.audit.checkpointer import make_checkpoint
from mamori.cli.common import InstanceOpt, app, close_when_done, console, fail
from mamori.clinic.calendar import JST
from mamori.clinic.models import StaffUser
from mamori.clinic.service import clinic_of, staff_names
from mamori.errors import InvalidInput, MamoriError
from mamori.incidents import drafts, evidence, rules, service
from mamori.incidents.affected import ITEMS, Scope, describe
from mamori.instance import open_instance

incident_app = typer.Typer(help="インシデント台帳 / the incident register", no_args_is_help=True)
app.add_typer(incident_app, name="incident")

AsUser = Annotated[
    str, typer.Option("--as", help="院長・安全管理者（閲覧は監査も）のログインID / who acts")
]


def _day(raw: str | None, name: str) -> dt.date | None:
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"{name} は YYYY-MM-DD で指定してください。", f"{name} is YYYY-MM-DD.", field=name
        ) from None


def _moment(raw: str | None, name: str) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"{name} は YYYY-MM-DDTHH:MM（日本時間）で指定してください。",
            f"{name} is YYYY-MM-DDTHH:MM (JST).",
            field=name,
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=JST)


@incident_app.command("open")
def open_cmd(
    as_user: AsUser,
    kind: Annotated[str, typer.Option(help=f"種類 / kind: {', '.join(rules.KINDS)}")],
    title: Annotated[str, typer.Option(help="件名 / title")],
    seen: Annotated[str, typer.Option(help="把握した内容 / what was seen")] = "",
    knew_on: Annotated[str | None, typer.Option(help="知った日 YYYY-MM-DD（既定: 今日）")] = None,
    occurred_on: Annotated[str | None, typer.Option(help="発生日 YYYY-MM-DD")] = None,
    instance: InstanceOpt = None,
) -> None:
    """インシデントを登録する / open an incident."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            incident = service.open_incident(
                session,
                inst.actor(session, as_user),
                kind=kind,
                title=title,
                seen=seen,
                knew_on=_day(knew_on, "knew-on") or service.today(),
                occurred_on=_day(occurred_on, "occurred-on"),
                source="direct",
            )
            number, knew = incident.number, incident.knew_on
    except MamoriError as exc:
        fail(exc)
        return
    first, last = rules.prompt_window(knew)
    console.print(
        f"No.{number} を登録しました。速報の目安 {first}〜{last} / opened No.{number}; "
        f"prompt report due {first}–{last}",
        markup=False,
    )


@incident_app.command("list")
def list_cmd(as_user: AsUser, instance: InstanceOpt = None) -> None:
    """台帳を表示する / list the register."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            views = service.list_incidents(session, inst.actor(session, as_user))
            lines = []
            for v in views:
                i = v.incident
                due = next((d for d in v.deadlines if d.sent_on is None), None)
                next_due = (
                    f"{due.label_ja} {due.due}（{due.state}）"
                    if due is not None and v.deadlines_apply
                    else "—"
                )
                lines.append(
                    f"No.{i.number:<3} {i.knew_on}  {service.kind_label(i.kind)}  "
                    f"{rules.STAGES[i.stage][0]}  "
                    f"報告:{ {'yes': '対象', 'no': '対象外'}.get(i.reportable, '判断待ち') }  "
                    f"{i.title}  次の期限: {next_due}"
                )
    except MamoriError as exc:
        fail(exc)
        return
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"{len(lines)} 件 / incidents", markup=False)


@incident_app.command("show")
def show_cmd(number: int, as_user: AsUser, instance: InstanceOpt = None) -> None:
    """インシデントの手順・期限・経過を表示する / show an incident."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            v = service.get(session, actor, service.by_number(session, actor, number))
            names = staff_names(session, actor)
            i = v.incident
            out = [
                f"No.{i.number} {i.title}",
                f"種類 {service.kind_label(i.kind)} / 状態 {rules.STAGES[i.stage][0]}"
                f" / 知った日 {i.knew_on} / 報告 {i.reportable or '判断待ち'}"
                f"（提案: {'対象' if v.proposal.reportable else '対象外'}）",
            ]
            if v.deadlines_apply:
                out += [f"  {d.label_ja}: {d.due}（{d.state}）" for d in v.deadlines]
            out.append("手順:")
            for s in v.steps:
                mark = {"done": "✓", "skipped": "－"}.get(s.outcome, " ")
                who = f"  {names.get(s.by, '') if s.by else ''} {s.at:%m/%d %H:%M}" if s.at else ""
                out.append(f"  [{mark}] {s.no:>2}. {s.title}{who}")
            out.append("経過:")
            for e in v.entries:
                text = "影響範囲を設定" if e.kind == "affected" else e.text
                out.append(
                    f"  {e.created_at.astimezone(JST):%Y-%m-%d %H:%M} "
                    f"{names.get(e.created_by_id, '')}: {e.kind} {text}"
                )
    except MamoriError as exc:
        fail(exc)
        return
    for line in out:
        console.print(line, markup=False)


@incident_app.command("affected")
def affected_cmd(
    number: int,
    as_user: AsUser,
    user: Annotated[str | None, typer.Option(help="このアカウント（ログインID）")] = None,
    device: Annotated[str | None, typer.Option(help="この端末ID")] = None,
    session_id: Annotated[str | None, typer.Option("--session", help="このセッションID")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="開始 YYYY-MM-DDTHH:MM（JST）")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="終了 YYYY-MM-DDTHH:MM（JST）")] = None,
    export_seq: Annotated[int | None, typer.Option(help="一括書き出しの監査番号")] = None,
    generation: Annotated[int | None, typer.Option(help="バックアップ世代")] = None,
    save: Annotated[bool, typer.Option(help="インシデントの影響範囲として保存")] = False,
    instance: InstanceOpt = None,
) -> None:
    """影響を受けた患者を監査証跡から一覧する / list the affected patients from the log."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            iid = service.by_number(session, actor, number)
            user_id = None
            if user:
                found_user = (
                    session.query(StaffUser)
                    .filter_by(clinic_id=actor.clinic_id, login_id=user)
                    .one_or_none()
                )
                if found_user is None:
                    raise InvalidInput(
                        "そのログインIDはありません。", "No such login.", field="user"
                    )
                user_id = found_user.id
            try:
                sid = uuid.UUID(session_id) if session_id else None
            except ValueError:
                raise InvalidInput(
                    "セッションIDが正しくありません。", "Invalid session ID."
                ) from None
            given = any((user_id, device, sid, start, end, export_seq, generation))
            if given:
                scope = Scope(
                    user_id=user_id,
                    session_id=sid,
                    device_id=device,
                    start=_moment(start, "from"),
                    end=_moment(end, "to"),
                    export_seq=export_seq,
                    generation=generation,
                )
                found = (
                    service.save_scope(session, actor, iid, scope)
                    if save
                    else service.preview_affected(session, actor, iid, scope)
                )
            else:
                saved = service.affected_list(session, actor, iid)
                if saved is None:
                    raise InvalidInput(
                        "範囲を指定してください（--user・--device・--from など）。",
                        "Give a scope (--user, --device, --from …).",
                    )
                found = saved
            words = describe(found.scope, staff_names(session, actor))
            rows = [
                f"No.{r.number:<6} {r.name}  閲覧 {r.opens} 変更 {r.writes}  "
                + (f"{r.first.astimezone(JST):%m/%d %H:%M}" if r.first else "")
                + (f"〜{r.last.astimezone(JST):%m/%d %H:%M}  " if r.last else "  ")
                + "、".join(ITEMS[k][0].split("（")[0] for k in r.items)
                for r in found.rows
            ]
            counts = "、".join(
                f"{ITEMS[k][0].split('（')[0]} {n}人" for k, n in found.item_counts.items()
            )
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{words}: {len(found.rows)} 人 / patients（{counts}）", markup=False)
    for line in rows:
        console.print(line, markup=False, soft_wrap=True)


@incident_app.command("report")
def report_cmd(
    number: int,
    as_user: AsUser,
    out: Annotated[Path, typer.Option(help="出力先（空のフォルダ）/ an empty folder")],
    instance: InstanceOpt = None,
) -> None:
    """報告書・通知文・連絡体制図・証拠の監査バンドルを書き出す / write the drafts and evidence."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        console.print(f"{out} は空ではありません / is not empty", markup=False)
        raise typer.Exit(2)
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            iid = service.by_number(session, actor, number)
            v = service.get(session, actor, iid)
            found = service.affected_list(session, actor, iid)
            clinic = clinic_of(session, actor)
            names = staff_names(session, actor)
            rows = list(found.rows) if found else []
            service.letters_printed(session, actor, v.incident, [r.patient_id for r in rows])
            out.mkdir(parents=True, exist_ok=True)
            who = actor.display_name
            files = {
                "1_漏えい等報告_ppc.pdf": drafts.ppc_report(v, found, clinic, who, names),
                "2_本人への通知_letters.pdf": drafts.letters(v, rows, clinic, who),
                "3_公表文_public.pdf": drafts.public_notice(v, found, clinic, who),
                "4_厚労省保健所への報告_mhlw.pdf": drafts.mhlw_report(v, found, clinic, who),
                "5_事後対応_review.pdf": drafts.review_report(v, clinic, who, names),
                "6_連絡体制図_contacts.pdf": drafts.contact_chart(
                    service.contact_chart(session, actor), clinic, who
                ),
            }
            for name, body in files.items():
                (out / name).write_bytes(body)
            if rows:
                (out / "affected.csv").write_bytes(evidence.affected_csv(found))
        # the evidence: the events the list is made of, each proven to be in the signed log
        shown = "—"
        if found and found.seqs:
            make_checkpoint(inst.db, inst.settings)
            try:
                with inst.transaction(write=False) as session:  # its record: a read's event
                    stats = evidence.write_evidence(
                        session, inst.actor(session, as_user), inst.settings, iid, found,
                        out / "evidence",
                    )  # fmt: skip
                if stats is not None:
                    shown = (
                        f"evidence/（{stats['events']} events; "
                        f"python evidence/verify_bundle.py evidence）"
                    )
            except BundleRefused as exc:
                shown = f"作成できません / not written: {exc.ja}"
    except MamoriError as exc:
        fail(exc)
        return
    for name in sorted(p.name for p in out.iterdir()):
        console.print(f"  {name}", markup=False)
    console.print(f"→ {out}  証拠 / evidence: {shown}", markup=False)
