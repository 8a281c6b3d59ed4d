"""The web UI's pages without a browser: every page route × every role through the same guards,
CSRF and origin checks on form posts, escaping, the CSP, server-side validation of what the
browser's own checks would hold back, and reception never reaching note text by any URL."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mamori.audit.models import AuditEvent
from mamori.auth.models import AuthSession, VendorWindow
from mamori.authz.permissions import Permission, role_permissions
from mamori.authz.roles import Role
from mamori.clinic.calendar import clinic_today, wareki
from mamori.clinical.models import Observation
from mamori.db import utcnow
from mamori.incidents import service as incidents
from mamori.incidents.affected import Scope
from mamori.patients.models import Coverage
from tests.conftest import SAMPLE_PATIENT, World
from tests.security.test_authz_matrix import ROLE_OF
from tests.security.test_route_inventory import PINNED_UI
from tests.ui.support import Page, signed_in

pytestmark = [pytest.mark.one_backend]  # the services below are walked on both backends elsewhere
# routes that answer an empty form with 401 (no password) or 403 (no break-the-glass grant)
REFUSE_EMPTY_FORMS = {"POST /reauth", "POST /patients/{patient_id}/break-glass"}
NOTE = "胸部圧迫感はニトログリセリン舌下で消失した"


def _ids(world: World, patient: dict[str, Any]) -> dict[str, str]:
    pid = str(patient["id"])
    note = world.http.post(
        f"/api/v1/patients/{pid}/notes", json={"subjective": NOTE}, headers=world.h("dr_aiko")
    ).json()
    enc = world.http.post(
        f"/api/v1/patients/{pid}/encounters", json={}, headers=world.h("clerk_chika")
    ).json()
    with world.db.session(write=True) as s:  # a real incident: every page of it renders
        incident = incidents.open_incident(
            s,
            world.actors["sec_sae"],
            kind="insider",
            title="不審な閲覧",
            seen="",
            knew_on=clinic_today(),
        )
        incidents.save_scope(
            s, world.actors["sec_sae"], incident.id, Scope(user_id=world.actors["dr_aiko"].user_id)
        )
        s.commit()
    return {
        "incident_id": str(incident.id),
        "step_no": "1",
        "which": "assets",
        "patient_id": pid,
        "note_id": note["id"],
        "encounter_id": enc["id"],
        "condition_id": str(uuid.uuid4()),
        "request_id": str(uuid.uuid4()),
        "user_id": str(world.actors["dr_aiko"].user_id),
        "alert_id": str(uuid.uuid4()),
        "window_id": str(uuid.uuid4()),
        "token_id": str(uuid.uuid4()),
        "bundle_id": str(uuid.uuid4()),  # none: a 404 page for the roles allowed
        "case_id": str(uuid.uuid4()),
        "name": "app.css",
        "lang": "en",
    }


def test_every_page_route_for_every_role(world: World, patient: dict[str, Any]) -> None:
    """A role without the route's permission gets a 403 page (and the denial is logged); no
    route answers 500; without sign-in every guarded page sends the browser to /login."""
    ids = _ids(world, patient)
    problems: list[str] = []
    for key, guard in PINNED_UI.items():
        method, path = key.split(" ", 1)
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        anon = world.http.request(method, url, follow_redirects=False)
        if guard == "public:sign-in" or guard == "public":
            if anon.status_code >= 500:
                problems.append(f"{key} anonymous: {anon.status_code}")
        elif not (anon.status_code == 303 and anon.headers["location"].startswith("/login")):
            problems.append(f"{key} anonymous: {anon.status_code}")
        if guard.startswith("public"):
            continue
        for who, role in ROLE_OF.items():
            if role is Role.VENDOR:
                continue  # outside a maintenance window a vendor is not signed in at all
            r = world.http.request(
                method, url, headers=world.h(who), data={}, follow_redirects=False
            )
            allowed = Permission(guard) in role_permissions(Role(role))
            if r.status_code >= 500:
                problems.append(f"{key} as {who}: {r.status_code} {r.text[:200]}")
            elif not allowed and r.status_code != 403:
                problems.append(f"{key} as {who}: want 403, got {r.status_code}")
            elif allowed and r.status_code in (401, 403) and key not in REFUSE_EMPTY_FORMS:
                problems.append(f"{key} as {who}: refused ({r.status_code}) {r.text[:120]}")
    assert not problems, "\n".join(problems)
    with world.db.session(write=False) as s:
        denied = s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.tag == "access:permission:denied")
        )
    assert denied and denied > 50


def test_reception_reaches_no_note_text_by_any_url(world: World, patient: dict[str, Any]) -> None:
    ids = _ids(world, patient)
    clerk = signed_in(world, "clerk_chika")
    for key in PINNED_UI:
        method, path = key.split(" ", 1)
        if method != "GET" or path in ("/logout/idle", "/lang/{lang}"):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        r = clerk.get(url)
        assert NOTE not in r.text, url
    for url in (
        "/patients/{patient_id}/chart",
        "/notes/{note_id}/history",
        "/notes/{note_id}/amend",
    ):
        assert clerk.get(url.format(**ids)).status_code == 403
    assert "/chart" not in clerk.get(f"/patients/{ids['patient_id']}").text


def test_form_posts_need_the_csrf_token_and_this_origin(
    world: World, patient: dict[str, Any]
) -> None:
    dr = signed_in(world, "dr_aiko")
    url = f"/patients/{patient['id']}/notes"
    r = dr.http.post(url, data={"subjective": "x"}, headers={"hx-request": "true"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = dr.post(url, {"subjective": "x"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    r = dr.post(url, {"subjective": "本日の記録"})
    assert r.status_code == 204 and r.headers["hx-redirect"].endswith("/chart")


def test_pages_escape_patient_text_and_carry_a_strict_csp(world: World) -> None:
    evil = {**SAMPLE_PATIENT, "family_name": "<script>alert(1)</script>", "given_name": '"><img>'}
    p = world.http.post("/api/v1/patients", json=evil, headers=world.h("clerk_chika")).json()
    dr = signed_in(world, "dr_aiko")
    r = dr.get(f"/patients/{p['id']}/chart")
    assert r.status_code == 200
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;alert(1)" in r.text
    assert '"><img>' not in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    scripts = re.findall(r"<script([^>]*)>", r.text)
    assert scripts and all('src="/static/' in s for s in scripts)  # no inline script at all
    assert re.search(r"<[^>]+\son\w+=", r.text) is None  # no inline event handlers
    assert dr.get("/static/htmx.min.js").status_code == 200
    assert dr.get("/static/../settings.toml").status_code == 404


def test_the_server_refuses_what_the_browser_would_hold_back(
    world: World, patient: dict[str, Any]
) -> None:
    nurse = signed_in(world, "nurse_ben")
    pid = patient["id"]
    nurse.get(f"/patients/{pid}/chart")
    r = nurse.post(f"/patients/{pid}/vitals", {"temp": "365", "pulse": "80"})
    assert r.status_code == 422 and "体温の値 365" in r.text
    with world.db.session(write=False) as s:  # nothing half-written: not even the pulse
        assert s.scalar(select(func.count()).select_from(Observation)) == 0
    clerk = signed_in(world, "clerk_chika")
    r = clerk.post(f"/patients/{pid}/coverages", {"kind": "shaho", "insurer_number": "06131016"})
    assert r.status_code == 422 and "検証番号" in r.text
    r = clerk.post("/patients/new", {"family_name": "テスト"})
    assert r.status_code == 422 and "必須項目です" in r.text
    # a Japanese page names the field in Japanese only (not "セイ / family kana")
    assert "セイ: " in r.text and "family kana" not in r.text
    with world.db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Coverage)) == 0


def test_a_failed_form_shows_the_chart_again_with_its_reads_logged(
    world: World, patient: dict[str, Any]
) -> None:
    dr = signed_in(world, "dr_aiko")
    before = _count(world, "patient:chart:viewed")
    r = dr.post(f"/patients/{patient['id']}/notes", {})
    assert r.status_code == 422 and "記録の本文が空です" in r.text and "山田" in r.text
    assert _count(world, "patient:chart:viewed") == before + 1  # shown, so logged


def _count(world: World, tag: str) -> int:
    with world.db.session(write=False) as s:
        return int(s.scalar(select(func.count()).where(AuditEvent.tag == tag)) or 0)


def test_wareki_and_english() -> None:
    import datetime as dt

    assert wareki(dt.date(1948, 4, 3)) == "昭和23年4月3日"
    assert wareki(dt.date(1989, 1, 7)) == "昭和64年1月7日"
    assert wareki(dt.date(1989, 1, 8)) == "平成元年1月8日"
    assert wareki(dt.date(2019, 5, 1)) == "令和元年5月1日"
    assert wareki(dt.date(1926, 12, 24)) == "大正15年12月24日"
    from mamori.clinic.calendar import wareki_en

    assert wareki_en(dt.date(1948, 4, 3)) == "Showa 23"
    assert wareki_en(dt.date(2019, 5, 1)) == "Reiwa 1"


def test_an_english_chart_shows_no_japanese_era_or_vital_names(
    world: World, patient: dict[str, Any]
) -> None:
    world.http.post(
        f"/api/v1/patients/{patient['id']}/observations",
        json={
            "category": "vital-signs",
            "code": "8310-5",
            "name": "体温",
            "value": "36.8",
            "unit": "Cel",
        },
        headers=world.h("nurse_ben"),
    )
    dr = signed_in(world, "dr_aiko")
    dr.get("/lang/en")
    page = dr.get(f"/patients/{patient['id']}/chart").text
    assert "Showa 23" in page and "昭和" not in page
    assert "Temperature" in page and "36.8 ℃" in page


def test_open_redirects_are_refused(world: World) -> None:
    page = Page(world)
    r = page.http.get("/lang/en?next=//evil.example/x")
    assert r.status_code == 303 and r.headers["location"] == "/"
    r = page.http.get("/login?next=https://evil.example")
    assert 'value="/"' in r.text


def test_a_vendor_window_needs_a_fresh_reauth_and_a_vendor_account(world: World) -> None:
    """Opening a maintenance window is a sensitive change: an old sign-in shows the
    re-authentication form and stores nothing; a window for a non-vendor account is refused."""
    officer = signed_in(world, "sec_sae")
    officer.get("/admin/reviews")
    vendor_id = str(world.actors["vendor_vic"].user_id)
    form = {"vendor_user_id": vendor_id, "ticket": "MNT-1", "reason": "調査", "minutes": "30"}
    with world.db.session(write=True) as s:
        s.execute(update(AuthSession).values(reauth_at=utcnow() - dt.timedelta(minutes=30)))
        s.commit()
    r = officer.post("/admin/vendor-windows", form)
    assert r.status_code == 422 and 'id="reauth"' in r.text
    nurse = {**form, "vendor_user_id": str(world.actors["nurse_ben"].user_id)}
    with world.db.session(write=True) as s:
        s.execute(update(AuthSession).values(reauth_at=utcnow()))
        s.commit()
    r = officer.post("/admin/vendor-windows", nurse)
    assert r.status_code == 422 and "ベンダーのアカウントにだけ" in r.text
    r = officer.post("/admin/vendor-windows", {**form, "minutes": "100000"})
    assert r.status_code == 422 and "時間（分）" in r.text
    with world.db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(VendorWindow)) == 0
    r = officer.post("/admin/vendor-windows", form)
    assert r.status_code == 204, r.text
    with world.db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(VendorWindow)) == 1


def test_a_scribe_writes_a_proxy_entry_from_the_chart(
    world: World, patient: dict[str, Any]
) -> None:
    """The scribe's note form names the confirming physician; without one nothing is saved,
    with one the note waits for that physician's confirmation."""
    scribe = signed_in(world, "scribe_dai")
    url = f"/patients/{patient['id']}/chart"
    page = scribe.http.get(url).text
    aiko = str(world.actors["dr_aiko"].user_id)
    assert 'name="proxy_for_id"' in page and f'value="{aiko}"' in page
    assert "保存と同時に確定する" not in page  # a scribe finalises nothing
    r = scribe.post(f"/patients/{patient['id']}/notes", {"subjective": "代行の記載"})
    assert r.status_code == 422 and "承認医" in r.text
    r = scribe.post(
        f"/patients/{patient['id']}/notes", {"subjective": "代行の記載", "proxy_for_id": aiko}
    )
    assert r.status_code == 204
    notes = world.http.get(
        f"/api/v1/patients/{patient['id']}/notes", headers=world.h("dr_aiko")
    ).json()
    assert [(n["status"], n["is_proxy_entry"], n["author_id"]) for n in notes] == [
        ("draft", True, aiko)
    ]


