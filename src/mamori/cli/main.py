"""The ``mamori`` command: a thin edge over the services, like the HTTP API."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori import __version__, migrate
from mamori.app import create_app
from mamori.audit.checkpointer import signer
from mamori.audit.trail import AuditTag, record
from mamori.auth import integrations, passwords, tokens
from mamori.auth import service as auth_service
from mamori.authz.roles import Role
from mamori.backup.service import configured as backup_configured
from mamori.backup.setup import configure as configure_backup
from mamori.cli import audit as _audit  # noqa: F401 - registers `audit …`
from mamori.cli import backup as _backup  # noqa: F401 - registers `backup …`, `restore`, `drill`
from mamori.cli import checklist as _checklist  # noqa: F401 - registers `checklist …`
from mamori.cli import demo as _demo  # noqa: F401 - registers `demo`
from mamori.cli import detect as _detect  # noqa: F401 - registers `detect …`
from mamori.cli import downtime as _downtime  # noqa: F401 - registers `downtime …`
from mamori.cli import incident as _incident  # noqa: F401 - registers `incident …`
from mamori.cli import keys as _keys  # noqa: F401 - registers `keys …`
from mamori.cli import standby as _standby  # noqa: F401 - registers `standby …`
from mamori.cli.backup import ask_passphrase
from mamori.cli.common import (
    InstanceOpt,
    app,
    close_instances,
    close_when_done,
    console,
    db_app,
    err,
    export_app,
    fail,
    instance_or_fail,
    progress,
    staff_app,
    token_app,
)
from mamori.clinic import service as clinic_service
from mamori.clinic.models import StaffUser
from mamori.documents.store import DocumentStore
from mamori.errors import InstanceError, MamoriError
from mamori.fhir.bulk import export_ndjson
from mamori.instance import create_instance, open_instance
from mamori.patients.models import Patient
from mamori.records.service import verify_all
from mamori.restrictions import service as restrictions
from mamori.web import server, tls


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="版を表示")] = False,
) -> None:
    # every instance a command opened signs its new events when the command ends
    ctx.call_on_close(close_instances)
    if version:
        console.print(f"mamori {__version__}")
        raise typer.Exit()


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="新しいインスタンスのディレクトリ")],
    clinic_name: Annotated[str, typer.Option(help="医療機関名")] = "",
    institution_code: Annotated[str, typer.Option(help="医療機関コード（10桁）")] = "",
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL を使う場合の URL")] = None,
    port: int = 8000,
    admin_login: str = "admin",
    key_source: Annotated[
        str, typer.Option(help="鍵暗号化鍵の置き場所: file | passphrase | pkcs11")
    ] = "file",
    key_file: Annotated[
        Path | None,
        typer.Option(help="鍵ファイル（既定: ~/.config/mamori/keys/<id>.kek、データの外）"),
    ] = None,
    pkcs11_module: Annotated[Path | None, typer.Option(help="PKCS#11 ライブラリ")] = None,
    pkcs11_token: Annotated[str, typer.Option(help="PKCS#11 トークンのラベル")] = "",
    backup_keys: Annotated[
        Path | None,
        typer.Option(help="オフライン復元鍵の書き出し先（USB など、インスタンスの外）"),
    ] = None,
    backup_target: Annotated[
        Path | None,
        typer.Option(help="最初のバックアップ先のフォルダ（USB ディスクなど、インスタンスの外）"),
    ] = None,
) -> None:
    """インスタンスを作成する / create an instance (settings, database, document store, secrets,
    and the key-encryption key outside the instance directory)."""
    if not clinic_name or not institution_code:
        err.print(
            "[red]--clinic-name と --institution-code を指定してください。\n"
            "Give --clinic-name and --institution-code.[/]"
        )
        raise typer.Exit(2)
    try:
        created = create_instance(
            directory.resolve(),
            clinic_name=clinic_name,
            institution_code=institution_code,
            database_url=database_url,
            port=port,
            admin_login=admin_login,
            key_source=key_source,
            key_file=key_file,
            pkcs11_module=pkcs11_module,
            pkcs11_token=pkcs11_token,
        )
        close_when_done(created.instance)
    except MamoriError as exc:
        fail(exc)
        return
    if (backup_keys is None) != (backup_target is None):
        err.print("[red]--backup-keys と --backup-target は両方指定します / give both[/]")
        raise typer.Exit(2)
    if backup_keys is not None and backup_target is not None:
        try:
            configure_backup(
                created.instance, backup_keys, backup_target, ask_passphrase(confirm=True)
            )
        except MamoriError as exc:
            fail(exc)
    console.print(f"[green]作成しました / created:[/] {directory.resolve()}")
    keys = created.instance.settings.keys
    if keys.file is not None:
        console.print(
            f"鍵ファイル / key file: [bold]{keys.file}[/]\n"
            "この鍵がないと患者データは読めません。`mamori keys export` で控えを作り、"
            "別の場所に保管してください。 / Without this key no patient data can be read: make "
            "a recovery copy with `mamori keys export` and keep it apart."
        )
    settings = created.instance.settings
    copies = ", ".join(map(str, settings.checkpoint_copies))
    console.print(
        "監査証跡の検証鍵（紙に控えてください。mamori audit verify --trusted-key で使います）"
        " / audit verification key (write it down; mamori audit verify --trusted-key):\n"
        f"[bold]{signer(settings).verifier().vkey()}[/]\n"
        f"外への写し / copied outside the instance to: {copies}",
        soft_wrap=True,
    )
    console.print(f"管理者 / administrator: [bold]{created.admin_login}[/]")
    console.print(
        f"初期パスワード（一度だけ表示） / initial password (shown once): "
        f"[bold]{created.admin_password}[/]"
    )
    console.print(
        "初回ログインで二要素認証（認証アプリかパスキー）を登録します。"
        " / The first sign-in enrols a second factor (authenticator app or passkey)."
    )
    if backup_keys is not None:
        console.print(
            f"バックアップ / backups: 鍵 / keys {backup_keys.resolve()}（取り外して保管 / take "
            f"them off this server）→ 保存先 / target {backup_target}"
        )
    else:
        console.print(
            "[bold yellow]次にバックアップを設定してください（未設定ではサーバーは起動しません）:"
            " mamori backup keygen --out <USB> と mamori.toml の \\[\\[backup.targets]]"
            "（docs/backup.md）。 / Next, configure backups — the server does not start "
            "without them: mamori backup keygen --out <USB> and \\[\\[backup.targets]].[/]",
            soft_wrap=True,
        )
    console.print(f"export MAMORI_HOME={directory.resolve()}")


@app.command()
def serve(
    instance: InstanceOpt = None,
    host: str | None = None,
    port: int | None = None,
    behind_proxy: Annotated[
        bool,
        typer.Option(
            "--behind-proxy",
            help="TLS を終端するリバースプロキシの内側で平文 HTTP（ループバックのみ）"
            " / plain HTTP on loopback behind a TLS-terminating reverse proxy",
        ),
    ] = False,
    without_backups: Annotated[
        bool,
        typer.Option(
            "--without-backups",
            help="バックアップ未設定のまま起動（管理画面に赤い警告、毎日の警報）"
            " / start without backups configured (red banner for administrators, daily alert)",
        ),
    ] = False,
) -> None:
    """サーバーを起動する（既定で TLS）/ run the web/API server (TLS by default)."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        settings = inst.settings
        bind = host or settings.host
        if behind_proxy:
            tls.require_loopback(bind)
            cert = key = None
        elif settings.tls_cert and settings.tls_key:
            cert, key = settings.tls_cert, settings.tls_key
        else:
            cert, key = tls.local_certificate(settings.home, settings.tls_names)
        # a restored copy takes no record until promoted: nothing of its own to back up yet
        if not backup_configured(settings) and not without_backups and not inst.db.read_only:
            fail(
                InstanceError(
                    "バックアップが設定されていないため起動しません。mamori backup keygen --out"
                    " <USB など外の場所> でオフライン鍵を作り、mamori.toml に [[backup.targets]] を"
                    "加えてください（docs/backup.md）。やむを得ず一時的に動かす場合だけ"
                    " --without-backups を付けます。",
                    "Backups are not configured, so the server does not start: make the offline "
                    "keys with mamori backup keygen --out <outside the instance> and add a "
                    "[[backup.targets]] to mamori.toml (docs/backup.md). Only to run for a "
                    "while without them, start with --without-backups.",
                )
            )
        application = create_app(settings, inst.db, without_backups=without_backups)
    except MamoriError as exc:
        fail(exc)
        return
    scheme = "http" if behind_proxy else "https"
    console.print(f"mamori: {scheme}://localhost:{port or settings.port}/")
    server.serve(
        application,
        host=bind,
        port=port or settings.port,
        log_level="info",
        access_log=False,
        server_header=False,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        proxy_headers=behind_proxy,
        forwarded_allow_ips="127.0.0.1" if behind_proxy else None,
    )


