"""予約: a booked visit is an encounter in the planned state — versioned, audited, listed by
day and time, moved, cancelled, and turned into the visit when the patient arrives."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from tests.conftest import World

from mamori.audit.models import AuditEvent
from mamori.clinic.calendar import clinic_today


def _day(offset: int) -> str:
    return (clinic_today() + dt.timedelta(days=offset)).isoformat()


def test_a_booking_is_made_listed_moved_and_cancelled(
    world: World, patient: dict[str, Any]
) -> None:
    pid, h = patient["id"], world.h("clerk_chika")
    doctor = str(world.actors["dr_aiko"].user_id)
    r = world.http.post(
        f"/api/v1/patients/{pid}/bookings",
        json={"date": _day(1), "time": "10:30", "attending_id": doctor, "purpose": "定期受診"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    booked = r.json()
    assert booked["status"] == "planned" and booked["purpose"] == "定期受診"
    assert booked["visit_type"] == "first"  # never seen yet: 初診
    at = dt.datetime.fromisoformat(booked["scheduled_at"])
    assert at == dt.datetime.fromisoformat(f"{_day(1)}T10:30:00+09:00")
    # the same day again is refused unless confirmed; the past is refused
    again = {"date": _day(1), "time": "15:00"}
    r = world.http.post(f"/api/v1/patients/{pid}/bookings", json=again, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_booked"
    r = world.http.post(
        f"/api/v1/patients/{pid}/bookings", json={**again, "again": True}, headers=h
    )
    assert r.status_code == 201
    second = r.json()
    r = world.http.post(
        f"/api/v1/patients/{pid}/bookings", json={"date": _day(-1), "time": "09:00"}, headers=h
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "date"
    r = world.http.get(f"/api/v1/bookings?start={_day(1)}", headers=h)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert [b["encounter"]["id"] for b in listed] == [booked["id"], second["id"]]  # by time
    assert listed[0]["patient"]["family_kana"] == "ヤマダ"
    # moved: a new version of the same record
    r = world.http.put(
        f"/api/v1/bookings/{booked['id']}",
        json={"date": _day(2), "time": "09:15", "purpose": "検査結果説明", "expected_version": 1},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["visit_date"] == _day(2)
    history = world.http.get(
        f"/api/v1/records/Encounter/{booked['id']}/history", headers=world.h("director")
    ).json()
    assert [v["change"] for v in history] == ["created", "updated"]
    assert "定期受診" in json.dumps(history, ensure_ascii=False)  # what was booked before
    # cancelled through the status route: gone from the list, kept in the record
    r = world.http.post(
        f"/api/v1/encounters/{second['id']}/status",
        json={"status": "cancelled", "expected_version": 1},
        headers=h,
    )
    assert r.status_code == 200
    assert world.http.get(f"/api/v1/bookings?start={_day(1)}", headers=h).json() == []
    # a cancelled booking cannot be moved; another clinic's is not there
    r = world.http.put(
        f"/api/v1/bookings/{second['id']}",
        json={"date": _day(3), "time": "09:00", "expected_version": 2},
        headers=h,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_a_booking"
    r = world.http.put(
        f"/api/v1/bookings/{booked['id']}",
        json={"date": _day(3), "time": "09:00", "expected_version": 2},
        headers=world.h("dr_chen"),
    )
    assert r.status_code == 404
    with world.db.session(write=False) as s:
        lists = [
            json.loads(e.body)
            for e in s.scalars(select(AuditEvent).where(AuditEvent.tag == "patient:list:viewed"))
        ]
    assert any(
        e["detail"]["what"] == "Encounter:bookings" and e["patients"] == [pid] for e in lists
    )


def test_a_booked_patient_checked_in_today_turns_the_booking_into_the_visit(
    world: World, patient: dict[str, Any]
) -> None:
    pid, h = patient["id"], world.h("clerk_chika")
    booked = world.http.post(
        f"/api/v1/patients/{pid}/bookings",
        json={"date": _day(0), "time": "23:59", "purpose": "健診結果説明"},
        headers=h,
    ).json()
    r = world.http.post(f"/api/v1/patients/{pid}/encounters", json={}, headers=h)
    assert r.status_code == 201, r.text
    visit = r.json()
    assert visit["id"] == booked["id"] and visit["status"] == "arrived"
    assert visit["arrived_at"] and visit["purpose"] == "健診結果説明"
    assert visit["visit_type"] == "first"
    day = world.http.get(f"/api/v1/reception?date={_day(0)}", headers=h).json()
    assert [d["encounter"]["id"] for d in day] == [booked["id"]]  # one visit, not two
    # a second check-in is the known double check-in
    r = world.http.post(f"/api/v1/patients/{pid}/encounters", json={}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_checked_in"
    # a walk-in without a booking, whose record content has no booking fields, still moves
    # through its states (its head matches its versions)
    other = world.http.post(
        "/api/v1/patients",
        json={**patient_body(), "family_kana": "アルキ", "register_anyway": True},
        headers=h,
    ).json()
    walk_in = world.http.post(
        f"/api/v1/patients/{other['id']}/encounters", json={}, headers=h
    ).json()
    assert walk_in["scheduled_at"] is None and walk_in["purpose"] == ""
    r = world.http.post(
        f"/api/v1/encounters/{walk_in['id']}/status",
        json={"status": "in-progress", "expected_version": 1},
        headers=world.h("dr_aiko"),
    )
    assert r.status_code == 200, r.text
    verify = world.http.get(f"/api/v1/patients/{other['id']}/verify", headers=world.h("dr_aiko"))
    assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text


def patient_body() -> dict[str, Any]:
    from tests.conftest import SAMPLE_PATIENT

    return dict(SAMPLE_PATIENT)