def test_the_account_page_states_the_policy_the_server_applies(world: World) -> None:
    from mamori.auth.passwords import MIN_LENGTH, check_policy

    page = signed_in(world, "nurse_ben").http.get("/account").text
    assert f'minlength="{MIN_LENGTH}"' in page and f"{MIN_LENGTH}文字以上" in page
    with pytest.raises(Exception, match=str(MIN_LENGTH)):
        check_policy("x" * (MIN_LENGTH - 1), personal=[])


def test_running_without_backups_is_shown_to_administrators(world: World) -> None:
    """Started --without-backups: a red banner on every page for those who run the system,
    nothing for clinical staff, and an alert on the review list."""
    from mamori.app import _no_backup_alert
    from mamori.auth.models import SecurityAlert

    app_state = world.http.app.state  # type: ignore[attr-defined]
    app_state.backups_missing = True
    try:
        assert 'id="backups-missing"' in signed_in(world, "director").get("/account").text
        assert 'id="backups-missing"' not in signed_in(world, "nurse_ben").get("/account").text
    finally:
        app_state.backups_missing = False
    _no_backup_alert(world.db)
    with world.db.session(write=False) as s:
        kinds = list(s.scalars(select(SecurityAlert.kind)))
    assert "backup-missing" in kinds


def test_the_first_sign_in_replaces_the_initial_password(world: World) -> None:
    from mamori.auth import service as auth
    from mamori.clinic.models import StaffUser
    from tests.ui.support import PASSWORD, Page

    with world.db.session(write=True) as s:
        user = s.get(StaffUser, world.actors["nurse_ben"].user_id)
        assert user is not None
        auth.set_password(s, user, PASSWORD, initial=True)  # handed over by the director
        s.commit()
    page = Page(world)
    page.get("/login")
    r = page.post("/login", {"login_id": "nurse_ben", "password": PASSWORD})
    assert r.status_code == 204
    shown = page.get(r.headers["hx-redirect"])
    assert "自分のパスワードの設定" in shown.text and 'name="new"' in shown.text
    # the initial password is no way around it: enrolment is refused in this stage
    assert page.post("/login/enrol/totp").status_code in (401, 303, 204)
    r = page.post("/login/password", {"new": "みじかい", "confirm": "みじかい"})
    assert r.status_code == 422 and "13文字以上" in r.text
    own = "港の見える丘で珈琲を飲む朝-7"
    r = page.post("/login/password", {"new": own, "confirm": own})
    assert r.status_code == 204, r.text
    enrol = page.get(r.headers["hx-redirect"])
    assert 'hx-post="/login/enrol/totp"' in enrol.text


