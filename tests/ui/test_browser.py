"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright, against
mamori served by uvicorn on 127.0.0.1 (opened as http://localhost:PORT, a secure context for
passkeys). Each role signs in with a second factor and walks its day; screenshots of the main
screens at desktop and tablet width are saved under ``artifacts/screenshots``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pyotp
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from pypdf import PdfReader
from sqlalchemy import select, update

from mamori.auth.models import AuthSession
from mamori.authz.models import BreakGlassGrant, PatientRestriction
from mamori.clinic.calendar import clinic_today
from mamori.db import utcnow
from mamori.detection.models import ContactLog
from tests.conftest import SAMPLE_PATIENT
from tests.ui.conftest import Site
from tests.ui.support import PASSWORD, give_password

ARTIFACTS = Path(os.environ.get("MAMORI_ARTIFACTS", "artifacts")) / "screenshots"
NOTE_SENTENCE = "夜間に胸部圧迫感があり、ニトログリセリン舌下で改善したとのこと"

pytestmark = [pytest.mark.one_backend]


def _capture(page: Page, path: Path) -> None:
    """One artifact picture. Headless Chromium now and then stalls a full-page capture after
    "fonts loaded" on a loaded 2-core machine (once past 60 s, the page having passed every
    check); a second, viewport-only attempt is made, and a capture that still fails is listed
    in ``MISSING.txt`` beside the pictures instead of failing the test it illustrates."""
    for full_page in (True, False):
        try:
            page.screenshot(path=str(path), full_page=full_page, timeout=30_000)
            return
        except PlaywrightTimeoutError:
            continue
    with (path.parent / "MISSING.txt").open("a", encoding="utf-8") as fh:
        fh.write(f"{path.name}: capture timed out twice\n")


