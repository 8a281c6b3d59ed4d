"""The MHLW checklist answered from mamori's own state: each automatic item flips with what it
reads, a いいえ needs a target date inside the fiscal year, answers keep their history, a
proposal that changes after sign-off is flagged, and the auditor reads but never answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import select
from tests.conftest import World

from mamori.audit.models import AuditReview
from mamori.auth.models import AuthFactor, SecurityAlert
from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import StaffUser
from mamori.db import new_id, utcnow
from mamori.detection.models import StaffProfile
from mamori.errors import Forbidden, InvalidInput
from mamori.incidents import service as incidents
from mamori.programme import checklist, evidence
from mamori.programme.models import ChecklistAnswer
from mamori.records.versioning import list_versions

YEAR = checklist.fiscal_year_of(checklist.today())


def _propose(world: World, kind: str, who: str = "director") -> evidence.Proposal:
    with world.db.session(write=True) as s:
        p = evidence.propose(s, world.actors[who], world.settings, kind)
        s.commit()
    assert p is not None
    return p


def _answer(world: World, who: str = "sec_sae", **over: Any) -> ChecklistAnswer:
    args: dict[str, Any] = {
        "year": YEAR, "form": "clinic", "item_id": "CL-3-1", "value": "yes",
        "checked_on": checklist.today(), "target_on": None, **over,
    }  # fmt: skip
    with world.db.session(write=True) as s:
        row = checklist.answer(s, world.actors[who], world.settings, **args)
        s.commit()
        return row


def fill_contact_chart(session: Any, actor: Any) -> None:
    """Someone with a number for every duty the chart must answer."""
    for duty in ("director", "security_officer", "vendor", "police", "hokenjo"):
        incidents.set_contact(
            session, actor, contact_id=None, duty=duty, organisation="連絡先", name="担当",
            deputy="", phone="03-0000-0000", when_to_call="", active=True,
        )  # fmt: skip


def _factor_for_everyone(world: World, clinic_of: str = "director") -> None:
    with world.db.session(write=True) as s:
        users = s.scalars(
            select(StaffUser).where(StaffUser.clinic_id == world.actors[clinic_of].clinic_id)
        )
        for u in users:
            s.add(AuthFactor(id=new_id(), user_id=u.id, kind="totp", secret=b"x"))
        s.commit()


def test_two_factor_counts_every_way_in(world: World) -> None:
    p = _propose(world, "2fa")
    assert p.answer == "no" and p.facts["with_2fa"] == 0 and "未登録" in p.ja
    assert "二要素認証 0/9" in p.ja, p.ja  # nine people, none with a factor
    _factor_for_everyone(world)
    assert _propose(world, "2fa").answer == "yes"
    # an integration account reads with a token alone: a way in without a second factor
    with world.db.session(write=True) as s:
        clinic = s.get(clinic_service.Clinic, world.actors["director"].clinic_id)
        assert clinic is not None
        lab = clinic_service.add_staff(
            s, clinic, login_id="lab", display_name="検査連携", role=Role.NURSE
        )
        lab.kind = "integration"  # no password: it reads with a token alone
        s.commit()
    p = _propose(world, "2fa")
    assert p.answer == "no" and "検査連携" in p.ja, p.ja


def test_an_administrator_added_is_named(world: World) -> None:
    before = _propose(world, "access")
    assert before.answer == "yes" and any("院長 守" in a for a in before.facts["admins"])
    with world.db.session(write=True) as s:
        clinic = s.get(clinic_service.Clinic, world.actors["director"].clinic_id)
        assert clinic is not None
        clinic_service.add_staff(
            s, clinic, login_id="dir2", display_name="副院長 新", role=Role.DIRECTOR
        )
        s.commit()
    after = _propose(world, "access")
    assert len(after.facts["admins"]) == len(before.facts["admins"]) + 1
    assert "副院長 新" in after.ja


def test_a_departed_staff_member_still_active_is_a_no(world: World) -> None:
    assert _propose(world, "accounts").answer == "yes"
    with world.db.session(write=True) as s:
        nurse = world.actors["nurse_ben"]
        prof = StaffProfile(
            id=new_id(), clinic_id=nurse.clinic_id, user_id=nurse.user_id, version=1,
            updated_by_id=world.actors["director"].user_id,
            left_on=checklist.today() - dt.timedelta(days=3),
        )  # fmt: skip
        s.add(prof)
        s.commit()
    p = _propose(world, "accounts")
    assert p.answer == "no" and "鈴木 勉" in p.ja and "退職日" in p.ja
    with world.db.session(write=True) as s:  # an account past its end date, still there
        user = s.get(StaffUser, world.actors["scribe_dai"].user_id)
        assert user is not None
        user.expires_at = utcnow() - dt.timedelta(days=1)
        s.commit()
    p = _propose(world, "accounts")
    assert "利用期限を過ぎても残っている: 高橋 大" in p.ja, p.ja


def test_log_reviews_and_the_contact_chart(world: World) -> None:
    assert _propose(world, "log").answer == "no"
    with world.db.session(write=True) as s:
        s.add(
            AuditReview(
                clinic_id=world.actors["sec_sae"].clinic_id,
                reviewer_id=world.actors["sec_sae"].user_id,
                reviewed_at=utcnow(),
                scope="period",
                through_seq=1,
                outcome="no-issue",
            )
        )
        s.commit()
    assert _propose(world, "log").answer == "yes"
    assert _propose(world, "contacts").answer == "no"
    with world.db.session(write=True) as s:
        fill_contact_chart(s, world.actors["sec_sae"])
        s.commit()
    assert _propose(world, "contacts").answer == "yes"


def test_backups_missing_and_a_failed_drill(world: World) -> None:
    p = _propose(world, "backup")
    assert p.answer == "no" and "設定されていません" in p.ja
    with world.db.session(write=True) as s:
        from mamori.audit.trail import AuditTag, record_system

        record_system(s, AuditTag.BACKUP_DRILLED, {"ok": False, "error": "hash mismatch"})
        s.commit()
    p = _propose(world, "backup")
    assert "失敗" in p.ja and "直近の復元訓練が失敗" in p.ja


def test_a_no_needs_a_target_date_inside_the_fiscal_year(world: World) -> None:
    _, last = checklist.fiscal_range(YEAR)
    with pytest.raises(InvalidInput) as e:
        _answer(world, value="no")
    assert e.value.field == "target_on" and "目標日" in e.value.ja and "target" in e.value.en
    with pytest.raises(InvalidInput):
        _answer(world, value="no", target_on=last + dt.timedelta(days=1))
    with pytest.raises(InvalidInput):
        _answer(world, checked_on=checklist.today() + dt.timedelta(days=1))
    row = _answer(world, value="no", target_on=last)
    assert row.target_on == last
    # two-factor authentication: the official target is 令和9年度
    row = _answer(world, item_id="CL-2-10", value="no", target_on=dt.date(2028, 3, 31))
    assert row.target_on == dt.date(2028, 3, 31)
    with pytest.raises(InvalidInput):
        _answer(world, item_id="CL-2-10", value="no", target_on=dt.date(2028, 4, 1))


def test_answers_keep_their_history_and_a_changed_proposal_is_flagged(world: World) -> None:
    row = _answer(world, value="no", target_on=checklist.fiscal_range(YEAR)[1])
    assert row.proposed == "no" and "連絡体制図" in row.evidence
    with world.db.session(write=True) as s:
        v = checklist.view(s, world.actors["director"], world.settings, YEAR, "clinic")
        assert not v.changed
        fill_contact_chart(s, world.actors["director"])
        s.commit()
    with world.db.session(write=True) as s:
        v = checklist.view(s, world.actors["director"], world.settings, YEAR, "clinic")
        assert [r.item.id for r in v.changed] == ["CL-3-1"]
        assert checklist.changed_count(s, world.actors["director"], world.settings) == 1
        s.commit()
    row = _answer(world, value="yes")
    with world.db.session(write=True) as s:
        versions = list_versions(s, "ChecklistAnswer", row.id)
        assert [v.version for v in versions] == [1, 2]
        assert checklist.changed_count(s, world.actors["director"], world.settings) == 0


def test_the_auditor_reads_and_nobody_else_answers(world: World) -> None:
    with world.db.session(write=True) as s:
        v = checklist.view(s, world.actors["audit_aki"], world.settings, YEAR, "clinic")
        assert len(v.rows) == 19
        with pytest.raises(Forbidden):
            checklist.view(s, world.actors["nurse_ben"], world.settings, YEAR, "clinic")
    for who in ("audit_aki", "dr_aiko", "clerk_chika"):
        with pytest.raises(Forbidden):
            _answer(world, who=who)
    assert world.http.get("/admin/checklist", headers=world.h("audit_aki")).status_code == 200
    r = world.http.post(
        "/admin/checklist",
        data={"year": str(YEAR), "form": "clinic", "item_id": "CL-0", "value": "yes"},
        headers=world.h("audit_aki"),
    )
    assert r.status_code == 403


def test_the_printout_carries_the_answers_and_the_evidence(world: World) -> None:
    _answer(world, item_id="CL-0")
    _answer(world, item_id="CL-3-1", value="no", target_on=checklist.fiscal_range(YEAR)[1])
    r = world.http.get(
        f"/admin/checklist/report.pdf?year={YEAR}&form=clinic", headers=world.h("director")
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(r.content)).pages)
    for expected in ("サイバーセキュリティ対策チェックリスト", checklist.nendo(YEAR), "目標日",
                     "いいえ", "未回答", "別紙", "連絡体制図", "まもり内科"):  # fmt: skip
        assert expected in text, expected
    vendor = world.http.get(
        f"/admin/checklist/report.pdf?year={YEAR}&form=vendor", headers=world.h("audit_aki")
    )
    assert vendor.status_code == 200


def test_fiscal_years_and_editions() -> None:
    assert checklist.fiscal_year_of(dt.date(2026, 3, 31)) == 2025
    assert checklist.fiscal_year_of(dt.date(2026, 4, 1)) == 2026
    assert checklist.fiscal_range(2025) == (dt.date(2025, 4, 1), dt.date(2026, 3, 31))
    assert checklist.nendo(2025) == "令和7年度" and checklist.nendo(2019) == "令和元年度"
    items, carried = checklist.item_set_for(2025, "clinic")
    assert items.edition == "令和7年度版" and not carried and len(items.items) == 19
    items, carried = checklist.item_set_for(2026, "vendor")
    assert carried and items.fiscal_year == 2025
    assert len({i.id for i in items.items}) == len(items.items)


def test_the_account_review_disables_or_keeps_each_flagged_account(world: World) -> None:
    from mamori.errors import ReauthRequired
    from mamori.programme import accounts

    with world.db.session(write=True) as s:
        nurse = world.actors["nurse_ben"]
        s.add(
            StaffProfile(
                id=new_id(), clinic_id=nurse.clinic_id, user_id=nurse.user_id, version=1,
                updated_by_id=world.actors["director"].user_id,
                left_on=checklist.today() - dt.timedelta(days=1),
            )
        )  # fmt: skip
        user = s.get(StaffUser, world.actors["scribe_dai"].user_id)
        assert user is not None
        user.expires_at = utcnow() - dt.timedelta(days=1)
        s.commit()
    with world.db.session(write=True) as s:
        rows = {r.login_id: r for r in accounts.review_list(s, world.actors["audit_aki"])}
        assert "left" in rows["nurse_ben"].flags and rows["nurse_ben"].needs_decision
        assert "expired" in rows["scribe_dai"].flags
        assert "admin" in rows["director"].flags and "vendor" in rows["vendor_vic"].flags
    nurse_id, scribe_id = world.actors["nurse_ben"].user_id, world.actors["scribe_dai"].user_id
    with world.db.session(write=True) as s:
        with pytest.raises(InvalidInput):  # every flagged account needs a decision
            accounts.record_review(
                s, world.actors["director"], decisions={}, finding="", reauth_minutes=5
            )
        with pytest.raises(InvalidInput):  # keeping one needs a reason
            accounts.record_review(
                s, world.actors["director"],
                decisions={nurse_id: ("keep", ""), scribe_id: ("keep", "契約延長中")},
                finding="", reauth_minutes=5,
            )  # fmt: skip
        with pytest.raises(Forbidden):  # the auditor reads, never records
            accounts.record_review(
                s, world.actors["audit_aki"], decisions={}, finding="", reauth_minutes=5
            )
        # disabling needs the director's fresh re-authentication (a token is not one)
        with pytest.raises(ReauthRequired):
            accounts.record_review(
                s, world.actors["director"],
                decisions={nurse_id: ("disable", ""), scribe_id: ("keep", "契約延長中")},
                finding="", reauth_minutes=5,
            )  # fmt: skip
    fresh = dataclasses.replace(world.actors["director"], reauth_at=utcnow())
    with world.db.session(write=True) as s:
        review = accounts.record_review(
            s, fresh,
            decisions={nurse_id: ("disable", ""), scribe_id: ("keep", "契約延長中")},
            finding="四半期の棚卸し", reauth_minutes=5,
        )  # fmt: skip
        s.commit()
        decided = {d["name"]: d["decision"] for d in review.decisions}
        assert decided["鈴木 勉"] == "disabled" and decided["高橋 大"] == "keep"
    with world.db.session(write=True) as s:
        user = s.get(StaffUser, nurse_id)
        assert user is not None and not user.active
    assert "最後のアカウント棚卸し" in _propose(world, "accounts").ja


def test_duties_are_done_from_records_or_by_hand_and_overdue_otherwise(world: World) -> None:
    from mamori.programme import duties

    with world.db.session(write=True) as s:
        views = {v.duty.key: v for v in duties.calendar(s, world.actors["audit_aki"])}
        assert all(v.overdue for v in views.values())  # nothing done yet
        s.add(
            AuditReview(
                clinic_id=world.actors["sec_sae"].clinic_id,
                reviewer_id=world.actors["sec_sae"].user_id,
                reviewed_at=utcnow(), scope="period", through_seq=1, outcome="no-issue",
            )
        )  # fmt: skip
        duties.mark_done(
            s, world.actors["sec_sae"], "patch-check", checklist.today(), "ベンダー確認"
        )
        with pytest.raises(InvalidInput):
            duties.mark_done(s, world.actors["sec_sae"], "no-such", checklist.today())
        with pytest.raises(Forbidden):
            duties.mark_done(s, world.actors["audit_aki"], "bcp-review", checklist.today())
        s.commit()
    with world.db.session(write=True) as s:
        views = {v.duty.key: v for v in duties.calendar(s, world.actors["director"])}
        assert not views["log-review"].overdue and views["log-review"].by_record
        assert views["log-review"].due == checklist.today() + dt.timedelta(days=7)
        assert not views["patch-check"].overdue and not views["patch-check"].by_record
        assert views["bcp-review"].overdue
        names = duties.status(s, world.actors["director"])["names"]
        assert ("BCP（事業継続計画）の見直し", "Review the BCP") in names


def test_training_and_phishing_drills_are_recorded_with_who_is_overdue(world: World) -> None:
    from mamori.programme import duties

    people = [world.actors[w].user_id for w in ("dr_aiko", "nurse_ben", "clerk_chika")]
    with world.db.session(write=True) as s:
        duties.record_training(
            s, world.actors["director"], held_on=checklist.today(), kind="lecture",
            topic="ランサムウェアと不審メール", material="教育支援ポータル", attendees=people,
        )  # fmt: skip
        with pytest.raises(InvalidInput):  # a drill needs its numbers, and sane ones
            duties.record_training(
                s, world.actors["director"], held_on=checklist.today(), kind="phishing-drill",
                topic="訓練メール", material="", attendees=[], sent=10, clicked=11, reported=0,
            )  # fmt: skip
        duties.record_training(
            s, world.actors["director"], held_on=checklist.today(), kind="phishing-drill",
            topic="訓練メール", material="", attendees=[], sent=10, clicked=2, reported=6,
        )  # fmt: skip
        s.commit()
    with world.db.session(write=True) as s:
        view = duties.training(s, world.actors["audit_aki"])
        assert len(view.sessions) == 2
        assert "山本 愛子" not in view.overdue and "院長 守" in view.overdue
        views = {v.duty.key: v for v in duties.calendar(s, world.actors["director"])}
        assert not views["training"].overdue
    r = world.http.get("/admin/training", headers=world.h("audit_aki"))
    assert r.status_code == 200 and "標的型メール訓練" in r.text and "20%" in r.text


def test_the_bcp_is_made_from_the_clinics_state_approved_and_read(world: World) -> None:
    from mamori.errors import NotAllowed
    from mamori.programme import bcp, duties

    with world.db.session(write=True) as s:
        doc = bcp.document(s, world.actors["clerk_chika"], world.settings)  # everyone reads it
        assert doc.approval is None and any("バックアップ" in m for m in doc.missing)
        assert doc.playbook[1]["action"] == "isolate"  # the clinic's own ransomware steps
        with pytest.raises(NotAllowed):  # the security officer runs it; the director approves
            bcp.approve(s, world.actors["sec_sae"], world.settings)
        with pytest.raises(Forbidden):
            bcp.approve(s, world.actors["audit_aki"], world.settings)
        with pytest.raises(InvalidInput):  # nothing approved yet to acknowledge
            bcp.acknowledge(s, world.actors["nurse_ben"])
        first = bcp.approve(s, world.actors["director"], world.settings, "初版")
        s.commit()
        assert first.version == 1 and first.review_on > first.approved_on
    with world.db.session(write=True) as s:
        bcp.acknowledge(s, world.actors["nurse_ben"])
        bcp.acknowledge(s, world.actors["nurse_ben"])  # once is enough
        s.commit()
    with world.db.session(write=True) as s:
        unread = bcp.unread(s, world.actors["director"])
        assert "鈴木 勉" not in unread and "田中 千佳" in unread
        views = {v.duty.key: v for v in duties.calendar(s, world.actors["director"])}
        assert not views["bcp-review"].overdue and views["bcp-review"].by_record
        # a contact changes: the plan no longer matches what the director approved
        incidents.set_contact(
            s, world.actors["director"], contact_id=None, duty="vendor", organisation="保守",
            name="担当", deputy="", phone="03-1111-2222", when_to_call="", active=True,
        )  # fmt: skip
        assert bcp.document(s, world.actors["director"], world.settings).sha256 != first.text_sha256
        s.commit()
    page = world.http.get("/bcp", headers=world.h("clerk_chika"))
    assert (
        page.status_code == 200
        and "読みました" in page.text
        and "承認後に内容が変わっています" in page.text
    )
    pdf = world.http.get("/bcp.pdf", headers=world.h("clerk_chika"))
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "事業継続計画" in text and "バックアップへの経路" in text and "03-1111-2222" in text
    assert world.http.post("/bcp/approve", headers=world.h("clerk_chika")).status_code == 403
    with world.db.session(write=True) as s:
        v = checklist.view(s, world.actors["director"], world.settings, YEAR, "bcp")
        assert not v.carried and len(v.rows) == 23
        rows = {r.item.id: r for r in v.rows}
        assert rows["BCP-2-1"].proposal is not None and rows["BCP-2-1"].proposal.answer == "yes"


def test_the_equipment_and_vendor_ledgers_round_trip_as_csv(world: World) -> None:
    from mamori.programme import ledgers

    # a device that signed in is offered for the ledger
    r = world.http.get("/admin/ledgers", headers=world.h("director"))
    assert r.status_code == 200
    with world.db.session(write=True) as s:
        from mamori.auth.models import AuthSession

        s.add(
            AuthSession(
                id=new_id(), token_hash="x" * 64, user_id=world.actors["clerk_chika"].user_id,
                clinic_id=world.actors["clerk_chika"].clinic_id, device_id="d" * 64,
                stage="full", idle_seconds=900, expires_at=utcnow(), source_ip="192.168.1.20",
                user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0",
            )
        )  # fmt: skip
        s.commit()
    with world.db.session(write=True) as s:
        seen = ledgers.seen_devices(s, world.actors["sec_sae"])
        assert [d.name for d in seen] == ["Windows 10/11 / Chrome"] and seen[0].ip == "192.168.1.20"
        ledgers.add_seen(s, world.actors["sec_sae"], "d" * 64)
        s.commit()
    with world.db.session(write=True) as s:
        assert ledgers.seen_devices(s, world.actors["sec_sae"]) == []
        csv_text = (
            "種別,名称,OS・ファームウェア,IPアドレス,設置場所,管理者,パッチ適用状況,"
            "ウイルス対策,リモート保守,棚卸日,備考\n"
            "サーバ,電子カルテサーバ,Debian 12,192.168.1.2,事務室,院長,毎月,なし,あり,2026-11-30,\n"
            "ネットワーク機器,UTM,FortiOS 7.4,192.168.1.1,事務室,ベンダー,最新,—,あり,,VPN\n"
        )
        assert ledgers.import_assets(s, world.actors["sec_sae"], csv_text) == 2
        with pytest.raises(InvalidInput):  # an unknown kind: nothing half-written
            ledgers.import_assets(s, world.actors["sec_sae"], "種別,名称\n冷蔵庫,x\n")
        with pytest.raises(Forbidden):
            ledgers.import_assets(s, world.actors["audit_aki"], csv_text)
        s.commit()
    with world.db.session(write=True) as s:
        out = ledgers.export_assets(s, world.actors["audit_aki"])
        assert "電子カルテサーバ" in out and "ネットワーク機器" in out and "あり" in out
        assert len(ledgers.assets(s, world.actors["audit_aki"])) == 3
        # the same CSV again updates, never duplicates
        assert ledgers.import_assets(s, world.actors["sec_sae"], out) == 3
        assert len(ledgers.assets(s, world.actors["sec_sae"])) == 3
        ledgers.save_vendor(
            s, world.actors["sec_sae"], None,
            {"name": "まもり保守株式会社", "maintains": "電子カルテ", "remote_route": "VPN",
             "sds_received_on": "2026-04-01",
             "accounts": [str(world.actors["vendor_vic"].user_id)]},
        )  # fmt: skip
        with pytest.raises(InvalidInput):
            ledgers.save_vendor(
                s, world.actors["sec_sae"], None, {"name": "x", "reviewed_on": "昨日"}
            )
        s.commit()
    r = world.http.get("/admin/ledgers/vendors.csv", headers=world.h("audit_aki"))
    assert r.status_code == 200 and "まもり保守株式会社" in r.text and "2026-04-01" in r.text
    up = world.http.post(
        "/admin/ledgers/vendors/import",
        files={"file": ("v.csv", "事業者名,保守対象\n検査連携株式会社,検査結果\n".encode("cp932"))},
        headers=world.h("director"),
    )
    assert up.status_code == 200 and "1 行を取り込みました" in up.text


def test_the_draft_rules_and_the_inventory_are_written_from_the_settings(world: World) -> None:
    r = world.http.get("/admin/rules.md", headers=world.h("audit_aki"))
    assert r.status_code == 200
    assert "運用管理規程（案）" in r.text and "13文字以上" in r.text and "15分" in r.text
    assert "医療事務・受付" in r.text  # the roles table from the code's own policy
    assert "別表（取り扱う情報の一覧）" in r.text and "| 監査証跡" in r.text  # to edit too
    page = world.http.get("/admin/rules", headers=world.h("director"))
    assert "要配慮個人情報" in page.text and "監査証跡" in page.text
    pdf = world.http.get("/admin/rules.pdf", headers=world.h("director"))
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "第5条" in text and "取り扱う情報の一覧" in text
    assert world.http.get("/admin/rules", headers=world.h("nurse_ben")).status_code == 403
    # the clinic corrects a line, adds what mamori does not hold, drops what it does not keep
    from mamori.programme import documents

    with world.db.session(write=True) as s:
        documents.edit_inventory(
            s, world.actors["sec_sae"], name="紙カルテ（2019年以前）",
            classification="要配慮個人情報", location="書庫（施錠）", protection="鍵の管理簿",
            keep="5年",
        )  # fmt: skip
        documents.edit_inventory(
            s, world.actors["sec_sae"], name="職員の世帯情報（不審アクセスの照合用）", hidden=True
        )
        documents.edit_inventory(
            s, world.actors["director"], name="監査証跡（誰がいつ何を見たか・書いたか）",
            keep="永年（院内規程による）",
        )  # fmt: skip
        with pytest.raises(Forbidden):
            documents.edit_inventory(s, world.actors["audit_aki"], name="x")
        s.commit()
    with world.db.session(write=True) as s:
        rows = {k.name: k for k in documents.inventory(s, world.actors["audit_aki"])}
        assert rows["紙カルテ（2019年以前）"].where == "書庫（施錠）"
        assert "職員の世帯情報（不審アクセスの照合用）" not in rows
        audit = rows["監査証跡（誰がいつ何を見たか・書いたか）"]
        assert audit.keep == "永年（院内規程による）" and audit.classification.startswith("機密")


def test_unused_accounts_are_disabled_only_when_the_clinic_turns_it_on(world: World) -> None:
    from mamori.auth.models import AuthSession
    from mamori.programme import accounts

    old = utcnow() - dt.timedelta(days=200)
    with world.db.session(write=True) as s:
        for login in ("nurse_ben", "director", "sec_sae"):
            actor = world.actors[login]
            s.add(
                AuthSession(
                    id=new_id(), token_hash=login.ljust(64, "x"), user_id=actor.user_id,
                    clinic_id=actor.clinic_id, device_id=login, stage="full", idle_seconds=900,
                    expires_at=old, last_seen_at=old, created_at=old,
                )
            )  # fmt: skip
        s.commit()
    with world.db.session(write=True) as s:
        clinic = world.actors["director"].clinic_id
        assert accounts.disable_unused(s, clinic, 0) == []  # off: nothing
        done = accounts.disable_unused(s, clinic, 90)
        s.commit()
    # the nurse went; the director and the only security officer never do
    assert "鈴木 勉" in done and "院長 守" not in done and "伊藤 冴" not in done
    with world.db.session(write=True) as s:
        user = s.get(StaffUser, world.actors["nurse_ben"].user_id)
        assert user is not None and not user.active
        alert = s.scalar(select(SecurityAlert).where(SecurityAlert.kind == "account-disabled"))
        assert alert is not None and "鈴木 勉" in alert.summary
