"""A ransomware incident walked end to end in Chromium: a receptionist presses
「インシデントかも？」, the security officer opens it and checks the steps off in order, the
affected patients are listed from a synthetic attack on the audit trail, the director decides
it is reportable, the deadlines are shown on every page and reminded (with a frozen clock), and
the PPC draft and a patient's letter come out as PDFs that say what they must."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from mamori.clinic.calendar import clinic_today
from mamori.incidents import service as incidents
from tests.conftest import SAMPLE_PATIENT
from tests.ui.conftest import Site
from tests.ui.test_browser import ARTIFACTS, api, shot, sign_in

pytestmark = [pytest.mark.one_backend]


def _pdf(page: Page, url: str, name: str) -> str:
    """The PDF as the signed-in browser gets it, kept (and drawn as PNG, where poppler is
    installed) under the artifacts for a person to look at; its text for the checks."""
    r = page.request.get(url)
    assert r.status == 200 and r.headers["content-type"] == "application/pdf", r.text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.pdf"
    path.write_bytes(r.body())
    if shutil.which("pdftoppm"):
        subprocess.run(
            ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(path), str(path)[:-4]],
            check=True,
            timeout=60,
        )
    reader = PdfReader(io.BytesIO(r.body()))
    return "\n".join(p.extract_text() or "" for p in reader.pages)


def test_a_ransomware_incident_from_report_to_the_ppc_draft(
    page: Page, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = site.world
    # the patients, and the attack: a stolen nurse's account reading three charts in a burst
    victims = []
    for given, kana, phone in (
        ("一郎", "イチロウ", "0301"),
        ("二郎", "ジロウ", "0302"),
        ("三郎", "サブロウ", "0303"),
    ):
        victims.append(
            api(site, "POST", "/api/v1/patients", "director", json={
                **SAMPLE_PATIENT, "family_name": "被害", "given_name": given,
                "family_kana": "ヒガイ", "given_kana": kana, "phone": f"03-3812-{phone}",
            })["id"]
        )  # fmt: skip
    bystander = api(site, "POST", "/api/v1/patients", "director", json={
        **SAMPLE_PATIENT, "family_name": "無関係", "family_kana": "ムカンケイ",
    })["id"]  # fmt: skip
    for pid in victims:
        api(site, "GET", f"/api/v1/patients/{pid}/chart", "nurse_ben")
    api(site, "GET", f"/api/v1/patients/{bystander}", "dr_aiko")

    # 1. the desk: 「インシデントかも？」 from any page
    sign_in(page, site, "clerk_chika")
    page.goto("/today")
    page.locator("#report-incident").click()
    page.get_by_label("見たこと・起きたこと").fill("受付PCの画面に英語の脅迫文。ファイルが開けない")
    page.get_by_label("場所（どこで）").fill("受付")
    page.get_by_label("端末・機器（どの機械で）").fill("受付PC1")
    page.get_by_label("いつ").fill("今朝9時ごろ")
    page.get_by_label("種類（分かれば）").select_option("ransomware")
    shot(page, "incident-report")
    page.get_by_role("button", name="安全管理者と院長に知らせる").click()
    expect(page.locator("#reported-number")).to_contain_text("No.1")
    expect(page.locator("#contact-chart")).to_contain_text("03-6812-7837")
    shot(page, "incident-reported")
    assert page.request.get("/admin/incidents").status == 403  # the desk reports, not reads
    page.goto("/logout")
    page.context.clear_cookies()

    # 2. the security officer: the alert, the register, the steps in order
    sign_in(page, site, "sec_sae")
    expect(page.locator("[data-incidents-open]")).to_have_text("1")
    page.goto("/admin/incidents")
    page.get_by_role("link", name="No.1").first.click()
    expect(page.locator("#incident-kind")).to_have_text("ランサムウェア・マルウェア感染")
    steps = page.locator("#steps li.step")
    expect(steps.nth(1)).to_contain_text("バックアップへの経路を遮断")
    # only the next step can be checked off: the form is on step 1 alone
    expect(page.locator(".step-form")).to_have_count(1)
    expect(steps.nth(0).locator(".step-form")).to_have_count(1)
    for n, note in ((0, "LANケーブルを抜いた"), (1, "NAS を切り離した"), (2, "")):
        steps.nth(n).locator("input[name=note]").fill(note)
        steps.nth(n).get_by_role("button", name="実施した").click()
        # each check-off is a round trip that re-renders the page: generous on a loaded machine
        expect(steps.nth(n).locator(".done-by")).to_contain_text("伊藤 冴", timeout=20_000)
    expect(steps.nth(3).locator(".step-form")).to_have_count(1)
    # a step out of order is refused by the service too
    r = world.http.post(
        f"/api/v1/incidents/{page.url.rsplit('/', 1)[1]}/steps/6",
        json={"outcome": "done"},
        headers=world.h("sec_sae"),
    )
    assert r.status_code == 409 and "順番" in r.json()["error"]["message_ja"]
    incident_id = page.url.rsplit("/", 1)[1]
    # the affected patients, from the audit trail: the nurse's account, today
    page.get_by_role("link", name="影響を受けた患者を特定・一覧する").click()
    page.get_by_label("アカウント").select_option(label="鈴木 勉（看護師）")
    page.get_by_role("button", name="一覧を見る").click()
    expect(page.locator("#affected-heading")).to_contain_text("プレビュー")
    expect(page.locator("#affected-list tbody tr")).to_have_count(3)
    page.get_by_role("button", name="この範囲をインシデントの影響範囲にする").click()
    expect(page.locator("#affected-heading")).to_contain_text("3人")
    expect(page.locator("#affected-list")).to_contain_text("被害 一郎")
    expect(page.locator("#affected-list")).not_to_contain_text("無関係")
    expect(page.locator("#affected-list")).to_contain_text("検査")
    shot(page, "incident-affected")
    # the officer's other screens: the playbooks and the contact chart
    page.goto("/admin/incidents/playbooks?kind=ransomware")
    expect(page.locator("#playbook-steps li")).to_have_count(14)
    shot(page, "incident-playbooks")
    page.goto("/incidents/contacts")
    expect(page.locator("#contact-gaps")).to_contain_text("保守ベンダー")
    shot(page, "incident-contacts")
    page.goto("/logout")
    page.context.clear_cookies()

    # 3. the director decides; the deadlines run from the day the desk knew
    sign_in(page, site, "director")
    page.goto(f"/admin/incidents/{incident_id}")
    expect(page.locator("#proposal")).to_have_text("報告対象")
    page.get_by_label("報告対象（速報・確報を出し、本人に通知する）").check()
    page.get_by_label("判断の理由").fill("持ち出しを否定できず、診療記録を含むため")
    page.get_by_role("button", name="判断を記録する").click()
    expect(page.locator("#decided")).to_contain_text("報告対象")
    knew = clinic_today()
    expect(page.locator("[data-deadline=prompt]")).to_contain_text(
        f"{knew + dt.timedelta(days=2):%Y/%m/%d} 〜 {knew + dt.timedelta(days=4):%Y/%m/%d}"
    )
    shot(page, "incident-director")
    # the evidence, downloaded as a person would: the list and the audit events behind it
    with page.expect_download() as dl:
        page.locator("#evidence-zip").click()
    saved = dl.value.path()
    assert dl.value.suggested_filename.endswith("-evidence.zip")
    import zipfile

    with zipfile.ZipFile(saved) as zf:
        assert "evidence/verify_bundle.py" in zf.namelist()
        assert zf.read("affected.csv").decode("utf-8-sig").count("\n") == 4  # header + 3

    # the clock moves on three days: every page carries the 速報's deadline, and the reminder
    monkeypatch.setattr(incidents, "today", lambda: knew + dt.timedelta(days=3))
    page.goto("/patients")
    banner = page.locator("#incident-deadlines")
    expect(banner).to_contain_text("速報")
    expect(banner).to_contain_text("あと1日")
    with world.db.session(write=True) as s:
        assert incidents.remind(s, world.actors["director"].clinic_id) == 1
        s.commit()
    page.goto("/admin/reviews")
    expect(page.locator("#alerts")).to_contain_text("速報")
    # the PPC draft and one patient's letter, as PDFs
    text = _pdf(page, f"/admin/incidents/{incident_id}/ppc.pdf", "incident-ppc-report")
    for expected in (
        "漏えい等報告",
        "概要",
        "本人の数",
        "3人",
        "再発防止",
        "【要記入】",
        "ランサムウェア",
    ):
        assert expected in text, expected
    victim = victims[0]
    letter = _pdf(
        page, f"/admin/incidents/{incident_id}/letters.pdf?patient={victim}", "incident-letter"
    )
    for expected in (
        "被害 一郎 様",
        "〒113-0033",
        "お知らせとお詫び",
        "二次被害",
        "お問い合わせ窓口",
    ):
        assert expected in letter, expected
    assert "被害 二郎" not in letter
    # the report marked sent: the 速報 leaves the banner, the 確報 stays on the start page
    page.goto(f"/admin/incidents/{incident_id}")
    page.locator("#which").select_option("prompt")
    page.locator("#sent-form").get_by_role("button", name="記録する").click()
    expect(page.locator("[data-deadline=prompt]")).to_contain_text("送付済み")
    page.goto("/patients")
    expect(page.locator("#incident-deadlines")).to_have_count(0)
    page.goto("/today")
    expect(page.locator("#incident-deadlines")).to_contain_text("確報")
    assert os.path.exists(Path(ARTIFACTS / "incident-ppc-report.pdf"))