@db_app.command("upgrade")
def db_upgrade(instance: InstanceOpt = None) -> None:
    """マイグレーションを適用する / apply migrations."""
    inst = instance_or_fail(instance, check_schema=False)
    before = migrate.current_revision(inst.db.engine)
    migrate.upgrade(inst.db.engine)
    console.print(f"schema: {before} → {migrate.current_revision(inst.db.engine)}")


@db_app.command("grant-app-role")
def db_grant_app_role(
    role: Annotated[str, typer.Argument(help="アプリケーションが接続に使う PostgreSQL ロール")],
    instance: InstanceOpt = None,
) -> None:
    """PostgreSQL: アプリ用ロールに必要最小限の権限を付与（DELETE なし、証跡は追記のみ）/
    grant the app role least privilege (no DELETE anywhere; logs insert-only). Run as the owner."""
    inst = instance_or_fail(instance)
    try:
        granted = migrate.grant_app_role(inst.db.engine, role)
    except MamoriError as exc:
        fail(exc)
    table = Table("table", "privileges")
    for name, privileges in granted.items():
        table.add_row(name, privileges)
    console.print(table)


@db_app.command("check")
def db_check(instance: InstanceOpt = None) -> None:
    """モデルとデータベースの差分を確認する / compare models with the migrated database."""
    inst = instance_or_fail(instance)
    diffs = migrate.model_differences(inst.db.engine)
    if diffs:
        for d in diffs:
            err.print(repr(d))
        raise typer.Exit(1)
    console.print("models and database agree / モデルとデータベースは一致しています")


