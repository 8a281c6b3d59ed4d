"""The director answers the MHLW checklist in Chromium: mamori's proposals with dated evidence,
a いいえ refused without a target date, then the state changes (the contact chart filled in)
and the start page says an answer needs checking again; the printout comes out."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import Page, expect

from mamori.incidents import service as incidents
from mamori.programme import checklist
from tests.integration.test_checklist import fill_contact_chart
from tests.ui.conftest import Site
from tests.ui.test_browser import shot, sign_in

pytestmark = [pytest.mark.one_backend]


def test_the_director_answers_the_checklist_and_sees_a_changed_answer(
    page: Page, site: Site
) -> None:
    world = site.world
    sign_in(page, site, "director")
    page.goto("/admin/checklist")
    item = page.locator("#item-CL-3-1")
    expect(item.locator(".proposal")).to_contain_text("いいえ")
    expect(item.locator(".proposal")).to_contain_text("連絡体制図に連絡先または電話番号のない役割")
    # the two-factor item counts the director's own factor, made at sign-in
    expect(page.locator("#item-CL-2-10 .proposal")).to_contain_text("二要素認証")
    # a いいえ without a target date is refused, in Japanese
    item.locator("select[name=value]").select_option("no")
    item.get_by_role("button", name="回答を記録").click()
    expect(page.locator(".alert.error")).to_contain_text("目標日が必要です")
    item = page.locator("#item-CL-3-1")
    item.locator("select[name=value]").select_option("no")
    end = checklist.fiscal_range(checklist.fiscal_year_of(checklist.today()))[1]
    item.locator("input[name=target_on]").fill(end.isoformat())
    item.get_by_role("button", name="回答を記録").click()
    expect(page.locator("#item-CL-3-1 .answer")).to_contain_text("いいえ")
    expect(page.locator("#item-CL-3-1 .answer")).to_contain_text("目標日")
    shot(page, "checklist")
    # the clinic fills in the contact chart: the signed-off いいえ no longer matches
    with world.db.session(write=True) as s:
        fill_contact_chart(s, world.actors["director"])
        s.commit()
    # and an incident whose prompt report is due tomorrow
    with world.db.session(write=True) as s:
        incidents.open_incident(
            s, world.actors["sec_sae"], kind="ransomware", title="受付PCに身代金要求",
            seen="", knew_on=checklist.today() - dt.timedelta(days=3),
        )  # fmt: skip
        s.commit()
    page.goto("/today")
    # the director's start page at a glance: the APPI deadline, the changed answer, the duties
    expect(page.locator("#incident-deadlines")).to_contain_text("速報")
    expect(page.locator("#duties-overdue")).to_contain_text("監査証跡（アクセスログ）の確認")
    expect(page.locator("#checklist-changed")).to_contain_text("1 件")
    expect(page.locator("[data-checklist-changed]")).to_have_text("1")
    shot(page, "director-start-checklist")
    page.locator("#checklist-changed").get_by_role("link", name="確認する").click()
    expect(page.locator("#changed")).to_contain_text("3-①")
    r = page.request.get("/admin/checklist/report.pdf")
    assert r.status == 200 and r.body().startswith(b"%PDF")
    # the account review: the director keeps the vendor with a reason, records the review
    page.get_by_role("link", name="アカウント棚卸し").first.click()
    expect(page.locator("#accounts")).to_contain_text("管理者権限")
    shot(page, "account-review")
    page.get_by_label("所見（任意）").fill("四半期の棚卸し")
    page.get_by_role("button", name="棚卸しを記録する").click()
    expect(page.locator("#last-review")).to_contain_text("院長 守")
    page.get_by_role("link", name="業務カレンダー").first.click()
    expect(page.locator("[data-duty=account-review]")).to_contain_text("記録から")
    shot(page, "duties")
    page.get_by_role("link", name="研修・訓練の記録").first.click()
    page.get_by_label("内容 *").fill("ランサムウェアと不審メール")
    page.get_by_label("院長 守").check()
    page.get_by_role("button", name="記録する").click()
    expect(page.locator("#sessions")).to_contain_text("ランサムウェアと不審メール")
    shot(page, "training")
    # the BCP: approved by the director, then read
    page.get_by_role("link", name="BCP").first.click()
    page.get_by_role("button", name="院長としてこの内容を承認する").click()
    expect(page.locator("#bcp-approval")).to_contain_text("第1版")
    page.locator("#bcp-ack").click()
    expect(page.locator("#bcp-read")).to_be_visible()
    shot(page, "bcp")
    page.get_by_role("link", name="機器・委託先の台帳").first.click()
    expect(page.locator("#seen-devices")).to_contain_text("Chrome")  # this very browser
    page.locator("#seen-devices").get_by_role("button", name="台帳に追加").first.click()
    expect(page.locator("#assets")).to_contain_text("Chrome")
    shot(page, "ledgers")
    page.get_by_role("link", name="運用管理規程・情報の一覧").first.click()
    expect(page.locator("#rules-text")).to_contain_text("第5条（認証）")
    shot(page, "rules")
