"""The ``mamori`` command on a real instance directory (SQLite)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from tests.conftest import drop_insert_only_triggers
from typer.testing import CliRunner

from mamori.cli.main import app
from mamori.crypto.sealed import aad_for
from mamori.crypto.startup import open_keys
from mamori.models import open_database
from mamori.records.versioning import RecordVersion
from mamori.settings import load_settings

runner = CliRunner()
CODE = "1310123455"


def _init(home: Path) -> str:
    r = runner.invoke(
        app, ["init", str(home), "--clinic-name", "テスト診療所", "--institution-code", CODE]
    )
    assert r.exit_code == 0, r.output
    return r.output


def test_init_creates_private_instance_with_fresh_secrets(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    out = _init(a)
    _init(b)
    # sign-in details, never a bearer token: a token would read charts with no second factor
    assert "initial password (shown once)" in out and "mmr_" not in out
    for d in (a, a / "secrets", a / "data", a / "documents"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    secret = a / "secrets" / "token_pepper"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_bytes() != (b / "secrets" / "token_pepper").read_bytes()
    assert "token_pepper" not in (a / "mamori.toml").read_text()
    again = runner.invoke(app, ["init", str(a), "--clinic-name", "x", "--institution-code", CODE])
    assert again.exit_code == 2 and "空ではありません" in again.output


def test_commands_say_clearly_when_there_is_no_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAMORI_HOME", raising=False)
    for args in (["serve"], ["db", "upgrade"], ["verify"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2
        assert "MAMORI_HOME" in r.output and "--instance" in r.output
    r = runner.invoke(app, ["verify", "--instance", str(tmp_path)])
    assert r.exit_code == 2 and "not a mamori instance" in r.output


@pytest.mark.parametrize("damage", ["loose", "missing", "short"])
def test_unsafe_secrets_stop_the_server(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "i"
    _init(home)
    secret = home / "secrets" / "token_pepper"
    if damage == "loose":
        os.chmod(secret, 0o644)
    elif damage == "missing":
        secret.unlink()
    else:
        secret.write_text("short")
    r = runner.invoke(app, ["serve", "--instance", str(home)])
    assert r.exit_code == 2
    assert "起動を中止します" in r.output and "refusing to start" in r.output


def test_db_upgrade_check_synth_verify_export(tmp_path: Path) -> None:
    home = tmp_path / "i"
    _init(home)
    inst = ["--instance", str(home)]
    assert runner.invoke(app, ["db", "upgrade", *inst]).exit_code == 0
    assert runner.invoke(app, ["db", "check", *inst]).exit_code == 0
    r = runner.invoke(
        app, ["staff", "add", "dr_x", "--name", "医師 太郎", "--role", "physician", *inst]
    )
    assert r.exit_code == 0 and "initial password" in r.output and "mmr_" not in r.output
    r = runner.invoke(app, ["synth", "--size", "XS", "--seed", "2", *inst])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", *inst])
    assert r.exit_code == 0 and "OK" in r.output
    out = tmp_path / "export"
    r = runner.invoke(app, ["export", "fhir", str(out), "--as", "dr_x", *inst])
    assert r.exit_code != 0 and "export:bulk" in r.output  # a physician may only request it
    r = runner.invoke(app, ["export", "fhir", str(out), "--as", "admin", *inst])
    assert r.exit_code == 0, r.output
    patients = (out / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    assert len(patients) == 40 and json.loads(patients[0])["resourceType"] == "Patient"
    r = runner.invoke(app, ["export", "fhir", str(out), "--as", "nobody", *inst])
    assert r.exit_code == 2
    r = runner.invoke(app, ["audit", "export-fhir", str(tmp_path / "audit.ndjson"), *inst])
    assert r.exit_code == 0 and "AuditEvent" in r.output
    assert (tmp_path / "audit.ndjson").read_text().count('"resourceType": "AuditEvent"') > 3
    r = runner.invoke(app, ["audit", "checkpoint", *inst])
    assert r.exit_code == 0 and "size" in r.output
    vkey = (home / "checkpoints" / "audit.vkey").read_text().strip()
    notes = len(list((home / "checkpoints").glob("*.note")))
    assert notes > 1  # every command above that appended events signed them as it ended
    r = runner.invoke(app, ["audit", "verify", "--trusted-key", vkey, *inst])
    assert r.exit_code == 0 and "OK" in r.output
    # each note is also in the copy outside the instance, and both are checked
    assert f"{2 * notes} signed checkpoints agree" in r.output and vkey in r.output
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mamori.audit.checkpoint import NoteSigner

    name = vkey.split("+")[0]  # same log name, another key: the checkpoints must not pass
    other = NoteSigner(name, Ed25519PrivateKey.generate()).verifier().vkey()
    r = runner.invoke(app, ["audit", "verify", "--trusted-key", other, *inst])
    assert r.exit_code == 1 and "not signed by any trusted key" in r.output
    r = runner.invoke(app, ["audit", "verify", "--trusted-key", "garbage", *inst])
    assert r.exit_code == 2
    # editing a past version behind mamori's back is found by `mamori verify`: without the
    # key the ciphertext cannot be forged; even an insider holding the key, who re-encrypts
    # an altered version properly, is caught by the version's hash
    settings = load_settings(home)
    db = open_database(settings.database_url)
    keyring = open_keys(db, settings)
    drop_insert_only_triggers(db.engine)
    table = RecordVersion.__table__
    with db.engine.begin() as conn:
        rows = conn.execute(
            select(
                table.c.id, table.c.record_type, table.c.record_id, table.c.version, table.c.sealed
            ).where(table.c.record_type == "Condition")
        ).all()
        changed = 0
        for row in rows:
            aad = aad_for(RecordVersion, row._mapping.get)
            plain = keyring.open(row.sealed, aad, "test")
            if "高血圧".encode() in plain:
                forged = keyring.seal(plain.replace("高血圧".encode(), "低血圧".encode()), aad)
                conn.execute(update(table).where(table.c.id == row.id).values(sealed=forged))
                changed += 1
        assert changed
    db.dispose()
    r = runner.invoke(app, ["verify", *inst])
    assert r.exit_code == 1 and "content hash mismatch" in r.output
    db = open_database(load_settings(home).database_url)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 3"))
    db.dispose()
    r = runner.invoke(app, ["audit", "verify", *inst])
    assert r.exit_code == 1 and "#3" in r.output


def test_demo_builds_a_clinic_and_prints_logins(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    r = runner.invoke(
        app,
        ["demo", str(home), "--size", "XS", "--no-serve", "--api-token", "--host", "192.168.77.10"],
    )
    assert r.exit_code == 0, r.output
    # tried from another PC: listens on every address, and that name is in the certificate
    # and among the allowed origins (else every form post from there would be refused)
    from cryptography import x509

    from mamori.settings import load_settings

    settings = load_settings(home)
    assert settings.host == "0.0.0.0" and "https://192.168.77.10:8000" in settings.auth.origins  # noqa: S104
    cert = x509.load_pem_x509_certificate((home / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.168.77.10" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    assert "https://192.168.77.10:8000/login" in r.output.replace("\n", "")
    for login in ("director", "dr_aiko", "nurse_ben", "clerk_chika", "scribe_dai"):
        assert f"  {login}: " in r.output and f"  {login}: mmr_" not in r.output
    # asked for, one read-only token of an integration account, not one per person
    assert r.output.count("mmr_") == 2  # printed, and again in the curl example
    assert "合成データ" in r.output
    r = runner.invoke(app, ["verify", "--instance", str(home)])
    assert r.exit_code == 0
    again = runner.invoke(app, ["demo", str(home), "--size", "XS", "--no-serve"])
    assert again.exit_code == 2
    bad = runner.invoke(app, ["demo", str(tmp_path / "x"), "--no-serve", "--host", "a b/c"])
    assert bad.exit_code == 2 and "--host" in bad.output and not (tmp_path / "x").exists()


def test_tokens_are_for_integrations_scoped_expiring_and_revocable(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mamori.app import create_app
    from mamori.instance import open_instance

    home = tmp_path / "i"
    _init(home)
    at = ["--instance", str(home)]

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, *at])

    # a person without a second factor gets no token, however it is asked for
    r = cli("token", "issue", "admin", "--scope", "patient:read", "--days", "7", "--as", "admin")
    assert r.exit_code != 0 and "mmr_" not in r.output and "二要素" in r.output
    # an integration account needs a director behind it, and gets no password
    assert (
        cli(
            "staff", "add", "recept", "--name", "レセコン", "--role", "reception", "--integration"
        ).exit_code
        != 0
    )
    r = cli(
        "staff",
        "add",
        "recept",
        "--name",
        "レセコン連携",
        "--role",
        "reception",
        "--integration",
        "--as",
        "admin",
    )
    assert r.exit_code == 0 and "password" not in r.output, r.output
    assert cli("staff", "password", "recept").exit_code != 0
    # no expiry beyond a year, nothing outside the role, nothing unknown
    for scope, days in (("patient:read", "400"), ("note:read", "7"), ("nope", "7")):
        r = cli("token", "issue", "recept", "--scope", scope, "--days", days, "--as", "admin")
        assert r.exit_code != 0 and "mmr_" not in r.output, (scope, r.output)
    r = cli(
        "token",
        "issue",
        "recept",
        "--scope",
        "patient:read",
        "--days",
        "30",
        "--as",
        "admin",
        "--label",
        "レセコン",
    )
    assert r.exit_code == 0, r.output
    token = r.output.split("token (shown once): ")[1].split()[0]
    inst = open_instance(str(home))
    client = TestClient(create_app(inst.settings, inst.db))
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=auth).status_code == 200
    # the scope holds: reception may register a patient, this token may not
    assert client.post("/api/v1/patients", json={}, headers=auth).status_code == 403
    listed = cli("token", "list", "--as", "admin")
    assert "recept (integration)" in listed.output and "patient:read" in listed.output
    r = cli("staff", "revoke", "recept")
    assert r.exit_code == 0 and "1 token" in r.output
    assert client.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=auth).status_code == 401
    client.close()
    inst.db.dispose()


def test_initial_password_signs_in_and_can_be_reissued(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mamori.app import create_app
    from mamori.instance import open_instance

    home = tmp_path / "i"
    password = _init(home).split("initial password (shown once): ")[1].split()[0]
    inst = open_instance(str(home))
    client = TestClient(create_app(inst.settings, inst.db), base_url="https://testserver")
    login = {"login_id": "admin", "password": password}
    r = client.post("/api/v1/auth/login", json=login)
    # an initial password was handed over: the first sign-in sets the person's own first
    assert r.status_code == 200 and r.json()["stage"] == "new-password"
    csrf = {"x-csrf-token": r.json()["csrf_token"]}
    assert client.post("/api/v1/auth/enrol/totp", json={}, headers=csrf).status_code == 401
    weak = client.post(
        "/api/v1/auth/password/initial", json={"password": "admin1234567"}, headers=csrf
    )
    assert weak.status_code == 422 and weak.json()["error"]["message_ja"]
    own = "川沿いの桜並木を歩く午後-42"
    r = client.post("/api/v1/auth/password/initial", json={"password": own}, headers=csrf)
    assert r.status_code == 200 and r.json()["stage"] == "enrol", r.text
    assert client.post("/api/v1/auth/login", json=login).status_code == 401  # initial is gone
    r = client.post("/api/v1/auth/login", json={**login, "password": own})
    assert r.json()["stage"] == "enrol"  # no second change asked for
    r = runner.invoke(app, ["staff", "password", "admin", "--instance", str(home)])
    assert r.exit_code == 0, r.output
    fresh = r.output.split("initial password: ")[1].split()[0]
    assert fresh != password
    assert client.post("/api/v1/auth/login", json={**login, "password": own}).status_code == 401
    r = client.post("/api/v1/auth/login", json={**login, "password": fresh})
    assert r.status_code == 200 and r.json()["stage"] == "new-password"  # reissued: again
    client.close()
    inst.db.dispose()


def test_tls_is_on_by_default_and_plain_http_only_behind_a_proxy(tmp_path: Path) -> None:
    import stat

    from cryptography import x509

    from mamori.web import tls

    home = tmp_path / "i"
    _init(home)
    everywhere = "0.0.0.0"  # noqa: S104 - the address the proxy mode must refuse
    r = runner.invoke(
        app, ["serve", "--behind-proxy", "--host", everywhere, "--instance", str(home)]
    )
    assert r.exit_code != 0 and "loopback" in r.output
    cert_path, key_path = tls.local_certificate(home, ["192.168.1.10"])
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "192.168.1.10" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert tls.local_certificate(home) == (cert_path, key_path)  # made once, then reused
    key_path.chmod(0o644)
    with pytest.raises(Exception, match="readable"):
        tls.local_certificate(home)


def test_every_command_signs_what_it_appended_and_verify_needs_a_checkpoint(
    tmp_path: Path,
) -> None:
    """A command's events are covered by a signed checkpoint when it ends (not when a server
    next runs); a log with events and no checkpoint at all fails verification; a checkpointer
    whose state vanished beside its notes refuses to sign."""
    from mamori.audit.checkpointer import CheckpointRefused, make_checkpoint
    from mamori.audit.models import AuditHead

    home = tmp_path / "i"
    _init(home)
    inst = ["--instance", str(home)]
    r = runner.invoke(
        app, ["staff", "add", "dr_x", "--name", "医師 太郎", "--role", "physician", *inst]
    )
    assert r.exit_code == 0, r.output
    settings = load_settings(home)
    db = open_database(settings.database_url)
    with db.session(write=False) as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        size = head.size
    signed = sorted((home / "checkpoints").glob("*.note"))
    assert signed and signed[-1].name == f"{size:012d}.note"  # staff add's events included
    # the state gone while notes remain: nothing is signed over whatever the log now holds
    state = home / "checkpoints" / "state.json"
    saved = state.read_bytes()
    state.unlink()
    open_keys(db, settings)
    with pytest.raises(CheckpointRefused):
        make_checkpoint(db, settings)
    db.dispose()
    state.write_bytes(saved)
    assert runner.invoke(app, ["audit", "verify", *inst]).exit_code == 0
    # every signed note and the state deleted: verify fails, it does not pass an unvouched log
    for where in (home / "checkpoints", *settings.checkpoint_copies):  # every copy too
        for note in where.glob("*.note"):
            note.unlink()
    state.unlink()
    r = runner.invoke(app, ["audit", "verify", *inst])
    assert r.exit_code == 1 and "no signed checkpoint vouches" in r.output, r.output
    assert "trust root" in r.output


def test_the_trust_root_is_pinned_outside_the_instance(tmp_path: Path) -> None:
    """init copies the verification key outside the instance and prints it; verify trusts the
    pinned copy, so an instance whose signing key was replaced (and could sign a rewritten
    log) fails, naming both keys."""
    home = tmp_path / "i"
    r = runner.invoke(
        app, ["init", str(home), "--clinic-name", "テスト診療所", "--institution-code", CODE]
    )
    assert r.exit_code == 0, r.output
    settings = load_settings(home)
    (copy,) = settings.checkpoint_copies
    assert not str(copy).startswith(str(home))
    pinned = (copy / "audit.vkey").read_text().strip()
    assert pinned in r.output.replace("\n", "")
    r = runner.invoke(app, ["audit", "verify", "--instance", str(home)])
    assert r.exit_code == 0 and "pinned outside the instance" in r.output, r.output
    key = home / "secrets" / "audit_signing_key"
    key.write_bytes(base64.b64encode(os.urandom(32)))  # a key the attacker controls
    r = runner.invoke(app, ["audit", "verify", "--instance", str(home)])
    assert r.exit_code == 1 and "differs from the trust root" in r.output.replace("\n", " ")


def test_serve_refuses_an_instance_without_backups(tmp_path: Path) -> None:
    home = tmp_path / "i"
    out = _init(home).replace("\n", "")
    assert "[[backup.targets]]" in out  # the section to add, printed as text, not markup
    r = runner.invoke(app, ["serve", "--instance", str(home)])
    assert r.exit_code == 2
    flat = r.output.replace("\n", "")
    assert "Backups are not configured" in flat and "--without-backups" in flat
    assert "[[backup.targets]]" in flat  # an error's text is never read as markup


def test_init_configures_the_first_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mamori.backup.service import configured

    monkeypatch.setenv("MAMORI_BACKUP_PASSPHRASE", "correct horse battery staple")
    home = tmp_path / "i"
    r = runner.invoke(
        app,
        ["init", str(home), "--clinic-name", "テスト診療所", "--institution-code", CODE,
         "--backup-keys", str(tmp_path / "offline"), "--backup-target", str(tmp_path / "usb")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert configured(load_settings(home))
    assert (tmp_path / "offline" / "mamori-backup-primary.age").is_file()
    # the trust root travels with the offline recovery keys
    (copy,) = load_settings(home).checkpoint_copies
    assert (tmp_path / "offline" / "audit.vkey").read_text() == (copy / "audit.vkey").read_text()
    r = runner.invoke(app, ["backup", "run", "--instance", str(home)])
    assert r.exit_code == 0, r.output
    # inside the instance is refused for either
    r = runner.invoke(
        app,
        ["init", str(tmp_path / "j"), "--clinic-name", "テスト", "--institution-code", CODE,
         "--backup-keys", str(tmp_path / "j" / "keys"), "--backup-target", str(tmp_path / "u2")],
    )  # fmt: skip
    assert r.exit_code == 2


def test_the_demo_is_reused_not_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a directory the demo lives in one place per user and the next run serves it
    again (each run used to leave a new 190 MB instance behind in /tmp)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    r = runner.invoke(app, ["demo", "--size", "XS", "--no-serve"])
    assert r.exit_code == 0, r.output
    home = tmp_path / "data" / "mamori" / "demo"
    assert (home / "mamori.toml").is_file()
    made = (home / "mamori.toml").stat().st_mtime_ns
    again = runner.invoke(app, ["demo", "--size", "XS", "--no-serve"])
    assert again.exit_code == 0 and "再利用" in again.output, again.output
    assert (home / "mamori.toml").stat().st_mtime_ns == made
    assert sorted(p.name for p in (tmp_path / "data" / "mamori").iterdir()) == [
        "demo",
        "demo-offline-keys",
        "demo-usb",
    ]


def test_detect_run_and_cases_on_an_instance(tmp_path: Path) -> None:
    """`mamori detect run` reads the log since the last pass and says how much it explained;
    `detect cases` lists the queue for a reviewer only."""
    from mamori.authz.roles import Role
    from mamori.clinic import service as clinic_service
    from mamori.clinic.calendar import clinic_today
    from mamori.detection import service as detection
    from mamori.instance import open_instance
    from mamori.patients.schemas import PatientIn
    from mamori.patients.service import get_patient, register_patient

    home = tmp_path / "i"
    _init(home)
    inst = open_instance(home)
    try:
        with inst.transaction(write=True) as s:
            director = inst.actor(s, "admin")
            clinic = clinic_service.the_clinic(s)
            nurse = clinic_service.add_staff(
                s, clinic, login_id="ns", display_name="看護 花子", role=Role.NURSE
            )
            clerk = clinic_service.add_staff(
                s, clinic, login_id="uk", display_name="受付 一郎", role=Role.RECEPTION
            )
            pt = register_patient(
                s,
                director,
                PatientIn(
                    family_name="看護",
                    given_name="花子",
                    family_kana="カンゴ",
                    given_kana="ハナコ",
                    birth_date="1980-01-01",
                    sex="female",
                ),
            )
            detection.link_patient(s, director, nurse.id, pt.id, "self")
            detection.set_roster_day(s, director, clerk.id, clinic_today(), "work", "0:00", "23:59")
        with inst.transaction(write=True) as s:
            get_patient(s, inst.actor(s, "uk"), pt.id)
    finally:
        inst.db.dispose()
    r = runner.invoke(app, ["detect", "run", "--instance", str(home)])
    assert r.exit_code == 0, r.output
    assert "新しい事例 1 件" in r.output and "1 new cases" in r.output, r.output
    r = runner.invoke(app, ["detect", "cases", "--open", "--as", "admin", "--instance", str(home)])
    assert r.exit_code == 0, r.output
    assert "受付 一郎 が 職員 看護 花子（看護師）本人" in r.output and "1 件" in r.output
    r = runner.invoke(app, ["detect", "cases", "--as", "uk", "--instance", str(home)])
    assert r.exit_code != 0 and "detection:review" in r.output
    r = runner.invoke(app, ["detect", "run", "--since", "yesterday", "--instance", str(home)])
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output


def test_incident_open_affected_and_report_folder(tmp_path: Path) -> None:
    """`mamori incident open|list|show|affected|report`: the affected patients of an account
    from the log, the drafts as PDFs, and evidence an outsider verifies without mamori."""
    import subprocess
    import sys

    from pypdf import PdfReader

    from mamori.authz.roles import Role
    from mamori.clinic import service as clinic_service
    from mamori.instance import open_instance
    from mamori.patients.schemas import PatientIn
    from mamori.patients.service import get_patient, register_patient

    home = tmp_path / "i"
    _init(home)
    inst = open_instance(home)
    try:
        with inst.transaction(write=True) as s:
            director = inst.actor(s, "admin")
            clinic = clinic_service.the_clinic(s)
            clinic_service.add_staff(
                s, clinic, login_id="ns", display_name="看護 花子", role=Role.NURSE
            )
            pts = [
                register_patient(s, director, PatientIn(
                    family_name="漏洩", given_name=g, family_kana="ロウエイ", given_kana=k,
                    birth_date="1970-01-01", sex="male", postal_code="113-0033",
                    prefecture="東京都", city="文京区", address_line="本郷1-2-3",
                ))
                for g, k in (("一郎", "イチロウ"), ("二郎", "ジロウ"))
            ]  # fmt: skip
        with inst.transaction(write=True) as s:
            for p in pts:
                get_patient(s, inst.actor(s, "ns"), p.id)
    finally:
        inst.db.dispose()
    at = ["--instance", str(home)]
    r = runner.invoke(app, ["incident", "open", "--as", "admin", "--kind", "unauthorised",
                            "--title", "看護師アカウントの不正使用", *at])  # fmt: skip
    assert r.exit_code == 0 and "No.1 を登録しました" in r.output, r.output
    r = runner.invoke(app, ["incident", "open", "--as", "admin", "--kind", "device", "--title",
                            "x", "--knew-on", "2999-01-01", *at])  # fmt: skip
    assert r.exit_code != 0 and "未来" in r.output, r.output
    r = runner.invoke(app, ["incident", "affected", "1", "--as", "admin", "--user", "ns", "--save",
                            *at])  # fmt: skip
    assert r.exit_code == 0 and "2 人" in r.output and "漏洩 一郎" in r.output, r.output
    r = runner.invoke(app, ["incident", "list", "--as", "admin", *at])
    assert r.exit_code == 0 and "不正アクセス" in r.output, r.output
    r = runner.invoke(app, ["incident", "show", "1", "--as", "admin", *at])
    assert r.exit_code == 0 and "速報" in r.output and "[ ]  1." in r.output, r.output
    r = runner.invoke(app, ["incident", "list", "--as", "ns", *at])
    assert r.exit_code != 0 and "incident:read" in r.output, r.output
    out = tmp_path / "report"
    r = runner.invoke(app, ["incident", "report", "1", "--as", "admin", "--out", str(out), *at])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert "1_漏えい等報告_ppc.pdf" in names and "affected.csv" in names, names
    letters = "".join(
        page.extract_text() or "" for page in PdfReader(out / "2_本人への通知_letters.pdf").pages
    )
    assert "漏洩 一郎 様" in letters and "漏洩 二郎 様" in letters
    ppc = "".join(
        page.extract_text() or "" for page in PdfReader(out / "1_漏えい等報告_ppc.pdf").pages
    )
    assert "2人" in ppc and "不正アクセス" in ppc
    verified = subprocess.run(
        [sys.executable, str(out / "evidence" / "verify_bundle.py"), str(out / "evidence")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0 and "OK: 2 events" in verified.stdout, verified.stdout


def test_checklist_status_and_report(tmp_path: Path) -> None:
    """`mamori checklist status|report`: the year's items with mamori's proposals and the
    printout; a fiscal year before any edition is refused clearly."""
    from pypdf import PdfReader

    home = tmp_path / "i"
    _init(home)
    at = ["--instance", str(home)]
    r = runner.invoke(app, ["checklist", "status", "--as", "admin", *at])
    assert r.exit_code == 0, r.output
    assert "CL" not in r.output.split("\n", 1)[0] and "2-⑩" in r.output and "案:" in r.output
    out = tmp_path / "checklist.pdf"
    r = runner.invoke(app, ["checklist", "report", "--as", "admin", "--year", "2025",
                            "--out", str(out), *at])  # fmt: skip
    assert r.exit_code == 0, r.output
    text = "".join(p.extract_text() or "" for p in PdfReader(out).pages)
    assert "令和7年度" in text and "二要素認証" in text
    r = runner.invoke(app, ["checklist", "status", "--as", "admin", "--year", "2024", *at])
    assert r.exit_code != 0


def test_ledgers_as_csv_and_the_account_review_from_the_command_line(tmp_path: Path) -> None:
    home = tmp_path / "i"
    _init(home)
    at = ["--instance", str(home)]
    src = tmp_path / "assets.csv"
    src.write_bytes("種別,名称,IPアドレス\nサーバ,カルテサーバ,192.168.1.2\n".encode("cp932"))
    r = runner.invoke(app, ["ledger", "import", "assets", str(src), "--as", "admin", *at])
    assert r.exit_code == 0 and "1 行を取り込みました" in r.output, r.output
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["ledger", "export", "assets", "--as", "admin", "--out", str(out), *at])
    assert r.exit_code == 0, r.output
    assert "カルテサーバ" in out.read_text(encoding="utf-8-sig")
    r = runner.invoke(
        app, ["ledger", "export", "printers", "--as", "admin", "--out", str(out), *at]
    )
    assert r.exit_code == 2
    r = runner.invoke(app, ["accounts", "review", "--as", "admin", *at])
    assert r.exit_code == 0 and "管理者権限" in r.output and "前回の棚卸し なし" in r.output


def test_bcp_report_from_the_command_line(tmp_path: Path) -> None:
    from pypdf import PdfReader

    home = tmp_path / "i"
    _init(home)
    out = tmp_path / "bcp.pdf"
    r = runner.invoke(app, ["bcp", "report", "--as", "admin", "--out", str(out),
                            "--instance", str(home)])  # fmt: skip
    assert r.exit_code == 0 and "未承認" in r.output, r.output
    text = "".join(p.extract_text() or "" for p in PdfReader(out).pages)
    assert "事業継続計画" in text and "復旧の優先順位" in text
