"""Detection through the real services and audit trail: an access explained by the clinic's
own data raises nothing; an unexplained look at a colleague or a household member becomes a
case with its sentence; the review queue is the director's and the security officer's only,
and every decision is audited and recorded as a log review."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import SAMPLE_PATIENT, World

from mamori.audit.models import AuditEvent, AuditReview
from mamori.authz.models import PatientRestriction
from mamori.clinic.calendar import clinic_today
from mamori.clinic.service import the_clinic
from mamori.detection import service
from mamori.detection.models import DetectionCase
from mamori.errors import Forbidden, InvalidInput, NotFound

ALL_DAY = ("work", "0:00", "23:59")


def _on_duty(world: World, *logins: str) -> None:
    """Everyone named works all day today (the default roster would make a Sunday a day off)."""
    with world.db.session(write=True) as s:
        for login in logins:
            service.set_roster_day(
                s, world.actors["director"], world.actors[login].user_id, clinic_today(), *ALL_DAY
            )
        s.commit()


def _register(world: World, **over: Any) -> str:
    r = world.http.post(
        "/api/v1/patients", json={**SAMPLE_PATIENT, **over}, headers=world.h("director")
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _run(world: World) -> service.RunSummary:
    with world.db.session(write=True) as s:
        clinic = the_clinic(s)
        out = service.run(s, clinic.id, tier="on-demand")
        s.commit()
    return out


def _cases(world: World, who: str = "director", status: str = "open") -> list[dict[str, Any]]:
    r = world.http.get(f"/api/v1/detection/cases?status={status}", headers=world.h(who))
    assert r.status_code == 200, r.text
    return list(r.json())


def test_a_receptionist_opening_a_colleagues_record_is_a_case_with_the_facts(world: World) -> None:
    _on_duty(world, "clerk_chika", "nurse_ben")
    pid = _register(world, family_name="鈴木", given_name="勉", family_kana="スズキ")
    with world.db.session(write=True) as s:
        service.link_patient(
            s, world.actors["director"], world.actors["nurse_ben"].user_id, uuid.UUID(pid), "self"
        )
        s.commit()
    assert (
        world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika")).status_code == 200
    )
    summary = _run(world)
    assert summary.accesses >= 1 and summary.opened >= 1
    cases = _cases(world)
    mine = [c for c in cases if c["patient_id"] == pid]
    assert len(mine) == 1, cases
    case = mine[0]
    assert "R1" in case["rules"] and case["user_id"] == str(world.actors["clerk_chika"].user_id)
    # one sentence of facts: who, whose record, what, how often, what was missing
    s = case["sentence"]
    assert "医療事務・受付 田中 千佳" in s and "職員 鈴木 勉（看護師）" in s, s
    assert "1回閲覧" in s and "前後1日の予約・受診・記録・電話対応なし" in s, s
    assert case["rules_ja"] and all(case["rules_ja"])
    # the same log read again gives the same case, not a second one (deterministic)
    _run(world)
    assert len([c for c in _cases(world) if c["patient_id"] == pid]) == 1


def test_a_visit_today_or_a_logged_call_explains_the_reads_and_raises_nothing(
    world: World,
) -> None:
    _on_duty(world, "clerk_chika", "dr_aiko", "nurse_ben")
    visited = _register(world)
    called = _register(world, given_name="太郎", given_kana="タロウ", birth_date="1950-01-01")
    # a visit: checked in by the clerk, seen by the physician
    r = world.http.post(
        f"/api/v1/patients/{visited}/encounters",
        json={"attending_id": str(world.actors["dr_aiko"].user_id)},
        headers=world.h("clerk_chika"),
    )
    assert r.status_code == 201, r.text
    assert world.http.get(f"/patients/{visited}/chart", headers=world.h("dr_aiko")).status_code in (
        200,
        404,
    )
    world.http.get(f"/api/v1/patients/{visited}/notes", headers=world.h("dr_aiko"))
    world.http.get(f"/api/v1/patients/{visited}/notes", headers=world.h("nurse_ben"))
    # a phone question: logged in the 電話対応 record, then the details looked up
    r = world.http.post(
        f"/api/v1/patients/{called}/contacts",
        json={"channel": "phone", "topic": "予約"},
        headers=world.h("clerk_chika"),
    )
    assert r.status_code == 201, r.text
    world.http.get(f"/api/v1/patients/{called}", headers=world.h("clerk_chika"))
    world.http.get(f"/api/v1/patients/{called}", headers=world.h("nurse_ben"))
    summary = _run(world)
    assert summary.accesses >= 4
    assert summary.explained == summary.accesses, summary
    assert _cases(world) == []


def test_the_household_match_needs_the_surname_and_an_address_or_phone(world: World) -> None:
    _on_duty(world, "clerk_chika")
    same_home = _register(world)  # ヤマダ, 03-3812-0000
    namesake = _register(
        world,
        given_name="次郎",
        given_kana="ジロウ",
        birth_date="1960-02-02",
        phone="06-0000-1111",
        address_line="別町9-9",
        city="大阪市",
        prefecture="大阪府",
    )
    with world.db.session(write=True) as s:
        service.set_profile(
            s,
            world.actors["director"],
            world.actors["clerk_chika"].user_id,
            family_kana="やまだ",
            postal_code="",
            address="",
            phone="03-3812-0000",
            notice_given=True,
        )
        s.commit()
    for pid in (same_home, namesake):
        world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    _run(world)
    by_patient = {c["patient_id"]: c for c in _cases(world)}
    assert "R2" in by_patient[same_home]["rules"]
    assert "同じ世帯と思われる患者" in by_patient[same_home]["sentence"]
    assert namesake not in by_patient  # a shared surname alone is never enough


def test_household_facts_need_the_staff_notice_and_are_sealed(world: World) -> None:
    with world.db.session(write=True) as s:
        with pytest.raises(InvalidInput) as refused:
            service.set_profile(
                s,
                world.actors["director"],
                world.actors["nurse_ben"].user_id,
                family_kana="スズキ",
                postal_code="",
                address="本郷1-2-3",
                phone="",
                notice_given=False,
            )
        assert refused.value.field == "notice"
        service.set_profile(
            s,
            world.actors["director"],
            world.actors["nurse_ben"].user_id,
            family_kana="スズキ",
            postal_code="",
            address="本郷1-2-3",
            phone="",
            notice_given=True,
        )
        s.commit()
    with world.db.engine.connect() as c:
        raw = c.exec_driver_sql("SELECT * FROM staff_profile").fetchall()
    assert raw and "本郷".encode() not in repr(raw).encode() and "スズキ" not in repr(raw)


def test_the_queue_is_the_reviewers_only_and_every_decision_is_audited(world: World) -> None:
    _on_duty(world, "clerk_chika", "nurse_ben")
    pid = _register(world)
    with world.db.session(write=True) as s:
        service.link_patient(
            s, world.actors["director"], world.actors["nurse_ben"].user_id, uuid.UUID(pid), "family"
        )
        s.commit()
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    _run(world)
    (case,) = _cases(world)
    assert "の家族" in case["sentence"]
    for who in ("nurse_ben", "clerk_chika", "dr_aiko", "audit_aki", "scribe_dai"):
        assert world.http.get("/api/v1/detection/cases", headers=world.h(who)).status_code == 403
        r = world.http.post(
            f"/api/v1/detection/cases/{case['id']}/review",
            json={"outcome": "appropriate", "reason": "x"},
            headers=world.h(who),
        )
        assert r.status_code == 403
    # another clinic's reviewer finds nothing of this clinic's, and cannot decide its case
    other = dataclasses.replace(
        world.actors["director"], clinic_id=world.actors["dr_chen"].clinic_id
    )
    with world.db.session(write=True) as s:
        assert service.list_cases(s, other) == []
        with pytest.raises(NotFound):
            service.decide(s, other, uuid.UUID(case["id"]), outcome="appropriate", reason="x")
    assert len(_cases(world, "sec_sae")) == 1  # the security officer reviews too
    # a decision needs a reason; quieting is for a pair judged appropriate
    r = world.http.post(
        f"/api/v1/detection/cases/{case['id']}/review",
        json={"outcome": "follow-up", "reason": "確認する", "suppress_days": 30},
        headers=world.h("director"),
    )
    assert r.status_code == 422
    r = world.http.post(
        f"/api/v1/detection/cases/{case['id']}/review",
        json={
            "outcome": "appropriate",
            "reason": "家族の受診予約の電話を受けた",
            "suppress_days": 30,
        },
        headers=world.h("director"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "appropriate"
    assert r.json()["suppress_until"] == (clinic_today() + dt.timedelta(days=30)).isoformat()
    r = world.http.post(
        f"/api/v1/detection/cases/{case['id']}/review",
        json={"outcome": "follow-up", "reason": "again"},
        headers=world.h("director"),
    )
    assert r.status_code == 409
    with world.db.session(write=False) as s:
        tags = list(s.scalars(select(AuditEvent.tag).order_by(AuditEvent.seq)))
        reviews = list(s.scalars(select(AuditReview).where(AuditReview.scope == "detection-case")))
    assert "detection:case:reviewed" in tags and "detection:queue:viewed" in tags
    assert "detection:pass:completed" in tags
    assert len(reviews) == 1 and reviews[0].outcome == "no-issue"
    # quieted: the same pair again opens no case while the suppression lasts
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    _run(world)
    assert _cases(world) == []


def test_a_patient_in_a_case_can_be_restricted_from_the_queue(world: World) -> None:
    _on_duty(world, "clerk_chika", "nurse_ben")
    pid = _register(world)
    with world.db.session(write=True) as s:
        service.link_patient(
            s, world.actors["director"], world.actors["nurse_ben"].user_id, uuid.UUID(pid), "self"
        )
        s.commit()
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    _run(world)
    (case,) = _cases(world)
    with world.db.session(write=True) as s:
        service.restrict_patient(s, world.actors["director"], uuid.UUID(case["id"]))
        s.commit()
    with world.db.session(write=False) as s:
        row = s.get(PatientRestriction, uuid.UUID(pid))
        assert row is not None and row.vip
    # the security officer reviews but may not change restrictions
    with world.db.session(write=True) as s, pytest.raises(Forbidden):
        service.restrict_patient(s, world.actors["sec_sae"], uuid.UUID(case["id"]))


def test_leaving_date_makes_any_use_of_the_account_an_immediate_case(world: World) -> None:
    _on_duty(world, "clerk_chika")
    pid = _register(world)
    with world.db.session(write=True) as s:
        service.set_profile(
            s,
            world.actors["director"],
            world.actors["clerk_chika"].user_id,
            family_kana="タナカ",
            postal_code="",
            address="",
            phone="",
            notice_given=True,
            left_on=clinic_today(),
        )
        s.commit()
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    with world.db.session(write=True) as s:
        summary = service.run(s, the_clinic(s).id, tier="immediate")
        s.commit()
    assert summary.opened == 1
    (case,) = _cases(world)
    assert case["tier"] == "immediate" and "B8" in case["rules"]
    assert "退職日以降" in case["sentence"]
    with world.db.session(write=False) as s:
        cases = list(s.scalars(select(DetectionCase)))
    assert cases[0].patient_id is None


def test_the_first_pass_reads_the_last_eight_weeks_of_an_existing_log(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clinic that turns detection on after years of use: its first pass starts eight weeks
    before the newest event, not at the first event ever written."""
    from mamori.audit import trail
    from mamori.db import utcnow

    pid = _register(world)
    old = utcnow() - dt.timedelta(days=100)
    monkeypatch.setattr(trail, "utcnow", lambda: old)
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    monkeypatch.undo()
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("nurse_ben"))
    with world.db.session(write=True) as s:
        first_old = s.scalar(select(AuditEvent.seq).where(AuditEvent.recorded_at <= old))
        summary = service.run(s, the_clinic(s).id, tier="on-demand")
        s.commit()
    assert first_old is not None and summary.from_seq >= first_old
    assert summary.accesses == 1  # the nurse's read only; the clerk's is 100 days old


