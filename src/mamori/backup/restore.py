"""``mamori restore`` and ``mamori drill``: a backup back into a working instance, proven.

A restore needs the offline identity (and its passphrase): the server never had it. It
verifies before it decrypts — the signer key comes from the identity file, not from the
target, so a manifest forged with the public recipients is refused — and restores only into a
new, empty directory, never over a live instance. Then it proves the result: the database's
SHA-256 equals the manifest's, ``PRAGMA integrity_check`` passes, row counts equal the
manifest's, the audit trail verifies against the checkpoints that travelled with it, and every
document decrypts to the bytes recorded. The restored instance logs its own restore.

A drill is a timed restore into a scratch directory: RTO (start to a verified instance) and
RPO (how old the newest restored record is) go into a report signed with the instance's
manifest key, kept as evidence for the MHLW checklist.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from mamori import copies
from mamori.audit.checkpointer import load_checkpoints, origin, signer
from mamori.audit.trail import AuditTag, record_system
from mamori.audit.verify import verify_log
from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.fetch import Restored, Say, decrypt_to, invalid
from mamori.backup.fmt import BackupError
from mamori.backup.identity import Identity
from mamori.backup.integrity import integrity_check
from mamori.backup.restore_documents import start_documents
from mamori.backup.sources import db_facts, libpq, pg_facts, pg_table_names, pg_tool, run_pg_tool
from mamori.backup.targets import open_target
from mamori.backup.verify import Generation, MediumReport, verify_target
from mamori.crypto.kek import check_outside
from mamori.db import make_engine
from mamori.instance import Instance, open_instance
from mamori.migrate import check_role_name, grant_app_role
from mamori.settings import default_key_dir


def restore(
    spec: TargetSpec,
    ident: Identity,
    dest: Path,
    *,
    generation: int | None = None,
    key_dir: Path | None = None,
    progress: Say | None = None,
    database_url: str | None = None,
    app_role: str | None = None,
    partial: bool = False,
    check: bool = False,
) -> Restored:
    """``check``: run SQLite's full integrity check on the restored database even when the
    generation attests that its snapshot passed it (``mamori restore --check``, every drill).
    Without it an attested generation is proven by its SHA-256 alone: bit-identical to the
    snapshot that passed the check when the copy was made (``docs/backup.md``).

    ``partial``: a person allows leaving out document objects that are missing or damaged
    (everything else must verify); what is left out is listed in ``Restored.missing_documents``,
    in the restored copy's read-only marker and in its restore event.

    ``database_url``: for a PostgreSQL generation, the **empty** database to restore into
    (created beforehand by its administrator); the instance directory still goes to ``dest``.
    ``app_role``: the PostgreSQL login role the server will use, given least privilege once
    everything is proven (``pg_restore --no-acl`` brings no grants back); a failure there
    undoes the restore like any other."""
    if app_role is not None:
        check_role_name(app_role)
    say = progress or (lambda _w, _d, _t: None)
    timings: dict[str, float] = {}
    t = time.monotonic()
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(
            f"{dest} は空ではありません。復元は新しいディレクトリにだけ行います（稼働中の"
            "インスタンスを上書きしません）。",
            f"{dest} is not empty: restores go into a new directory only (a live instance is "
            "never overwritten).",
        )
    signer = fmt.public_from_text(ident.signer)
    target = open_target(spec, ident.instance_id)
    try:
        say("verify", 0, 1)
        report = verify_target(target, signer, ident.instance_id, deep=False)
        chosen = choose_generation(report, generation, partial=partial)
        if chosen.manifest.get("engine") == "postgresql":
            _require_empty_database(database_url)
        elif app_role:
            raise BackupError(
                "SQLite の世代です。--app-role は PostgreSQL の世代にだけ使います。",
                "This is a SQLite generation: --app-role is for PostgreSQL generations only.",
            )
        elif database_url:
            raise BackupError(
                "SQLite の世代です。--database-url は PostgreSQL の世代にだけ使います。",
                "This is a SQLite generation: --database-url is for PostgreSQL generations only.",
            )
        base: Generation | None = None
        if chosen.kind == "delta":
            want = chosen.manifest["base"]["manifest"]
            base = next((g for g in report.generations if g.hash == want and g.ok), None)
            if base is None:
                raise invalid(
                    "差分の元の完全バックアップがありません。", "The delta's full is missing."
                )
        timings["verify"] = time.monotonic() - t
        made_dest = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(dest, 0o700)
        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=dest))
        created: list[Path] = []
        try:
            restored = _restore_into(
                target, ident, chosen, base, dest, work, key_dir, say, timings, created,
                database_url, [] if partial else None, check,
            )  # fmt: skip
            if app_role:
                assert database_url is not None  # a PostgreSQL generation needs one (above)
                t = time.monotonic()
                _grant(database_url, app_role)
                restored.app_role = app_role
                timings["grants"] = time.monotonic() - t
        except BaseException:
            if chosen.manifest.get("engine") == "postgresql" and database_url:
                empty_database(database_url)  # it was empty; it is left empty
            # nothing half-restored is left to be mistaken for an instance: the directory
            # goes back to empty (or away, if the restore made it) and a key file it wrote too
            for path in created:
                path.unlink(missing_ok=True)
            if made_dest:
                shutil.rmtree(dest, ignore_errors=True)
            else:
                for child in dest.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        target.close()
    restored.timings = timings
    return restored


def _restore_into(
    target: Any,
    ident: Identity,
    chosen: Generation,
    base: Generation | None,
    dest: Path,
    work: Path,
    key_dir: Path | None,
    say: Say,
    timings: dict[str, float],
    created: list[Path],
    database_url: str | None = None,
    missing: list[dict[str, str]] | None = None,
    check: bool = False,
) -> Restored:
    t = time.monotonic()
    m = chosen.manifest
    postgres = m.get("engine") == "postgresql"
    # 1. instance files (settings, secrets, checkpoints, TLS, KEK)
    say("instance", 0, 1)
    tar_path = work / "instance.tar"
    decrypt_to(target, chosen, "instance.tar.zst.age", tar_path, ident, work)
    key_file = _unpack_instance(
        tar_path, dest, ident.instance_id, key_dir, created, database_url if postgres else None
    )
    with ExitStack() as stack:
        documents = start_documents(target, chosen, dest, work, ident, say, timings, stack, missing)
        job = _Job(
            target, ident, chosen, dest, work, key_file, say, timings, t, documents, missing or [],
            check,
        )  # fmt: skip
        if postgres:
            assert database_url is not None
            return _restore_postgres(job, database_url)
        return _restore_sqlite(job, base)


def restore_files(
    spec: TargetSpec,
    ident: Identity,
    dest: Path,
    *,
    key_dir: Path | None = None,
    progress: Say | None = None,
) -> Generation:
    """The instance files (settings, secrets, checkpoints, TLS, the KEK into ``key_dir``) and
    the documents of the newest PostgreSQL generation that verifies, into an empty ``dest``
    whose settings keep the main server's database URL without its password — and no
    database: the PostgreSQL standby
    (``continuity.replica``) takes its rows from a streaming replica instead. Every object
    read is decrypted and checked against the signed manifest as in :func:`restore`; a failure
    leaves nothing behind."""
    say = progress or (lambda _w, _d, _t: None)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} は空ではありません。", f"{dest} is not empty.")
    target = open_target(spec, ident.instance_id)
    created: list[Path] = []
    try:
        say("verify", 0, 1)
        report = verify_target(
            target, fmt.public_from_text(ident.signer), ident.instance_id, deep=False
        )
        chosen = choose_generation(report, None)
        if chosen.manifest.get("engine") != "postgresql":
            raise BackupError(
                "SQLite の世代です。レプリカの待機系は PostgreSQL の診療所のためのものです。",
                "This is a SQLite generation: the replica standby is for PostgreSQL clinics.",
            )
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix=".restore-", dir=dest))
        try:
            say("instance", 0, 1)
            tar_path = work / "instance.tar"
            decrypt_to(target, chosen, "instance.tar.zst.age", tar_path, ident, work)
            with tarfile.open(tar_path) as tar:
                member = tar.extractfile("mamori.toml")
                assert member is not None
                found = tomllib.loads(member.read().decode("utf-8"))
            url = str(found.get("database", {}).get("url", ""))
            if not url.startswith("postgresql"):
                raise invalid("世代の設定にデータベースがありません。", "No database URL.")
            plain = make_url(url).set(password=None).render_as_string(hide_password=False)
            _unpack_instance(tar_path, dest, ident.instance_id, key_dir, created, plain)
            with ExitStack() as stack:
                start_documents(target, chosen, dest, work, ident, say, {}, stack)()
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        target.close()
    return chosen


@dataclass(frozen=True)
class _Job:
    """One restore under way, after its instance files: what its database step and proofs
    share."""

    target: Any
    ident: Identity
    chosen: Generation
    dest: Path
    work: Path
    key_file: Path | None
    say: Say
    timings: dict[str, float]
    started: float
    documents: Callable[[], int]  # waits for the documents (started before the database)
    missing: list[dict[str, str]]  # documents left out (a partial restore), filled as it goes
    check: bool = False  # the integrity check even on an attested generation


def _restore_sqlite(job: _Job, base: Generation | None) -> Restored:
    target, ident, chosen, work, say = job.target, job.ident, job.chosen, job.work, job.say
    dest = job.dest
    m = chosen.manifest
    # 2. database: the full (hashed as it is written), then the delta's pages
    db_dir = dest / "data"
    db_dir.mkdir(mode=0o700, exist_ok=True)
    db = db_dir / "mamori.db"
    full = base or chosen
    say("database", 0, 1)
    full_name = "db.full.sqlite.zst.age"
    if full is chosen:
        restored_sha = decrypt_to(target, full, full_name, db, ident, work, durable=True)
    else:  # the delta first (small, scratch), then the full patched with it in one pass
        pages = work / "delta.pages"
        decrypt_to(target, chosen, "db.delta.pages.zst.age", pages, ident, work)
        with fmt.PageDelta(pages) as delta:
            delta.expect(m["db"])
            restored_sha = decrypt_to(
                target, full, full_name, db, ident, work, patch=delta, durable=True
            )
        pages.unlink()
    if restored_sha != m["db"]["sha256"]:
        raise invalid(
            "復元したデータベースが目録と一致しません。",
            "The restored database does not match its manifest (SHA-256).",
        )
    say("database", 1, 1)
    job.timings["database"] = time.monotonic() - job.started
    # 3.–4. the database's own check runs (in SQLite, off the GIL) beside the counts and the
    # audit trail; the restore is logged only once every proof has passed
    attested = m["db"].get("attested") or {}
    if (
        not job.check
        and attested.get("integrity_check") == "ok"
        and attested.get("sha256") == restored_sha
    ):
        # the snapshot these bytes are identical to passed the full check when it was made
        return _prove(job, lambda: db_facts(db), None, "sqlite", "attested")
    with ThreadPoolExecutor(1) as pool:
        integrity = pool.submit(integrity_check, db)
        return _prove(job, lambda: db_facts(db), integrity.result, "sqlite")


def _prove(
    job: _Job,
    facts_of: Callable[[], dict[str, Any]],
    integrity: Callable[[], float] | None,
    engine: str,
    proven: str = "checked",
) -> Restored:
    """The proofs after the database is back — documents decrypted and hashed, counts and the
    last event equal to the manifest's, the audit trail against the bundled checkpoints, the
    database's own check (``integrity``, already running) — and only then the restored
    instance logs its own restore."""
    chosen, say, timings = job.chosen, job.say, job.timings
    m = chosen.manifest
    docs = job.documents()
    facts = facts_of()
    expected = m["db"]["counts"]
    if facts["counts"] != expected or facts["last_event_seq"] != m["db"]["last_event_seq"]:
        raise invalid(
            "復元した件数が目録と一致しません。",
            f"Restored row counts differ from the manifest: {facts['counts']} vs {expected}",
        )
    t = time.monotonic()
    say("audit", 0, 1)
    inst = _open_restored(job.dest)
    try:
        audit_size = verify_audit(inst)
        timings["audit"] = time.monotonic() - t
        if integrity is not None:
            say("integrity", 0, 1)
            timings["integrity"] = integrity()
        _log_restore(inst, chosen, audit_size, job.missing, proven)
    finally:
        inst.db.dispose()
    # read-only until a person promotes it: two writable copies would fork the record
    marker: dict[str, Any] = {
        "restored": True,
        "generation": chosen.generation,
        "manifest": chosen.hash,
    }
    if job.missing:
        marker["missing_documents"] = job.missing
    copies.mark(job.dest, marker)
    return Restored(
        home=job.dest,
        generation=chosen.generation,
        kind=chosen.kind,
        manifest=chosen.hash,
        key_file=job.key_file,
        counts=facts["counts"],
        last_event_seq=facts["last_event_seq"],
        last_event_at=facts["last_event_at"],
        audit_events=audit_size,
        documents=docs,
        engine=engine,
        missing_documents=list(job.missing),
        integrity=proven,
    )


def _restore_postgres(job: _Job, url: str) -> Restored:
    """A ``pg_dump`` generation into an empty PostgreSQL database: the dump decrypted and
    hashed, then ``pg_restore`` in one transaction that stops at the first error — it rebuilds
    every index, key and constraint, PostgreSQL's own proof of the data (no
    ``integrity_check`` exists there) — then the same counts, audit and document proofs."""

    target, ident, chosen, work, say = job.target, job.ident, job.chosen, job.work, job.say
    m = chosen.manifest
    say("database", 0, 1)
    dump = work / "db.pgdump"
    if decrypt_to(target, chosen, "db.full.pgdump.zst.age", dump, ident, work) != m["db"]["sha256"]:
        raise invalid(
            "復元したデータベースが目録と一致しません。",
            "The restored database does not match its manifest (SHA-256).",
        )
    uri, password = libpq(url)
    args = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error"]
    run_pg_tool([*args, "--single-transaction", "--dbname", uri, str(dump)], password, "pg_restore")
    dump.unlink()
    say("database", 1, 1)
    job.timings["database"] = time.monotonic() - job.started
    return _prove(job, lambda: pg_facts(url), None, "postgresql", "pg_restore")


def _grant(url: str, role: str) -> None:
    """The app role's least privilege on the restored database (``mamori db grant-app-role``)."""

    engine = make_engine(url)
    try:
        grant_app_role(engine, role)
    except DBAPIError as exc:  # no such role, or not run as the owner
        raise BackupError(
            f"ロール {role} に権限を付与できません（復元は取り消しました）: {exc.orig}",
            f"Cannot grant role {role} its privileges (the restore was undone): {exc.orig}",
        ) from exc
    finally:
        engine.dispose()


