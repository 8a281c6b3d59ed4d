"""The downtime bundle opened as the clinic would open it on the day mamori is down: with
Debian's ``age`` and ``tar`` alone, on a key that never lived on the server."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from typer.testing import CliRunner

from mamori.audit.models import AuditEvent
from mamori.cli.main import app
from mamori.clinic.calendar import clinic_today
from mamori.clinical import bookings
from mamori.clinical import service as clinical
from mamori.clinical.schemas import ConditionIn, EncounterIn
from mamori.instance import open_instance
from mamori.patients.schemas import PatientNew
from mamori.patients.service import register_patient
from mamori.restrictions.service import set_flags

runner = CliRunner()
AGE = shutil.which("age")
PEOPLE = (
    ("佐藤", "一郎", "サトウ", "イチロウ", "1950-01-02", "09:00", "定期受診"),
    ("鈴木", "花子", "スズキ", "ハナコ", "1962-05-06", "09:30", "健診結果説明"),
    ("高橋", "次郎", "タカハシ", "ジロウ", "1975-11-20", "10:00", "血圧"),
)


def _pdf_text(data: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def _open(bundle: Path, key: Path, tmp: Path) -> dict[str, bytes]:
    """``age -d -i KEY BUNDLE | tar -x``, as the README says (the Debian binaries)."""
    if AGE is None:
        pytest.fail("Debian's age is missing: .ci/run installs it")
    plain = tmp / "bundle.tar"
    subprocess.run(
        [AGE, "-d", "-i", str(key), "-o", str(plain), str(bundle)], check=True, timeout=60
    )
    out = tmp / "opened"
    out.mkdir()
    subprocess.run(["tar", "-x", "-f", str(plain), "-C", str(out)], check=True, timeout=60)
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_the_days_bundle_opens_with_age_alone_and_holds_every_booked_patient(
    tmp_path: Path,
) -> None:
    home = tmp_path / "i"
    r = runner.invoke(
        app, ["init", str(home), "--clinic-name", "まもり内科", "--institution-code", "1310123455"]
    )
    assert r.exit_code == 0, r.output
    at = ["--instance", str(home)]

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, *at])

    today = clinic_today()
    inst = open_instance(str(home))
    ids = []
    with inst.transaction(write=True) as s:
        actor = inst.actor(s, "admin")
        for family, given, fk, gk, born, time, purpose in PEOPLE:
            p = register_patient(
                s,
                actor,
                PatientNew(
                    family_name=family,
                    given_name=given,
                    family_kana=fk,
                    given_kana=gk,
                    birth_date=dt.date.fromisoformat(born),
                    sex="male",
                ),
            )
            s.flush()
            ids.append(str(p.id))
            bookings.book(
                s,
                actor,
                p.id,
                bookings.BookingIn(date=today, time=dt.time.fromisoformat(time), purpose=purpose),
            )
        s.flush()
        clinical.add_condition(s, actor, p.id, ConditionIn(display_name="本態性高血圧症"))
        clinical.check_in(s, actor, p.id, EncounterIn())  # one has arrived
        set_flags(s, actor, uuid.UUID(ids[1]), vip=True, sensitive=False)
    inst.close()
    key, usb, pc = tmp_path / "standby.txt", tmp_path / "usb", tmp_path / "pc"
    usb.mkdir()
    pc.mkdir()
    # the permission first: the desk cannot make keys or bundles
    r = cli("downtime", "keygen", "--out", str(key), "--label", "受付USB", "--as", "nobody")
    assert r.exit_code != 0 and not key.exists()
    r = cli("downtime", "keygen", "--out", str(key), "--label", "受付USB", "--as", "admin")
    assert r.exit_code == 0, r.output
    assert key.stat().st_mode & 0o777 == 0o600 and "AGE-SECRET-KEY-" in key.read_text()
    assert "AGE-SECRET-KEY-" not in "".join(  # the private half never stays on the server
        p.read_text(errors="ignore")
        for p in home.rglob("*")
        if p.is_file() and p.stat().st_size < 5_000_000
    )
    r = cli("downtime", "bundle", "--out", str(usb), "--out", str(pc), "--as", "admin")
    assert r.exit_code == 0, r.output
    assert "患者 3 人（要約 2）" in r.output and "DT-000001〜DT-000040" in r.output
    (bundle,) = usb.glob("mamori-downtime-*.tar.age")
    assert (pc / bundle.name).read_bytes() == bundle.read_bytes()
    assert b"%PDF" not in bundle.read_bytes()  # encrypted
    files = _open(bundle, key, tmp_path)
    readme = files["README.txt"].decode()
    assert "age -d -i" in readme and "DT-000001" in readme
    sheet = _pdf_text(files["00_受付一覧.pdf"])
    for family, given, *_ in PEOPLE:
        assert f"{family} {given}" in sheet
    assert "09:30" in sheet and "健診結果説明" in sheet and "閲覧制限: 要約なし" in sheet
    summaries = sorted(k for k in files if k.startswith("10_カルテ要約/"))
    assert len(summaries) == 2 and not any("鈴木" in k for k in summaries)  # VIP: none
    takahashi = _pdf_text(files[next(k for k in summaries if "高橋" in k)])
    assert "本態性高血圧症" in takahashi and "カルテ要約" in takahashi
    forms = PdfReader(io.BytesIO(files["20_記録用紙.pdf"]))
    assert len(forms.pages) == 40
    first, last = forms.pages[0].extract_text(), forms.pages[39].extract_text()
    assert "DT-000001" in first and "受付票" in first
    assert "DT-000040" in last and "新患登録票" in last
    contacts = _pdf_text(files["30_連絡体制図.pdf"])  # whom to call, with mamori down
    assert "連絡体制図" in contacts and "03-6812-7837" in contacts
    plan = _pdf_text(files["40_BCP.pdf"])  # the plan itself, with the backups it names
    assert "事業継続計画" in plan and "紙運用" in plan
    # the audit event lists every patient in the bundle
    inst = open_instance(str(home))
    with inst.transaction(write=False) as s:
        (event,) = [
            json.loads(e.body)
            for e in s.scalars(
                select(AuditEvent).where(AuditEvent.tag == "continuity:bundle:written")
            )
        ]
    inst.close()
    assert sorted(event["patients"]) == sorted(ids)
    assert event["detail"]["numbers"] == [1, 40] and event["detail"]["summaries"] == 2
    # a lost USB stick: its key revoked; the next bundle opens only with the new key
    status = cli("downtime", "status", "--as", "admin").output
    (lost_id,) = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", status)
    new_key = tmp_path / "standby2.txt"
    assert (
        cli(
            "downtime", "keygen", "--out", str(new_key), "--label", "待機PC", "--as", "admin"
        ).exit_code
        == 0
    )
    r = cli("downtime", "revoke", lost_id, "--as", "admin")
    assert r.exit_code == 0, r.output
    for old in usb.glob("*.tar.age"):
        old.rename(usb / f"previous-{old.name}")
    r = cli("downtime", "bundle", "--out", str(usb), "--as", "admin")
    assert r.exit_code == 0 and "DT-000041〜DT-000080" in r.output, r.output
    (second,) = usb.glob("mamori-downtime-*.tar.age")
    assert (
        subprocess.run(
            [AGE, "-d", "-i", str(key), "-o", str(tmp_path / "x.tar"), str(second)],
            capture_output=True,
            timeout=60,
        ).returncode
        != 0
    )
    (tmp_path / "again").mkdir()
    assert "README.txt" in _open(second, new_key, tmp_path / "again")
    # a missing destination: a clear error, nothing recorded, the earlier bundle untouched
    r = cli("downtime", "bundle", "--out", str(tmp_path / "unplugged"), "--as", "admin")
    assert r.exit_code == 2 and "書き出し先のフォルダがありません" in r.output
    assert len(list(usb.glob("*.tar.age"))) == 2
    r = cli("downtime", "status", "--as", "admin")
    assert str(usb.resolve()) in r.output and str(pc.resolve()) in r.output


def test_a_drill_is_recorded_from_the_console(tmp_path: Path) -> None:
    home = tmp_path / "i"
    r = runner.invoke(
        app, ["init", str(home), "--clinic-name", "まもり内科", "--institution-code", "1310123455"]
    )
    assert r.exit_code == 0, r.output
    at = ["--instance", str(home), "--as", "admin"]
    base = ["downtime", "drill", "--participants", "院長、受付2名"]
    r = runner.invoke(app, [*base, "--scenario", "cannot-view", *at])  # reached, minutes missing
    assert r.exit_code == 2 and "時間" in r.output
    r = runner.invoke(app, [*base, "--scenario", "someday", *at])
    assert r.exit_code == 2 and "cannot-view" in r.output
    r = runner.invoke(app, [*base, "--scenario", "cannot-enter", "--minutes", "9", *at])
    assert r.exit_code == 0, r.output
    inst = open_instance(str(home))
    with inst.transaction(write=False) as s:
        events = s.scalars(
            select(AuditEvent).where(AuditEvent.tag == "continuity:drill:recorded")
        ).all()
        assert len(events) == 1 and json.loads(events[0].body)["detail"]["reached"] is True
    inst.close()


def test_a_bundle_reaches_the_standby_pc_over_sftp(tmp_path: Path) -> None:
    """The standby PC as a real OpenSSH server on loopback: the bundle lands there and opens
    with age; a server whose host key is not the pinned one gets nothing."""
    from tests.sshd import start_sshd

    home = tmp_path / "i"
    r = runner.invoke(
        app, ["init", str(home), "--clinic-name", "まもり内科", "--institution-code", "1310123455"]
    )
    assert r.exit_code == 0, r.output
    at = ["--instance", str(home), "--as", "admin"]
    key = tmp_path / "standby.txt"
    r = runner.invoke(app, ["downtime", "keygen", "--out", str(key), "--label", "待機PC", *at])
    assert r.exit_code == 0, r.output
    server = start_sshd(tmp_path / "sshd")
    try:
        url = f"sftp://{server.user}@127.0.0.1:{server.port}{server.root}/downtime"
        ssh = ["--key-file", str(server.client_key), "--known-hosts", str(server.known_hosts)]
        r = runner.invoke(app, ["downtime", "bundle", "--out", url, *ssh, *at])
        assert r.exit_code == 0, r.output
        (landed,) = (server.root / "downtime").glob("mamori-downtime-*.tar.age")
        assert not list((server.root / "downtime").glob("*.partial"))
        (tmp_path / "o").mkdir()
        assert "00_受付一覧.pdf" in _open(landed, key, tmp_path / "o")
        wrong = tmp_path / "wrong_known"
        wrong.write_text(
            f"[127.0.0.1]:{server.port} ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIEkK4xRk0Kr9YYq1Y2x8QmWcHf0zZ7w7XfCwq1bXr0aS\n"
        )
        r = runner.invoke(
            app,
            [
                "downtime",
                "bundle",
                "--out",
                url,
                "--key-file",
                str(server.client_key),
                "--known-hosts",
                str(wrong),
                *at,
            ],
        )
        assert r.exit_code == 2 and "待機用PC" in r.output, r.output
        assert len(list((server.root / "downtime").glob("*.tar.age"))) == 1
        r = runner.invoke(app, ["downtime", "status", *at])
        assert url.replace(f"{server.root}/downtime", "") in r.output
    finally:
        server.stop()
