"""``mamori audit verify|bundle|export-fhir|checkpoint|syslog``: the audit trail from the command
line."""

from __future__ import annotations

import uuid as uuid_module
from pathlib import Path
from typing import Annotated

import typer

from mamori.audit.bundle import write_bundle
from mamori.audit.checkpoint import NoteVerifier
from mamori.audit.checkpointer import VKEY_FILE, all_checkpoints, make_checkpoint, origin, signer
from mamori.audit.fhir import export_ndjson as export_audit_ndjson
from mamori.audit.syslog import Forwarder
from mamori.audit.trail import AuditTag, record_system
from mamori.audit.verify import verify_log
from mamori.cli import backup as _backup  # noqa: F401 - registers `backup …`, `restore`, `drill`
from mamori.cli import demo as _demo  # noqa: F401 - registers `demo`
from mamori.cli import keys as _keys  # noqa: F401 - registers `keys …`
from mamori.cli.common import (
    InstanceOpt,
    audit_app,
    close_when_done,
    console,
    err,
    fail,
    instance_or_fail,
)
from mamori.errors import InstanceError, MamoriError
from mamori.instance import open_instance


@audit_app.command("verify")
def audit_verify(
    instance: InstanceOpt = None,
    trusted_key: Annotated[
        str | None, typer.Option(help="信頼する公開鍵（紙に控えた audit.vkey の文字列）")
    ] = None,
) -> None:
    """監査証跡を再計算して検証する / recompute the audit log; report the first bad position."""

    inst = instance_or_fail(instance)

    own = signer(inst.settings).verifier()
    pinned = [c / VKEY_FILE for c in inst.settings.checkpoint_copies if (c / VKEY_FILE).is_file()]
    mismatch = None
    try:
        if trusted_key:
            trusted = NoteVerifier.from_vkey(trusted_key)
            root = "--trusted-key"
        elif pinned:
            # the key copied outside the instance when it first signed: a replaced instance
            # key (and notes signed with it) does not move it
            trusted = NoteVerifier.from_vkey(pinned[0].read_text(encoding="utf-8").strip())
            root = f"インスタンスの外に固定 / pinned outside the instance: {pinned[0]}"
        else:
            trusted = own
            root = (
                "このインスタンス自身の鍵（外に固定された鍵がありません。紙に控えた audit.vkey と"
                " --trusted-key で照合してください） / the instance's own key (none is pinned "
                "outside it: check it against the paper audit.vkey with --trusted-key)"
            )
    except ValueError:
        err.print("[red]信頼の起点の形式が正しくありません / not a verifier key[/]")
        raise typer.Exit(2) from None
    if trusted.vkey() != own.vkey():
        mismatch = (
            "インスタンスの署名鍵が信頼の起点と異なります / the instance's signing key differs "
            f"from the trust root ({own.vkey()})"
        )
    console.print(f"信頼の起点 / trust root: {trusted.vkey()}  ({root})", soft_wrap=True)
    checkpoints, bad_files = all_checkpoints(inst.settings, [trusted])
    with inst.transaction(write=False) as session:
        report = verify_log(session, checkpoints)
    for problem in bad_files:
        report.problems.insert(0, (0, problem))
    if mismatch:
        report.problems.insert(0, (0, mismatch))
    if report.size and not checkpoints:
        # Without a signed checkpoint nothing vouches for the log: a log rewritten
        # consistently (chain, Merkle frontier and head recomputed) passes every other check.
        report.problems.insert(
            0,
            (
                1,
                f"{report.size} 件の監査記録を保証する署名付きチェックポイントがありません"
                "（削除された可能性） / no signed checkpoint vouches for any of the "
                f"{report.size} events (removed?)",
            ),
        )
    for seq, problem in report.problems[:20]:
        err.print(f"[red]#{seq}: {problem}[/]", soft_wrap=True)
    with inst.transaction(write=True) as session:  # the check itself is logged
        record_system(
            session,
            AuditTag.AUDIT_VERIFIED,
            {"size": report.size, "root": report.root.hex(), "problems": len(report.problems)},
        )
    if not report.ok:
        err.print(
            f"[bold red]改ざんまたは破損を検出しました（最初の位置 #{report.first_bad}）/ "
            f"audit log damaged, first bad position #{report.first_bad}[/]",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print(
        f"[green]OK[/]: {report.size} events, root {report.root.hex()}, "
        f"{len(checkpoints)} signed checkpoints agree",
        soft_wrap=True,
    )
    if report.imports_checked or report.imports_unchecked:
        console.print(
            f"一括取り込み / bulk imports: {report.imports_checked} 件を記録と照合 / checked "
            "against their rows"
            + (
                f"、{report.imports_unchecked} 件は照合できない旧形式（0009 以前） / "
                f"{report.imports_unchecked} from before batches were stamped cannot be checked"
                if report.imports_unchecked
                else ""
            ),
            soft_wrap=True,
        )


@audit_app.command("bundle")
def audit_bundle(
    out: Annotated[Path, typer.Argument(help="出力先（空のディレクトリ）")],
    patient: Annotated[
        str | None, typer.Option(help="この患者のイベントだけ（開示請求用）")
    ] = None,
    instance: InstanceOpt = None,
) -> None:
    """外部監査人向けのバンドルを書き出す / write an offline bundle for an outside auditor."""

    try:
        pid = uuid_module.UUID(patient) if patient else None
    except ValueError:
        err.print("[red]--patient は患者ID（UUID）です / --patient takes a patient ID[/]")
        raise typer.Exit(2) from None
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            stats = write_bundle(
                session,
                out.resolve(),
                inst.settings.checkpoint_dir,
                signer(inst.settings).verifier(),
                origin(inst.settings),
                pid,
            )
        with inst.transaction(write=True) as session:  # handing out the log is itself logged
            record_system(
                session, AuditTag.AUDIT_EXPORTED, {**stats, "patient": str(pid) if pid else None}
            )
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"bundle: {stats} → {out.resolve()}", soft_wrap=True)
    console.print(
        f"verify: python {out.resolve() / 'verify_bundle.py'} {out.resolve()}", soft_wrap=True
    )