def _require_empty_database(url: str | None) -> None:
    if not url or not url.startswith("postgresql"):
        raise BackupError(
            "PostgreSQL の世代です。復元先の空のデータベースを --database-url で指定してください。",
            "This is a PostgreSQL generation: give the empty database to restore into with "
            "--database-url.",
        )

    try:
        tables = pg_table_names(url)
    except Exception as exc:  # psycopg's errors: unreachable, refused, no such database
        raise BackupError(
            f"復元先のデータベースに接続できません: {exc}",
            f"Cannot connect to the database to restore into: {exc}",
        ) from exc
    if tables:
        raise BackupError(
            "復元先のデータベースは空ではありません。稼働中のデータベースを上書きしません。",
            f"The database to restore into is not empty ({len(tables)} tables): a live "
            "database is never overwritten.",
        )


def empty_database(url: str) -> None:
    """Back to empty after a failed restore or a drill: a database that was checked to hold
    no tables gets its schema dropped and created again."""
    import psycopg  # PostgreSQL instances only

    uri, password = libpq(url)
    with suppress(Exception), psycopg.connect(uri, password=password, autocommit=True) as con:
        row = con.execute("SELECT current_schema()").fetchone()
        if row and row[0]:
            name = str(row[0]).replace('"', '""')
            con.execute(f'DROP SCHEMA "{name}" CASCADE')
            con.execute(f'CREATE SCHEMA "{name}"')


