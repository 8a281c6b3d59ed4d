"""`mamori standby …`: the read-only standby on a second PC, and its log back into the main one
(BCP 3-4, ``mamori.continuity.standby``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mamori import copies
from mamori.backup.identity import load_identity
from mamori.cli.backup import _Bars, _identity_passphrase, _source
from mamori.cli.common import InstanceOpt, app, close_when_done, console, err, fail, progress
from mamori.continuity import replica as streaming
from mamori.continuity import standby
from mamori.errors import MamoriError
from mamori.instance import open_instance
from mamori.web import tls

standby_app = typer.Typer(
    help="参照専用の待機系（別のPCでバックアップから閲覧） / the read-only standby"
)
app.add_typer(standby_app, name="standby")


@standby_app.callback(invoke_without_command=True)
def run_cmd(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="保存先: dir:/media/usb, sftp://user@host:22/path, s3://bucket/prefix"
        ),
    ] = None,
    identity: Annotated[
        Path | None, typer.Option(help="オフライン鍵ファイル（keygen が作成）")
    ] = None,
    root: Annotated[
        Path, typer.Option("--dir", help="待機系の置き場所 / standby directory")
    ] = Path("standby"),
    every: Annotated[
        float, typer.Option(help="新しい世代を確認する間隔（分） / refresh interval, minutes")
    ] = 15,
    host: Annotated[
        str, typer.Option(help="待ち受けアドレス / address to listen on")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="ポート / port")] = 8443,
    key_dir: Annotated[
        Path | None, typer.Option(help="復元した KEK の置き場所（データの外）")
    ] = None,
    ssh_key: Annotated[Path | None, typer.Option(help="SFTP の秘密鍵")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="SFTP サーバーの known_hosts")] = None,
    endpoint: Annotated[str, typer.Option(help="S3 のエンドポイント")] = "",
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="準備・更新だけして終了（配信しない） / prepare or refresh, then exit"
        ),
    ] = False,
    replica: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL の本番から複製を受ける（postgresql://replicator@本番:5432/mamori、"
            "パスワードは環境変数 MAMORI_REPLICA_PASSWORD） / stream from a PostgreSQL main "
            "server"
        ),
    ] = None,
) -> None:
    """最新の検証済み世代を復元し、参照専用で配信・定期更新 / restore the newest verified
    generation, serve it read-only, refresh it."""
    if ctx.invoked_subcommand is not None:
        return
    if source is None or identity is None:
        err.print(
            "--from と --identity が必要です / --from and --identity are required", markup=False
        )
        raise typer.Exit(2)
    spec = _source(source, ssh_key, known_hosts, endpoint)
    try:
        ident = load_identity(identity, _identity_passphrase(identity))
        src = standby.Source(spec, ident, key_dir)
        refresher: standby.Refresher | None = None
        if replica:
            primary = standby.Primary(replica, os.environ.get("MAMORI_REPLICA_PASSWORD") or None)

            def refresher(
                root: Path, source: standby.Source, *, progress: Any, origins: Any
            ) -> standby.Copy | None:
                return streaming.refresh(root, source, primary, progress=progress, origins=origins)

        root.resolve().mkdir(parents=True, exist_ok=True, mode=0o700)
        # this PC's certificate, kept across refreshes
        tls.local_certificate(root.resolve(), [] if host in ("0.0.0.0", "::") else [host])  # noqa: S104
        with progress() as bars:
            standby.run(
                root.resolve(), src, host=host, port=port, every_minutes=every,
                say=lambda line: console.print(line, markup=False), progress=_Bars(bars),
                once=True, refresher=refresher,
            )  # fmt: skip
        served = standby.current(root.resolve())
        assert served is not None
        shown = copies.copy_banner(served.home) or {}
        console.print(
            f"参照用のデータ: {shown.get('as_of')} 時点（世代 {served.generation}） / data as of "
            f"{shown.get('as_of')} JST (generation {served.generation})",
            markup=False,
        )
        if once:
            return
        console.print(f"mamori standby: https://{host}:{port}/ （参照専用 / read-only）")
        standby.run(
            root.resolve(), src, host=host, port=port, every_minutes=every,
            say=lambda line: console.print(line, markup=False), refresher=refresher,
        )  # fmt: skip
    except MamoriError as exc:
        fail(exc)


@standby_app.command("export-log")
def export_log_cmd(
    root: Annotated[Path, typer.Option("--dir", help="待機系の置き場所 / standby directory")],
) -> None:
    """待機系の監査記録をいまの時点まで書き出す（署名付き） / write out the standby's own log."""
    try:
        served = standby.current(root.resolve())
        if served is None:
            raise standby.StandbyError(f"{root} に待機系がありません。", f"No standby in {root}.")
        path = standby.export_segment(served.home, root.resolve() / "log")
    except MamoriError as exc:
        fail(exc)
        return
    console.print(
        f"書き出しました / written: {path}" if path else "新しい記録はありません / nothing new",
        markup=False,
    )


@standby_app.command("merge-log")
def merge_log_cmd(
    source: Annotated[
        Path,
        typer.Option(
            "--from", help="待機系の log フォルダ（または待機系の置き場所） / the standby's log"
        ),
    ],
    as_user: Annotated[str, typer.Option("--as", help="実行する院長のログインID / director")],
    instance: InstanceOpt = None,
) -> None:
    """待機系での閲覧の記録を本番の監査証跡へ取り込む（検証付き・一度だけ） / merge the
    standby's audit log into this one, verified, once."""
    folder = source / "log" if (source / "log").is_dir() else source
    paths = sorted(folder.glob("standby-*.jsonl"))
    if not paths:
        err.print(f"{folder} に待機系の記録がありません / no standby log here", markup=False)
        raise typer.Exit(1)
    try:
        inst = open_instance(instance)
        close_when_done(inst)
        segments = [standby.read_segment(p, inst.settings) for p in paths]
        with inst.transaction(write=True) as session:
            done = standby.merge_segments(session, inst.actor(session, as_user), segments)
    except MamoriError as exc:
        fail(exc)
        return
    for row in done:
        if "skipped" in row:
            console.print(f"  {row['segment']}: 取り込み済み / already merged", markup=False)
        else:
            console.print(f"  {row['segment']}: {row['events']} 件 / events", markup=False)
    merged = sum(int(r.get("events", 0)) for r in done)
    console.print(f"取り込みました / merged: {merged} 件 / events", markup=False)