@app.command()
def verify(instance: InstanceOpt = None) -> None:
    """全記録の版ハッシュ連鎖を検証する / verify every record's version hash chain."""

    inst = instance_or_fail(instance)
    with inst.transaction(write=False) as session:
        store = DocumentStore(inst.settings.documents_dir, inst.db)
        checked, problems = verify_all(session, store=store)
    for p in problems[:50]:
        err.print(f"[red]{p.record_type} {p.record_id} v{p.version}: {p.problem}[/]")
    if problems:
        err.print(
            f"[red]{len(problems)} problems in {checked} records / 問題 {len(problems)} 件[/]"
        )
        raise typer.Exit(1)
    console.print(f"[green]OK[/]: {checked} records verified / {checked} 件の記録を検証しました")


@staff_app.command("add")
def staff_add(
    login_id: str,
    name: Annotated[str, typer.Option(help="表示名")],
    role: Annotated[Role, typer.Option(help="役割")],
    integration: Annotated[
        bool,
        typer.Option(
            "--integration",
            help="連携用アカウント（パスワードなし、APIトークンのみ） / an integration account",
        ),
    ] = False,
    as_user: Annotated[
        str | None, typer.Option("--as", help="連携用アカウントを作る管理者のログインID")
    ] = None,
    instance: InstanceOpt = None,
) -> None:
    """職員（または連携用アカウント）を追加する / add a staff member (or an integration)."""
    password = ""
    if integration and not as_user:
        fail(
            InstanceError(
                "連携用アカウントは管理者として作成します（--as 管理者のログインID）。",
                "An integration account is created as a director: --as <login>.",
            )
        )
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            clinic = clinic_service.the_clinic(session)
            if integration:
                integrations.create_integration(
                    session,
                    inst.actor(session, str(as_user)),
                    login_id=login_id,
                    display_name=name,
                    role=role,
                    reauth_minutes=inst.settings.auth.reauth_minutes,
                )
            else:
                user = clinic_service.add_staff(
                    session, clinic, login_id=login_id, display_name=name, role=role
                )
                password = passwords.generate()
                auth_service.set_password(session, user, password, initial=True)
                restrictions.refresh_staff_flag(
                    session, restrictions.patients_matching_staff(session, user)
                )
    except MamoriError as exc:
        fail(exc)
        return
    if integration:
        console.print(
            f"{login_id} ({role.label_ja}): 連携用アカウント / integration account — "
            f"mamori token issue {login_id} --scope … --days …"
        )
        return
    console.print(f"{login_id} ({role.label_ja})")
    console.print(f"初期パスワード / initial password: [bold]{password}[/]")
    console.print(
        "初回ログインで本人のパスワードを設定し、二要素認証を登録します。"
        " / The first sign-in sets their own password and enrols a second factor."
    )


def _staff_or_fail(session: Session, login_id: str) -> StaffUser:
    user = clinic_service.find_staff(session, clinic_service.the_clinic(session).id, login_id)
    if user is None:
        raise InstanceError(f"職員 {login_id} が見つかりません。", f"No staff {login_id}.")
    return user


