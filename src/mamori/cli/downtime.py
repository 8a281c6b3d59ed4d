"""`mamori downtime …`: the standby keys and the downtime bundle (BCP 1-2c, 3-4)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from mamori.cli.common import InstanceOpt, app, close_when_done, console, fail
from mamori.continuity import drills, service
from mamori.errors import MamoriError
from mamori.instance import open_instance

downtime_app = typer.Typer(
    help="ダウンタイム（システム停止時）の備え / downtime readiness", no_args_is_help=True
)
app.add_typer(downtime_app, name="downtime")

AsOpt = Annotated[str, typer.Option("--as", help="実行する院長のログインID / director's login")]


@downtime_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="鍵の書き出し先（USBメモリ・待機用PC） / key file")],
    label: Annotated[str, typer.Option(help="どこに置く鍵か / where the key is kept")],
    as_user: AsOpt,
    instance: InstanceOpt = None,
) -> None:
    """待機用の鍵を作る（秘密鍵はファイルへ、公開鍵だけをサーバーに登録） / make a standby key."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            key = service.make_standby_key(session, inst.actor(session, as_user), out, label)
            recipient = key.recipient
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"待機用の鍵を作成しました / standby key written: {out}", markup=False)
    console.print(f"公開鍵 / recipient: {recipient}", markup=False)
    console.print(
        "この鍵ファイルはサーバーに残さず、待機用PCまたは受付のUSBメモリに移してください。",
        markup=False,
    )


@downtime_app.command("revoke")
def revoke(key_id: str, as_user: AsOpt, instance: InstanceOpt = None) -> None:
    """待機用の鍵を失効させる（紛失時） / revoke a standby key (lost USB stick)."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            key = service.revoke_standby_key(
                session, inst.actor(session, as_user), uuid.UUID(key_id)
            )
    except ValueError:
        console.print("鍵のIDが正しくありません / not a key ID", markup=False)
        raise typer.Exit(2) from None
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"失効しました / revoked: {key.label} ({key.id})", markup=False)


@downtime_app.command("bundle")
def bundle(
    out: Annotated[
        list[str],
        typer.Option(
            help="書き出し先（フォルダ、または待機用PC sftp://user@host/dir。複数可）"
            " / destination folder or sftp:// URL (repeatable)"
        ),
    ],
    as_user: AsOpt,
    date: Annotated[str, typer.Option(help="対象日 YYYY-MM-DD（既定: 本日）")] = "",
    key_file: Annotated[
        Path | None, typer.Option(help="sftp: このサーバーの秘密鍵 / this server's SSH key")
    ] = None,
    known_hosts: Annotated[
        Path | None, typer.Option(help="sftp: 待機用PCのホスト鍵 / the standby PC's host key")
    ] = None,
    instance: InstanceOpt = None,
) -> None:
    """その日のダウンタイム資料を作り、待機用の鍵で暗号化して書き出す / write the day's bundle."""
    try:
        day = dt.date.fromisoformat(date) if date else None
    except ValueError:
        console.print("日付は YYYY-MM-DD で指定してください / dates are YYYY-MM-DD", markup=False)
        raise typer.Exit(2) from None
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            written = service.write_bundle(
                session,
                inst.actor(session, as_user),
                out,
                day,
                service.SftpAccess(key_file, known_hosts),
                settings=inst.settings,
            )
            b = written.bundle
            summary = (
                f"{b.day:%Y/%m/%d}: 患者 {b.patients} 人（要約 {written.summaries}）、"
                f"ダウンタイム番号 DT-{b.first_number:06d}〜DT-{b.last_number:06d}"
            )
    except MamoriError as exc:
        fail(exc)
        return
    console.print(summary, markup=False)
    for place in written.places:
        console.print(f"  → {place}", markup=False)