def test_the_servers_task_runs_the_immediate_tier_and_the_nightly_pass_once_a_day(
    world: World,
) -> None:
    from mamori.app import _detect
    from mamori.detection.models import DetectionRun

    done: list[dt.date] = []
    _detect(world.db, done)
    _detect(world.db, done)
    with world.db.session(write=False) as s:
        tiers = sorted(r.tier for r in s.scalars(select(DetectionRun)))
    # two clinics, twice the immediate tier; the nightly pass once (after 02:00 JST)
    hour = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).hour
    nightly = 2 if hour >= 2 else 0
    assert tiers.count("immediate") == 4 and tiers.count("nightly") == nightly


def test_a_week_of_the_roster_is_copied_from_the_one_before(world: World) -> None:
    monday = dt.date(2027, 1, 4)
    with world.db.session(write=True) as s:
        d = world.actors["director"]
        service.set_roster_day(s, d, world.actors["nurse_ben"].user_id, monday, "leave")
        service.set_roster_day(
            s, d, world.actors["dr_aiko"].user_id, monday + dt.timedelta(days=6), "oncall",
            "0:00", "23:59",
        )  # fmt: skip
        assert service.copy_previous_week(s, d, monday + dt.timedelta(days=9)) == 2
        week = service.roster_week(s, d, monday + dt.timedelta(days=7))
        s.commit()
    nurse = week[world.actors["nurse_ben"].user_id]
    doc = week[world.actors["dr_aiko"].user_id]
    assert nurse[0].kind == "leave" and nurse[0].entered
    assert doc[6].kind == "oncall" and (doc[6].start, doc[6].end) == (0, 23 * 60 + 59)
    assert not nurse[1].entered and nurse[1].kind == "work"  # the default stays the default
    with world.db.session(write=True) as s, pytest.raises(Forbidden):
        service.copy_previous_week(s, world.actors["clerk_chika"], monday)


