"""A ransomware drill, end to end (BCP 3-4, 4): the main server's instance is destroyed; the
standby started from the offline backup serves the morning's charts read-only in Chromium, with
nothing acknowledged before the last backup missing; it refuses a note; after recovery its log
merges into the recovered main one, and a paper SOAP note and a paper new patient are entered
late under their downtime numbers and reconciled."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pyrage
from playwright.sync_api import Browser, expect
from sqlalchemy import select
from typer.testing import CliRunner

from mamori.audit.models import AuditEvent
from mamori.auth import service as auth
from mamori.auth.factors import seal_secret
from mamori.auth.models import AuthFactor
from mamori.cli.main import app
from mamori.clinic.calendar import JST
from mamori.clinic.models import StaffUser
from mamori.clinical.notes import write_note
from mamori.clinical.schemas import LateEntry, NoteIn
from mamori.continuity import entries
from mamori.continuity import service as continuity
from mamori.instance import open_instance
from mamori.patients.schemas import PatientIn, PatientNew
from mamori.patients.service import register_patient
from tests.conftest import SAMPLE_PATIENT
from tests.system.test_backup import (
    PASS,
    _free_port,
    _instance,
    _keys,
    _listening,
    _run,
    _targets,
)
from tests.ui.support import PASSWORD
from tests.ui.test_browser import shot

runner = CliRunner()


def test_ransomware_drill_end_to_end(browser: Browser, tmp_path: Path) -> None:
    # --- the clinic before the attack: a director with an authenticator app, a morning's
    # patient with a note, the downtime bundle's numbered forms, the last backup
    created = _instance(tmp_path)
    keys = _keys(created.instance, tmp_path / "offline")
    usb = tmp_path / "usb"
    usb.mkdir()
    inst = _targets(created.instance, {"name": "usb", "kind": "dir", "path": str(usb)})
    seed = pyotp.random_base32()
    with inst.transaction(write=True) as s:
        admin = s.scalars(select(StaffUser).where(StaffUser.login_id == "admin")).one()
        auth.set_password(s, admin, PASSWORD)
        s.add(
            AuthFactor(
                user_id=admin.id,
                kind="totp",
                label="認証アプリ",
                secret=seal_secret(inst.settings.token_pepper, admin.id, "totp", seed.encode()),
            )
        )
    with inst.transaction(write=True) as s:
        director = inst.actor(s, "admin")
        patient = register_patient(s, director, PatientIn.model_validate(SAMPLE_PATIENT))
        pid = patient.id
        write_note(s, director, pid, NoteIn(subjective="朝の外来: 咳が続く", plan="経過観察、再診"))
        continuity.add_standby_key(
            s, director, str(pyrage.x25519.Identity.generate().to_public()), "受付USB"
        )
        (tmp_path / "bundles").mkdir()
        continuity.write_bundle(s, director, [tmp_path / "bundles"])  # DT-000001..DT-000040
    assert _run(inst).ok  # the last backup: everything acknowledged before it must survive
    home = inst.settings.home
    inst.db.dispose()

    # --- the attack: the main server's instance is gone
    shutil.rmtree(home)

    # --- the standby, from the offline copy, on another "PC"
    port = _free_port()
    env = {**os.environ, "MAMORI_BACKUP_PASSPHRASE": PASS}
    log = (tmp_path / "standby.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mamori", "standby", "--from", f"dir:{usb}", "--identity",
         str(keys / "mamori-backup-primary.age"), "--dir", str(tmp_path / "sb"),
         "--key-dir", str(tmp_path / "sbkeys"), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert proc.poll() is None, (tmp_path / "standby.log").read_text()
            assert time.monotonic() < deadline, "the standby did not come up"
            time.sleep(0.3)
        ready = time.monotonic() - started
        context = browser.new_context(
            base_url=f"https://localhost:{port}", locale="ja-JP", ignore_https_errors=True
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto("/login")
        expect(page.locator("#standby-banner")).to_contain_text("参照専用")
        page.get_by_label("ログインID").fill("admin")
        page.get_by_label("パスワード").fill(PASSWORD)
        page.get_by_role("button", name="次へ").click()
        page.wait_for_url("**/login/second**")
        page.get_by_label("認証アプリの6桁のコード").fill(pyotp.TOTP(seed).now())
        page.get_by_role("button", name="確認", exact=True).click()
        page.wait_for_url(lambda u: "/login" not in u)
        page.goto(f"/patients/{pid}/chart")
        banner = page.locator("#standby-banner")
        expect(banner).to_contain_text("時点のデータ")
        expect(page.locator("#notes")).to_contain_text("朝の外来: 咳が続く")  # nothing lost
        shot(page, "standby-chart")
        # nothing to write with on the standby: no note form, no 確定, no 病名を追加 …
        expect(page.locator("#note-form")).to_be_hidden()
        expect(page.get_by_role("button", name="確定")).to_have_count(0)
        expect(page.get_by_text("病名を追加")).to_be_hidden()
        expect(page.get_by_role("button", name="ログアウト")).to_be_visible()
        # … and a note sent anyway (a form kept open in another tab) is refused, in Japanese
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
        sent = page.request.post(
            f"/patients/{pid}/notes",
            form={"subjective": "待機系で書こうとした記録", "kind": "soap"},
            headers={
                "X-CSRF-Token": csrf,
                "HX-Request": "true",
                "Origin": page.url.split("/patients")[0],
            },
        )
        assert sent.status == 409 and "参照専用のコピー" in sent.text(), sent.text()
        context.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    print(f"standby ready in {ready:.1f} s (fetch + verify + restore + serving)")
    (segment,) = (tmp_path / "sb" / "log").glob("standby-*.jsonl")  # written at the stop

    # --- recovery: the backup restored on the new server and made the clinic's record
    recovered = tmp_path / "recovered"
    renv = {"MAMORI_BACKUP_PASSPHRASE": PASS}
    out = runner.invoke(
        app,
        ["restore", "--from", f"dir:{usb}", "--identity", str(keys / "mamori-backup-primary.age"),
         "--to", str(recovered), "--key-dir", str(tmp_path / "newkeys")],
        env=renv,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    renv["MAMORI_HOME"] = str(recovered)
    out = runner.invoke(
        app, ["promote", "--reason", "ランサムウェアから復旧", "--login", "admin"], env=renv
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        app, ["standby", "merge-log", "--from", str(tmp_path / "sb"), "--as", "admin"], env=renv
    )
    assert out.exit_code == 0, out.output

    # --- late entry from paper, then reconciliation
    main = open_instance(str(recovered))
    try:
        care = dt.datetime.now(JST) - dt.timedelta(hours=3)
        with main.transaction(write=True) as s:
            director = main.actor(s, "admin")
            write_note(
                s,
                director,
                pid,
                NoteIn(
                    subjective="停電中に受診。咽頭痛。",
                    plan="トローチ",
                    late=LateEntry(downtime_number=7, care_at=care, paper_ref="受付の箱"),
                ),
            )
            register_patient(
                s,
                director,
                PatientNew.model_validate(
                    {**SAMPLE_PATIENT, "family_kana": "テガキ", "given_kana": "イチ",
                     "family_name": "手書", "given_name": "一", "birth_date": "1980-02-03",
                     "downtime_number": 8}
                ),
            )  # fmt: skip
        with main.transaction(write=False) as s:
            rows = entries.reconciliation(s, main.actor(s, "admin"))
            bodies = [json.loads(bytes(b)) for b in s.scalars(select(AuditEvent.body))]
        entered = sorted(e.number for r in rows for e in r.entered)
        assert entered == [7, 8]
        # who read what on the standby is in the recovered main log
        on_standby = [b for b in bodies if "standby" in (b.get("detail") or {})]
        assert any(b["tag"] == "patient:chart:viewed" and str(pid) in b["patients"]
                   for b in on_standby)  # fmt: skip
        assert any(b["tag"] == "auth:login:succeeded" for b in on_standby)
    finally:
        main.close()
    assert segment.is_file()