@downtime_app.command("status")
def status(as_user: AsOpt, instance: InstanceOpt = None) -> None:
    """待機用の鍵と、書き出し先ごとの最新の資料 / standby keys and the last bundle per place."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            actor = inst.actor(session, as_user)
            keys = [(k.id, k.label, k.recipient) for k in service.live_keys(session, actor)]
            last: dict[str, str] = {}
            for b in service.bundles(session, actor):
                for place in json.loads(b.destinations):
                    last.setdefault(place, f"{b.made_at:%Y-%m-%d %H:%M} UTC  {b.file_name}")
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"待機用の鍵 / standby keys: {len(keys)}", markup=False)
    for kid, label, recipient in keys:
        console.print(f"  {kid}  {label}  {recipient}", markup=False)
    console.print("書き出し先ごとの最新 / last bundle per destination:", markup=False)
    for place, line in sorted(last.items()):
        console.print(f"  {place}: {line}", markup=False)
    if not last:
        console.print("  まだありません / none yet", markup=False)


@app.command("isolate")
def isolate(
    as_user: AsOpt,
    reason: Annotated[str, typer.Option(help="理由（インシデントの内容） / why")],
    lift: Annotated[bool, typer.Option("--lift", help="隔離を解除する / end isolation")] = False,
    instance: InstanceOpt = None,
) -> None:
    """サーバーを隔離する（バックアップ経路→外部連携の順に遮断し、読み取り専用に）/ isolate."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, as_user)
            if lift:
                service.lift_isolation(session, actor, inst.settings.home, reason)
            else:
                service.isolate(session, actor, inst.settings.home, reason)
    except MamoriError as exc:
        fail(exc)
        return
    if lift:
        console.print("隔離を解除しました / isolation lifted", markup=False)
        return
    for line in (
        "隔離しました / isolated:",
        "  1. バックアップ・ダウンタイム資料の書き出しを停止 / backups and bundles stopped",
        "  2. 監査の外部転送（syslog）を一時停止 / audit stream paused",
        "  3. API トークンと、このサーバー以外からの接続を拒否 / tokens and other hosts refused",
        "  4. 記録の書き込みを停止（閲覧と監査記録は継続）/ no record written; reads audited",
        "解除: mamori isolate --lift --reason … --as … / lift with --lift",
    ):
        console.print(line, markup=False)


@downtime_app.command("drill")
def drill(
    scenario: Annotated[
        str, typer.Option(help="cannot-view（閲覧できない）| cannot-enter（入力できない）")
    ],
    participants: Annotated[str, typer.Option(help="参加者 / who took part")],
    as_user: AsOpt,
    reached: Annotated[
        bool, typer.Option("--reached/--not-reached", help="資料・参照系に到達できたか")
    ] = True,
    minutes: Annotated[int | None, typer.Option(help="到達までの分数 / minutes to reach")] = None,
    problems: Annotated[str, typer.Option(help="うまくいかなかったこと")] = "",
    improvement: Annotated[str, typer.Option(help="決めた改善策")] = "",
    date: Annotated[str, typer.Option(help="実施日 YYYY-MM-DD（既定: 本日）")] = "",
    instance: InstanceOpt = None,
) -> None:
    """ダウンタイム訓練を記録する（点検表の証跡）/ record a downtime drill."""
    try:
        data = drills.DrillIn(
            held_on=dt.date.fromisoformat(date) if date else None,
            scenario=scenario,
            participants=participants,
            reached=reached,
            minutes=minutes,
            problems=problems,
            improvement=improvement,
        )
    except (ValueError, ValidationError) as exc:
        fields = (
            ", ".join(str(e["loc"][0]) for e in exc.errors())
            if isinstance(exc, ValidationError)
            else "date"
        )
        console.print(
            f"入力が正しくありません（{fields}）。想定は cannot-view か cannot-enter、日付は "
            f"YYYY-MM-DD です。/ invalid {fields}: scenario is cannot-view or cannot-enter, "
            "dates are YYYY-MM-DD.",
            markup=False,
        )
        raise typer.Exit(2) from None
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            row = drills.record_drill(session, inst.actor(session, as_user), data)
            held = row.held_on
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"訓練を記録しました / drill recorded: {held:%Y-%m-%d} {scenario}", markup=False)