def shot(page: Page, name: str) -> None:
    """Desktop and tablet screenshots (artifacts, see ``_capture``); at tablet width nothing
    may overflow sideways — that is the test."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state()
    # a sticky bar is drawn where the viewport was; a page still navigating needs no scroll
    with contextlib.suppress(PlaywrightError):
        page.evaluate("window.scrollTo(0, 0)")
    page.set_viewport_size({"width": 1280, "height": 900})
    _capture(page, ARTIFACTS / f"{name}-desktop.png")
    page.set_viewport_size({"width": 768, "height": 1024})
    _capture(page, ARTIFACTS / f"{name}-tablet.png")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: {overflow}px wider than a tablet"
    page.set_viewport_size({"width": 1280, "height": 900})


def assert_scannable(page: Page, seed: str) -> None:
    """The QR code as the browser draws it decodes (as a phone's camera would read it) to the
    authenticator URI with this secret, and the manual key stays inside its card."""
    picture = Image.open(io.BytesIO(page.locator(".qr svg").screenshot()))
    # QR codes only: a 1-D reader sometimes "sees" an ITF bar code in a QR's modules
    found = zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, found
    uri = found[0].text
    assert uri.startswith("otpauth://totp/") and f"secret={seed}" in uri, uri
    key = page.locator("code.secret").bounding_box()
    card = page.locator("figure.qr").bounding_box()
    assert key and card and key["x"] + key["width"] <= card["x"] + card["width"] + 1
    assert page.locator("code.secret").inner_text().replace(" ", "") == seed
    if not (ARTIFACTS / "enrol-totp-desktop.png").exists():
        shot(page, "enrol-totp")  # once: every persona's first sign-in passes here


def sign_in(page: Page, site: Site, login: str, *, recovery: bool = False) -> None:
    """Password, then the authenticator app: enrolled on first sign-in, its code afterwards."""
    page.goto("/login")
    page.get_by_label("ログインID").fill(login)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="次へ").click()
    page.wait_for_url("**/login/second**")
    seed = site.seeds.get(login)
    if seed is None:
        page.get_by_role("button", name="QR コードを表示").click()
        seed = page.locator("[data-totp-secret]").get_attribute("data-totp-secret") or ""
        site.seeds[login] = seed
        expect(page.locator(".qr svg")).to_be_visible()
        assert_scannable(page, seed)
        page.get_by_label("アプリに表示された6桁のコード").fill(pyotp.TOTP(seed).now())
        page.get_by_role("button", name="登録", exact=True).click()
        expect(page.get_by_text("回復コード").first).to_be_visible()
        site.recovery[login] = page.locator(".codes code").all_inner_texts()
        page.get_by_role("link", name="続ける").click()
    elif recovery:
        page.get_by_text("認証アプリやパスキーが使えない場合").click()
        page.get_by_label("回復コード", exact=False).fill(site.recovery[login].pop())
        page.get_by_role("button", name="回復コードで確認").click()
    else:
        # one step ahead: the code of the current step may already have been used
        code = pyotp.TOTP(seed).at(time.time() + 30)
        page.get_by_label("認証アプリの6桁のコード").fill(code)
        page.get_by_role("button", name="確認", exact=True).click()
    page.wait_for_url(lambda u: "/login" not in u)


def api(site: Site, method: str, path: str, who: str, **kw: Any) -> Any:
    if method == "POST" and path == "/api/v1/patients":
        # the walks share one clinic and each registers the sample patient: deliberately
        # someone else each time (the duplicate warning has its own walk, at the desk)
        kw["json"] = {**kw["json"], "register_anyway": True}
    r = site.world.http.request(method, path, headers=site.world.h(who), **kw)
    assert r.status_code < 300, r.text
    return r.json()


def test_reception_registers_checks_in_and_never_sees_notes(page: Page, site: Site) -> None:
    known = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    api(
        site,
        "POST",
        f"/api/v1/patients/{known['id']}/notes",
        "dr_aiko",
        json={"subjective": NOTE_SENTENCE, "assessment": "狭心症疑い"},
    )
    sign_in(page, site, "clerk_chika")
    expect(page).to_have_url(f"{site.url}/today")
    # search by half-width kana: normalised to the stored full-width katakana
    page.get_by_role("link", name="患者検索").click()
    page.get_by_label("氏名（カナ", exact=False).fill("ﾔﾏﾀﾞ")
    page.get_by_role("button", name="検索").click()
    expect(page.locator("#results")).to_contain_text("山田 花子")
    expect(page.locator("#results")).to_contain_text("昭和23年4月3日")  # 和暦
    shot(page, "reception-search")
    # the same person registered again: warned, and offered the existing record
    page.get_by_role("link", name="新規登録").click()
    expect(page.locator("#sex")).to_have_value("")  # nobody's sex is pre-selected
    page.locator("#family_name").fill("山田")
    page.locator("#given_name").fill("花子")
    page.get_by_label("セイ（カナ）").fill("ヤマダ")
    page.get_by_label("メイ（カナ）").fill("ハナコ")
    page.get_by_label("生年月日").fill("1948-04-03")
    page.get_by_label("性別").select_option("female")
    page.get_by_role("button", name="保存").click()
    expect(page.locator("#duplicates")).to_contain_text(f"No.{known['patient_number']}")
    shot(page, "reception-duplicate-warning")
    page.get_by_role("link", name=f"No.{known['patient_number']} を開く").click()
    page.wait_for_url(f"**/patients/{known['id']}")
    # a new patient, kana typed in hiragana
    page.goto("/patients/new")
    page.locator("#family_name").fill("小林")
    page.locator("#given_name").fill("美咲")
    page.get_by_label("セイ（カナ）").fill("こばやし")
    page.get_by_label("メイ（カナ）").fill("みさき")
    page.get_by_label("生年月日").fill("1990-07-15")
    page.get_by_label("性別").select_option("female")
    page.get_by_label("郵便番号").press_sequentially("1130033")  # 郵便番号 → 住所
    expect(page.locator("#city")).to_have_value("文京区")
    expect(page.locator("#prefecture")).to_have_value("東京都")
    expect(page.locator("#address_line")).to_have_value("本郷")
    page.locator("#address_line").press("End")
    page.locator("#address_line").press_sequentially("7丁目3番1号")
    page.get_by_label("電話番号").fill("090-1234-5678")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url("**/patients/*")
    expect(page.locator(".patient-head")).to_contain_text("コバヤシ ミサキ")
    expect(page.locator("main")).to_contain_text("〒113-0033 東京都文京区本郷7丁目3番1号")
    expect(page.locator(".patient-head")).to_contain_text("平成2年7月15日")
    # an insurer number with a wrong check digit is refused with a Japanese message
    page.get_by_label("保険者番号").fill("06131016")
    page.get_by_label("番号", exact=True).fill("1234")
    page.get_by_role("button", name="保険を追加").click()
    expect(page.locator("#coverage-form .alert.error")).to_contain_text("検証番号")
    page.get_by_label("保険者番号").fill("06131015")
    page.get_by_role("button", name="保険を追加").click()
    expect(page.get_by_role("cell", name="06131015")).to_be_visible()
    shot(page, "reception-patient")
    expect(page.locator("#visit_type")).to_have_value("first")  # no visit yet: 初診
    patient_url = page.url
    page.get_by_role("button", name="受付する").click()
    page.wait_for_url("**/today")
    row = page.locator("tr", has_text="小林 美咲")
    expect(row).to_contain_text("受付")
    expect(row).to_contain_text("初診")
    # checked in twice by mistake: said so, and only a second, explicit click does it
    page.goto(patient_url)
    expect(page.locator("#visit_type")).to_have_value("return")
    page.get_by_role("button", name="受付する").click()
    expect(page.locator("#checkin-error")).to_contain_text("すでに受付済み")
    expect(page.get_by_role("button", name="もう一度受付する")).to_be_visible()
    page.goto("/today")
    expect(page.locator("tr", has_text="小林 美咲")).to_have_count(1)
    row.get_by_role("button", name="→ 診察中").click()
    expect(page.locator("tr", has_text="小林 美咲")).to_contain_text("診察中")
    shot(page, "reception-today")
    # no link to a chart anywhere, and the chart's URL is refused
    page.goto(f"/patients/{known['id']}")
    assert page.locator(f"a[href*='/patients/{known['id']}/chart']").count() == 0
    assert NOTE_SENTENCE not in page.content()
    response = page.goto(f"/patients/{known['id']}/chart")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("権限がありません")
    assert NOTE_SENTENCE not in page.content()
    for url in (
        f"/api/v1/patients/{known['id']}/notes",
        f"/fhir/r4/Patient/{known['id']}/$everything",
    ):
        r = page.request.get(url)
        assert r.status == 403 and NOTE_SENTENCE not in r.text()


def test_nurse_enters_vitals_and_a_nursing_note(page: Page, site: Site) -> None:
    p = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    api(site, "POST", f"/api/v1/patients/{p['id']}/encounters", "clerk_chika", json={})
    sign_in(page, site, "nurse_ben")
    row = page.locator("tr", has_text="山田 花子")
    row.get_by_role("link", name="山田 花子").click()
    page.wait_for_url("**/chart")
    page.get_by_label("体温", exact=False).fill("365")  # 36.5 without its point
    page.get_by_role("button", name="バイタルを記録").click()
    # the browser holds the form back (min/max); the server refuses it too (test_pages.py)
    expect(page.locator("#v-temp:invalid")).to_have_count(1)
    expect(page.locator("#vitals table")).to_contain_text("記録はありません")
    page.get_by_label("体温", exact=False).fill("38.2")
    page.get_by_label("収縮期血圧", exact=False).fill("128")
    page.get_by_label("脈拍", exact=False).fill("88")
    page.get_by_role("button", name="バイタルを記録").click()
    vitals = page.locator("#vitals table")
    expect(vitals).to_contain_text("38.2 ℃ H")  # above the reference range: flagged, in ℃
    expect(vitals).not_to_contain_text("Cel")  # the UCUM code stays in the record
    expect(vitals).to_contain_text("128")
    page.get_by_label("S（主観）").fill("頭痛の訴えあり")
    page.get_by_label("O（客観）").fill("顔色やや不良")
    page.get_by_role("button", name="保存", exact=True).click()
    note = page.locator("article.note").first
    expect(note).to_contain_text("頭痛の訴えあり")
    expect(note).to_contain_text("看護")
    shot(page, "nurse-chart")
    # a typo in the draft is corrected as a draft, not by finalising and amending
    note.get_by_role("link", name="編集").click()
    page.get_by_label("S（主観）").fill("頭痛の訴えあり（前頭部）")
    page.get_by_role("button", name="下書きを保存").click()
    note = page.locator("article.note").first
    expect(note).to_contain_text("頭痛の訴えあり（前頭部）")
    # her own nursing note she finalises (the records' rule), after a confirmation
    page.once("dialog", lambda d: d.accept())
    note.get_by_role("button", name="確定").click()
    expect(page.locator("article.note").first.locator(".tag.ok")).to_be_visible()


def test_physician_writes_finalises_amends_and_prescribes(page: Page, site: Site) -> None:
    p = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    pid = p["id"]
    api(
        site,
        "POST",
        f"/api/v1/patients/{pid}/allergies",
        "dr_aiko",
        json={
            "category": "medication",
            "substance": "アモキシシリン",
            "reaction": "全身の発疹",
            "is_contraindication": True,
            "verification": "confirmed",
        },
    )
    for value in ("6.1", "6.8", "7.4"):
        api(
            site,
            "POST",
            f"/api/v1/patients/{pid}/observations",
            "dr_aiko",
            json={
                "category": "laboratory",
                "code": "3D046",
                "name": "HbA1c",
                "value": value,
                "unit": "%",
                "ref_low": "4.6",
                "ref_high": "6.2",
            },
        )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{pid}/chart")
    expect(page.locator("#allergy-banner")).to_contain_text("薬剤禁忌")
    expect(page.locator("#allergy-banner")).to_contain_text("アモキシシリン")
    lab = page.locator("#labs tr", has_text="HbA1c")
    expect(lab.locator(".flag-H")).to_contain_text("7.4")
    expect(lab.locator("svg.spark polyline")).to_have_count(1)
    # SOAP, finalised on saving
    page.get_by_label("S（主観）").fill("口渇と多尿が続く")
    page.get_by_label("A（評価）").fill("2型糖尿病 血糖コントロール不良")
    page.get_by_label("P（計画）").fill("メトホルミン開始、4週後再診")
    page.get_by_label("保存と同時に確定する", exact=False).check()
    page.get_by_role("button", name="保存", exact=True).click()
    note = page.locator("article.note").first
    expect(note).to_contain_text("確定")
    # amend with a reason; the history shows both versions side by side
    note.get_by_role("link", name="修正").click()
    page.get_by_label("P（計画）").fill("メトホルミン 500mg 開始、2週後再診")
    page.get_by_role("button", name="修正を保存").click()
    expect(page.locator("#amend-reason:invalid")).to_have_count(1)  # a reason is required
    page.get_by_label("修正理由", exact=False).fill("再診間隔の記載誤り")
    page.get_by_role("button", name="修正を保存").click()
    page.wait_for_url("**/history")
    versions = page.locator("article[data-version]")
    expect(versions).to_have_count(3)  # draft, finalised, amended
    expect(versions.nth(0)).to_contain_text("4週後再診")
    expect(versions.nth(2)).to_contain_text("2週後再診")
    expect(versions.nth(2)).to_contain_text("再診間隔の記載誤り")
    shot(page, "physician-history")
    page.goto(f"/patients/{pid}/chart")
    # a suspected diagnosis
    page.get_by_text("病名を追加").click()
    page.get_by_label("病名", exact=True).fill("2型糖尿病")
    page.get_by_label("疑い").check()
    page.get_by_role("button", name="病名を登録").click()
    expect(page.locator("#problems")).to_contain_text("2型糖尿病")
    expect(page.locator("#problems .tag.warn")).to_contain_text("疑い")
    # a prescription against the contraindication stops until a reason is given
    page.get_by_text("処方する（RP 単位）").click()
    page.locator("#rp1_drug1_name").fill("アモキシシリンカプセル250mg")
    page.locator("#rp1_drug1_dose").fill("3")
    page.locator("#rp1_drug1_unit").fill("カプセル")
    page.locator("#rp1_usage").fill("1日3回 毎食後")
    page.locator("#rp1_days").fill("5")
    page.locator("#rp2_drug1_name").fill("メトホルミン塩酸塩錠500mg")
    page.locator("#rp2_drug1_dose").fill("2")
    page.locator("#rp2_drug1_unit").fill("錠")
    page.locator("#rp2_usage").fill("1日2回 朝夕食後")
    page.locator("#rp2_days").fill("14")
    page.get_by_role("button", name="処方を保存").click()
    expect(page.locator("#rx-form .alert.error")).to_contain_text("薬剤禁忌")
    page.locator("#allergy_override_reason").fill("感受性結果より他剤無効、皮膚科と相談済み")
    page.get_by_role("button", name="処方を保存").click()
    expect(page.locator("#rx-warnings")).to_contain_text("アモキシシリンカプセル250mg")
    expect(page.locator("#medications")).to_contain_text("Rp2: メトホルミン塩酸塩錠500mg 2錠")
    # Do処方: the last prescription copied into the form, edited, saved as a new one
    page.goto(f"/patients/{pid}/chart")
    page.locator("#repeat-last").click()
    expect(page.locator("#rx-repeated")).to_contain_text("複写しました")
    expect(page.locator("#rp2_drug1_name")).to_have_value("メトホルミン塩酸塩錠500mg")
    expect(page.locator("#rp2_days")).to_have_value("14")
    shot(page, "physician-repeat-prescription")
    page.locator("#rp1_drug1_name").fill("")  # the antibiotic is not repeated
    page.locator("#rp1_drug1_dose").fill("")
    page.locator("#rp1_drug1_unit").fill("")
    page.locator("#rp1_usage").fill("")
    page.locator("#rp1_days").fill("")
    page.locator("#rp2_days").fill("28")
    page.get_by_role("button", name="処方を保存").click()
    expect(page.locator("#medications")).to_contain_text("28日分")
    issued = api(site, "GET", f"/api/v1/patients/{pid}/medication-requests", "dr_aiko")
    assert len(issued) == 2
    newest = max(issued, key=lambda m: m["created_at"])
    assert [g["days"] for g in newest["rp_groups"]] == [28]
    # a document, uploaded and listed
    page.get_by_text("文書を取り込む").click()
    page.get_by_label("表題").fill("紹介状（眼科）")
    page.get_by_label("種類").select_option("referral")
    page.get_by_label("ファイル", exact=False).set_input_files(
        files=[
            {"name": "letter.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n%%EOF\n"}
        ]
    )
    page.get_by_role("button", name="取り込む").click()
    expect(page.locator("#documents")).to_contain_text("紹介状（眼科）")
    pdf = page.request.get(f"/api/v1/patients/{pid}/chart.pdf")
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    shot(page, "physician-chart")


def test_break_the_glass_records_its_reason(page: Page, site: Site) -> None:
    p = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    api(
        site,
        "PUT",
        f"/api/v1/patients/{p['id']}/restriction",
        "director",
        json={"vip": True, "sensitive": False},
    )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{p['id']}/chart")
    page.wait_for_url("**/break-glass**")
    expect(page.get_by_role("dialog")).to_contain_text("閲覧制限")
    assert "山田" not in page.content()  # nothing about the patient before the reason
    shot(page, "break-glass")
    page.get_by_label("理由", exact=True).select_option("emergency")
    page.get_by_label("具体的な理由").fill("夜間救急で意識レベル低下、既往歴の確認が必要")
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_label("認証アプリの6桁のコード").fill("000000")
    page.get_by_role("button", name="理由を記録して開く", exact=False).click()
    expect(page.locator("#break-glass .alert.error")).to_be_visible()
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_label("認証アプリの6桁のコード").fill(
        pyotp.TOTP(site.seeds["dr_aiko"]).at(time.time() + 30)
    )
    page.get_by_role("button", name="理由を記録して開く", exact=False).click()
    page.wait_for_url("**/chart")
    expect(page.locator(".patient-head")).to_contain_text("山田 花子")
    with site.world.db.session(write=False) as s:
        grant = s.scalars(select(BreakGlassGrant)).one()
        assert grant.reason_code == "emergency"
        assert grant.reason_text == "夜間救急で意識レベル低下、既往歴の確認が必要"
    # the director reviews it on the reviews screen
    page.context.clear_cookies()
    sign_in(page, site, "director")
    page.goto("/today")
    expect(page.locator("nav [data-alerts-waiting]")).to_be_visible()  # the menu says so
    page.goto("/admin/reviews")
    alert_row = page.locator("tr[data-alert='break-glass']")
    expect(alert_row).to_contain_text("山本 愛子")
    # what the director is asked to judge: whose record, and the reason given
    expect(alert_row).to_contain_text(f"No.{p['patient_number']} 山田 花子")
    expect(alert_row.locator("[data-reason]")).to_contain_text("夜間救急で意識レベル低下")
    shot(page, "admin-reviews")
    alert_row.locator("input[name=finding]").fill("救急対応として妥当")
    alert_row.get_by_role("button", name="確認済み").click()
    expect(page.locator("tr[data-alert='break-glass']")).to_have_count(0)


def test_director_manages_staff_sessions_and_sees_backup_status(page: Page, site: Site) -> None:
    sign_in(page, site, "director")
    page.goto("/admin/staff")
    row = page.locator("tr[data-login='director']")
    expect(row).to_contain_text("アプリ")  # 2FA status per account
    expect(page.locator("tr[data-login='clerk_chika']")).to_contain_text("未登録")
    # adding staff needs a re-authentication within the last minutes (sign-in counts)
    with site.world.db.session(write=True) as s:
        s.execute(update(AuthSession).values(reauth_at=utcnow() - dt.timedelta(minutes=10)))
        s.commit()
    page.get_by_label("ログインID", exact=True).fill("nurse_new")
    page.get_by_label("氏名", exact=True).fill("中村 看護")
    page.locator("#new-role").select_option("nurse")
    page.get_by_role("button", name="追加（初期パスワードを発行）").click()
    expect(page.locator("#reauth")).to_be_visible()
    page.locator("#reauth-password").fill(PASSWORD)
    page.locator("#reauth-code").fill(pyotp.TOTP(site.seeds["director"]).at(time.time() + 30))
    page.locator("#reauth button[type=submit]").click()
    expect(page.locator("#reauth-done")).to_be_visible()
    page.get_by_role("button", name="追加（初期パスワードを発行）").click()
    expect(page.locator("#created")).to_contain_text("nurse_new")
    assert len(page.locator("[data-initial-password]").inner_text()) >= 12
    shot(page, "admin-staff")
    # the director's own sessions: revoke the one in another browser
    other = page.context.browser.new_context(base_url=site.url)  # type: ignore[union-attr]
    op = other.new_page()
    sign_in(op, site, "director", recovery=True)  # the authenticator's codes are spent
    page.goto("/account")
    expect(page.locator("table tbody tr")).to_have_count(2)
    # the revoke is an htmx request: wait for its answer (and the page it sends us back to),
    # not for a page load that has already happened, before the other browser tries again
    with page.expect_response("**/account/revoke") as answer:
        page.locator("tr", has_not_text="この端末").get_by_role(
            "button", name="ログアウトさせる"
        ).click()
    assert answer.value.ok
    expect(page.locator("table tbody tr")).to_have_count(1)
    op.goto("/today")
    expect(op).to_have_url(f"{site.url}/login?reason=signin&next=/today")
    other.close()
    page.goto("/admin/settings")
    expect(page.locator("#backup")).to_contain_text("バックアップが設定されていません")
    shot(page, "admin-settings")
    # a restriction saved on a patient's page says it was saved
    vip = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    page.goto(f"/patients/{vip['id']}")
    page.locator("#restriction").get_by_label("VIP").check()
    page.locator("#restriction").get_by_role("button", name="保存").click()
    expect(page.locator("#restriction-saved")).to_contain_text("保存しました")
    expect(page.locator("#restriction").get_by_label("VIP")).to_be_checked()


def test_vendor_signs_in_only_inside_a_window_the_officer_opens(page: Page, site: Site) -> None:
    """安全管理者 opens a maintenance window from the reviews screen; the vendor signs in (2FA)
    inside it, reads, is signed out when the window is closed, and the window's activity
    report names the patient the vendor opened; the director acknowledges it."""
    p = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    give_password(site.world, "vendor_vic")
    vendor = page.context.browser.new_context(base_url=site.url)  # type: ignore[union-attr]
    vp = vendor.new_page()
    vp.goto("/login")
    vp.get_by_label("ログインID").fill("vendor_vic")
    vp.get_by_label("パスワード").fill(PASSWORD)
    vp.get_by_role("button", name="次へ").click()
    expect(vp.locator(".alert.error")).to_contain_text("保守作業の時間枠の外です")
    sign_in(page, site, "sec_sae")
    page.goto("/admin/reviews")
    form = page.locator("#open-window")
    form.get_by_label("業者アカウント").select_option(label="保守 ベンダー（vendor_vic）")
    form.get_by_label("作業票番号").fill("MNT-2026-204")
    form.get_by_label("作業内容・理由").fill("検査機器連携の不具合調査")
    form.get_by_label("時間（分）").fill("60")
    form.get_by_role("button", name="時間枠を開く", exact=False).click()
    row = page.locator("tr[data-window='open']")
    expect(row).to_contain_text("MNT-2026-204")
    shot(page, "admin-vendor-window")
    sign_in(vp, site, "vendor_vic")  # first sign-in: enrols an authenticator app
    expect(vp).to_have_url(f"{site.url}/admin/settings")
    assert vp.goto(f"/patients/{p['id']}/chart").status == 200  # read-only access, logged
    expect(vp.locator("form[hx-post$='/notes']")).to_have_count(0)
    with page.expect_response("**/close") as answer:
        row.get_by_role("button", name="今すぐ閉じる").click()
    assert answer.value.ok
    expect(page.locator("tr[data-window='ended']")).to_have_count(1)
    vp.goto("/today")
    expect(vp).to_have_url(f"{site.url}/login?reason=window&next=/today")
    expect(vp.locator(".alert.info")).to_contain_text("保守作業の時間枠が終了")
    vendor.close()
    page.locator("tr[data-window='ended']").get_by_role("link", name="作業記録").click()
    expect(page.locator(f"#window-report tr[data-patient='{p['id']}']")).to_have_count(1)
    assert int(page.locator("[data-events]").inner_text()) > 0
    shot(page, "admin-vendor-report")
    page.context.clear_cookies()
    sign_in(page, site, "director")
    page.goto("/admin/reviews")
    ended = page.locator("tr[data-window='ended']")
    ended.get_by_label("確認メモ").fill("作業範囲内")
    ended.get_by_role("button", name="報告を確認").click()
    expect(page.locator("tr[data-window='ended']")).to_contain_text("院長 守")


def test_idle_logoff_warns_then_signs_out(page: Page, site: Site) -> None:
    sign_in(page, site, "clerk_chika")
    page.clock.install()  # the page's timers from here on are the test's to move
    page.reload()
    idle = site.world.settings.auth.idle_minutes * 60
    page.clock.fast_forward((idle - 50) * 1000)
    expect(page.locator("#idle-warning")).to_be_visible()
    expect(page.locator("#idle-warning")).to_contain_text("まもなく自動的にログアウト")
    # the server keeps its own clock: an aged session is refused whatever the page does
    with site.world.db.session(write=True) as s:
        aged = utcnow() - dt.timedelta(seconds=idle + 60)
        s.execute(update(AuthSession).values(last_seen_at=aged))
        s.commit()
    page.clock.fast_forward(60 * 1000)
    page.wait_for_url("**/login?reason=idle")
    expect(page.locator(".alert.info")).to_contain_text("自動的にログアウト")
    assert page.goto("/today").url.startswith(f"{site.url}/login")


def test_passkey_enrolment_and_sign_in(page: Page, site: Site) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    page.goto("/login")
    page.get_by_label("ログインID").fill("nurse_ben")
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="次へ").click()
    page.get_by_role("button", name="パスキーを登録").click()
    expect(page.locator("#codes")).to_be_visible()
    assert page.locator("[data-codes] li").count() == 10
    page.get_by_role("link", name="続ける").click()
    page.wait_for_url("**/today")
    page.get_by_role("button", name="ログアウト").click()
    page.wait_for_url("**/login?reason=signout")
    page.get_by_label("ログインID").fill("nurse_ben")
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="次へ").click()
    page.get_by_role("button", name="パスキーで確認").click()
    page.wait_for_url("**/today")
    expect(page.locator(".who")).to_contain_text("鈴木 勉")


@pytest.mark.parametrize(
    ("login", "landing", "menu", "absent"),
    [
        ("scribe_dai", "/patients", ["患者検索", "本日の受付"], ["職員", "アクセス確認", "設定"]),
        ("sec_sae", "/admin/reviews", ["職員", "アクセス確認", "設定"], ["患者検索"]),
        ("audit_aki", "/admin/reviews", ["職員", "アクセス確認"], ["患者検索", "設定"]),
    ],
)
def test_other_roles_land_on_their_own_screens(
    page: Page, site: Site, login: str, landing: str, menu: list[str], absent: list[str]
) -> None:
    """医師事務作業補助者, 安全管理者 and 監査人: signed in with 2FA, each menu holds what the
    role may open and nothing else (a vendor signs in only inside a maintenance window)."""
    sign_in(page, site, login)
    expect(page).to_have_url(f"{site.url}{landing}")
    nav = page.get_by_role("navigation")
    for name in menu:
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    for name in absent:
        expect(nav.get_by_role("link", name=name)).to_have_count(0)
    shot(page, f"{login}-landing")


def test_english_is_switchable(page: Page, site: Site) -> None:
    sign_in(page, site, "clerk_chika")
    page.get_by_role("link", name="English").click()
    expect(page.locator("nav")).to_contain_text("Patients")
    expect(page.locator("h1")).to_contain_text("Reception list")
    page.get_by_role("link", name="日本語").click()
    expect(page.locator("h1")).to_contain_text("受付一覧")


def test_a_scribe_drafts_for_a_physician_who_then_confirms(page: Page, site: Site) -> None:
    """The scribe's SOAP is a proxy entry for the physician chosen on the form; it waits,
    unconfirmed, until that physician finalises it."""
    patient = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    sign_in(page, site, "scribe_dai")
    page.goto(f"/patients/{patient['id']}/chart")
    if page.locator("#new-note").get_attribute("open") is None:  # open while no note exists
        page.locator("#new-note summary").click()
    expect(page.get_by_label("承認する医師（代行入力）")).to_be_visible()
    expect(page.get_by_text("保存と同時に確定する")).to_have_count(0)
    page.get_by_label("S（主観）").fill("代行: 2週間前から咳嗽")
    page.get_by_label("承認する医師（代行入力）").select_option(label="山本 愛子")
    shot(page, "scribe-proxy-note")
    page.locator("#note-form").get_by_role("button", name="保存").click()
    expect(page.get_by_text("代行: 2週間前から咳嗽")).to_be_visible()
    expect(page.locator("#notes").get_by_text("（代行入力:")).to_be_visible()
    shot(page, "scribe-proxy-note-saved")
    notes = api(site, "GET", f"/api/v1/patients/{patient['id']}/notes", "dr_aiko")
    assert [(n["status"], n["is_proxy_entry"]) for n in notes] == [("draft", True)]
    # a diagnosis the scribe records waits for a physician too, marked as such
    page.locator("#problems summary").click()
    page.locator("#display_name").fill("急性気管支炎")
    page.get_by_role("button", name="病名を登録").click()
    problem = page.locator("#problems li", has_text="急性気管支炎")
    expect(problem.locator("[data-unconfirmed]")).to_be_visible()
    expect(problem.get_by_role("button", name="承認する")).to_have_count(0)  # not the scribe's


def test_a_physician_confirms_a_scribes_diagnosis_on_the_chart(page: Page, site: Site) -> None:
    patient = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)
    api(
        site,
        "POST",
        f"/api/v1/patients/{patient['id']}/conditions",
        "scribe_dai",
        json={"display_name": "高脂血症", "icd10": "E78"},
    )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{patient['id']}/chart")
    problem = page.locator("#problems li", has_text="高脂血症")
    expect(problem).to_contain_text("代行入力・医師の承認待ち")
    shot(page, "chart-unconfirmed-diagnosis")
    problem.get_by_role("button", name="承認する").click()
    expect(problem.locator("[data-unconfirmed]")).to_have_count(0)
    (cond,) = api(site, "GET", f"/api/v1/patients/{patient['id']}/conditions", "dr_aiko")
    assert (cond["status"], cond["version"]) == ("active", 2)


def test_the_first_sign_in_asks_for_the_persons_own_password(page: Page, site: Site) -> None:
    from mamori.auth import service as auth
    from mamori.clinic.models import StaffUser

    with site.world.db.session(write=True) as s:
        user = s.get(StaffUser, site.world.actors["nurse_ben"].user_id)
        assert user is not None
        handed_over = "手渡しの初期パスワード-2026"
        auth.set_password(s, user, handed_over, initial=True)  # printed by the director
        s.commit()
    page.goto("/login")
    page.get_by_label("ログインID").fill("nurse_ben")
    page.get_by_label("パスワード").fill(handed_over)
    page.get_by_role("button", name="次へ").click()
    page.wait_for_url("**/login/second**")
    expect(page.get_by_role("heading", name="自分のパスワードの設定")).to_be_visible()
    shot(page, "first-password")
    own = "港の見える丘で珈琲を飲む朝-7"
    page.get_by_label("新しいパスワード（13文字以上", exact=False).fill(own)
    page.get_by_label("新しいパスワード（確認）").fill(own)
    page.get_by_role("button", name="設定して次へ").click()
    expect(page.get_by_role("button", name="QR コードを表示")).to_be_visible()


def test_director_creates_an_integration_and_issues_then_revokes_its_token(
    page: Page, site: Site
) -> None:
    """The staff screen's token section as the director uses it: an integration account, a
    scoped token shown once, which then works with its scope only, and its revocation."""
    sign_in(page, site, "director")
    page.goto("/admin/staff#tokens")
    page.get_by_text("連携用アカウントを作成する").click()
    page.locator("#int-login").fill("rece-link")
    page.locator("#int-name").fill("レセコン連携")
    page.locator("#int-role").select_option("reception")
    page.get_by_role("button", name="作成（パスワードなし・ログイン不可）").click()
    expect(page.locator("tr[data-login='rece-link']")).to_contain_text("連携用（ログインなし）")
    page.get_by_text("トークンを発行する").click()
    page.locator("#token-user").select_option(label="レセコン連携（連携用）")
    page.locator("#token-days").fill("180")
    page.locator("#token-label").fill("レセコン（受付の患者検索）")
    page.get_by_label("患者基本情報の閲覧").check()
    page.get_by_role("button", name="発行（一度だけ表示）").click()
    expect(page.locator("#issued")).to_contain_text("今だけ表示")
    token = page.locator("[data-token]").inner_text().strip()
    assert token.startswith("mmr_")
    row = page.locator("#tokens tbody tr", has_text="レセコン（受付の患者検索）")
    expect(row).to_contain_text("患者基本情報の閲覧")
    expect(row).to_contain_text("有効")
    shot(page, "admin-tokens")
    http, h = site.world.http, {"Authorization": f"Bearer {token}"}
    assert http.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=h).status_code == 200
    assert http.post("/api/v1/patients", json={}, headers=h).status_code == 403  # not in scope
    page.goto("/admin/staff")  # the token is not shown again
    expect(page.locator("[data-token]")).to_have_count(0)
    page.once("dialog", lambda d: d.accept())
    with page.expect_response("**/revoke") as answer:
        row.get_by_role("button", name="失効させる").click()
    assert answer.value.ok
    expect(row).to_contain_text("失効")
    assert http.get("/api/v1/patients", params={"kana": "ヤマ"}, headers=h).status_code == 401


def test_a_nurses_draft_order_reaches_the_physician(page: Page, site: Site) -> None:
    """The nurse's prescription does not vanish: the physician's start page counts it, the
    chart marks it, and one confirmed click issues it."""
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ヤクザイ", "family_name": "薬剤"},
    )
    rx = {
        "rp_groups": [
            {
                "usage": "1日3回毎食後",
                "days": 5,
                "items": [{"drug_name": "カロナール錠200mg", "dose": "1", "unit": "錠"}],
            }
        ]
    }
    made = api(
        site, "POST", f"/api/v1/patients/{patient['id']}/medication-requests", "nurse_ben", json=rx
    )
    assert made["medication_request"]["status"] == "draft"
    give_password(site.world, "dr_kenji")
    sign_in(page, site, "dr_kenji")
    page.goto("/today")
    waiting = page.locator("#awaiting li", has_text="薬剤 花子")
    expect(waiting).to_contain_text("処方の下書き 1")
    shot(page, "physician-awaiting")
    waiting.get_by_role("link").click()
    page.wait_for_url(f"**/patients/{patient['id']}/chart")
    order = page.locator("#medications .rx", has_text="カロナール錠200mg")
    expect(order.locator("[data-draft-order]")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    order.get_by_role("button", name="確認して発行").click()
    expect(page.locator("#medications [data-draft-order]")).to_have_count(0)
    (issued,) = api(
        site, "GET", f"/api/v1/patients/{patient['id']}/medication-requests", "dr_kenji"
    )
    assert issued["status"] == "active"
    assert issued["prescriber_id"] == str(site.world.actors["dr_kenji"].user_id)


def test_a_diagnosis_is_checked_then_ended_from_the_problem_list(page: Page, site: Site) -> None:
    """An invalid ICD-10 code and the same diagnosis twice are refused with a reason; an open
    diagnosis is ended (転帰 治癒, with its date) from the list and leaves it."""
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ビョウメイ", "family_name": "病名"},
    )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{patient['id']}/chart")
    add = page.locator("#problems > details").last
    add.locator("summary").click()
    page.locator("#display_name").fill("急性上気道炎")
    page.locator("#icd10").fill("XYZ")
    page.get_by_role("button", name="病名を登録").click()
    expect(page.locator("#problems .alert.error")).to_contain_text("ICD-10")
    page.locator("#icd10").fill("J06.9")
    page.get_by_role("button", name="病名を登録").click()
    problem = page.locator("#problems li", has_text="急性上気道炎")
    expect(problem).to_contain_text("J06.9")
    page.locator("#problems > details").last.locator("summary").click()
    page.locator("#display_name").fill("急性上気道炎")
    page.get_by_role("button", name="病名を登録").click()
    expect(page.locator("#problems .alert.error")).to_contain_text("すでに登録")
    problem = page.locator("#problems li", has_text="急性上気道炎")
    problem.locator("summary").click()
    problem.get_by_label("転帰", exact=True).select_option("cured")
    problem.get_by_label("転帰日").fill(clinic_today().isoformat())
    shot(page, "chart-condition-outcome")
    problem.get_by_role("button", name="変更を保存").click()
    expect(page.locator("#problems li", has_text="急性上気道炎")).to_have_count(0)
    (cond,) = api(site, "GET", f"/api/v1/patients/{patient['id']}/conditions", "dr_aiko")
    assert (cond["outcome"], cond["version"]) == ("cured", 2)


def test_the_desk_works_from_the_keyboard(page: Page, site: Site) -> None:
    """From the search box to a checked-in patient without the mouse: type, Enter, (↓ to the
    next result), Enter, Enter."""
    for given, kana in (("一郎", "イチロウ"), ("二郎", "ジロウ")):
        api(
            site,
            "POST",
            "/api/v1/patients",
            "clerk_chika",
            json={
                **SAMPLE_PATIENT,
                "family_kana": "キーボード",
                "given_name": given,
                "given_kana": kana,
                "family_name": "鍵盤",
            },
        )
    sign_in(page, site, "clerk_chika")
    page.goto("/patients")
    page.keyboard.type("キーボード")
    page.keyboard.press("Enter")
    page.wait_for_url("**/patients?kana=*")
    first = page.locator("[data-result]").first
    expect(first).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.locator("[data-result]").nth(1)).to_be_focused()
    expect(page.locator("[data-result]").nth(1)).to_contain_text("鍵盤 二郎")
    page.keyboard.press("Enter")
    page.wait_for_url("**/patients/*")
    expect(page.get_by_role("button", name="受付する")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url("**/today")
    expect(page.locator("tr", has_text="鍵盤 二郎")).to_contain_text("初診")


def test_a_long_chart_is_navigated_by_sections_and_its_labs_read_over_time(
    page: Page, site: Site
) -> None:
    """A chronic patient's chart: the section bar jumps (and stays in view), older notes are
    folded, a lab's sparkline says its range and leads to the timeline, whose cells carry the
    H/L flags and whose chosen test is drawn with its scale and values."""
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ケイカ", "family_name": "経過"},
    )
    pid = patient["id"]
    for i in range(9):
        api(
            site,
            "POST",
            f"/api/v1/patients/{pid}/notes",
            "dr_aiko",
            json={
                "subjective": f"定期受診 {i + 1} 回目。" + "血糖自己測定は概ね良好。" * 6,
                "plan": "処方継続",
            },
        )
    hba1c = ("7.9", "7.6", "7.2", "6.9", "6.4", "6.1")
    for month, value in enumerate(hba1c, start=6):
        for code, name, v, low, high, unit in (
            ("4548-4", "HbA1c", value, "4.6", "6.2", "%"),
            ("2345-7", "血糖", str(100 + month * 7), "70", "109", "mg/dL"),
        ):
            api(
                site,
                "POST",
                f"/api/v1/patients/{pid}/observations",
                "dr_aiko",
                json={
                    "category": "laboratory",
                    "code": code,
                    "name": name,
                    "value": v,
                    "unit": unit,
                    "ref_low": low,
                    "ref_high": high,
                    "effective_at": f"2026-{month:02d}-10T01:00:00+00:00",
                },
            )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{pid}/chart")
    nav = page.locator("#chart-nav")
    expect(nav).to_contain_text("経過記録")
    expect(page.locator("#notes article.note:visible")).to_have_count(5)
    expect(page.locator("#older-notes summary")).to_contain_text("それ以前の記録（4件）")
    nav.get_by_role("link", name="経過記録").click()
    expect(page.locator("#notes h2")).to_be_in_viewport()
    expect(nav).to_be_in_viewport()  # the bar stays at the top while the page scrolls
    shot(page, "physician-chart-sections")
    row = page.locator("#labs tr", has_text="HbA1c")
    expect(row.locator("[data-range]")).to_have_text("6.1–7.9（6回）")
    row.locator("a[href*='labs?code=']").click()
    page.wait_for_url("**/labs?code=**")
    trend = page.locator("svg.trend")
    expect(trend).to_be_visible()
    for value in hba1c:
        expect(trend.locator("text.value", has_text=value)).to_have_count(1)
    expect(trend.locator("text.tick", has_text="6")).to_have_count(1)  # the scale: 4, 5 … 8
    expect(trend.locator("rect.band")).to_have_count(1)  # the reference range
    expect(page.locator("#trend-values tbody tr")).to_have_count(6)
    timeline = page.locator("table.timeline")
    expect(timeline.locator("thead th.num")).to_have_count(6)  # one column per day
    first = timeline.locator("tr[data-test='4548-4'] td.num").first  # the newest, on the left
    expect(first).to_have_text("6.1")
    expect(timeline.locator("tr[data-test='4548-4'] td.flag-H")).to_have_count(5)
    expect(timeline.locator("tr[data-test='2345-7'] td.flag-H")).to_have_count(6)
    shot(page, "physician-lab-timeline")


def test_a_physician_prints_a_prescription_and_writes_a_referral(page: Page, site: Site) -> None:
    """From the chart: the issued prescription prints as a 処方箋 (an audited print); a
    referral letter opens drafted from the chart, is finished, saved among the documents and
    opens as a PDF."""
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ショウカイ", "family_name": "紹介"},
    )
    pid = patient["id"]
    api(
        site,
        "POST",
        f"/api/v1/patients/{pid}/conditions",
        "dr_aiko",
        json={"display_name": "狭心症", "is_suspected": True},
    )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{pid}/chart")
    page.get_by_text("処方する（RP 単位）").click()
    page.locator("#rp1_drug1_name").fill("アムロジピン錠5mg")
    page.locator("#rp1_drug1_dose").fill("1")
    page.locator("#rp1_drug1_unit").fill("錠")
    page.locator("#rp1_drug1_locked").check()
    page.locator("#rp1_usage").fill("1日1回 朝食後")
    page.locator("#rp1_days").fill("28")
    page.get_by_role("button", name="処方を保存").click()
    rx = page.locator("#medications .rx", has_text="アムロジピン錠5mg")
    expect(rx).to_contain_text("変更不可")
    link = rx.get_by_role("link", name="処方箋を印刷")
    sheet = page.request.get(link.get_attribute("href") or "")
    assert sheet.status == 200 and sheet.body().startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(sheet.body()))
    text = reader.pages[0].extract_text()
    assert "処　方　箋" in text.replace(" ", "　") or "処 方 箋" in text, text
    assert "アムロジピン錠5mg" in text and "28日分" in text
    page.locator("#write-referral").click()
    page.wait_for_url("**/referrals/new")
    expect(page.locator("#ref-diagnoses")).to_have_value(re.compile("狭心症（疑い）"))
    expect(page.locator("#ref-medications")).to_have_value(re.compile("アムロジピン錠5mg"))
    page.get_by_role("button", name="保存して PDF を作成").click()
    expect(page.locator("#to_institution:invalid")).to_have_count(1)  # the addressee first
    page.get_by_label("紹介先医療機関").fill("東京市立総合病院")
    page.get_by_label("診療科").fill("循環器内科")
    page.locator("#ref-purpose").fill("労作時胸痛の精査をお願いいたします。")
    shot(page, "physician-referral")
    page.get_by_role("button", name="保存して PDF を作成").click()
    page.wait_for_url("**/chart?letter=**")
    expect(page.locator("#letter-saved")).to_contain_text("診療情報提供書を保存しました")
    expect(page.locator("#documents")).to_contain_text(
        "診療情報提供書（東京市立総合病院 循環器内科）"
    )
    href = page.locator("#letter-saved a").get_attribute("href") or ""
    letter = page.request.get(href)
    assert letter.status == 200 and letter.body().startswith(b"%PDF")
    assert "労作時胸痛" in PdfReader(io.BytesIO(letter.body())).pages[0].extract_text()


def test_a_postcode_of_several_areas_or_a_typed_address_is_never_overwritten(
    page: Page, site: Site
) -> None:
    """A postcode shared by two towns offers both; an address already typed is kept, and
    replacing it is a button; an unknown postcode says so."""
    sign_in(page, site, "clerk_chika")
    page.goto("/patients/new")
    page.get_by_label("郵便番号").press_sequentially("498-0000")
    several = page.locator("[data-postcode='several']")
    expect(several.get_by_role("button")).to_have_count(2)
    expect(page.locator("#city")).to_have_value("")  # nothing filled before the choice
    several.get_by_role("button", name="三重県桑名郡木曽岬町").click()
    expect(page.locator("#prefecture")).to_have_value("三重県")
    expect(page.locator("#city")).to_have_value("桑名郡木曽岬町")
    page.get_by_label("郵便番号").fill("")
    page.get_by_label("郵便番号").press_sequentially("1130033")
    differs = page.locator("[data-postcode='differs']")
    expect(differs).to_contain_text("東京都文京区本郷")
    expect(page.locator("#city")).to_have_value("桑名郡木曽岬町")  # the typed address stays
    shot(page, "reception-postcode")
    differs.get_by_role("button", name="この住所に置き換える").click()
    expect(page.locator("#city")).to_have_value("文京区")
    expect(page.locator("#address_line")).to_have_value("本郷")
    page.get_by_label("郵便番号").fill("")
    page.get_by_label("郵便番号").press_sequentially("9999999")
    expect(page.locator("[data-postcode='unknown']")).to_contain_text("見つかりません")


def test_reception_books_moves_cancels_and_checks_in_a_booking(page: Page, site: Site) -> None:
    """予約 at the desk: booked from the patient's page, listed by day and time, moved to
    another time, a second one cancelled (with a confirmation), and today's checked in — the
    booking becomes the visit on 受付一覧."""
    today, tomorrow = clinic_today(), clinic_today() + dt.timedelta(days=1)
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ヨヤク", "family_name": "予約"},
    )
    other = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ヨヤクニ", "family_name": "予約二"},
    )
    api(
        site,
        "POST",
        f"/api/v1/patients/{other['id']}/bookings",
        "clerk_chika",
        json={"date": tomorrow.isoformat(), "time": "11:00", "purpose": "健診結果説明"},
    )
    sign_in(page, site, "clerk_chika")
    page.goto(f"/patients/{patient['id']}")
    page.get_by_text("予約を入れる").click()
    page.get_by_label("予約日").fill(tomorrow.isoformat())
    page.get_by_label("時刻").fill("09:30")
    page.get_by_label("医師").select_option(label="山本 愛子")
    page.get_by_label("目的").fill("定期受診")
    page.get_by_role("button", name="予約する").click()
    page.wait_for_url("**/bookings?start=**")
    day = page.locator("table", has=page.locator("tr[data-booking]")).first
    rows = day.locator("tr[data-booking]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("09:30")  # by time
    expect(rows.nth(0)).to_contain_text("予約 花子")
    expect(rows.nth(0)).to_contain_text("山本 愛子")
    expect(rows.nth(1)).to_contain_text("健診結果説明")
    shot(page, "reception-bookings")
    # moved to today, so that the patient can be checked in
    rows.nth(0).get_by_text("変更", exact=True).click()
    rows.nth(0).get_by_label("予約日").fill(today.isoformat())
    rows.nth(0).get_by_label("時刻").fill("23:55")
    rows.nth(0).get_by_role("button", name="変更を保存").click()
    page.wait_for_url(f"**/bookings?start={today.isoformat()}")
    mine = page.locator("tr[data-booking]", has_text="予約 花子")
    expect(mine).to_contain_text("23:55")
    # the other booking cancelled, after a confirmation naming the patient and the time
    theirs = page.locator("tr[data-booking]", has_text="予約二 花子")
    messages: list[str] = []
    page.once("dialog", lambda d: (messages.append(d.message), d.accept()))
    theirs.get_by_role("button", name="キャンセル").click()
    expect(page.locator("tr[data-booking]", has_text="予約二 花子")).to_have_count(0)
    assert "予約二 花子" in messages[0] and "11:00" in messages[0]
    # today's booking checked in: on 受付一覧 as 受付, with its purpose
    mine.get_by_role("button", name="受付する").click()
    page.wait_for_url("**/today")
    row = page.locator("tr[data-encounter]", has_text="予約 花子")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("受付")
    expect(row).to_contain_text("定期受診")


def test_the_director_sees_when_the_last_downtime_bundle_reached_each_place(
    page: Page, site: Site, tmp_path: Path
) -> None:
    import pyrage

    from mamori.continuity import service as continuity

    director = dataclasses.replace(site.world.actors["director"], channel="cli")
    usb = tmp_path / "usb"
    usb.mkdir()
    with site.world.db.session(write=True) as s:
        key = str(pyrage.x25519.Identity.generate().to_public())
        continuity.add_standby_key(s, director, key, "受付USB")
        continuity.write_bundle(s, director, [usb])
        s.commit()
    sign_in(page, site, "director")
    page.get_by_role("link", name="業務継続").click()
    page.wait_for_url("**/admin/continuity")
    expect(page.locator("#destinations")).to_contain_text(str(usb.resolve()))
    expect(page.locator("#continuity")).to_contain_text("受付USB")
    expect(page.locator("#continuity")).to_contain_text("DT-000001〜DT-000040")
    shot(page, "director-continuity")
    page.goto("/logout")
    sign_in(page, site, "dr_aiko")
    expect(page.get_by_role("link", name="業務継続")).to_have_count(0)
    assert page.request.get("/admin/continuity").status == 403


def test_after_downtime_paper_records_are_entered_and_reconciled(
    page: Page, site: Site, tmp_path: Path
) -> None:
    """事後入力: a physician types a paper SOAP note with its downtime number and time of care;
    the desk registers a paper 新患登録票 by its number; the director sees both reconciled."""
    import pyrage

    from mamori.continuity import service as continuity

    director = dataclasses.replace(site.world.actors["director"], channel="cli")
    with site.world.db.session(write=True) as s:
        key = str(pyrage.x25519.Identity.generate().to_public())
        continuity.add_standby_key(s, director, key, "受付USB")
        continuity.write_bundle(s, director, [tmp_path])  # DT-000001..DT-000040
        s.commit()
    patient = api(
        site,
        "POST",
        "/api/v1/patients",
        "clerk_chika",
        json={**SAMPLE_PATIENT, "family_kana": "ジゴ", "family_name": "事後"},
    )
    sign_in(page, site, "dr_aiko")
    page.goto(f"/patients/{patient['id']}/chart")
    page.get_by_label("S（主観）").fill("停電中に受診。咽頭痛2日。")
    page.get_by_label("P（計画）").fill("トローチ処方（紙の処方控え DT-000013）")
    page.get_by_text("紙の記録用紙からの事後入力").click()
    page.get_by_label("ダウンタイム番号").fill("DT-000012")
    care = (
        dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=9)))
        - dt.timedelta(hours=2)
    ).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("診療日時（用紙の記載）").fill(care)
    page.get_by_label("用紙の保管場所").fill("受付 事後入力済み箱")
    shot(page, "physician-late-entry")
    page.get_by_role("button", name="保存", exact=True).click()
    late = page.locator("#notes [data-late-entry]")
    expect(late).to_contain_text("事後入力 DT-000012")
    expect(late).to_contain_text(care.replace("-", "/").replace("T", " "))
    page.goto("/logout")
    sign_in(page, site, "clerk_chika")
    page.goto("/patients/new")
    page.locator("#family_name").fill("手書")
    page.locator("#given_name").fill("一")
    page.get_by_label("セイ（カナ）").fill("テガキ")
    page.get_by_label("メイ（カナ）").fill("ハジメ")
    page.get_by_label("生年月日").fill("1980-02-03")
    page.get_by_label("性別").select_option("male")
    page.get_by_text("紙の新患登録票から登録する").click()
    page.get_by_label("ダウンタイム番号").fill("40")
    page.get_by_role("button", name="保存").click()
    page.wait_for_url("**/patients/*")
    expect(page.locator(".patient-head")).to_contain_text("テガキ ハジメ")
    page.goto("/logout")
    sign_in(page, site, "director")
    page.goto("/admin/continuity")
    row = page.locator("#reconciliation tbody tr").first
    expect(row).to_contain_text("DT-000012（記録）")
    expect(row).to_contain_text("DT-000040（新患登録）")
    expect(row.locator("td").nth(3)).to_have_text("38")  # still open: 40 issued, 2 entered
    shot(page, "director-reconciliation")
    # every paper used is in: the rest is closed as unused, after a confirmation
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="未使用として閉じる").click()
    row = page.locator("#reconciliation tbody tr").first
    expect(row.locator("td").nth(3)).to_contain_text("閉じた")
    expect(row.get_by_role("button", name="未使用として閉じる")).to_have_count(0)


def test_the_director_records_a_downtime_drill(page: Page, site: Site) -> None:
    """BCP 1-2c: the drill kept as evidence; reaching the bundle without saying how long it
    took is refused with the reason."""
    sign_in(page, site, "director")
    page.goto("/admin/continuity")
    expect(page.locator("#drill-list")).to_contain_text("まだ記録がありません")
    page.get_by_text("訓練を記録する").click()
    page.get_by_label("想定").select_option("cannot-view")
    page.get_by_label("参加者", exact=False).first.fill("院長 守、田中 千佳、鈴木 勉")
    page.get_by_label("うまくいかなかったこと").fill("USBメモリの保管場所を受付が知らなかった")
    page.get_by_label("決めた改善策").fill("保管場所を受付マニュアルに記載")
    page.get_by_role("button", name="記録する").click()
    expect(page.locator("#drill-form .alert.error")).to_contain_text("かかった時間")
    page.get_by_label("到達までの時間（分）").fill("12")
    page.get_by_role("button", name="記録する").click()
    row = page.locator("#drill-list tbody tr").first
    expect(row).to_contain_text("記録を閲覧できない")
    expect(row).to_contain_text("到達 12分")
    expect(row).to_contain_text("保管場所を受付マニュアルに記載")
    shot(page, "director-drill")


def test_the_director_isolates_the_server_and_lifts_it(page: Page, site: Site) -> None:
    """The isolation button: a reason, a confirmation, then every page says so; another
    computer gets the isolation page (the browser here is on the server itself, loopback)."""
    sign_in(page, site, "director")
    page.goto("/admin/continuity")
    page.get_by_text("サーバーを隔離する").click()
    page.get_by_label("理由（見つけたこと）").fill("受付PCで不審な暗号化ファイルを発見")
    messages: list[str] = []
    page.once("dialog", lambda d: (messages.append(d.message), d.accept()))
    page.get_by_role("button", name="隔離する").click()
    expect(page.locator("#isolated-since")).to_contain_text("受付PCで不審な暗号化ファイルを発見")
    assert "隔離" in messages[0]
    expect(page.locator("#isolated")).to_contain_text("隔離中")  # every page's banner
    shot(page, "director-isolated")
    other = site.world.http.get("/today")  # TestClient: not the server's own address
    assert other.status_code == 503 and "隔離中です" in other.text
    page.get_by_label("解除の理由（調査の結果）").fill("業者の調査で感染なしを確認")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="隔離を解除する").click()
    expect(page.locator("#isolated")).to_have_count(0)
    expect(page.get_by_text("サーバーを隔離する")).to_be_visible()
    assert site.world.http.get("/healthz").status_code == 200


def test_the_director_reviews_the_access_cases_quiets_a_pair_and_restricts(
    page: Page, site: Site
) -> None:
    """The insider review: the roster and a colleague's registration as a patient entered on
    their screens, a receptionist's unexplained look at that colleague's record found by the
    pass, read as one sentence, the patient restricted from the queue, the case judged
    appropriate with a reason and the pair quieted; the queue printed."""
    world = site.world
    nurse = str(world.actors["nurse_ben"].user_id)
    clerk = world.actors["clerk_chika"]
    pid = api(site, "POST", "/api/v1/patients", "director", json={
        **SAMPLE_PATIENT, "family_name": "鈴木", "given_name": "勉", "family_kana": "スズキ",
        "given_kana": "ツトム", "birth_date": "1985-05-05",
    })["id"]  # fmt: skip
    sign_in(page, site, "director")
    # the roster: the receptionist works all day today (whatever weekday the test runs on)
    page.goto(f"/admin/roster?week={clinic_today().isoformat()}")
    cell = page.locator(
        f"form.roster-cell:has(input[name=user_id][value='{clerk.user_id}'])"
        f":has(input[name=day][value='{clinic_today().isoformat()}'])"
    )
    cell.locator("select[name=kind]").select_option("work")
    cell.locator("input[name=start]").fill("0:00")
    cell.locator("input[name=end]").fill("23:59")
    cell.get_by_role("button", name="保存").click()
    expect(
        page.locator(
            f"td.entered:has(input[name=user_id][value='{clerk.user_id}'])"
            f":has(input[name=day][value='{clinic_today().isoformat()}'])"
        )
    ).to_be_visible()
    shot(page, "director-roster")
    # the nurse's household facts (the notice first) and their own registration as a patient
    page.goto(f"/admin/staff/{nurse}/facts")
    expect(page.locator("#notice")).to_contain_text("職員への通知")
    page.get_by_label("姓（カナ）").fill("スズキ")
    page.get_by_label("電話番号").fill("03-1111-2222")
    page.get_by_role("button", name="保存").click()
    expect(page.locator("#facts-form .alert.error, .alert.error").first).to_contain_text("通知")
    # what was typed is still there after the refusal
    expect(page.get_by_label("姓（カナ）")).to_have_value("スズキ")
    page.get_by_label("上の通知を本人に渡した（必須）").check()
    page.get_by_role("button", name="保存").click()
    expect(page.get_by_text("通知済み")).to_be_visible()
    expect(page.get_by_label("電話番号")).to_have_value("03-1111-2222")
    number = world.http.get(f"/api/v1/patients/{pid}", headers=world.h("director")).json()[
        "patient_number"
    ]
    page.get_by_label("患者番号", exact=False).fill(str(number))
    page.get_by_label("続柄").select_option("self")
    page.get_by_role("button", name="登録").click()
    expect(page.locator("#links")).to_contain_text(f"本人 · No.{number} 鈴木 勉")
    shot(page, "director-staff-facts")
    # the receptionist looks the colleague up with no booking, visit or call to explain it
    r = world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    assert r.status_code == 200
    page.goto("/admin/detection")
    page.get_by_role("button", name="今すぐ検知を実行").click()
    case = page.locator("#open-cases li.case").first
    expect(case).to_contain_text("医療事務・受付 田中 千佳 が 職員 鈴木 勉（看護師）本人")
    expect(case).to_contain_text("前後1日の予約・受診・記録・電話対応なし")
    expect(page.locator("nav [data-cases-waiting]")).to_have_text("1")
    shot(page, "director-detection-queue")
    pdf = page.request.get("/admin/detection/report.pdf")
    assert pdf.status == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
    assert "不審アクセス確認一覧" in text and "鈴木" in text, text[:300]
    case.get_by_role("link", name="確認・判定する").click()
    expect(page.locator("#case-sentence")).to_contain_text("職員 鈴木 勉（看護師）")
    shot(page, "director-detection-case")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="閲覧制限にする").click()
    expect(page.locator("#case-sentence")).to_be_visible()
    page.get_by_label("問題なし（業務上の理由がある）").check()
    page.get_by_label("理由・確認した内容").fill(
        "本人の依頼で予約確認の電話を受けた（受付簿で確認）"
    )
    page.get_by_label("「問題なし」のとき", exact=False).fill("30")
    page.get_by_role("button", name="判定を記録する").click()
    page.wait_for_url("**/admin/detection", timeout=30_000)
    expect(page.locator("#no-cases")).to_be_visible()
    expect(page.locator("#decided")).to_contain_text("本人の依頼で予約確認の電話を受けた")
    expect(page.locator("#decided")).to_contain_text("抑止")
    shot(page, "director-detection-decided")
    with world.db.session(write=False) as s:
        restriction = s.get(PatientRestriction, uuid.UUID(pid))
        assert restriction is not None and restriction.vip


def test_reception_logs_a_phone_call_in_two_clicks(page: Page, site: Site) -> None:
    pid = api(site, "POST", "/api/v1/patients", "clerk_chika", json=SAMPLE_PATIENT)["id"]
    sign_in(page, site, "clerk_chika")
    page.goto(f"/patients/{pid}")
    page.get_by_text("電話・窓口対応を記録").click()
    page.locator("#contact-form").get_by_role("button", name="検査結果").click()
    expect(page.locator("#contact-logged")).to_be_visible()
    shot(page, "reception-contact-logged")
    with site.world.db.session(write=False) as s:
        rows = s.scalars(select(ContactLog).where(ContactLog.patient_id == uuid.UUID(pid))).all()
        assert [(r.channel, r.topic) for r in rows] == [("phone", "検査結果")]
