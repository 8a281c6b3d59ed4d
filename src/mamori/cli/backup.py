"""``mamori backup keygen|run|verify|status|release-hold``, ``mamori restore``, ``mamori drill``."""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from mamori import copies
from mamori.audit.checkpointer import signer as checkpoint_signer
from mamori.audit.trail import AuditTag, record_system
from mamori.authz.permissions import Permission
from mamori.backup import alarm, engine, fmt, service
from mamori.backup.config import TargetSpec, spec_from_url
from mamori.backup.drill import drill_report, sign_report
from mamori.backup.identity import (
    PASSPHRASE_ENV,
    install_recipients,
    keep_trust_root,
    keygen,
    load_identity,
)
from mamori.backup.restore import empty_database, restore
from mamori.backup.targets import open_target
from mamori.backup.verify import verify_target
from mamori.cli.common import (
    InstanceOpt,
    app,
    backup_app,
    console,
    err,
    fail,
    instance_or_fail,
    progress,
)
from mamori.clinic import service as clinic_service
from mamori.crypto.kek import check_outside
from mamori.errors import MamoriError
from mamori.instance import Instance


class _Bars:
    """Rich progress bars for the services' ``(what, done, total)`` callbacks."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if what not in self.tasks:
            self.tasks[what] = self.bars.add_task(what, total=max(total, 1))
        self.bars.update(self.tasks[what], completed=done, total=max(total, 1))


def ask_passphrase(confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    first = getpass.getpass("パスフレーズ / passphrase: ")
    if confirm and getpass.getpass("もう一度 / again: ") != first:
        err.print("[red]一致しません / passphrases differ[/]")
        raise typer.Exit(2)
    return first


@backup_app.command("keygen")
def backup_keygen(
    out: Annotated[Path, typer.Option(help="鍵の書き出し先（USB など、インスタンスの外）")],
    instance: InstanceOpt = None,
) -> None:
    """オフライン復元鍵を作る / make the offline recovery identities; the server keeps only
    their public keys."""
    inst = instance_or_fail(instance)

    try:
        check_outside(out.resolve(), [inst.settings.home])
        with inst.transaction(write=False) as session:
            clinic = clinic_service.the_clinic(session).name
        signer = fmt.public_text(fmt.signing_key(inst.settings.audit_signing_key))
        made = keygen(
            out.resolve(),
            instance_id=inst.settings.instance_id,
            clinic=clinic,
            signer=signer,
            passphrase=ask_passphrase(confirm=True),
        )
        path = install_recipients(
            inst.settings.backup_dir, made.recipients, inst.settings.instance_id
        )
        vkey_copy = keep_trust_root(
            out.resolve(), checkpoint_signer(inst.settings).verifier().vkey()
        )
        with inst.transaction(write=True) as session:
            record_system(session, AuditTag.BACKUP_KEYS_CREATED, {"recipients": made.recipients})
    except MamoriError as exc:
        fail(exc)
    console.print(f"primary (passphrase) / 主鍵: {made.primary}")
    console.print(f"break-glass (print, lock away) / 非常用: {made.breakglass}, {made.paper}")
    console.print(f"recipients on this server / 公開鍵: {path}")
    console.print(f"manifest signer / 目録署名鍵: {signer}")
    console.print(f"audit verification key / 監査証跡の検証鍵: {vkey_copy}")
    console.print(
        "[bold]鍵をこのサーバーから取り外して保管してください。サーバーは自分のバックアップを"
        "読めません。 / Take the keys off this server: it cannot read its own backups.[/]"
    )


def run_and_record(
    inst: Instance, *, full: bool, only: str | None, say: Any = None, readable: bool = True
) -> engine.RunResult:
    return service.run_and_record(
        inst.settings, inst.db, full=full, only=only, progress=say, readable=readable
    )


@backup_app.command("run")
def backup_run(
    instance: InstanceOpt = None,
    full: Annotated[bool, typer.Option("--full", help="差分でなく完全バックアップ")] = False,
    target: Annotated[str | None, typer.Option(help="この保存先だけ")] = None,
    no_readable: Annotated[
        bool,
        typer.Option(
            "--no-readable",
            help="読める控えを今は作らない（用意済みのものは載せる） / do not make the readable "
            "copy now (one made ahead is still carried)",
        ),
    ] = False,
) -> None:
    """バックアップを取る / snapshot and write a generation to every target."""
    inst = instance_or_fail(instance)
    try:
        with progress() as bars:
            result = run_and_record(
                inst, full=full, only=target, say=_Bars(bars), readable=not no_readable
            )
    except MamoriError as exc:
        fail(exc)
    table = Table("target", "kind", "link", "bytes", "documents", "result")
    for t in result.targets:
        table.add_row(
            t.target,
            t.kind,
            str(t.link or ""),
            f"{t.bytes:,}",
            str(t.documents),
            "[green]OK[/]" if t.ok else f"[red]{t.error_ja or t.error}[/]",
        )
    console.print(table)
    console.print(
        f"generation {result.generation}: {result.db_bytes / 1e6:.1f} MB database, "
        f"{result.changed_pages}/{result.page_count} pages changed since the last run, "
        f"{result.seconds:.1f} s"
    )
    if result.alarm:
        err.print(
            "[bold red]ランサムウェア警報: 変更量が異常です。既存の世代は削除されません。"
            f" / ransomware alarm: abnormal change {result.alarm}; generations held.[/]",
            soft_wrap=True,
        )
    if not result.ok:
        raise typer.Exit(1)


def _specs(inst: Instance, target: str | None) -> list[TargetSpec]:
    specs = [t for t in inst.settings.backup.targets if target is None or t.name == target]
    if not specs:
        err.print("[red]保存先がありません / no such target[/]")
        raise typer.Exit(2)
    return specs


@backup_app.command("verify")
def backup_verify(
    instance: InstanceOpt = None,
    target: Annotated[str | None, typer.Option(help="この保存先だけ")] = None,
    quick: Annotated[bool, typer.Option(help="ハッシュを計算せず、署名・連鎖・サイズのみ")] = False,
) -> None:
    """秘密鍵なしで全世代を検証 / verify signatures, chains and every object (no private key)."""
    inst = instance_or_fail(instance)
    signer = fmt.signing_key(inst.settings.audit_signing_key).public_key()
    state = engine.load_state(inst.settings)
    bad = False
    for spec in _specs(inst, target):
        try:
            tgt = open_target(spec, inst.settings.instance_id)
        except MamoriError as exc:
            err.print(f"[yellow]{spec.name}: {exc.ja} / {exc.en}[/]", soft_wrap=True)
            if not spec.offline:
                bad = True
            continue
        try:
            heads = {m: v["head"] for m, v in state.get("media", {}).items() if v.get("head")}
            with progress() as bars:
                report = verify_target(
                    tgt,
                    signer,
                    inst.settings.instance_id,
                    expected_heads=heads,
                    deep=not quick,
                    progress=_Bars(bars),
                )
        finally:
            tgt.close()
        _print_report(spec, report)
        bad = bad or not report.ok
        with inst.transaction(write=True) as session:
            record_system(
                session,
                AuditTag.BACKUP_VERIFIED,
                {
                    "target": spec.name,
                    "medium": report.medium,
                    "generations": len(report.generations),
                    "problems": len(report.problems)
                    + sum(len(g.problems) for g in report.generations),
                    "deep": not quick,
                },
            )
    if bad:
        raise typer.Exit(1)


def _print_report(spec: TargetSpec, report: Any) -> None:
    table = Table("generation", "link", "kind", "created", "state")
    for g in report.generations:
        state = "pruned" if g.pruned else "OK"
        table.add_row(
            str(g.generation),
            str(g.link),
            g.kind,
            g.created,
            f"[red]{'; '.join(g.problems)}[/]" if g.problems else f"[green]{state}[/]",
        )
    console.print(f"[bold]{spec.name}[/] ({spec.url()}) medium {report.medium}")
    console.print(table)
    for p in report.problems:
        err.print(f"[red]{p}[/]", soft_wrap=True)
    for name in report.incomplete:
        err.print(f"[yellow]incomplete (not a backup) / 未完了: {name}[/]")
    console.print(
        f"{report.objects_checked} objects, {report.bytes_checked / 1e6:.1f} MB hashed: "
        + ("[green]OK[/]" if report.ok else "[red]FAILED / 検証失敗[/]")
    )


@backup_app.command("status")
def backup_status(instance: InstanceOpt = None) -> None:
    """保存先ごとの最新世代と警報 / newest generation per medium, alarm hold."""
    inst = instance_or_fail(instance)
    state = engine.load_state(inst.settings)
    table = Table("target", "medium", "last", "kind", "link", "base full")
    for mid, m in state.get("media", {}).items():
        last = m.get("last", {})
        table.add_row(
            m.get("target", ""),
            mid[:8],
            last.get("at", ""),
            last.get("kind", ""),
            str(m.get("link", "")),
            str((m.get("base") or {}).get("generation", "")),
        )
    console.print(table)
    if state.get("hold"):
        err.print(f"[bold red]hold / 保留中: {state['hold']}[/]", soft_wrap=True)


@backup_app.command("release-hold")
def backup_release_hold(
    reason: Annotated[str, typer.Option(help="確認した内容 / what was checked")],
    login: Annotated[str, typer.Option(help="確認した管理者のログイン ID")],
    instance: InstanceOpt = None,
) -> None:
    """警報による保留を解除 / release the alarm hold after a person has checked."""
    inst = instance_or_fail(instance)
    state = engine.load_state(inst.settings)
    if not state.get("hold"):
        console.print("no hold / 保留はありません")
        return
    with inst.transaction(write=True) as session:
        actor = inst.actor(session, login)
        record_system(
            session,
            AuditTag.BACKUP_HOLD_RELEASED,
            {"by": str(actor.user_id), "reason": reason[:500], "hold": state["hold"]},
        )
    state["hold"] = None
    alarm.clear(inst.settings)
    state["history"] = []  # the usual change is learnt again from here
    engine.save_state(inst.settings, state)
    console.print("released / 解除しました")


# ---------------------------------------------------------------- restore and drill

FromOpt = Annotated[
    str,
    typer.Option(
        "--from", help="保存先: dir:/media/usb, sftp://user@host:22/path, s3://bucket/prefix"
    ),
]
IdentityOpt = Annotated[Path, typer.Option(help="オフライン鍵ファイル（keygen が作成）")]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL の世代: 復元先の空のデータベース（postgresql+psycopg://…）",
    ),
]


def _source(url: str, key_file: Path | None, known_hosts: Path | None, endpoint: str) -> TargetSpec:
    try:
        return spec_from_url(
            url, key_file=key_file, known_hosts=known_hosts, endpoint=endpoint or None
        )
    except MamoriError as exc:
        fail(exc)


@app.command("restore")
def restore_cmd(
    source: FromOpt,
    identity: IdentityOpt,
    to: Annotated[Path, typer.Option(help="復元先（新しい空のディレクトリ）")],
    generation: Annotated[int | None, typer.Option(help="世代（既定: 最新）")] = None,
    key_dir: Annotated[
        Path | None, typer.Option(help="復元した KEK の置き場所（データの外）")
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="SFTP の秘密鍵")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="SFTP サーバーの known_hosts")] = None,
    endpoint: Annotated[str, typer.Option(help="S3 のエンドポイント")] = "",
    database_url: DatabaseOpt = None,
    app_role: Annotated[
        str | None,
        typer.Option(
            "--app-role",
            help="PostgreSQL: 復元後、サーバーの接続ロールへ最小権限を付与（db grant-app-role）",
        ),
    ] = None,
    allow_missing_documents: Annotated[
        bool,
        typer.Option(
            "--allow-missing-documents",
            help="欠けた・壊れた文書を除いて復元し、一覧を表示する / restore without the "
            "missing or damaged documents, and list them",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="バックアップ時に検査済みの世代でも、復元したデータベースの整合性検査を"
            "もう一度行う / run SQLite's integrity check even on an attested generation",
        ),
    ] = False,
) -> None:
    """バックアップから新しいディレクトリへ復元 / restore into a new directory, verified."""

    spec = _source(source, ssh_key, known_hosts, endpoint)
    try:
        ident = load_identity(identity, _identity_passphrase(identity))
        with progress() as bars:
            done = restore(
                spec,
                ident,
                to.resolve(),
                generation=generation,
                key_dir=key_dir,
                progress=_Bars(bars),
                database_url=database_url,
                app_role=app_role,
                partial=allow_missing_documents,
                check=check,
            )
    except MamoriError as exc:
        fail(exc)
    console.print(
        f"[green]復元しました / restored[/] generation {done.generation} ({done.kind})"
        f" → {done.home}"
    )
    if done.missing_documents:
        err.print(
            f"[bold red]文書 {len(done.missing_documents)} 件は復元できませんでした"
            f"（この一覧は {done.home}/READ_ONLY にも記録） / {len(done.missing_documents)} "
            "document(s) could not be restored (also listed in READ_ONLY):[/]",
            soft_wrap=True,
        )
        for m in done.missing_documents:
            err.print(f"  documents/{m['path']}  sha256 {m['digest'][:16]}…  {m['why']}")
    console.print(
        f"records: {done.counts}; audit events verified: {done.audit_events}; "
        f"documents: {done.documents}; last record at {done.last_event_at}"
    )
    steps = ", ".join(f"{k} {v:.1f}" for k, v in done.timings.items())
    console.print(
        f"steps (s) / 所要時間（秒）: {steps}", soft_wrap=True
    )  # one line: scripts read it
    if done.integrity == "attested":
        console.print(
            "整合性検査: バックアップ時に合格した状態とビット単位で同一（--check で再検査）"
            " / integrity: bit-identical to the snapshot that passed integrity_check at backup"
            " time (--check runs it again)"
        )
    if done.key_file:
        console.print(f"KEK / 鍵ファイル: {done.key_file}")
    if done.app_role:
        console.print(
            f"ロール {done.app_role} に最小権限を付与しました / least privilege granted to"
            f" {done.app_role}: mamori.toml の database_url をこのロールに"
            " / point database_url at it"
        )
    elif done.engine == "postgresql":
        console.print(
            "[yellow]アプリ用ロールの権限は戻っていません / no grants were restored[/]:"
            " mamori db grant-app-role <role>（または --app-role）"
        )
    console.print(f"start it / 起動: MAMORI_HOME={done.home} mamori serve")


def _identity_passphrase(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            encrypted = fh.read(21) == b"age-encryption.org/v1"
    except OSError:
        return None
    return ask_passphrase(confirm=False) if encrypted else None


@app.command("drill")
def drill_cmd(
    source: FromOpt,
    identity: IdentityOpt,
    report_dir: Annotated[Path, typer.Option(help="訓練記録の保存先")] = Path("drills"),
    instance: InstanceOpt = None,
    ssh_key: Annotated[Path | None, typer.Option(help="SFTP の秘密鍵")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="SFTP サーバーの known_hosts")] = None,
    endpoint: Annotated[str, typer.Option(help="S3 のエンドポイント")] = "",
    keep: Annotated[bool, typer.Option(help="復元したインスタンスを残す")] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """復元訓練: RTO/RPO を測り署名付き記録を残す / timed restore drill with a signed report."""

    spec = _source(source, ssh_key, known_hosts, endpoint)
    started = dt.datetime.now(dt.UTC)
    scratch = Path(tempfile.mkdtemp(prefix="mamori-drill-"))
    keys = Path(tempfile.mkdtemp(prefix="mamori-drill-keys-"))
    filled = False  # the scratch database holds this drill's restore (and only then is emptied)
    try:
        ident = load_identity(identity, _identity_passphrase(identity))
        t0 = time.monotonic()
        with progress() as bars:
            done = restore(
                spec,
                ident,
                scratch / "instance",
                key_dir=keys,
                progress=_Bars(bars),
                database_url=database_url,
                check=True,  # the drill proves the check itself still works
            )
        filled = done.engine == "postgresql"
        seconds = time.monotonic() - t0
        report = drill_report(done, spec, started, seconds)
        path = sign_report(report, done.home, report_dir.resolve())
        if instance or os.environ.get("MAMORI_HOME"):
            live = instance_or_fail(instance)
            with live.transaction(write=True) as session:
                record_system(
                    session,
                    AuditTag.BACKUP_DRILLED,
                    {
                        **{
                            k: report[k]
                            for k in ("generation", "manifest", "rto_seconds", "rpo_seconds")
                        },
                        "ok": True,
                    },
                )
            shutil.copy2(path, live.settings.backup_dir / path.name)
            shutil.copy2(
                path.with_suffix(".sig"), live.settings.backup_dir / path.with_suffix(".sig").name
            )
    except MamoriError as exc:
        if instance or os.environ.get("MAMORI_HOME"):
            # a failed drill is evidence too (the checklist's backup item reads it)
            with contextlib.suppress(MamoriError):
                live = instance_or_fail(instance)
                with live.transaction(write=True) as session:
                    record_system(
                        session, AuditTag.BACKUP_DRILLED, {"ok": False, "error": exc.en[:300]}
                    )
        fail(exc)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
            if filled and database_url:  # back to empty, with the scratch folder; a database
                empty_database(database_url)  # the restore refused (not empty) is never touched
        shutil.rmtree(keys, ignore_errors=True)
    console.print(
        f"[green]訓練成功 / drill passed[/]: RTO {report['rto_seconds']} s, "
        f"RPO {report['rpo_seconds']} s, generation {report['generation']}"
    )
    console.print(f"report / 記録: {path}")


@app.command("promote")
def promote_cmd(
    reason: Annotated[str, typer.Option(help="本番にする理由 / why this copy becomes the record")],
    login: Annotated[str, typer.Option(help="判断した管理者のログイン ID")],
    original: Annotated[
        str | None,
        typer.Option(help="元のサーバーの URL（応答があれば中止）/ the original server's URL"),
    ] = None,
    instance: InstanceOpt = None,
) -> None:
    """復元コピーを本番にする（読み取り専用を解除）/ make a restored copy the clinic's record."""
    inst = instance_or_fail(instance)
    found = copies.marker(inst.settings.home)
    if found is None:
        console.print("読み取り専用ではありません / this instance is not a read-only copy")
        return
    if original:
        if _answers(original):
            err.print(
                f"[bold red]元のサーバー {original} がまだ応答しています。二つの本番で記録が"
                "分かれないよう、元を止めてから実行してください。 / The original still answers: "
                "stop it first, or the record forks.[/]",
                soft_wrap=True,
            )
            raise typer.Exit(1)
    else:
        err.print(
            "[yellow]元のサーバーが止まっていること（LAN から切り離し済み）を確認してください。"
            " / Make sure the original server is stopped or isolated.[/]",
            soft_wrap=True,
        )
    if len(reason.strip()) < 4:
        err.print("[red]--reason を具体的に / give a reason[/]")
        raise typer.Exit(2)
    try:
        with inst.transaction(write=True) as session:
            actor = inst.actor(session, login)
            actor.require(Permission.STAFF_ADMIN)  # the director decides
            record_system(
                session,
                AuditTag.COPY_PROMOTED,
                {"by": str(actor.user_id), "reason": reason[:500], "copy": found},
            )
    except MamoriError as exc:
        fail(exc)
    copies.unmark(inst.settings.home)
    inst.db.read_only = False
    console.print("本番になりました / promoted: this copy now takes writes")


def _answers(url: str) -> bool:
    """Whether a mamori server answers at ``url`` (its /healthz, any status, 3 s)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its own certificate
    try:
        with urllib.request.urlopen(  # noqa: S310 - an operator-given http(s) URL
            url.rstrip("/") + "/healthz", timeout=3, context=context
        ):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False