def test_a_print_burst_across_two_immediate_passes_is_still_one_burst(world: World) -> None:
    """Twenty chart printouts within a quarter of an hour, split by a pass of the immediate
    tier (every 5 minutes in serve): the second pass still sees the burst."""
    from mamori.detection import engine

    _on_duty(world, "nurse_ben")
    pids = [
        _register(world, given_name=f"花子{i}", birth_date=f"19{40 + i}-01-01") for i in range(3)
    ]
    half = engine.PRINT_BURST // 2
    for i in range(half):
        r = world.http.get(
            f"/api/v1/patients/{pids[i % 3]}/chart.pdf", headers=world.h("nurse_ben")
        )
        assert r.status_code == 200, r.text
    with world.db.session(write=True) as s:
        first = service.run(s, the_clinic(s).id, tier="immediate")
        s.commit()
    assert first.opened == 0
    for i in range(engine.PRINT_BURST - half):
        world.http.get(f"/api/v1/patients/{pids[i % 3]}/chart.pdf", headers=world.h("nurse_ben"))
    with world.db.session(write=True) as s:
        second = service.run(s, the_clinic(s).id, tier="immediate")
        s.commit()
    assert second.opened == 1
    (case,) = _cases(world)
    assert case["rules"] == ["B2"] and case["tier"] == "immediate"
    assert f"{engine.PRINT_MINUTES}分間に{engine.PRINT_BURST}件を印刷" in case["sentence"]