def _unpack_instance(
    tar_path: Path,
    dest: Path,
    instance_id: str,
    key_dir: Path | None,
    created: list[Path],
    database_url: str | None = None,
) -> Path | None:
    key_file: Path | None = None
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise invalid("インスタンス束に不正な項目があります。", f"Bad entry {member.name}.")
        kek_members = [m for m in tar.getmembers() if m.name.startswith("kek/")]
        tar.extractall(
            dest, members=[m for m in tar.getmembers() if not m.name.startswith("kek/")],
            filter="data",
        )  # fmt: skip
        if kek_members:
            data = tar.extractfile(kek_members[0])
            assert data is not None
            text = data.read().decode("ascii")
            kek_id = Path(kek_members[0].name).stem
            key_file = (key_dir or default_key_dir()) / f"{instance_id}-{kek_id[:12]}.kek"
            check_outside(key_file, [dest])
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # the same KEK restored before is reused; another file is never overwritten
            if not (key_file.exists() and key_file.read_text(encoding="ascii") == text):
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                created.append(key_file)
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(text)
    for sub in ("secrets", "checkpoints", "documents", "backup"):
        (dest / sub).mkdir(mode=0o700, exist_ok=True)
    for f in (dest / "secrets").iterdir():
        os.chmod(f, 0o600)
    toml = dest / "mamori.toml"
    text = toml.read_text(encoding="utf-8")
    if key_file is not None:  # the KEK now lives in a file beside no data
        text = _replace_section(
            text, "keys", f'source = "file"\nfile = "{_toml_escape(str(key_file))}"\n'
        )
    # the restored database is the SQLite file in this directory, whatever the old path was —
    # or, for a PostgreSQL generation, the database it was restored into
    text = _replace_section(
        text,
        "database",
        f'url = "{_toml_escape(database_url)}"\n'
        if database_url
        else "# url defaults to SQLite at data/mamori.db\n",
    )
    toml.write_text(text, encoding="utf-8")
    return key_file