def test_the_staff_page_states_the_reauthentication_rule_it_applies(world: World) -> None:
    minutes = world.settings.auth.reauth_minutes
    page = signed_in(world, "director").get("/admin/staff").text
    assert f"{minutes}分以内に入力していること" in page and "ログインした直後" in page


def test_a_notes_history_names_each_change_in_japanese(
    world: World, patient: dict[str, Any]
) -> None:
    h = world.h("dr_aiko")
    note = world.http.post(
        f"/api/v1/patients/{patient['id']}/notes", json={"subjective": "咳"}, headers=h
    ).json()
    world.http.post(f"/api/v1/notes/{note['id']}/finalise", json={"expected_version": 1}, headers=h)
    dr = signed_in(world, "dr_aiko")
    page = dr.get(f"/notes/{note['id']}/history").text
    assert "作成" in page and "確定" in page
    assert "created" not in page and "finalised" not in page


def test_the_review_screens_show_what_they_ask_to_be_confirmed(
    world: World, patient: dict[str, Any]
) -> None:
    """The periodic review lists the accesses it asks the director to mark reviewed, and a
    staff member's activity names the patient and the record of each access."""
    world.http.get(f"/api/v1/patients/{patient['id']}/chart", headers=world.h("dr_aiko"))
    director = signed_in(world, "director")
    label = f"No.{patient['patient_number']} 山田 花子"
    page = director.get("/admin/reviews").text
    assert 'id="unreviewed"' in page and label in page and "カルテを閲覧" in page
    aiko = world.actors["dr_aiko"].user_id
    page = director.get(f"/admin/reviews/users/{aiko}").text
    assert label in page and "カルテ" in page and ">chart<" not in page
    r = director.post("/admin/reviews", {"outcome": "no-issue", "finding": "定期確認"})
    assert r.status_code in (200, 204), r.text
    page = director.get("/admin/reviews").text
    assert "前回の確認以降、患者記録へのアクセスはありません" in page
