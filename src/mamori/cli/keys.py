"""``mamori keys``: status, rotation, re-encryption, offline export and recovery of the KEK."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from mamori.audit.trail import AuditTag, record_system
from mamori.cli.common import InstanceOpt, console, err, fail, instance_or_fail, keys_app, progress
from mamori.crypto import recovery, rekey
from mamori.crypto.kek import KeyUnavailable, LocalKek
from mamori.crypto.keyring import DataKey
from mamori.documents.store import DocumentStore
from mamori.errors import MamoriError
from mamori.instance import Instance
from mamori.settings import load_settings, resolve_home

GRACE_HELP = (
    "新しい鍵を動作中のサーバーが読み込むまで待つ秒数 / seconds for running servers to load "
    "the new key (0 when no server runs)"
)
RECOVERY_CODE_ENV = "MAMORI_RECOVERY_CODE"
NEW_PASSPHRASE_ENV = "MAMORI_NEW_KEK_PASSPHRASE"  # noqa: S105 - a variable name


@keys_app.command("status")
def keys_status(
    instance: InstanceOpt = None,
    check: Annotated[bool, typer.Option(help="古い鍵の暗号文が残っていないか数える")] = False,
) -> None:
    """鍵の状態 / where the KEK is, and the data keys (never their values)."""
    inst = instance_or_fail(instance)
    keyring = inst.db.keyring
    console.print(f"KEK: {keyring.kek.source} {keyring.kek.kek_id}")
    if inst.settings.keys.file is not None:
        console.print(f"key file / 鍵ファイル: {inst.settings.keys.file}")
    table = Table("id", "purpose", "created", "retired", "active")
    with inst.db.session(write=False) as session:
        for row in session.scalars(select(DataKey).order_by(DataKey.id)):
            table.add_row(
                str(row.id),
                row.purpose,
                row.created_at.isoformat(timespec="seconds"),
                row.retired_at.isoformat(timespec="seconds") if row.retired_at else "",
                "*" if row.id == keyring.active else "",
            )
    console.print(table)
    if check:
        stale = rekey.count_stale(inst.db)
        console.print(f"rows under an older data key / 古い鍵の行: {stale}")


@keys_app.command("rotate")
def keys_rotate(
    instance: InstanceOpt = None,
    reencrypt: Annotated[
        bool, typer.Option("--reencrypt", help="新しいデータ鍵で全データを再暗号化する")
    ] = False,
    batch: Annotated[int, typer.Option(min=10, max=10000)] = 500,
    grace: Annotated[float, typer.Option(help=GRACE_HELP)] = rekey.GRACE_SECONDS,
) -> None:
    """鍵暗号化鍵を新しくする / new KEK (seconds); --reencrypt: new data key, all data
    re-encrypted in the background with the server up, resumable."""
    inst = instance_or_fail(instance)
    try:
        new_pass = None
        if inst.settings.keys.source == "passphrase":
            new_pass = os.environ.get(NEW_PASSPHRASE_ENV) or typer.prompt(
                "新しいパスフレーズ / new passphrase", hide_input=True, confirmation_prompt=True
            )
        done = rekey.rotate_kek(inst.db, inst.settings, new_pass)
        console.print(
            f"[green]KEK rotated[/] / 鍵暗号化鍵を更新: {done.old_kek[:8]} → {done.new_kek[:8]}, "
            f"{done.data_keys} keys rewrapped in {done.seconds:.2f} s"
        )
        if inst.settings.keys.source == "file":
            console.print(
                "鍵が変わりました。`mamori keys export` で新しい控えを作ってください。"
                " / The key changed: make a new recovery copy with `mamori keys export`."
            )
        if reencrypt:
            kid = rekey.add_data_key(inst.db)
            console.print(f"new data key / 新しいデータ鍵: {kid}")
            _reencrypt(inst, batch, grace)
    except MamoriError as exc:
        fail(exc)


@keys_app.command("reencrypt")
def keys_reencrypt(
    instance: InstanceOpt = None,
    new_key: Annotated[bool, typer.Option("--new-key", help="新しいデータ鍵を作ってから")] = False,
    batch: Annotated[int, typer.Option(min=10, max=10000)] = 500,
    grace: Annotated[float, typer.Option(help=GRACE_HELP)] = rekey.GRACE_SECONDS,
) -> None:
    """再暗号化（中断後の再開も）/ re-encrypt everything under the active data key (also resumes
    an interrupted run), then retire older data keys."""
    inst = instance_or_fail(instance)
    try:
        if new_key:
            console.print(f"new data key / 新しいデータ鍵: {rekey.add_data_key(inst.db)}")
        _reencrypt(inst, batch, grace)
    except MamoriError as exc:
        fail(exc)


def _reencrypt(inst: Instance, batch: int, grace: float) -> None:
    total = rekey.total_rows(inst.db)
    store = DocumentStore(inst.settings.documents_dir, inst.db)
    with progress() as bar:
        task = bar.add_task("再暗号化 / re-encrypting", total=total)
        out = rekey.reencrypt(inst.db, store, batch=batch, progress=lambda n: bar.advance(task, n))
    console.print(
        f"[green]re-encrypted[/] / 再暗号化: {out.rows} rows, {out.documents} documents in "
        f"{out.seconds:.1f} s ({out.rows / max(out.seconds, 1e-9):,.0f} rows/s); "
        f"retired data keys / 廃止した鍵: {out.retired or '-'}"
    )


@keys_app.command("export")
def keys_export(
    out: Annotated[Path, typer.Option("--out", help="控えを書く場所（USB など）")],
    instance: InstanceOpt = None,
) -> None:
    """鍵の控えを作る / write the KEK wrapped under a one-time recovery code (file + QR)."""
    inst = instance_or_fail(instance)
    try:
        kek = inst.db.keyring.kek
        if not isinstance(kek, LocalKek):
            raise KeyUnavailable(
                "HSM の鍵は取り出せません。トークンの製造元のバックアップ手順を使ってください。",
                "A key inside an HSM cannot be exported; use the token vendor's backup.",
            )
        done = recovery.export_kek(kek, inst.settings.instance_id, out)
        with inst.transaction(write=True) as session:
            record_system(session, AuditTag.KEYS_EXPORTED, {"kek": done.kek_id})
    except MamoriError as exc:
        fail(exc)
    console.print(f"控えのファイル / export file: {done.file}")
    console.print(f"紙の控え（QR） / paper copy (QR): {done.paper}")
    console.print(
        "復旧コード（一度だけ表示。紙に書き、控えとは別の場所に保管） / recovery code (shown "
        f"once; write it down and keep it apart from the export):\n[bold]{done.code}[/]"
    )


@keys_app.command("recover")
def keys_recover(
    export: Annotated[Path, typer.Argument(help="mamori keys export で作った控えのファイル")],
    instance: InstanceOpt = None,
    key_file: Annotated[
        Path | None, typer.Option(help="書き戻す場所（既定: 設定の [keys] file）")
    ] = None,
) -> None:
    """控えから鍵ファイルを戻す / restore the KEK file from its export and the recovery code."""
    try:
        settings = load_settings(resolve_home(instance))
        target = key_file or settings.keys.file
        if target is None:
            raise KeyUnavailable(
                "書き戻す鍵ファイルの場所がありません（--key-file）。",
                "No key file location (--key-file).",
            )
        code = os.environ.get(RECOVERY_CODE_ENV) or typer.prompt(
            "復旧コード / recovery code", hide_input=True
        )
        kek = recovery.recover_kek(export, code)
        recovery.restore_key_file(kek, target)
    except MamoriError as exc:
        fail(exc)
    console.print(f"[green]restored[/] / 鍵ファイルを戻しました: {target} ({kek.kek_id[:8]})")
    try:
        instance_or_fail(instance).db.dispose()  # opens only with the right key
    except typer.Exit:
        err.print("[red]この鍵ではインスタンスを開けません / this key does not open the instance")
        raise
    console.print("インスタンスを開けました / the instance opens with it")