@audit_app.command("export-fhir")
def audit_export_fhir(
    out: Annotated[Path, typer.Argument(help="出力ファイル（NDJSON）")],
    instance: InstanceOpt = None,
) -> None:
    """監査証跡を FHIR AuditEvent (IHE BALP) NDJSON で書き出す / export as FHIR AuditEvent."""

    inst = instance_or_fail(instance)
    with inst.transaction(write=False) as session:
        count = export_audit_ndjson(session, out.resolve(), inst.settings.instance_id)
    with inst.transaction(write=True) as session:
        record_system(
            session, AuditTag.AUDIT_EXPORTED, {"format": "fhir-auditevent", "events": count}
        )
    console.print(f"{count} AuditEvent → {out.resolve()}", soft_wrap=True)


@audit_app.command("checkpoint")
def audit_checkpoint(instance: InstanceOpt = None) -> None:
    """監査ログのチェックポイントを今すぐ署名する / sign an audit checkpoint now."""

    try:
        inst = open_instance(instance)
        close_when_done(inst)
        result = make_checkpoint(inst.db, inst.settings)
    except MamoriError as exc:
        fail(exc)
        return
    where = result.path or "(no new events / 新しい記録なし)"
    console.print(
        f"checkpoint: size {result.size}, root {result.root.hex()} → {where}", soft_wrap=True
    )
    for problem in result.copy_errors:
        err.print(f"[red]写しを書けません / copy failed: {problem}[/]", soft_wrap=True)
    if result.copy_errors:
        raise typer.Exit(1)


@audit_app.command("syslog")
def audit_syslog(instance: InstanceOpt = None) -> None:
    """未送信の監査記録を SIEM へ送る（serve は自動で送信）/ send unsent audit events to the
    SIEM now (serve streams them continuously)."""

    inst = instance_or_fail(instance)
    target = inst.settings.syslog
    if target is None:
        fail(
            InstanceError(
                "mamori.toml に [syslog] host がありません。", "No [syslog] host in mamori.toml."
            )
        )
        return
    try:
        sent = Forwarder(inst.db, target, inst.settings.checkpoint_dir / "syslog.cursor").drain()
    except OSError as exc:
        fail(
            InstanceError(
                f"SIEM（{target.host}:{target.port}）に送れませんでした: {exc}",
                f"Could not deliver to the SIEM at {target.host}:{target.port}: {exc}",
            )
        )
        return
    console.print(f"syslog: {sent} event(s) confirmed by {target.host}:{target.port}")
