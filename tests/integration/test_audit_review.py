"""Reviewing the trail: only reviewers read it, it answers "who opened this patient" and "what
did this user open", reading it is logged, reviews are kept, and the patient gets a PDF."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from pypdf import PdfReader
from sqlalchemy import text
from tests.conftest import SAMPLE_PATIENT, World, drop_insert_only_triggers, person_token

from mamori.authz.roles import Role
from mamori.clinic import service as clinic_service
from mamori.clinic.models import Clinic


def _reviewer(world: World) -> dict[str, str]:
    with world.db.session(write=True) as s:
        clinic = s.get(Clinic, world.actors["director"].clinic_id)
        assert clinic is not None
        user = clinic_service.add_staff(
            s, clinic, login_id="auditor_eri", display_name="監査 恵理", role=Role.AUDITOR
        )
        token = person_token(s, world.settings, user)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def test_who_opened_this_patient(world: World, patient: dict[str, Any]) -> None:
    pid = patient["id"]
    world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko"))
    world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("nurse_ben"))
    auditor = _reviewer(world)
    rows = world.http.get(f"/api/v1/audit/patients/{pid}/accesses", headers=auditor).json()
    who = [(r["user_name"], r["action_ja"]) for r in rows]
    assert ("山本 愛子", "カルテを閲覧") in who and ("鈴木 勉", "カルテを閲覧") in who
    assert ("田中 千佳", "記録を作成") in who  # reception registered the patient
    assert all(pid in r["patients"] for r in rows)
    # reading the log is itself in the log, naming the patient it concerned
    again = world.http.get(f"/api/v1/audit/patients/{pid}/accesses", headers=auditor).json()
    assert again[0]["action_ja"] == "監査証跡を閲覧" and again[0]["user_name"] == "監査 恵理"


def test_what_did_this_user_open(world: World, patient: dict[str, Any]) -> None:
    world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("nurse_ben"))
    ben = world.actors["nurse_ben"].user_id
    rows = world.http.get(f"/api/v1/audit/users/{ben}/accesses", headers=world.h("director")).json()
    assert [r["tag"] for r in rows] == ["patient:chart:viewed"]
    assert rows[0]["patients"] == [patient["id"]]
    chen = world.actors["dr_chen"].user_id  # another clinic's staff: not found here
    assert (
        world.http.get(
            f"/api/v1/audit/users/{chen}/accesses", headers=world.h("director")
        ).status_code
        == 404
    )


def test_only_reviewers_read_the_log(world: World, patient: dict[str, Any]) -> None:
    for who in ("dr_aiko", "nurse_ben", "clerk_chika", "scribe_dai"):
        r = world.http.get(f"/api/v1/audit/patients/{patient['id']}/accesses", headers=world.h(who))
        assert r.status_code == 403, who
        assert r.json()["error"]["message_ja"]
    r = world.http.get(
        f"/api/v1/audit/patients/{patient['id']}/accesses", headers=world.h("dr_chen")
    )
    assert r.status_code in (403, 404)


def test_reviews_are_recorded_as_evidence(world: World, patient: dict[str, Any]) -> None:
    h = world.h("director")
    status = world.http.get("/api/v1/audit/status", headers=h).json()
    assert status["unreviewed_events"] == status["log_size"] > 0
    bad = world.http.post(
        "/api/v1/audit/reviews",
        headers=h,
        json={"scope": "period", "outcome": "follow-up", "finding": ""},
    )
    assert bad.status_code == 422
    r = world.http.post(
        "/api/v1/audit/reviews",
        headers=h,
        json={"scope": "period", "outcome": "no-issue", "finding": "異常なし"},
    )
    assert r.status_code == 201
    assert r.json()["through_seq"] >= status["log_size"]
    assert world.http.get("/api/v1/audit/reviews", headers=h).json()[0]["finding"] == "異常なし"
    after = world.http.get("/api/v1/audit/status", headers=h).json()
    assert after["reviewed_through"] == r.json()["through_seq"]


def test_patient_access_report_pdf(world: World, patient: dict[str, Any]) -> None:
    for _ in range(3):  # a chart reloaded: one line for the person and day, with its count
        world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))
    r = world.http.get(
        f"/api/v1/audit/patients/{patient['id']}/access-report.pdf", headers=world.h("director")
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    page = PdfReader(io.BytesIO(r.content)).pages[0]
    text = page.extract_text()
    for expected in ("診療記録の閲覧履歴", "山田 花子", "山本 愛子", "カルテを閲覧", "医師", "3回"):
        assert expected in text, expected
    assert text.count("カルテを閲覧") == 1
    fonts = {
        str(page["/Resources"]["/Font"][k].get_object().get("/BaseFont"))
        for k in page["/Resources"]["/Font"]
    }
    assert any("IPAex" in f for f in fonts)


def test_the_review_shows_what_was_hashed_not_an_edited_column(
    world: World, patient: dict[str, Any]
) -> None:
    """Someone holding the database relabels a chart view as a system event and moves it to
    2019 in the columns beside the body: the review still shows the hashed tag and time."""
    pid = patient["id"]
    world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko"))
    drop_insert_only_triggers(world.db.engine)
    with world.db.engine.begin() as conn:
        seq = conn.execute(
            text("SELECT max(seq) FROM audit_event WHERE tag = 'patient:chart:viewed'")
        ).scalar_one()
        moved = (
            dt.datetime(2019, 4, 1, 9, 0, tzinfo=dt.UTC)
            if world.db.dialect == "postgresql"
            else "2019-04-01 09:00:00.000000"
        )
        conn.execute(
            text(
                "UPDATE audit_event SET tag = 'system:audit:verified', recorded_at = :t "
                "WHERE seq = :s"
            ),
            {"s": seq, "t": moved},
        )
    auditor = _reviewer(world)
    rows = world.http.get(f"/api/v1/audit/patients/{pid}/accesses", headers=auditor).json()
    shown = next(r for r in rows if r["seq"] == seq)
    assert shown["tag"] == "patient:chart:viewed" and shown["action_ja"] == "カルテを閲覧"
    assert not shown["at"].startswith("2019")


def test_a_burst_of_refused_requests_raises_one_alert(
    world: World, patient: dict[str, Any]
) -> None:
    """A clerk trying the notes, the chart and another clinic's patient again and again: the
    fifth refusal within a minute raises an alert naming the account; more refusals in the
    same burst do not raise more. Fewer than five raise nothing."""
    clerk, pid = world.h("clerk_chika"), patient["id"]
    other = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "family_kana": "ホカ"},
        headers=world.h("dr_chen"),
    ).json()["id"]
    probes = [
        f"/api/v1/patients/{pid}/notes",
        f"/api/v1/patients/{pid}/chart",
        f"/api/v1/patients/{other}",
        f"/api/v1/patients/{pid}/observations",
    ]

    def alerts() -> list[dict[str, Any]]:
        found = world.http.get("/api/v1/admin/alerts", headers=world.h("director")).json()
        return [a for a in found if a["kind"] == "denied-burst"]

    for url in probes:
        assert world.http.get(url, headers=clerk).status_code in (403, 404)
    assert alerts() == []  # four: nothing yet
    world.http.get(f"/api/v1/patients/{pid}/notes", headers=clerk)  # the fifth
    (alert,) = alerts()
    assert "田中 千佳" in alert["summary"] and "5回" in alert["summary"]
    assert alert["user_id"] == str(world.actors["clerk_chika"].user_id)
    for _ in range(3):
        world.http.get(f"/api/v1/patients/{pid}/notes", headers=clerk)
    assert len(alerts()) == 1  # one per burst
    # a physician's ordinary work raises nothing
    for _ in range(6):
        world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("dr_aiko"))
    assert all(a["user_id"] != str(world.actors["dr_aiko"].user_id) for a in alerts())