def _toml_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"^\[{name}\]\n(?:(?!^\[).*\n?)*", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(lambda _m: f"[{name}]\n{body}\n", text, count=1)
    return text + f"\n[{name}]\n{body}"


def choose_generation(
    report: MediumReport, generation: int | None, *, partial: bool = False
) -> Generation:
    """The generation to restore, never a silent fallback.

    Without ``generation``: the newest one on the target, and only if it and the target
    verify; otherwise the restore stops and says what it found (generation N exists and fails:
    why; the target's own problems) and which generation does verify, to be named with
    ``--generation`` once a person has looked. With ``generation``: that one, if it verifies
    itself — the target's other problems (a forged manifest elsewhere, a broken link) are
    reported but do not block it, so one bad file cannot deny every restore.

    ``partial``: a generation whose only problems are document objects (missing, damaged) is
    restorable without them; without it, the refusal says how to ask for that."""
    live = [g for g in report.generations if not g.pruned]
    if generation is None:
        if not live:
            first = report.problems[0] if report.problems else "no generation"
            raise invalid(
                f"復元できる世代がありません（{first}）。",
                f"No restorable generation on this target ({first}).",
            )
        newest = max(live, key=lambda g: g.link)
        if (newest.ok or (partial and newest.ok_but_documents)) and not report.problems:
            return newest
        found = [f"generation {g.generation}: {g.problems[0]}" for g in live if not g.ok]
        found += report.problems
        good = report.newest_valid()
        if good is not None:
            n = good.generation
            hint_ja = (
                f"検証できた最新の世代は {n} です。確認のうえ --generation {n} で復元してください。"
            )
            hint_en = f"The newest generation that verifies is {n}: check, then --generation {n}."
        else:
            hint_ja, hint_en = "検証できる世代がありません。", "No generation verifies."
        problems = "; ".join(found[:5])
        if newest.ok_but_documents and not report.problems:
            hint_ja += _partial_hint_ja(newest).lstrip("。")
            hint_en += _partial_hint_en(newest).lstrip(". ")
        raise invalid(
            f"最新の世代 {newest.generation} をそのまま復元できません: {problems}。{hint_ja}",
            f"Not restoring the newest generation {newest.generation}: {problems}. {hint_en}",
        )
    matching = [g for g in report.generations if g.generation == generation]
    if not matching:
        raise invalid(
            f"世代 {generation} はこの保存先にありません。",
            f"Generation {generation} is not on this target.",
        )
    chosen = matching[0]
    if chosen.pruned:
        raise invalid(
            f"世代 {generation} は保持期間を過ぎて削除済みです。",
            f"Generation {generation} was pruned by the retention policy.",
        )
    if not chosen.ok and not (partial and chosen.ok_but_documents):
        raise invalid(
            f"世代 {chosen.generation} は検証に失敗しました: {chosen.problems[0]}"
            + _partial_hint_ja(chosen),
            f"Generation {chosen.generation} fails verification: {chosen.problems[0]}"
            + _partial_hint_en(chosen),
        )
    return chosen


