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

import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.engine import db_facts
from mamori.backup.fmt import BackupError, BackupInvalid
from mamori.backup.identity import Identity
from mamori.backup.targets import missing_object, open_target
from mamori.backup.verify import Generation, require_ok, verify_target

Say = Callable[[str, int, int], None]


@dataclass
class Restored:
    home: Path
    generation: int
    kind: str
    manifest: str
    key_file: Path | None
    counts: dict[str, int]
    last_event_seq: int
    last_event_at: str | None
    audit_events: int
    documents: int
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = "sqlite"
    app_role: str | None = None  # PostgreSQL: the login role given least privilege afterwards


def _fail(ja: str, en: str) -> BackupInvalid:
    return BackupInvalid(ja, en)


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
) -> Restored:
    """``database_url``: for a PostgreSQL generation, the **empty** database to restore into
    (created beforehand by its administrator); the instance directory still goes to ``dest``.
    ``app_role``: the PostgreSQL login role the server will use, given least privilege once
    everything is proven (``pg_restore --no-acl`` brings no grants back); a failure there
    undoes the restore like any other."""
    if app_role is not None:
        from mamori.migrate import check_role_name

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
        valid = [g for g in report.generations if g.ok and not g.pruned]
        if generation is None:
            if not valid and report.problems:
                raise _fail(
                    f"検証に失敗しました: {report.problems[0]}",
                    f"Verification failed: {report.problems[0]}",
                )
            if not valid:
                raise _fail(
                    "復元できる世代がありません。", "No restorable generation on this target."
                )
            chosen = max(valid, key=lambda g: g.link)
        else:
            found = [g for g in report.generations if g.generation == generation]
            if not found:
                raise _fail(
                    f"世代 {generation} はこの保存先にありません。",
                    f"Generation {generation} is not on this target.",
                )
            chosen = found[0]
            if chosen.pruned:
                raise _fail(
                    f"世代 {generation} は保持期間を過ぎて削除済みです。",
                    f"Generation {generation} was pruned by the retention policy.",
                )
        require_ok(report, chosen)
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
                raise _fail(
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
                database_url,
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


def _fetch(target: Any, gen: Generation, name: str, work: Path) -> Path:
    """A small object, copied into the work directory and checked against its manifest."""
    obj = _listed(gen, name)
    out = work / f"{gen.generation}-{name}"
    target.get_file(f"generations/{gen.generation:010d}/{name}", out)
    if fmt.sha256_file(out) != obj["sha256"]:
        raise _altered(name)
    return out


def _listed(gen: Generation, name: str) -> dict[str, Any]:
    obj: dict[str, Any] | None = next(
        (o for o in gen.manifest["objects"] if o["name"] == name), None
    )
    if obj is None:
        raise _fail(f"目録に {name} がありません。", f"The manifest lists no {name}.")
    return obj


def _altered(name: str) -> BackupInvalid:
    return _fail(f"{name} が改ざんされています。", f"{name} was altered (SHA-256 differs).")


def _local(target: Any, path: str, work: Path) -> Path:
    """The object as a file here: in place on a mounted disk, else downloaded into ``work``."""
    local: Path | None = target.local_file(path)
    if local is None:
        local = work / "object.age"
        target.get_file(path, local)
    return local


def _decrypt_file(
    local: Path,
    path: str,
    sha256: str,
    out: Any,
    identity: Any,  # pyrage.x25519.Identity
    *,
    compressed: bool,
    name: str,
) -> None:
    """age-decrypt (and zstd-decompress) the object ``path``, read from the file ``local``,
    into ``out``, checking the ciphertext's SHA-256 in the same pass. A mismatch is reported
    as an alteration (the output is thrown away by the caller)."""
    import pyrage

    try:
        raw = local.open("rb")
    except FileNotFoundError:
        raise missing_object(path) from None
    with raw:
        hashed = fmt.HashingReader(raw)
        try:
            fmt.open_file(hashed, out, [identity], compressed=compressed)  # type: ignore[arg-type]
        except (pyrage.DecryptError, zstandard.ZstdError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk, not the object (pyrage's stream errors carry no errno)
            if hashed.drain() != sha256:
                raise _altered(name) from None
            raise _fail(
                f"{name} を復号できません（鍵が違うか、壊れています）。",
                f"Cannot decrypt {name} (wrong identity, or damaged): {exc}",
            ) from exc
        if hashed.drain() != sha256:
            raise _altered(name)


def _decrypt_to(
    target: Any,
    gen: Generation,
    name: str,
    dest: Path,
    ident: Identity,
    work: Path,
    *,
    patch: fmt.PageDelta | None = None,
    durable: bool = False,
) -> str:
    """A compressed generation object decrypted to ``dest``; the SHA-256 of what was written.
    ``durable``: the restored database itself, fsynced (scratch files in the work directory
    are read once and removed). ``patch``: the object is a full database and the delta's
    pages replace its own on the way (``fmt.PatchedWriter``)."""
    obj = _listed(gen, name)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        sink = fmt.BackgroundWriter(fh)  # the disk works while the next block is decrypted
        plain = fmt.HashingWriter(sink)  # type: ignore[arg-type]
        patched = None if patch is None else fmt.PatchedWriter(plain, patch)
        path = f"generations/{gen.generation:010d}/{name}"
        try:
            local = _local(target, path, work)
            out = patched or plain
            _decrypt_file(
                local, path, obj["sha256"], out, ident.identity, compressed=True, name=name
            )
            if patched is not None:
                patched.close()
        finally:
            sink.close()
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    return plain.sha.hexdigest()


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
) -> Restored:
    t = time.monotonic()
    m = chosen.manifest
    postgres = m.get("engine") == "postgresql"
    # 1. instance files (settings, secrets, checkpoints, TLS, KEK)
    say("instance", 0, 1)
    tar_path = work / "instance.tar"
    _decrypt_to(target, chosen, "instance.tar.zst.age", tar_path, ident, work)
    key_file = _unpack_instance(
        tar_path, dest, ident.instance_id, key_dir, created, database_url if postgres else None
    )
    with ExitStack() as stack:
        documents = _start_documents(target, chosen, dest, work, ident, say, timings, stack)
        job = _Job(target, ident, chosen, dest, work, key_file, say, timings, t, documents)
        if postgres:
            assert database_url is not None
            return _restore_postgres(job, database_url)
        return _restore_sqlite(job, base)


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
        restored_sha = _decrypt_to(target, full, full_name, db, ident, work, durable=True)
    else:  # the delta first (small, scratch), then the full patched with it in one pass
        pages = work / "delta.pages"
        _decrypt_to(target, chosen, "db.delta.pages.zst.age", pages, ident, work)
        with fmt.PageDelta(pages) as delta:
            delta.expect(m["db"])
            restored_sha = _decrypt_to(
                target, full, full_name, db, ident, work, patch=delta, durable=True
            )
        pages.unlink()
    if restored_sha != m["db"]["sha256"]:
        raise _fail(
            "復元したデータベースが目録と一致しません。",
            "The restored database does not match its manifest (SHA-256).",
        )
    say("database", 1, 1)
    job.timings["database"] = time.monotonic() - job.started
    # 3.–4. the database's own check runs (in SQLite, off the GIL) beside the counts and the
    # audit trail; the restore is logged only once every proof has passed
    with ThreadPoolExecutor(1) as pool:
        integrity = pool.submit(_integrity_check, db)
        return _prove(job, lambda: db_facts(db), integrity.result, "sqlite")


def _prove(
    job: _Job,
    facts_of: Callable[[], dict[str, Any]],
    integrity: Callable[[], float] | None,
    engine: str,
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
        raise _fail(
            "復元した件数が目録と一致しません。",
            f"Restored row counts differ from the manifest: {facts['counts']} vs {expected}",
        )
    t = time.monotonic()
    say("audit", 0, 1)
    inst = _open_restored(job.dest)
    try:
        audit_size = _verify_audit(inst)
        timings["audit"] = time.monotonic() - t
        if integrity is not None:
            say("integrity", 0, 1)
            timings["integrity"] = integrity()
        _log_restore(inst, chosen, audit_size)
    finally:
        inst.db.dispose()
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
    )


def _restore_postgres(job: _Job, url: str) -> Restored:
    """A ``pg_dump`` generation into an empty PostgreSQL database: the dump decrypted and
    hashed, then ``pg_restore`` in one transaction that stops at the first error — it rebuilds
    every index, key and constraint, PostgreSQL's own proof of the data (no
    ``integrity_check`` exists there) — then the same counts, audit and document proofs."""
    from mamori.backup.engine import libpq, pg_facts, pg_tool, run_pg_tool

    target, ident, chosen, work, say = job.target, job.ident, job.chosen, job.work, job.say
    m = chosen.manifest
    say("database", 0, 1)
    dump = work / "db.pgdump"
    if (
        _decrypt_to(target, chosen, "db.full.pgdump.zst.age", dump, ident, work)
        != m["db"]["sha256"]
    ):
        raise _fail(
            "復元したデータベースが目録と一致しません。",
            "The restored database does not match its manifest (SHA-256).",
        )
    uri, password = libpq(url)
    args = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error"]
    run_pg_tool([*args, "--single-transaction", "--dbname", uri, str(dump)], password, "pg_restore")
    dump.unlink()
    say("database", 1, 1)
    job.timings["database"] = time.monotonic() - job.started
    return _prove(job, lambda: pg_facts(url), None, "postgresql")


def _grant(url: str, role: str) -> None:
    """The app role's least privilege on the restored database (``mamori db grant-app-role``)."""
    from sqlalchemy.exc import DBAPIError

    from mamori.db import make_engine
    from mamori.migrate import grant_app_role

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
    from mamori.backup.engine import pg_table_names

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
    import psycopg

    from mamori.backup.engine import libpq

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
                raise _fail("インスタンス束に不正な項目があります。", f"Bad entry {member.name}.")
        kek_members = [m for m in tar.getmembers() if m.name.startswith("kek/")]
        tar.extractall(
            dest, members=[m for m in tar.getmembers() if not m.name.startswith("kek/")],
            filter="data",
        )  # fmt: skip
        if kek_members:
            from mamori.crypto.kek import check_outside
            from mamori.settings import default_key_dir

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


@dataclass(frozen=True)
class _Document:
    path: str  # the object's path on the target
    local: Path | None  # where it can be read in place (a mounted disk), if it can
    ct_sha: str  # of the ciphertext
    out: Path
    digest: str  # of the plaintext: the document's own name

    @property
    def name(self) -> str:
        return f"document {self.digest[:12]}"


DOCUMENTS_PER_TASK = 16  # documents per worker task: progress between tasks, little overhead
# below this much, starting a worker process (≈ 1 s to import) costs more than it saves
WORKER_MIN_BYTES = 64 << 20


def _documents(target: Any, gen: Generation, dest: Path, work: Path) -> tuple[list[_Document], int]:
    """The generation's documents, from its index, each checked to stay inside
    ``documents/``; and their ciphertexts' total size."""
    index_path = _fetch(target, gen, "documents.json.zst", work)
    index = json.loads(
        zstandard.ZstdDecompressor().decompress(index_path.read_bytes(), max_output_size=256 << 20)
    )
    files: dict[str, str] = index["files"]
    docs = []
    total = 0
    for rel, digest in sorted(files.items()):
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise _fail("文書の索引が不正です。", "Bad document index entry.")
        path = f"documents/{digest[:2]}/{digest}.age"
        ct_sha, size = index["objects"][digest]
        total += int(size)
        local = target.local_file(path)
        docs.append(_Document(path, local, ct_sha, dest / "documents" / rel, digest))
    return docs, total


def _restore_document(doc: _Document, local: Path, identity: Any) -> None:
    """One document from its ciphertext file ``local`` into its place, 0600, its plaintext
    hash checked against its name."""
    doc.out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(doc.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        plain = fmt.HashingWriter(fh)
        _decrypt_file(local, doc.path, doc.ct_sha, plain, identity, compressed=False, name=doc.name)
    if plain.sha.hexdigest() != doc.digest:
        raise _fail("文書が目録と一致しません。", f"Document {doc.digest[:12]} differs.")


def _restore_documents_task(identity: str, docs: list[_Document]) -> None:
    """In a worker process: ``docs``, read in place."""
    import pyrage

    key = pyrage.x25519.Identity.from_str(identity)
    for doc in docs:
        assert doc.local is not None
        _restore_document(doc, doc.local, key)


def _start_documents(
    target: Any,
    gen: Generation,
    dest: Path,
    work: Path,
    ident: Identity,
    say: Say,
    timings: dict[str, float],
    stack: ExitStack,
) -> Callable[[], int]:
    """Start restoring the documents; returns a wait for them (their count). The time from
    this start until the last is on disk goes to ``timings["documents"]``.

    From a mounted disk, with at least ``WORKER_MIN_BYTES`` of them, they are decrypted by a
    worker process while this one restores the database: age decryption holds the GIL
    (pyrage), so in a thread the two decryptions took turns; in a process they use both
    cores. The worker gets the identity over its pipe, never through a file. From SFTP or S3
    (each object downloaded first), or only a few, they are restored here, after the
    database."""
    t = time.monotonic()
    docs, size = _documents(target, gen, dest, work)

    def done() -> int:
        os.sync()  # every document on disk before the restore says it is done (one flush)
        say("documents", len(docs), len(docs))
        timings["documents"] = time.monotonic() - t
        return len(docs)

    def here() -> int:  # one by one in this thread, objects on SFTP or S3 downloaded first
        for i, doc in enumerate(docs):
            say("documents", i, len(docs))
            _restore_document(doc, _local(target, doc.path, work), ident.identity)
        return done()

    if size < WORKER_MIN_BYTES or any(doc.local is None for doc in docs):
        return here
    pool = stack.enter_context(_worker())
    secret = str(ident.identity)
    tasks = [
        pool.submit(_restore_documents_task, secret, docs[i : i + DOCUMENTS_PER_TASK])
        for i in range(0, len(docs), DOCUMENTS_PER_TASK)
    ]

    def wait() -> int:
        for i, task in enumerate(tasks):
            say("documents", min(i * DOCUMENTS_PER_TASK, len(docs)), len(docs))
            task.result()
        return done()

    return wait


@contextmanager
def _worker() -> Iterator[ProcessPoolExecutor]:
    """One worker process (spawned: this process may run threads); on the way out, tasks not
    yet started are cancelled and the running one is waited for, so a failed restore leaves
    nothing writing into the directory it removes."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


CHECK_CACHE_KIB = 256 * 1024  # per check connection, for the pages past the memory map
CHECK_LANES = 2  # connections checking side by side (SQLite runs without the GIL)


def _integrity_check(db: Path) -> float:
    """``PRAGMA integrity_check``, split over two connections; its duration in seconds.

    ``quick_check`` proves the whole file's structure (every b-tree, every page used once,
    the freelist, NOT NULL and CHECK); ``integrity_check(<table>)`` adds, table by table, what
    it leaves out — that every index holds exactly its table's rows, and UNIQUE. Together they
    are the full check; side by side (SQLite runs without the GIL) the largest table, not the
    sum, sets the time. A file too damaged to open is a failed check too."""
    t = time.monotonic()
    try:
        bad = _checks(db)
    except sqlite3.DatabaseError as exc:
        bad = [[(str(exc),)]]
    if bad:
        raise _fail(
            "復元したデータベースの整合性検査に失敗しました。",
            f"integrity_check failed on the restored database: {bad[0][:3]}",
        )
    return time.monotonic() - t


def _checks(db: Path) -> list[list[Any]]:
    """The results that are not ``ok`` of the check's statements, run by ``CHECK_LANES``
    connections that each take the next statement when done with one: the largest table's
    check first, then ``quick_check``, then the other tables from the largest down. The
    largest table (``record_version``, every version ever written) takes about as long as all
    the rest together; lanes fixed in advance by row counts had given it the small tables too
    (9.2 s on the M clinic, against 7.5 s for that table alone)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [
            str(r[0])
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        sizes = {name: _rows_about(con, name) for name in names}
    finally:
        con.close()
    tables = [
        'PRAGMA integrity_check("{}")'.format(name.replace('"', '""'))
        for name in sorted(names, key=lambda n: -sizes[n])
    ]
    queue = deque([*tables[:1], "PRAGMA quick_check", *tables[1:]])
    with ThreadPoolExecutor(CHECK_LANES) as pool:
        lanes = [pool.submit(_run_checks, db, queue) for _ in range(CHECK_LANES)]
        results = [r for lane in lanes for r in lane.result()]
    return [r for r in results if r != [("ok",)]]


def _rows_about(con: sqlite3.Connection, name: str) -> int:
    """Roughly how many rows (the largest rowid: one b-tree descent, not a scan)."""
    quoted = name.replace('"', '""')
    try:
        row = con.execute(f'SELECT max(rowid) FROM "{quoted}"').fetchone()  # noqa: S608
    except sqlite3.OperationalError:  # a WITHOUT ROWID table
        return 0
    return int(row[0] or 0)


def _run_checks(db: Path, queue: deque[str]) -> list[list[Any]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # the check looks up every row in every index: pages read through a memory map (as
        # much of the file as this SQLite maps, 2 GB by default) and a larger cache for the
        # rest, instead of a read() per page, make it 1.5-3x faster on the M clinic
        con.execute(f"PRAGMA mmap_size = {db.stat().st_size}").fetchall()
        con.execute(f"PRAGMA cache_size = -{CHECK_CACHE_KIB}").fetchall()
        results: list[list[Any]] = []
        while True:
            try:
                sql = queue.popleft()  # atomic: each statement is run by one lane
            except IndexError:
                return results
            results.append(con.execute(sql).fetchall())
    finally:
        con.close()


def _open_restored(dest: Path) -> Any:
    from mamori.cli.instance import open_instance

    return open_instance(str(dest))


def _verify_audit(inst: Any) -> int:
    """The restored audit trail against the checkpoints that travelled with it (opened with the
    restored key); its size."""
    from mamori.audit.checkpointer import load_checkpoints, origin, signer
    from mamori.audit.verify import verify_log

    checkpoints, bad = load_checkpoints(
        inst.settings.checkpoint_dir, [signer(inst.settings).verifier()], origin(inst.settings)
    )
    with inst.transaction(write=False) as session:
        report = verify_log(session, checkpoints)
    if bad or not report.ok:
        first = bad[0] if bad else f"#{report.first_bad}: {report.problems[0][1]}"
        raise _fail(
            f"復元した監査証跡の検証に失敗しました: {first}",
            f"The restored audit trail fails verification: {first}",
        )
    return int(report.size)


def _log_restore(inst: Any, chosen: Generation, audit_size: int) -> None:
    """The restored instance records its own restore."""
    from mamori.audit.trail import AuditTag, record_system

    with inst.transaction(write=True) as session:
        record_system(
            session,
            AuditTag.BACKUP_RESTORED,
            {
                "generation": chosen.generation,
                "manifest": chosen.hash,
                "medium": chosen.manifest["medium"],
                "audit_size": audit_size,
            },
        )


# ---------------------------------------------------------------- drills


def drill_report(
    restored: Restored, spec: TargetSpec, started: dt.datetime, seconds: float
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    last = (
        dt.datetime.fromisoformat(restored.last_event_at).replace(tzinfo=dt.UTC)
        if restored.last_event_at
        else None
    )
    return {
        "format": "mamori-drill-v1",
        "started": started.isoformat(timespec="seconds"),
        "finished": now.isoformat(timespec="seconds"),
        "target": spec.url(),
        "generation": restored.generation,
        "kind": restored.kind,
        "manifest": restored.manifest,
        "rto_seconds": round(seconds, 2),
        "rpo_seconds": round((started - last).total_seconds(), 1) if last else None,
        "last_record_at": restored.last_event_at,
        "counts": restored.counts,
        "audit_events_verified": restored.audit_events,
        "documents_restored": restored.documents,
        "steps_seconds": {k: round(v, 2) for k, v in restored.timings.items()},
        "engine": restored.engine,
        "checks": [
            "manifest signature and chain",
            "object SHA-256",
            "database SHA-256",
            "PRAGMA integrity_check"
            if restored.engine == "sqlite"
            else "pg_restore in one transaction (every index, key and constraint rebuilt)",
            "row counts",
            "audit trail against checkpoints",
            "documents decrypted and hashed",
        ],
        "result": "passed",
    }


def sign_report(report: dict[str, Any], home: Path, out_dir: Path) -> Path:
    """Signed with the instance's manifest key (from the restored secrets)."""
    from mamori.settings import load_settings

    key = fmt.signing_key(load_settings(home).audit_signing_key)
    report = {**report, "signer": fmt.public_text(key)}
    body, sig = fmt.sign(report, key)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = report["started"].replace(":", "").replace("-", "")[:15]
    path = out_dir / f"drill-{stamp}.json"
    fmt.write_private(path, body)
    fmt.write_private(path.with_suffix(".sig"), sig)
    return path