@staff_app.command("password")
def staff_password(login_id: str, instance: InstanceOpt = None) -> None:
    """新しい初期パスワードを発行する / issue a new initial password (the old one stops working)."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            user = _staff_or_fail(session, login_id)
            password = passwords.generate()
            auth_service.set_password(session, user, password, initial=True)
            record(
                session,
                inst.actor(session, login_id),
                AuditTag.PASSWORD_CHANGED,
                detail={"by": "cli"},
            )
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{login_id}: 初期パスワード / initial password: [bold]{password}[/]")


@token_app.command("issue")
def token_issue(
    login_id: str,
    scope: Annotated[str, typer.Option(help="権限をカンマ区切りで / permissions, comma-separated")],
    days: Annotated[int, typer.Option(help="有効日数 / days until it expires")],
    as_user: Annotated[str, typer.Option("--as", help="発行する管理者のログインID")],
    label: Annotated[str, typer.Option(help="用途 / what it is for")] = "",
    instance: InstanceOpt = None,
) -> None:
    """APIトークンを発行する（期限・権限つき、一度だけ表示） / issue a scoped, expiring token."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            user = _staff_or_fail(session, login_id)
            view, token = integrations.issue(
                session,
                inst.actor(session, as_user),
                inst.settings.token_pepper,
                user.id,
                scope=[p.strip() for p in scope.split(",") if p.strip()],
                days=days,
                label=label,
                reauth_minutes=inst.settings.auth.reauth_minutes,
            )
    except MamoriError as exc:
        fail(exc)
        return
    expires = view.expires_at.isoformat(timespec="minutes") if view.expires_at else "-"
    console.print(f"{login_id}: {', '.join(view.scope)} — 期限 / expires {expires}")
    console.print(
        f"トークン（一度だけ表示） / token (shown once): [bold]{token}[/]", soft_wrap=True
    )


@token_app.command("list")
def token_list(
    as_user: Annotated[str, typer.Option("--as", help="確認する管理者のログインID")],
    instance: InstanceOpt = None,
) -> None:
    """APIトークンの一覧 / list the clinic's API tokens."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            views = integrations.list_tokens(session, inst.actor(session, as_user))
    except MamoriError as exc:
        fail(exc)
        return
    for v in views:  # one line each: a table would cut the IDs on a narrow console
        expires = v.expires_at.isoformat(timespec="minutes") if v.expires_at else "-"
        state = "有効 / live" if v.live else "失効・期限切れ / not live"
        console.print(
            f"{v.id}  {v.login_id} ({v.account_kind})  {v.label}  [{', '.join(v.scope)}]  "
            f"期限 / expires {expires}  {state}",
            soft_wrap=True,
            markup=False,
        )


@staff_app.command("revoke")
def staff_revoke(login_id: str, instance: InstanceOpt = None) -> None:
    """職員の API トークンをすべて失効させる / revoke every API token of a staff member."""
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=True) as session:
            user = _staff_or_fail(session, login_id)
            count = tokens.revoke_tokens(session, user)
    except MamoriError as exc:
        fail(exc)
        return
    console.print(f"{login_id}: {count} token(s) revoked / 失効しました")


@export_app.command("fhir")
def export_fhir(
    out: Annotated[Path, typer.Argument(help="出力先ディレクトリ")],
    as_user: Annotated[str, typer.Option("--as", help="実行する職員のログインID")],
    instance: InstanceOpt = None,
    workers: Annotated[
        int, typer.Option(help="並列に処理するプロセス数（既定: CPU 数） / worker processes")
    ] = 0,
) -> None:
    """FHIR R4 (JP Core) NDJSON を一括で書き出す / bulk export as FHIR NDJSON."""
    workers = workers or os.cpu_count() or 1

    try:
        inst = open_instance(instance)
        close_when_done(inst)
        with inst.transaction(write=False) as session:
            actor = inst.actor(session, as_user)
            total = (
                session.scalar(
                    select(func.count())
                    .select_from(Patient)
                    .where(Patient.clinic_id == actor.clinic_id)
                )
                or 0
            )
            with progress() as bar:
                task = bar.add_task("FHIR export", total=total)
                counts = export_ndjson(
                    session,
                    actor,
                    out,
                    progress=lambda n: bar.advance(task, n),
                    reauth_minutes=inst.settings.auth.reauth_minutes,
                    home=inst.settings.home,
                    workers=workers,
                )
    except MamoriError as exc:
        fail(exc)
        return
    table = Table("resource", "count")
    for k, v in counts.items():
        table.add_row(k, str(v))
    console.print(table)


def run() -> None:  # pragma: no cover - console entry for `python -m mamori`
    app(prog_name="mamori", args=sys.argv[1:])


__all__ = ["app", "run"]
