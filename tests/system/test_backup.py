"""Backups against real parts: age/zstd/sqlite3 from Debian for the no-mamori restore, a real
OpenSSH server for SFTP, moto in server mode standing in for S3 Object Lock (an emulator),
a tiny tmpfs for a full disk, kill -9 mid-run, and every attack verify and restore must catch."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from tests.conftest import World
from tests.sshd import start_sshd
from typer.testing import CliRunner

from mamori.audit.models import AuditEvent
from mamori.backup import engine, fmt, generations
from mamori.backup.fmt import BackupError, BackupInvalid
from mamori.backup.identity import install_recipients, keygen, load_identity
from mamori.backup.restore import restore
from mamori.backup.targets import open_target, spec_from_url
from mamori.backup.verify import verify_target
from mamori.cli.main import app
from mamori.clinic.models import Clinic
from mamori.documents.store import DocumentStore
from mamori.instance import Created, Instance, create_instance, open_instance
from mamori.synth.generator import generate

runner = CliRunner()
PASS = "correct horse battery staple"
AGE, ZSTD, SQLITE3 = shutil.which("age"), shutil.which("zstd"), shutil.which("sqlite3")


def _instance(tmp_path: Path, name: str = "home", code: str = "1310123455") -> Created:
    created = create_instance(
        tmp_path / name, clinic_name="バックアップ試験", institution_code=code
    )
    inst = created.instance
    with inst.transaction(write=True) as s:
        clinic = s.scalars(select(Clinic)).one()
        generate(s, clinic, "XS", seed=5, store=DocumentStore(inst.settings.documents_dir, inst.db))
    return created


def _keys(inst: Instance, where: Path) -> Path:
    made = keygen(
        where,
        instance_id=inst.settings.instance_id,
        clinic="試験",
        signer=fmt.public_text(fmt.signing_key(inst.settings.audit_signing_key)),
        passphrase=PASS,
    )
    install_recipients(inst.settings.backup_dir, made.recipients, inst.settings.instance_id)
    return where


def _targets(inst: Instance, *entries: dict[str, Any]) -> Instance:
    """Append [[backup.targets]] to mamori.toml and reopen the instance."""
    home = inst.settings.home
    lines = []
    for e in entries:
        lines.append("\n[[backup.targets]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in e.items()]
    with (home / "mamori.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    inst.db.dispose()
    return open_instance(str(home))


def _run(inst: Instance, **kw: Any) -> engine.RunResult:
    return engine.run_backup(inst.settings, inst.db.keyring.kek, **kw)


def _write_a_note(inst: Instance) -> None:
    """A committed change after the last backup (something the next delta must carry)."""
    from mamori.audit.trail import AuditTag, record_system

    with inst.transaction(write=True) as s:
        record_system(s, AuditTag.RECORDS_VERIFIED, {"marker": "after-backup"})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Instance, Path, Path]]:
    created = _instance(tmp_path)
    keys = _keys(created.instance, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(created.instance, {"name": "usb", "kind": "dir", "path": str(usb)})
    yield inst, keys, usb
    inst.db.dispose()


def _ident(keys: Path) -> Any:
    return load_identity(keys / "mamori-backup-primary.age", PASS)


def _gen_dir(usb: Path, inst: Instance, g: int) -> Path:
    return usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{g:010d}"


@pytest.fixture(params=["here", "worker"])
def documents_in(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[int]]:
    """Documents restored in the restoring process (a few, or from SFTP/S3) or by a worker
    process beside the database (from a mounted disk, by default from 64 MB): the mode, and a
    list counting the workers started."""
    from mamori.backup import restore_documents

    started: list[int] = []
    if request.param == "worker":
        real = restore_documents.document_worker

        @contextlib.contextmanager
        def counted() -> Iterator[Any]:
            started.append(1)
            with real() as pool:
                yield pool

        monkeypatch.setattr(restore_documents, "WORKER_MIN_BYTES", 0)
        monkeypatch.setattr(restore_documents, "document_worker", counted)
    return request.param, started


# ---------------------------------------------------------------- round trip


def test_full_then_delta_restore_with_every_proof(
    setup: tuple[Instance, Path, Path], tmp_path: Path, documents_in: tuple[str, list[int]]
) -> None:
    inst, keys, usb = setup
    first = _run(inst)
    assert first.ok and first.targets[0].kind == "full" and first.targets[0].documents > 0
    _write_a_note(inst)
    second = _run(inst)
    assert second.ok and second.targets[0].kind == "delta"
    assert second.targets[0].bytes < first.targets[0].bytes / 5  # pages, not the database
    assert second.targets[0].documents == 0  # documents are uploaded once in their life
    # what lands on the medium is age ciphertext, and never the patients' names
    for obj in _gen_dir(usb, inst, 1).glob("*.age"):
        assert obj.read_bytes().startswith(b"age-encryption.org/v1\n")
    from mamori.audit.trail import AuditTag, record_system
    from mamori.patients.models import Patient

    with inst.transaction(write=True) as s:
        patients = list(s.scalars(select(Patient)))
        # needles of 6+ bytes: a one-kanji surname (3 bytes) turns up in megabytes of random
        # ciphertext by chance; two kanji practically never do (one in ~2^48 per offset)
        names = {
            n
            for p in patients
            for n in (p.family_name, p.given_name, p.family_kana)
            if len(n.encode()) >= 6
        }
        record_system(s, AuditTag.RECORDS_VERIFIED, {"test": "needles"})
    leaks = [
        (str(p.relative_to(usb)), n)
        for p in usb.rglob("*")
        if p.is_file()
        for n in names
        if n.encode() in p.read_bytes()
    ]
    assert names and not leaks

    done = restore(
        spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "restored", key_dir=tmp_path / "rk"
    )
    assert done.generation == second.generation and done.kind == "delta"
    assert done.documents > 0 and done.audit_events >= done.last_event_seq
    mode, workers = documents_in
    assert len(workers) == (1 if mode == "worker" else 0)
    live = inst.settings.home / "documents"
    original = sorted(p.relative_to(live) for p in live.rglob("*") if p.is_file())
    back_docs = done.home / "documents"
    restored = sorted(p.relative_to(back_docs) for p in back_docs.rglob("*") if p.is_file())
    assert restored == original and len(restored) == done.documents
    for rel in restored:
        assert (back_docs / rel).read_bytes() == (live / rel).read_bytes()
        assert (back_docs / rel).stat().st_mode & 0o077 == 0
    back = open_instance(str(done.home))
    try:
        with back.transaction(write=False) as s:
            marker = s.execute(
                select(AuditEvent.body).order_by(AuditEvent.seq.desc()).limit(3)
            ).all()
            assert any(b"after-backup" in bytes(r[0]) for r in marker)
            # the restore logged itself in the restored instance
            assert any(b"system:backup:restored" in bytes(r[0]) for r in marker)
    finally:
        back.db.dispose()
    # verify (no private key) is clean, and checked every object's hash
    report = verify_target(
        open_target(inst.settings.backup.targets[0], inst.settings.instance_id),
        fmt.signing_key(inst.settings.audit_signing_key).public_key(),
        inst.settings.instance_id,
    )
    assert report.ok and report.objects_checked >= 6


def test_restore_refuses_a_non_empty_directory_and_a_wrong_identity(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    inst, keys, usb = setup
    assert _run(inst).ok
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mamori.toml").write_text("live")
    with pytest.raises(BackupError, match="not empty"):
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), busy)
    assert (busy / "mamori.toml").read_text() == "live"
    # a database URL for a SQLite generation is a mistake, said before anything is written
    with pytest.raises(BackupError, match="PostgreSQL generations only"):
        restore(
            spec_from_url(f"dir:{usb}"),
            _ident(keys),
            tmp_path / "r1",
            database_url="postgresql+psycopg://mamori@127.0.0.1/elsewhere",
        )
    with pytest.raises(BackupError, match="--app-role is for PostgreSQL"):  # so is a role
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r1", app_role="mamori_app")
    assert not (tmp_path / "r1").exists()
    with pytest.raises(BackupError, match="passphrase"):
        load_identity(keys / "mamori-backup-primary.age", "wrong passphrase here")
    # another instance's keys: its signer does not match these manifests
    other = _instance(tmp_path, "other", "2710123455")
    other_keys = _keys(other.instance, tmp_path / "other-offline")
    other.instance.db.dispose()
    stranger = load_identity(other_keys / "mamori-backup-breakglass.txt", None)
    stranger_here = type(stranger)(stranger.identity, inst.settings.instance_id, stranger.signer)
    with pytest.raises(BackupInvalid, match="signature"):
        restore(spec_from_url(f"dir:{usb}"), stranger_here, tmp_path / "r2")
    assert not (tmp_path / "r2" / "data").exists()


def test_a_restored_copy_is_read_only_until_a_director_promotes_it(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    """Two writable copies would fork the record: the restored copy reads (and logs its
    reads) but takes no record, shows a banner, and becomes writable only by mamori promote —
    by an administrator, with a reason, refused while the original still answers."""
    from fastapi.testclient import TestClient
    from tests.conftest import SAMPLE_PATIENT

    from mamori.app import create_app
    from mamori.copies import MARKER
    from mamori.errors import ReadOnlyCopy
    from mamori.patients.schemas import PatientIn
    from mamori.patients.service import register_patient

    inst, keys, usb = setup
    assert _run(inst).ok
    done = restore(
        spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", key_dir=tmp_path / "k"
    )
    assert (done.home / MARKER).is_file()
    copy = open_instance(str(done.home))
    try:
        assert copy.db.read_only
        with copy.transaction(write=True) as s:
            actor = copy.actor(s, "admin")
            with pytest.raises(ReadOnlyCopy):
                register_patient(s, actor, PatientIn.model_validate(SAMPLE_PATIENT))
        app_ = create_app(copy.settings, copy.db)
        with TestClient(app_, base_url="https://testserver") as http:
            assert http.get("/healthz").status_code == 200  # it serves, for reading
    finally:
        copy.db.dispose()
    env = {"MAMORI_HOME": str(done.home)}
    # the original still answering (here: this very copy's own healthz URL stands in for it)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mamori", "serve", "--instance", str(done.home),
         "--port", str(port)],  # a read-only copy serves without backups of its own
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        out = runner.invoke(
            app,
            ["promote", "--reason", "元のサーバーが暗号化された", "--login", "admin",
             "--original", f"https://127.0.0.1:{port}"],
            env=env,
        )  # fmt: skip
        assert out.exit_code == 1 and "still answers" in out.output.replace("\n", " ")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (done.home / MARKER).is_file()
    out = runner.invoke(
        app, ["promote", "--reason", "元のサーバーは隔離済み", "--login", "admin"], env=env
    )
    assert out.exit_code == 0, out.output
    assert not (done.home / MARKER).exists()
    copy = open_instance(str(done.home))
    try:
        assert not copy.db.read_only
        with copy.transaction(write=True) as s:
            register_patient(s, copy.actor(s, "admin"), PatientIn.model_validate(SAMPLE_PATIENT))
        with copy.transaction(write=False) as s:
            bodies = [bytes(b) for b in s.scalars(select(AuditEvent.body))]
        assert any(b"system:copy:promoted" in b for b in bodies)
    finally:
        copy.db.dispose()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_restore_with_debian_age_zstd_and_sqlite3_only(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    """The documented no-mamori path (docs/backup.md): the break-glass paper key, age, zstd,
    sqlite3, and for a delta the dozen lines of standard-library Python shown in the docs."""
    assert AGE and ZSTD and SQLITE3, (
        "Debian age, zstd and sqlite3 are needed (.ci/run installs them)"
    )
    inst, keys, usb = setup
    assert _run(inst).ok
    _write_a_note(inst)
    assert _run(inst).ok
    g1, g2 = _gen_dir(usb, inst, 1), _gen_dir(usb, inst, 2)
    ident = keys / "mamori-backup-breakglass.txt"
    db = tmp_path / "mamori.db"
    sh = f"{AGE} -d -i {ident} {g1}/db.full.sqlite.zst.age | {ZSTD} -d -q -o {db}"
    subprocess.run(["sh", "-c", sh], check=True, timeout=60)
    ok = subprocess.run(
        [SQLITE3, str(db), "PRAGMA integrity_check;"], capture_output=True, text=True, timeout=60
    )
    assert ok.stdout.strip() == "ok"
    m1 = json.loads((g1 / "manifest.json").read_bytes())
    assert fmt.sha256_file(db) == m1["db"]["sha256"]
    pages = tmp_path / "delta.pages"
    sh = f"{AGE} -d -i {ident} {g2}/db.delta.pages.zst.age | {ZSTD} -d -q -o {pages}"
    subprocess.run(["sh", "-c", sh], check=True, timeout=60)
    snippet = (Path(__file__).parents[2] / "docs" / "apply_pages.py").read_text()
    subprocess.run([sys.executable, "-c", snippet, str(pages), str(db)], check=True, timeout=60)
    m2 = json.loads((g2 / "manifest.json").read_bytes())
    assert fmt.sha256_file(db) == m2["db"]["sha256"]
    count = subprocess.run(
        [SQLITE3, str(db), "SELECT count(*) FROM audit_event;"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert int(count.stdout) == m2["db"]["last_event_seq"]
    # a document, too
    doc = next((usb / "mamori-backup").rglob("documents/*/*.age"))
    out = subprocess.run([AGE, "-d", "-i", str(ident), str(doc)], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(b"M1")  # mamori's own sealed file


# ---------------------------------------------------------------- attacks


def _verify(inst: Instance, **kw: Any) -> Any:
    return verify_target(
        open_target(inst.settings.backup.targets[0], inst.settings.instance_id),
        fmt.signing_key(inst.settings.audit_signing_key).public_key(),
        inst.settings.instance_id,
        **kw,
    )


def test_flipped_byte_and_missing_object_are_caught(
    setup: tuple[Instance, Path, Path], tmp_path: Path, documents_in: tuple[str, list[int]]
) -> None:
    inst, keys, usb = setup
    assert _run(inst).ok
    obj = _gen_dir(usb, inst, 1) / "db.full.sqlite.zst.age"
    original = obj.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    report = _verify(inst)
    assert not report.ok and "altered" in report.generations[0].problems[0]
    with pytest.raises(BackupInvalid, match=r"altered|SHA-256"):
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r")
    obj.unlink()
    # a restore that fails after it started writing leaves nothing behind: a document altered
    # on the medium is found only once the database and the key file are already out
    obj.write_bytes(original)
    doc = next((usb / "mamori-backup").rglob("documents/*/*.age"))
    doc_bytes = bytearray(doc.read_bytes())
    doc_bytes[-1] ^= 0x01
    doc.write_bytes(bytes(doc_bytes))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackupInvalid, match=r"[Dd]ocument"):
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), empty, key_dir=tmp_path / "rk")
    assert list(empty.iterdir()) == [] and not list((tmp_path / "rk").glob("*"))
    with pytest.raises(BackupInvalid):
        restore(
            spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "new", key_dir=tmp_path / "rk"
        )
    assert not (tmp_path / "new").exists()
    obj.unlink()
    report = _verify(inst)
    assert "missing" in report.generations[0].problems[0]
    doc = next((usb / "mamori-backup").rglob("documents/*/*.age"))
    doc.unlink()
    assert any("document object" in p for p in _verify(inst).generations[0].problems)


def test_a_missing_document_does_not_block_restoring_everything_else(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    """One document object gone from the medium (deleted, or a bad sector): the restore
    stops and says only documents are missing and how to go on; allowed, it restores the
    database and every other document with every proof, leaves the missing one out and lists
    it — on the console, in the copy's READ_ONLY marker and in the restore's audit event —
    and a document altered rather than deleted is left out the same way."""
    import json

    from mamori.copies import MARKER

    inst, keys, usb = setup
    assert _run(inst).ok
    objects = sorted((usb / "mamori-backup").rglob("documents/*/*.age"))
    assert len(objects) >= 3
    gone, altered = objects[0], objects[1]
    gone.unlink()
    with pytest.raises(BackupInvalid, match="--allow-missing-documents") as refused:
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", key_dir=tmp_path / "k")
    assert "欠けているのは文書 1 件だけ" in refused.value.ja
    assert not (tmp_path / "r").exists()
    # the other document damaged in place: verification (not deep) passes it, its hash fails
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0x01
    altered.write_bytes(bytes(data))
    done = restore(
        spec_from_url(f"dir:{usb}"),
        _ident(keys),
        tmp_path / "r",
        key_dir=tmp_path / "k",
        partial=True,
    )
    left_out = {m["digest"] for m in done.missing_documents}
    assert left_out == {gone.stem, altered.stem}
    assert {m["why"] for m in done.missing_documents} >= {"missing"}
    assert done.documents == len(objects) - 2
    restored = [p for p in (done.home / "documents").rglob("*") if p.is_file()]
    assert len(restored) == done.documents  # nothing unproven left in a missing one's place
    assert json.loads((done.home / MARKER).read_text())["missing_documents"] == (
        done.missing_documents
    )
    copy = open_instance(str(done.home))
    try:
        with copy.transaction(write=False) as s:
            (body,) = s.execute(
                text("SELECT body FROM audit_event WHERE tag = 'system:backup:restored'")
            ).one()
        assert set(json.loads(bytes(body))["detail"]["missing_documents"]) == left_out
    finally:
        copy.db.dispose()


def test_restore_never_falls_back_silently_and_one_bad_file_blocks_nothing_chosen(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    """The newest generation damaged: restore stops and says what it found and which one
    verifies; named with --generation, that one restores although the target has a bad
    file (an attacker's forged manifest must not deny every restore)."""
    inst, keys, usb = setup
    assert _run(inst).ok
    _write_a_note(inst)
    second = _run(inst)
    assert second.ok
    newest = _gen_dir(usb, inst, second.generation)
    victim = next(p for p in newest.iterdir() if p.name.startswith("db."))
    victim.write_bytes(victim.read_bytes()[:-1])  # the newest's database object cut short
    with pytest.raises(BackupInvalid) as caught:
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", key_dir=tmp_path / "k")
    said = caught.value.en
    assert f"generation {second.generation}" in said and "--generation 1" in said, said
    assert not (tmp_path / "r").exists()
    # a forged file elsewhere on the target: reported, but the generation a person chose
    # after looking still restores
    (usb / "mamori-backup" / inst.settings.instance_id / "generations" / f"{7:010d}").mkdir()
    done = restore(
        spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", key_dir=tmp_path / "k",
        generation=1,
    )  # fmt: skip
    assert done.generation == 1


def test_other_clinics_and_replayed_manifests_are_refused(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    inst, keys, usb = setup
    assert _run(inst).ok
    _write_a_note(inst)
    assert _run(inst).ok
    root = usb / "mamori-backup" / inst.settings.instance_id / "generations"
    # a replayed old manifest: generation 1's genuine, signed files placed as generation 3
    shutil.copytree(root / f"{1:010d}", root / f"{3:010d}")
    report = _verify(inst)
    bad = [g for g in report.generations if g.problems]
    assert bad and any("replayed" in p or "fork" in p for g in bad for p in g.problems)
    with pytest.raises(BackupInvalid):
        restore(spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", generation=3)
    shutil.rmtree(root / f"{3:010d}")
    # another clinic's generation copied onto this medium: signed by another key
    other = _instance(tmp_path, "other", "2710123455")
    other_usb = tmp_path / "other-usb"
    other_usb.mkdir()
    _keys(other.instance, tmp_path / "other-offline")
    oi = _targets(other.instance, {"name": "usb", "kind": "dir", "path": str(other_usb)})
    assert engine.run_backup(oi.settings, oi.db.keyring.kek).ok
    oi.db.dispose()
    theirs = other_usb / "mamori-backup" / oi.settings.instance_id / "generations" / f"{1:010d}"
    shutil.copytree(theirs, root / f"{9:010d}")
    report = _verify(inst)
    assert any("signature" in p for p in report.problems)


def test_a_rolled_back_medium_is_detected_and_not_written_onto(
    setup: tuple[Instance, Path, Path],
) -> None:
    inst, _keys_dir, usb = setup
    assert _run(inst).ok
    saved = usb.parent / "usb-copy"
    shutil.copytree(usb, saved)
    _write_a_note(inst)
    assert _run(inst).ok
    # the medium is swapped back to its older state (an attacker deleting the newest backup)
    shutil.rmtree(usb)
    shutil.copytree(saved, usb)
    heads = {m: v["head"] for m, v in engine.load_state(inst.settings)["media"].items()}
    report = _verify(inst, expected_heads=heads)
    assert any("rolled back" in p for p in report.problems)
    again = _run(inst)
    assert not again.ok and "gone" in again.targets[0].error


def test_kill_minus_9_mid_backup_leaves_no_valid_partial_generation(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    inst, keys, usb = setup
    assert _run(inst).ok
    code = (
        "import sys, os\n"
        "from mamori.backup import engine\n"
        "from mamori.instance import open_instance\n"
        "import mamori.backup.targets as t\n"
        "orig = t.DirTarget._atomic\n"
        "def slow(self, path, write, sync=True):\n"
        "    orig(self, path, write, sync)\n"
        "    print('PUT', path, flush=True)\n"
        "    import time; time.sleep(5)\n"
        "t.DirTarget._atomic = slow\n"
        "inst = open_instance(sys.argv[1])\n"
        "engine.run_backup(inst.settings, inst.db.keyring.kek, full=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(inst.settings.home)],
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # the database object is on the medium …
    assert line.startswith("PUT generations/")
    proc.send_signal(signal.SIGKILL)  # … and the run dies before its manifest
    proc.wait(10)
    proc.stdout.close()
    report = _verify(inst)
    assert report.ok and [g.generation for g in report.generations] == [1]
    assert report.incomplete == [f"{2:010d}"]
    again = _run(inst)  # the next run works; its generation number moves past the dead one
    assert again.ok
    done = restore(
        spec_from_url(f"dir:{usb}"), _ident(keys), tmp_path / "r", key_dir=tmp_path / "k"
    )
    assert done.generation == again.generation


def test_disk_full_and_an_unplugged_disk_fail_clearly_and_keep_old_generations(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    inst = setup[0]
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    assert mounted.returncode == 0, f"a full disk needs a tmpfs (root): {mounted.stderr.decode()}"
    try:
        inst = _targets(
            inst,
            {"name": "tiny", "kind": "dir", "path": str(small)},
            {"name": "unplugged", "kind": "dir", "path": str(tmp_path / "not-mounted")},
        )
        result = _run(inst)
        by = {t.target: t for t in result.targets}
        assert by["usb"].ok
        assert not by["tiny"].ok and "No space" in by["tiny"].error
        assert not by["unplugged"].ok and "unreachable" in by["unplugged"].error
        tiny = open_target(inst.settings.backup.targets[1], inst.settings.instance_id)
        report = verify_target(
            tiny,
            fmt.signing_key(inst.settings.audit_signing_key).public_key(),
            inst.settings.instance_id,
        )
        assert report.generations == []  # nothing half-written counts as a backup
        assert not list(small.rglob("*.partial"))
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_ransomware_alarm_holds_generations_and_is_audited(
    setup: tuple[Instance, Path, Path],
) -> None:
    inst, _keys_dir, _usb = setup
    for _ in range(4):  # the usual change: a few pages per run
        _write_a_note(inst)
        assert _run(inst).alarm is None
    # ransomware: every sealed row and a document rewritten with random bytes
    con = sqlite3.connect(inst.settings.home / "data" / "mamori.db")
    for table in ("observation", "progress_note", "record_version"):
        con.execute(f"UPDATE {table} SET sealed = randomblob(length(sealed))")
    con.commit()
    con.close()
    doc = next(inst.settings.documents_dir.glob("v1/*/*/*"))
    doc.write_bytes(os.urandom(doc.stat().st_size))
    result = _run(inst)
    assert result.alarm is not None and result.alarm["foreign_documents"] == 1
    assert result.alarm["changed_share"] > result.alarm["threshold"]
    state = engine.load_state(inst.settings)
    assert state["hold"] and not any(t.pruned for t in result.targets)
    from mamori.backup.service import _record, audit_events

    _record(inst.db, audit_events(result), "cli")
    with inst.transaction(write=False) as s:
        bodies = [
            bytes(b)
            for b in s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq.desc()).limit(5))
        ]
    assert any(b"system:backup:alarm-raised" in b for b in bodies)


@pytest.mark.parametrize("damage", ["whole-file", "pages", "truncated"])
def test_a_database_that_is_no_longer_a_database_is_the_loudest_alarm(
    setup: tuple[Instance, Path, Path], tmp_path: Path, damage: str
) -> None:
    """File-level ransomware (every byte, or 40 % of the pages, overwritten) and a truncated
    file: no crash and no new generation from it; the generations are held, the alarm is
    written beside the database, /healthz is unhealthy, the command says what to do."""
    from mamori.backup import alarm

    inst, _keys_dir, usb = setup
    _write_a_note(inst)
    first = _run(inst)
    assert first.ok
    home = inst.settings.home
    inst.db.dispose()
    db_file = home / "data" / "mamori.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db_file}{extra}").unlink(missing_ok=True)
    data = bytearray(db_file.read_bytes())
    page = 4096
    rng = random.Random(7)
    if damage == "whole-file":
        data = bytearray(os.urandom(len(data)))
    elif damage == "pages":
        for n in rng.sample(range(len(data) // page), k=int(len(data) // page * 0.4)):
            data[n * page : (n + 1) * page] = os.urandom(page)
    else:
        data = data[: len(data) // 3]
    db_file.write_bytes(bytes(data))
    env = {"MAMORI_HOME": str(home)}
    out = runner.invoke(app, ["backup", "run"], env=env)
    assert out.exit_code != 0, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.output
    assert alarm.raised(inst.settings) is not None
    flat = out.output.replace("\n", "")
    assert "LAN ケーブル" in flat and "network cable" in flat, out.output
    assert (inst.settings.backup_dir / "alarms.jsonl").read_text().count("\n") >= 1
    assert engine.load_state(inst.settings)["hold"]  # nothing is pruned or rotated away
    out = runner.invoke(app, ["backup", "status"], env=env)  # every command stops, too
    assert out.exit_code != 0 and "LAN ケーブル" in out.output.replace("\n", "")
    # the first generation is still there, intact
    assert _gen_dir(usb, inst, first.generation).is_dir()


def test_healthz_is_unhealthy_while_the_database_alarm_stands(world: World) -> None:
    from mamori.backup import alarm

    assert world.http.get("/healthz").json() == {"status": "ok"}
    alarm.raise_alarm(world.settings, sqlite3.DatabaseError("file is not a database"), "test")
    r = world.http.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "alarm"
    assert "network cable" in r.json()["what_to_do"]
    alarm.clear(world.settings)  # what release-hold does once the clinic has restored
    assert world.http.get("/healthz").status_code == 200


def test_generations_are_kept_grandfather_father_son(setup: tuple[Instance, Path, Path]) -> None:
    inst = setup[0]
    from mamori.backup.verify import Generation

    now = dt.datetime(2026, 11, 22, 3, tzinfo=dt.UTC)
    gens = []
    for link, day in enumerate(range(120, -1, -1), start=1):  # nightly full, morning delta
        at = now - dt.timedelta(days=day)
        full = Generation(link * 2, link, "full", at.isoformat(), {}, f"h{link}")
        delta = Generation(
            link * 2 + 1, link, "delta", (at + dt.timedelta(hours=6)).isoformat(),
            {"base": {"manifest": f"h{link}"}}, f"d{link}",
        )  # fmt: skip
        gens += [full, delta]
    keep = generations.keep_set(gens, inst.settings, now)
    fulls = {g.generation for g in gens if g.kind == "full" and g.generation in keep}
    # 14 daily, plus weekly and monthly ones further back (overlaps counted once)
    assert 14 + 4 <= len(fulls) <= 14 + 8 + 12
    oldest = min(dt.datetime.fromisoformat(g.created) for g in gens if g.generation in fulls)
    assert (now - oldest).days >= 90
    deltas = [g for g in gens if g.kind == "delta" and g.generation in keep]
    assert deltas and all((now - dt.datetime.fromisoformat(g.created)).days <= 14 for g in deltas)


# ---------------------------------------------------------------- real remote targets


def test_sftp_target_against_a_real_openssh_server(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    assert Path("/usr/sbin/sshd").exists(), "openssh-server is needed (.ci/run installs it)"
    inst, keys, _usb = setup
    server = start_sshd(tmp_path / "sshd")
    try:
        entry = {
            "name": "nas",
            "kind": "sftp",
            "host": "127.0.0.1",
            "port": server.port,
            "user": server.user,
            "path": str(server.root),
            "key_file": str(server.client_key),
            "known_hosts": str(server.known_hosts),
        }
        inst = _targets(inst, entry)
        first = _run(inst, only="nas")
        assert first.ok, first.targets[0].error
        _write_a_note(inst)
        second = _run(inst, only="nas")
        assert second.ok and second.targets[0].kind == "delta"
        url = f"sftp://{server.user}@127.0.0.1:{server.port}{server.root}"
        spec = spec_from_url(url, key_file=server.client_key, known_hosts=server.known_hosts)
        done = restore(spec, _ident(keys), tmp_path / "r", key_dir=tmp_path / "k")
        assert done.generation == second.generation
        # a server whose host key is not the pinned one is refused
        (tmp_path / "wrong_known").write_text(
            f"[127.0.0.1]:{server.port} ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIEkK4xRk0Kr9YYq1Y2x8QmWcHf0zZ7w7XfCwq1bXr0aS\n"
        )
        bad = spec_from_url(url, key_file=server.client_key, known_hosts=tmp_path / "wrong_known")
        with pytest.raises(BackupError, match="unreachable"):
            open_target(bad, inst.settings.instance_id)
    finally:
        server.stop()


@pytest.fixture
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "ap-northeast-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_object_lock_target_against_moto(
    setup: tuple[Instance, Path, Path], tmp_path: Path, moto_s3: str
) -> None:
    """moto is an emulator: this proves the client flow (checksums, retention per object, no
    deletes), not immutability — docs/backup.md says how to check a real provider."""
    import boto3
    from botocore.exceptions import ClientError

    inst, keys, _usb = setup
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="ap-northeast-1")
    s3.create_bucket(
        Bucket="clinic",
        ObjectLockEnabledForBucket=True,
        CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"},
    )
    s3.put_object_lock_configuration(
        Bucket="clinic",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    inst = _targets(
        inst,
        {"name": "cloud", "kind": "s3", "bucket": "clinic", "endpoint": moto_s3,
         "region": "ap-northeast-1", "lock_mode": "COMPLIANCE"},
    )  # fmt: skip
    result = _run(inst, only="cloud")
    assert result.ok, result.targets[0].error
    gen = f"generations/{result.generation:010d}"
    key = f"mamori-backup/{inst.settings.instance_id}/{gen}/db.full.sqlite.zst.age"
    head = s3.head_object(Bucket="clinic", Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    version = head["VersionId"]
    with pytest.raises(ClientError):  # a locked version cannot be deleted
        s3.delete_object(Bucket="clinic", Key=key, VersionId=version)
    s3.delete_object(Bucket="clinic", Key=key)  # only a delete marker …
    got = s3.get_object(Bucket="clinic", Key=key, VersionId=version)  # … the data survives
    assert got["Body"].read(21) == b"age-encryption.org/v1"
    # the administrator's rollback: remove the delete marker, the locked version is current again
    markers = s3.list_object_versions(Bucket="clinic", Prefix=key)["DeleteMarkers"]
    s3.delete_object(Bucket="clinic", Key=key, VersionId=markers[0]["VersionId"])
    spec = spec_from_url("s3://clinic/", endpoint=moto_s3)
    done = restore(spec, _ident(keys), tmp_path / "r", key_dir=tmp_path / "k")
    assert done.generation == result.generation
    report = verify_target(
        open_target(inst.settings.backup.targets[1], inst.settings.instance_id),
        fmt.signing_key(inst.settings.audit_signing_key).public_key(),
        inst.settings.instance_id,
    )
    assert report.ok


# ---------------------------------------------------------------- the commands


def test_cli_keygen_run_verify_restore_and_drill(tmp_path: Path) -> None:
    created = _instance(tmp_path)
    home = created.instance.settings.home
    created.instance.db.dispose()
    env = {"MAMORI_HOME": str(home), "MAMORI_BACKUP_PASSPHRASE": PASS}
    out = runner.invoke(app, ["backup", "keygen", "--out", str(home / "keys-here")], env=env)
    assert out.exit_code == 2 and "inside" in out.output.replace("\n", "")  # never in the instance
    out = runner.invoke(app, ["backup", "keygen", "--out", str(tmp_path / "offline")], env=env)
    assert out.exit_code == 0, out.output
    usb = tmp_path / "usb"
    usb.mkdir()
    with (home / "mamori.toml").open("a") as fh:
        fh.write(f'\n[[backup.targets]]\nname = "usb"\nkind = "dir"\npath = "{usb}"\n')
    out = runner.invoke(app, ["backup", "run"], env=env)
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["backup", "verify"], env=env)
    assert out.exit_code == 0 and "OK" in out.output, out.output
    # another instance's medium record, then a damaged one: a finding, never a traceback
    (medium,) = usb.glob("mamori-backup/*/medium.json")
    good = medium.read_bytes()
    for bad in (good.replace(b'"instance"', b'"instance_"').replace(b"}", b', "instance": "x"}'),
                b"\x00not json"):  # fmt: skip
        medium.write_bytes(bad)
        out = runner.invoke(app, ["backup", "verify"], env=env)
        assert out.exit_code == 1, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), out.output
        assert "Traceback" not in out.output and "medium" in out.output, out.output
    medium.write_bytes(good)
    ident = str(tmp_path / "offline" / "mamori-backup-primary.age")
    out = runner.invoke(
        app,
        [
            "drill",
            "--from",
            f"dir:{usb}",
            "--identity",
            ident,
            "--report-dir",
            str(tmp_path / "drills"),
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    report = next((tmp_path / "drills").glob("drill-*.json"))
    body = json.loads(report.read_bytes())
    assert body["result"] == "passed" and body["rto_seconds"] > 0
    # the monthly drill still runs the check itself, even on an attested generation
    assert "PRAGMA integrity_check" in body["checks"] and "integrity" in body["steps_seconds"]
    signer = fmt.public_from_text(body["signer"])
    import base64

    signer.verify(base64.b64decode(report.with_suffix(".sig").read_bytes()), report.read_bytes())
    inst = open_instance(str(home))
    try:
        with inst.transaction(write=False) as s:
            tags = s.execute(text("SELECT body FROM audit_event ORDER BY seq")).scalars().all()
        joined = b"".join(bytes(t) for t in tags)
        for tag in (b"system:backup-keys:created", b"system:backup:completed",
                    b"system:backup:verified", b"system:backup:drilled"):  # fmt: skip
            assert tag in joined
    finally:
        inst.db.dispose()


def test_the_scheduler_run_never_raises_and_audits_a_failure(
    setup: tuple[Instance, Path, Path], tmp_path: Path
) -> None:
    from mamori.backup.service import configured, scheduled_run

    inst, _keys_dir, usb = setup
    assert configured(inst.settings)
    shutil.rmtree(usb)  # the disk was unplugged
    scheduled_run(inst.settings, inst.db)
    with inst.transaction(write=False) as s:
        last = bytes(s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq.desc())).first())
    assert b"system:backup:failed" in last and b"scheduler" in last


def test_the_restore_integrity_check_finds_what_either_half_alone_would_miss(
    tmp_path: Path,
) -> None:
    """The restore's check runs quick_check beside integrity_check(<table>) per table; an
    index that no longer matches its table is only seen by the second, a damaged page by the
    first — both must fail the restore."""
    from mamori.backup.integrity import integrity_check

    def make(name: str) -> Path:
        path = tmp_path / name
        con = sqlite3.connect(path)
        con.executescript(
            "CREATE TABLE t(a INTEGER, b INTEGER); CREATE INDEX i ON t(a);"
            "CREATE TABLE big(x); CREATE INDEX j ON big(x);"
        )
        con.executemany("INSERT INTO t VALUES (?, ?)", [(n, 1000 - n) for n in range(300)])
        con.executemany("INSERT INTO big VALUES (?)", [(os.urandom(200),) for _ in range(2000)])
        con.commit()
        con.close()
        return path

    assert integrity_check(make("good.db")) >= 0

    # the index now claims to be on column b: its entries no longer match the table
    mismatched = make("index.db")
    con = sqlite3.connect(mismatched)
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX i ON t(b)' WHERE name = 'i'")
    con.commit()
    con.close()
    con = sqlite3.connect(mismatched)
    assert con.execute("PRAGMA quick_check").fetchall() == [("ok",)]  # structure is fine…
    con.close()
    with pytest.raises(BackupInvalid):
        integrity_check(mismatched)  # …the per-table half sees the index

    # a page of the big table overwritten: structure broken
    damaged = make("page.db")
    raw = bytearray(damaged.read_bytes())
    page = 4096
    raw[page * 5 : page * 5 + 64] = b"\xff" * 64
    damaged.write_bytes(bytes(raw))
    with pytest.raises(BackupInvalid):
        integrity_check(damaged)


def test_a_generation_attests_its_integrity_check_and_the_restore_proves_the_same_bytes(
    setup: tuple[Instance, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full integrity check moves to the moment the copy is made: every SQLite
    generation's signed manifest carries that its snapshot passed it, with that snapshot's
    SHA-256; a restore whose file has that hash (a full, or a delta's result) does not run it
    again, ``check=True`` (``--check``, every drill) does, and a generation without a passing
    attestation (an older mamori, or a check that failed) is checked as before."""
    inst, keys, usb = setup
    assert _run(inst).ok
    _write_a_note(inst)
    assert _run(inst).ok  # a delta: its attestation is of the database the delta rebuilds
    for g in (1, 2):
        m = json.loads((_gen_dir(usb, inst, g) / "manifest.json").read_bytes())
        attested = m["db"]["attested"]
        assert attested["integrity_check"] == "ok" and attested["sha256"] == m["db"]["sha256"]
        assert attested["page_count"] == m["db"]["page_count"]
    spec = spec_from_url(f"dir:{usb}")

    done = restore(spec, _ident(keys), tmp_path / "a", key_dir=tmp_path / "rk")
    assert done.kind == "delta" and done.integrity == "attested"
    assert "integrity" not in done.timings
    checked = restore(spec, _ident(keys), tmp_path / "b", key_dir=tmp_path / "rk", check=True)
    assert checked.integrity == "checked" and checked.timings["integrity"] >= 0
    for home in (done.home, checked.home):
        back = open_instance(str(home))
        try:
            with back.transaction(write=False) as s:
                body = bytes(
                    s.scalars(select(AuditEvent.body).order_by(AuditEvent.seq.desc())).first()
                    or b""
                )
            assert b"system:backup:restored" in body
            assert f'"integrity":"{"attested" if home == done.home else "checked"}"'.encode() in (
                body
            )
        finally:
            back.db.dispose()

    # a snapshot that failed the check at backup time: recorded as it was; restores check
    from mamori.backup import engine as backup_engine

    monkeypatch.setattr(
        backup_engine,
        "attest",
        lambda db, sha, pages: {"integrity_check": "[('row 5 missing',)]", "sha256": sha},
    )
    _write_a_note(inst)
    assert _run(inst).ok
    m = json.loads((_gen_dir(usb, inst, 3) / "manifest.json").read_bytes())
    assert m["db"]["attested"]["integrity_check"] != "ok"
    again = restore(spec, _ident(keys), tmp_path / "c", key_dir=tmp_path / "rk")
    assert again.generation == 3 and again.integrity == "checked"