def _partial_hint_ja(g: Generation) -> str:
    if not g.ok_but_documents:
        return ""
    return (
        f"。欠けているのは文書 {len(g.document_problems)} 件だけです。それ以外を復元するには"
        " --allow-missing-documents（復元後に欠けた文書の一覧を表示します）"
    )


def _partial_hint_en(g: Generation) -> str:
    if not g.ok_but_documents:
        return ""
    return (
        f". Only {len(g.document_problems)} document(s) are missing or damaged: "
        "--allow-missing-documents restores everything else and lists them"
    )


def _open_restored(dest: Path) -> Instance:
    return open_instance(str(dest))


def verify_audit(inst: Instance) -> int:
    """The restored audit trail against the checkpoints that travelled with it (opened with the
    restored key); its size."""

    checkpoints, bad = load_checkpoints(
        inst.settings.checkpoint_dir, [signer(inst.settings).verifier()], origin(inst.settings)
    )
    with inst.transaction(write=False) as session:
        report = verify_log(session, checkpoints)
    if bad or not report.ok:
        first = bad[0] if bad else f"#{report.first_bad}: {report.problems[0][1]}"
        raise invalid(
            f"復元した監査証跡の検証に失敗しました: {first}",
            f"The restored audit trail fails verification: {first}",
        )
    return int(report.size)


def _log_restore(
    inst: Instance,
    chosen: Generation,
    audit_size: int,
    missing: list[dict[str, str]],
    proven: str = "checked",
) -> None:
    """The restored instance records its own restore (and any document it lacks)."""

    with inst.transaction(write=True) as session:
        detail: dict[str, Any] = {
            "generation": chosen.generation,
            "manifest": chosen.hash,
            "medium": chosen.manifest["medium"],
            "audit_size": audit_size,
            "integrity": proven,
        }
        if missing:
            detail["missing_documents"] = [m["digest"] for m in missing]
        record_system(session, AuditTag.BACKUP_RESTORED, detail)


# ---------------------------------------------------------------- drills
