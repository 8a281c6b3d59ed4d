"""``mamori demo`` and ``mamori synth``: synthetic clinics for trying mamori and for benchmarks."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mamori.app import create_app
from mamori.auth import integrations, passwords
from mamori.auth import service as auth_service
from mamori.authz.roles import Role
from mamori.backup.setup import configure as configure_backup
from mamori.cli.common import InstanceOpt, app, close_when_done, console, err, fail, progress
from mamori.clinic import service as clinic_service
from mamori.clinic.calendar import clinic_today
from mamori.db import Database
from mamori.documents.store import DocumentStore
from mamori.errors import MamoriError
from mamori.instance import create_instance, open_instance
from mamori.patients.insurance import with_check_digit
from mamori.settings import Settings, host_in_url, load_settings
from mamori.synth.generator import generate, open_days
from mamori.synth.population import SIZES
from mamori.web import server, tls

DEMO_CLINIC = "まもり内科クリニック（デモ・合成データ）"
# 医療機関コード for the demo: 東京都(13) 医科(1) + 郡市区 01 + 2345 + check digit (synthetic)
DEMO_CODE = "131" + with_check_digit("012345")
# a name other PCs type: an IPv4/IPv6 address or an ASCII host name (it goes into the
# certificate and the allowed origins, so nothing else is accepted)
_HOST = re.compile(
    r"[0-9A-Fa-f:.]+|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
DEMO_STAFF = (
    ("dr_aiko", "山本 愛子", Role.PHYSICIAN),
    ("dr_kenji", "佐藤 健二", Role.PHYSICIAN),
    ("nurse_ben", "鈴木 勉", Role.NURSE),
    ("clerk_chika", "田中 千佳", Role.RECEPTION),
    ("scribe_dai", "高橋 大", Role.SCRIBE),
)


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Argument(help="作成先（省略時は一時ディレクトリ）")
    ] = None,
    port: int = 8000,
    size: Annotated[str, typer.Option(help="合成データの規模 (XS, demo, S)")] = "demo",
    seed: int = 7,
    serve: Annotated[bool, typer.Option(help="作成後にサーバーを起動する")] = True,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="他のPCから開く名前かアドレス（例: 192.168.1.10）。省略時はこのPCだけ / the "
            "name or address other PCs use (default: this PC only)",
        ),
    ] = None,
    api_token: Annotated[
        bool,
        typer.Option(
            "--api-token",
            help="読み取り専用の連携用アカウントとAPIトークン（30日）も作る / also an "
            "integration account with a 30-day read-only API token",
        ),
    ] = False,
) -> None:
    """デモ診療所を作成して起動する / create a demo clinic with synthetic patients and serve it."""
    if size not in ("XS", "demo", "S"):
        err.print("[red]--size は XS, demo, S のいずれかです / --size must be XS, demo or S[/]")
        raise typer.Exit(2)
    if host is not None and not _HOST.fullmatch(host):
        err.print(
            "[red]--host は IP アドレスかホスト名（英数字・ハイフン・ドット）です"
            " / --host takes an IP address or a host name (letters, digits, hyphens, dots)[/]"
        )
        raise typer.Exit(2)
    if directory is None:
        # one demo per user, reused: each run used to leave a new 190 MB instance in /tmp
        home = default_demo_home()
        if (home / "mamori.toml").is_file():
            _serve_again(home, port, serve)
            return
    else:
        home = directory.resolve()
    if home.exists() and any(home.iterdir()):
        err.print(f"[red]{home} は空ではありません / {home} is not empty[/]")
        raise typer.Exit(2)
    try:
        created = create_instance(
            home,
            clinic_name=DEMO_CLINIC,
            institution_code=DEMO_CODE,
            port=port,
            admin_login="director",
            admin_name="院長 山本 守",
            is_synthetic=True,
            postal_code="113-0033",
            address="東京都文京区本郷（架空）",
            phone="03-0000-0000",
            public_names=[host] if host else [],
        )
        close_when_done(created.instance)
    except MamoriError as exc:
        fail(exc)
        return
    inst = created.instance
    logins = [("director", "院長 山本 守", Role.DIRECTOR.label_ja)]
    secrets = {"director": created.admin_password}
    token = ""
    with inst.transaction(write=True) as session:
        clinic = clinic_service.the_clinic(session)
        for login, name, role in DEMO_STAFF:
            user = clinic_service.add_staff(
                session, clinic, login_id=login, display_name=name, role=role
            )
            logins.append((login, name, role.label_ja))
            secrets[login] = passwords.generate()
            auth_service.set_password(session, user, secrets[login], initial=True)
        if api_token:
            director = inst.actor(session, "director")
            link = integrations.create_integration(
                session,
                director,
                login_id="demo-api",
                display_name="デモ連携（読み取り）",
                role=Role.PHYSICIAN,
                reauth_minutes=inst.settings.auth.reauth_minutes,
            )
            _, token = integrations.issue(
                session,
                director,
                inst.settings.token_pepper,
                link.id,
                scope=[
                    p.value
                    for p in integrations.token_permissions(Role.PHYSICIAN)
                    if p.value.endswith(":read")
                ],
                days=30,
                label="demo",
                reauth_minutes=inst.settings.auth.reauth_minutes,
            )
        today = clinic_today()
        with progress() as bar:
            task = bar.add_task("合成データ / synthetic data", total=open_days(size, today))
            generate(
                session,
                clinic,
                size,
                seed=seed,
                end=today,
                store=DocumentStore(inst.settings.documents_dir, inst.db),
                progress=lambda n: bar.advance(task, n),
            )
    # the demo has backups like any instance: offline keys and a folder standing for the USB
    # disk, both beside the instance (never inside it); the passphrase is printed (demo only)
    backup_pass = passwords.generate()
    backup = configure_backup(
        inst,
        home.parent / f"{home.name}-offline-keys",
        home.parent / f"{home.name}-usb",
        backup_pass,
    )
    settings = load_settings(home)  # with the new target
    table = Table("ログイン / login", "氏名 / name", "役割 / role")
    for login, name, role_ja in logins:
        table.add_row(login, name, role_ja)
    url = f"https://{host_in_url(host) if host else 'localhost'}:{port}"
    console.print(f"\n[bold green]デモ診療所を作成しました / demo clinic ready[/]: {home}")
    console.print(table)
    console.print("初期パスワード / initial passwords:")
    for login, _, _ in logins:
        console.print(f"  {login}: {secrets[login]}", soft_wrap=True)
    console.print(
        f"画面 / web UI: [bold]{url}/login[/]   API: {url}/api/v1/   FHIR: {url}/fhir/r4/metadata",
        soft_wrap=True,
    )
    if token:
        console.print(
            f"連携用APIトークン（demo-api、読み取りのみ、30日） / integration token (read-only, "
            f"30 days): {token}\n"
            f"例 / example: curl --cacert {home}/tls/cert.pem "
            f'-H "Authorization: Bearer {token}" "{url}/api/v1/patients?kana=サト"',
            soft_wrap=True,
        )
    console.print(
        "初回ログインで二要素認証（認証アプリかパスキー）を登録します。"
        " / The first sign-in enrols a second factor (authenticator app or passkey)."
    )
    console.print(
        f"バックアップ / backups: {backup.target}（鍵 / keys: {backup.keys.primary.parent}, "
        f"パスフレーズ / passphrase: {backup_pass}）",
        soft_wrap=True,
    )
    console.print(
        "[yellow]すべて合成データです。実在の患者情報は入力しないでください。"
        " / All data is synthetic; never enter real patients here.[/]"
    )

    tls.local_certificate(settings.home, settings.tls_names)  # made now, with its names
    if serve:
        _serve(settings, inst.db, port)


def default_demo_home() -> Path:
    """Where ``mamori demo`` keeps its clinic when no directory is named: the next run serves
    it again instead of making another (remove the directory to start afresh)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "mamori" / "demo").resolve()


