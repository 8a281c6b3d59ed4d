"""Key lifecycle against real parts: KEK rotation, re-encryption with the server up and after a
kill -9 half-way, the offline export and its recovery, a typed passphrase, and a real
PKCS#11 token (SoftHSM2). Every step ends with every record and the audit trail verifying."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import SAMPLE_PATIENT, integration_token
from typer.testing import CliRunner

from mamori.app import create_app
from mamori.audit.verify import verify_log
from mamori.cli.main import app
from mamori.clinic.models import Clinic
from mamori.crypto import rekey, startup
from mamori.crypto.kek import KeyUnavailable
from mamori.crypto.keyring import DataKey
from mamori.documents.store import DocumentStore
from mamori.instance import Created, create_instance, open_instance
from mamori.patients.models import Patient
from mamori.records.service import verify_all
from mamori.synth.generator import generate

runner = CliRunner()
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def _instance(tmp_path: Path, **kw: Any) -> Created:
    return create_instance(
        tmp_path / "home", clinic_name="鍵試験", institution_code="1310123455", **kw
    )


def _fill(created: Created, size: str = "XS") -> None:
    inst = created.instance
    with inst.transaction(write=True) as s:
        clinic = s.scalars(select(Clinic)).one()
        generate(s, clinic, size, seed=9, store=DocumentStore(inst.settings.documents_dir, inst.db))


def _all_good(home: Path) -> int:
    """Every record readable and verifying, the audit trail intact; returns patients read."""
    inst = open_instance(str(home))
    try:
        with inst.transaction(write=False) as s:
            checked, problems = verify_all(s)
            assert problems == [] and checked > 0
            assert verify_log(s).ok
            names = [p.family_kana for p in s.scalars(select(Patient))]
            assert all(names)
        assert rekey.count_stale(inst.db) == 0
        store = DocumentStore(inst.settings.documents_dir, inst.db)
        with inst.db.session(write=False) as s:
            from mamori.clinical.models import Document

            for doc in s.scalars(select(Document)):
                assert store.get(doc.sha256)  # decrypts and matches its hash
        return len(names)
    finally:
        inst.db.dispose()


def test_kek_rotation_rewraps_in_seconds_and_the_old_key_stops_working(tmp_path: Path) -> None:
    created = _instance(tmp_path)
    _fill(created)
    home, key = created.instance.settings.home, created.instance.settings.keys.file
    assert key is not None
    old = key.read_bytes()
    created.instance.db.dispose()
    r = runner.invoke(app, ["keys", "rotate", "-i", str(home)])
    assert r.exit_code == 0, r.output
    assert "rewrapped" in r.output and key.read_bytes() != old
    assert not startup.next_key_path(key).exists()
    _all_good(home)
    key.write_bytes(old)  # the retired KEK no longer opens the database
    with pytest.raises(KeyUnavailable, match="does not belong"):
        open_instance(str(home))


def test_rotation_finishes_after_a_crash_between_commit_and_rename(tmp_path: Path) -> None:
    created = _instance(tmp_path)
    inst = created.instance
    key = inst.settings.keys.file
    assert key is not None
    old = key.read_bytes()
    rekey.rotate_kek(inst.db, inst.settings)
    inst.db.dispose()
    new = key.read_bytes()
    # as if the process died after the commit, before the rename: old file, new one pending
    startup.next_key_path(key).write_bytes(new)
    startup.next_key_path(key).chmod(0o600)
    key.write_bytes(old)
    reopened = open_instance(str(inst.settings.home))
    reopened.db.dispose()
    assert key.read_bytes() == new and not startup.next_key_path(key).exists()


def test_reencryption_with_the_server_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "REFRESH_SECONDS", 0.0)
    created = _instance(tmp_path)
    _fill(created)
    settings = created.instance.settings
    client = TestClient(create_app(settings, created.instance.db))  # "the server"
    h = {"Authorization": f"Bearer {integration_token(created.instance.db, settings)}"}
    before = client.post("/api/v1/patients", json=SAMPLE_PATIENT, headers=h).json()
    tool = open_instance(str(settings.home))  # the CLI, another Database, as another process
    kid = rekey.add_data_key(tool.db)
    # the server writes with the new key at once and still reads what the old one sealed
    during = client.post(
        "/api/v1/patients", json={**SAMPLE_PATIENT, "family_kana": "サトウ"}, headers=h
    ).json()
    assert client.get(f"/api/v1/patients/{before['id']}", headers=h).status_code == 200
    out = rekey.reencrypt(
        tool.db, DocumentStore(settings.documents_dir, tool.db), batch=50, grace=0.5
    )
    assert out.rows > 1000 and out.documents > 0 and out.retired == [1]
    for pid in (before["id"], during["id"]):  # the server dropped the retired key and reads
        assert client.get(f"/api/v1/patients/{pid}", headers=h).status_code == 200
    with tool.db.session(write=False) as s:
        row = s.get(DataKey, 1)
        assert row is not None and row.retired_at is not None and row.wrapped == b""
        assert s.get(DataKey, kid) is not None
    tool.db.dispose()
    client.close()
    created.instance.db.dispose()
    _all_good(settings.home)


def _cli(*args: str) -> list[str]:
    exe = shutil.which("mamori")
    return [exe, *args] if exe else [sys.executable, "-m", "mamori", *args]


def test_reencryption_killed_half_way_resumes_and_loses_nothing(tmp_path: Path) -> None:
    created = _instance(tmp_path)
    _fill(created)
    home = created.instance.settings.home
    total = rekey.total_rows(created.instance.db)
    created.instance.db.dispose()
    env = {**os.environ, "MAMORI_ENV": "test"}
    proc = subprocess.Popen(
        _cli("keys", "rotate", "--reencrypt", "--grace", "0", "--batch", "10", "-i", str(home)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = open_instance(str(home))
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait until it is well into the tables
            time.sleep(0.05)
            startup_refresh = probe.db.key_refresher
            assert startup_refresh is not None
            startup_refresh(force=True)
            if probe.db.keyring.active == 1:
                continue
            stale = rekey.count_stale(probe.db)
            if 0 < stale < total * 0.8:
                break
        else:
            pytest.fail("re-encryption made no visible progress")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        probe.db.dispose()
    # half done: old and new keys both live, everything still readable and verifying
    inst = open_instance(str(home))
    with inst.db.session(write=False) as s:
        assert [k.id for k in s.scalars(select(DataKey).where(DataKey.retired_at.is_(None)))] == [
            1,
            2,
            3,
        ]
    inst.db.dispose()
    r = subprocess.run(
        _cli("keys", "reencrypt", "--grace", "0", "-i", str(home)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert _all_good(home) > 20


def test_export_and_recover_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = _instance(tmp_path)
    _fill(created)
    home, key = created.instance.settings.home, created.instance.settings.keys.file
    assert key is not None
    created.instance.db.dispose()
    usb = tmp_path / "usb"
    r = runner.invoke(app, ["keys", "export", "--out", str(usb), "-i", str(home)])
    assert r.exit_code == 0, r.output
    code = r.output.strip().splitlines()[-1].strip()
    exported = next(usb.glob("*.json"))
    assert key.read_text().split()[1] not in exported.read_text()  # wrapped, not the key
    assert (usb / exported.with_suffix(".svg").name).read_text().startswith("<?xml")
    key.unlink()  # the server's disk died with the key on it
    r = runner.invoke(app, ["keys", "status", "-i", str(home)])
    assert r.exit_code == 2 and "mamori keys recover" in r.output
    monkeypatch.setenv("MAMORI_RECOVERY_CODE", "AAAAA-" + code[6:])  # a mistyped code
    r = runner.invoke(app, ["keys", "recover", str(exported), "-i", str(home)])
    assert r.exit_code == 2 and "Wrong recovery code" in r.output and not key.exists()
    # typed back from paper: lower case, spaces instead of dashes
    monkeypatch.setenv("MAMORI_RECOVERY_CODE", code.lower().replace("-", " "))
    r = runner.invoke(app, ["keys", "recover", str(exported), "-i", str(home)])
    assert r.exit_code == 0, r.output
    assert "opens" in r.output and key.stat().st_mode & 0o777 == 0o600
    _all_good(home)


def test_passphrase_kek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(startup.PASSPHRASE_ENV, "春はあけぼの やうやう白くなりゆく")
    created = _instance(tmp_path, key_source="passphrase")
    _fill(created)
    home = created.instance.settings.home
    created.instance.db.dispose()
    assert not list(Path(os.environ["MAMORI_KEY_DIR"]).glob(f"*{home.name}*"))
    _all_good(home)
    monkeypatch.setenv(startup.PASSPHRASE_ENV, "夏は夜 月のころはさらなり 闇もなほ")
    with pytest.raises(KeyUnavailable, match="does not belong"):
        open_instance(str(home))
    monkeypatch.delenv(startup.PASSPHRASE_ENV)
    with pytest.raises(KeyUnavailable, match="No key passphrase"):
        open_instance(str(home))
    monkeypatch.setenv(startup.PASSPHRASE_ENV, "春はあけぼの やうやう白くなりゆく")
    monkeypatch.setenv("MAMORI_NEW_KEK_PASSPHRASE", "秋は夕暮れ 夕日のさして山の端いと近う")
    r = runner.invoke(app, ["keys", "rotate", "-i", str(home)])
    assert r.exit_code == 0, r.output
    with pytest.raises(KeyUnavailable, match="does not belong"):
        open_instance(str(home))  # the old passphrase is retired
    monkeypatch.setenv(startup.PASSPHRASE_ENV, "秋は夕暮れ 夕日のさして山の端いと近う")
    _all_good(home)


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if not Path(SOFTHSM).exists():
        pytest.fail("SoftHSM2 is not installed: apt-get install softhsm2 (.ci/run does)")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", "mamori-test"),
            *("--pin", "246813", "--so-pin", "13572468"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    monkeypatch.setenv(startup.PIN_ENV, "246813")
    return "mamori-test"


def test_pkcs11_kek_in_softhsm(
    tmp_path: Path, softhsm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    created = _instance(
        tmp_path, key_source="pkcs11", pkcs11_module=Path(SOFTHSM), pkcs11_token=softhsm
    )
    _fill(created)
    home = created.instance.settings.home
    kek_id = created.instance.db.keyring.kek.kek_id
    created.instance.db.dispose()
    token = pkcs11.lib(SOFTHSM).get_token(token_label=softhsm)
    with token.open(user_pin="246813") as s:
        key = s.get_key(object_class=ObjectClass.SECRET_KEY, id=bytes.fromhex(kek_id))
        assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True
    _all_good(home)
    monkeypatch.setenv(startup.PIN_ENV, "000000")
    with pytest.raises(KeyUnavailable, match="Cannot open PKCS#11 token"):
        open_instance(str(home))
    monkeypatch.setenv(startup.PIN_ENV, "246813")
    r = runner.invoke(app, ["keys", "rotate", "--reencrypt", "--grace", "0", "-i", str(home)])
    assert r.exit_code == 0, r.output
    with token.open(user_pin="246813") as s:
        ids = [
            k[Attribute.ID].hex() for k in s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        ]
    assert kek_id not in ids and len(ids) == 1  # the old key was destroyed in the token
    _all_good(home)
    r = runner.invoke(app, ["keys", "export", "--out", str(tmp_path / "x"), "-i", str(home)])
    assert r.exit_code == 2 and "HSM" in r.output