def _serve_again(home: Path, port: int, serve: bool) -> None:
    """The demo made by an earlier run, served again as it was left."""
    settings = load_settings(home)
    console.print(
        f"前回のデモ診療所を再利用します / reusing the demo clinic made before: {home}\n"
        "ログイン情報は作成時に表示したものです。忘れた場合: "
        f"mamori staff password <ログインID> --instance {home} / the logins are those printed "
        "when it was made; a forgotten one: mamori staff password <login>.\n"
        f"作り直すには {home} を削除してください / to start again, delete {home}.",
        soft_wrap=True,
    )
    if not serve:
        return
    inst = open_instance(str(home))
    close_when_done(inst)
    _serve(settings, inst.db, port)


def _serve(settings: Settings, db: Database, port: int) -> None:
    """The demo over HTTPS with its local certificate, on loopback or, after ``--host``,
    every address."""
    cert, key = tls.local_certificate(settings.home, settings.tls_names)
    server.serve(
        create_app(settings, db),
        host=settings.host,
        port=port,
        log_level="info",
        access_log=False,
        server_header=False,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )


@app.command()
def synth(
    size: Annotated[str, typer.Option(help="XS, demo, S, M, L")] = "S",
    seed: int = 1,
    end: Annotated[str, typer.Option(help="最終日 YYYY-MM-DD（既定: 2026-10-30）")] = "2026-10-30",
    documents: Annotated[bool, typer.Option(help="文書ファイルも作る")] = True,
    instance: InstanceOpt = None,
) -> None:
    """合成データを生成する（ベンチマーク用） / generate a synthetic clinic into the instance."""

    if size not in SIZES:
        err.print(f"[red]--size: {', '.join(SIZES)}[/]")
        raise typer.Exit(2)
    try:
        end_date = dt.date.fromisoformat(end)
        inst = open_instance(instance)
        close_when_done(inst)
    except ValueError:
        err.print("[red]--end は YYYY-MM-DD / --end must be YYYY-MM-DD[/]")
        raise typer.Exit(2) from None
    except MamoriError as exc:
        fail(exc)
        return
    with inst.transaction(write=True) as session:
        clinic = clinic_service.the_clinic(session)
        with progress() as bar:
            task = bar.add_task(f"synth {size}", total=open_days(size, end_date))
            stats = generate(
                session,
                clinic,
                size,
                seed=seed,
                end=end_date,
                store=DocumentStore(inst.settings.documents_dir, inst.db) if documents else None,
                progress=lambda n: bar.advance(task, n),
                commit_batches=True,
            )
    inst.db.refresh_statistics()  # the planner's view of the new rows (see Database)
    table = Table("record", "count")
    for k, v in stats.counts.items():
        table.add_row(k, str(v))
    table.add_row("versions", str(stats.versions))
    console.print(table)
