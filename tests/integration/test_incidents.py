"""The incident register through the real services and audit trail: anyone reports, the
security officer runs the steps in order, the director decides, the deadlines run from the
knew-on date, the affected patients come from the log, and the timeline cannot be changed
behind mamori's back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from tests.conftest import SAMPLE_PATIENT, World, drop_insert_only_triggers

from mamori.audit.models import AuditEvent
from mamori.auth.models import SecurityAlert
from mamori.clinic.calendar import clinic_today
from mamori.errors import Conflict, Forbidden, InvalidInput, NotFound, RecordIntegrityFailed
from mamori.incidents import service
from mamori.incidents.affected import Scope
from mamori.incidents.models import Incident, IncidentEntry
from mamori.records.service import verify_all


def _register(world: World, **over: Any) -> str:
    r = world.http.post(
        "/api/v1/patients",
        json={**SAMPLE_PATIENT, "register_anyway": True, **over},
        headers=world.h("director"),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _open(world: World, who: str = "sec_sae", **over: Any) -> uuid.UUID:
    args: dict[str, Any] = {
        "kind": "ransomware",
        "title": "受付PCの画面に身代金要求",
        "seen": "受付PCの画面に英語の脅迫文。ファイルが開けない",
        "knew_on": clinic_today(),
        **over,
    }
    with world.db.session(write=True) as s:
        incident = service.open_incident(s, world.actors[who], **args)
        s.commit()
        return incident.id


def test_anyone_reports_and_the_officer_and_director_are_alerted(world: World) -> None:
    r = world.http.post(
        "/api/v1/incidents/report",
        json={"seen": "見知らぬUSBが受付PCに刺さっていた", "place": "受付", "device": "受付PC1"},
        headers=world.h("clerk_chika"),
    )
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    # the reporter gets a number, not the register
    assert world.http.get("/api/v1/incidents", headers=world.h("clerk_chika")).status_code == 403
    with world.db.session(write=False) as s:
        alert = s.scalar(select(SecurityAlert).where(SecurityAlert.kind == "incident"))
        assert alert is not None and f"No.{number}" in alert.summary
    listed = world.http.get("/api/v1/incidents", headers=world.h("sec_sae")).json()
    assert [i["number"] for i in listed] == [number]
    assert listed[0]["stage"] == "open" and listed[0]["knew_on"] == clinic_today().isoformat()
    # the auditor reads; a nurse, the vendor and another clinic's physician do not
    assert world.http.get("/api/v1/incidents", headers=world.h("audit_aki")).status_code == 200
    assert world.http.get("/api/v1/incidents", headers=world.h("nurse_ben")).status_code == 403
    iid = listed[0]["id"]
    other = world.http.get(f"/api/v1/incidents/{iid}", headers=world.h("dr_chen"))
    assert other.status_code == 403
    # another clinic's manager gets the same answer as for a missing incident
    elsewhere = dataclasses.replace(world.actors["director"], clinic_id=uuid.uuid4())
    with world.db.session(write=False) as s, pytest.raises(NotFound):
        service.get(s, elsewhere, uuid.UUID(iid))


def test_steps_are_checked_off_in_order_with_who_and_when(world: World) -> None:
    iid = _open(world)
    with world.db.session(write=True) as s:
        officer = world.actors["sec_sae"]
        view = service.get(s, officer, iid)
        assert view.steps[1].action == "isolate" and "バックアップ" in view.steps[1].title
        with pytest.raises(Conflict):
            service.check_step(s, officer, iid, 2, outcome="done")
        with pytest.raises(InvalidInput):  # skipping needs a reason
            service.check_step(s, officer, iid, 1, outcome="skipped")
        service.check_step(s, officer, iid, 1, outcome="done", note="LAN ケーブルを抜いた")
        service.check_step(s, officer, iid, 2, outcome="done")
        with pytest.raises(Conflict):
            service.check_step(s, officer, iid, 2, outcome="done")
        s.commit()
    with world.db.session(write=True) as s:
        view = service.get(s, world.actors["director"], iid)
        assert [x.outcome for x in view.steps[:3]] == ["done", "done", ""]
        assert view.steps[0].by == world.actors["sec_sae"].user_id and view.steps[0].at
        assert view.next_step == 3
        # a nurse cannot run a step, the auditor reads but cannot write
        for who in ("nurse_ben", "audit_aki"):
            with pytest.raises(Forbidden):
                service.check_step(s, world.actors[who], iid, 3, outcome="done")


def test_knew_on_in_the_future_or_before_the_incident_is_refused(world: World) -> None:
    today = clinic_today()
    with world.db.session(write=True) as s:
        with pytest.raises(InvalidInput) as e:
            service.open_incident(
                s,
                world.actors["sec_sae"],
                kind="device",
                title="ノートPC紛失",
                seen="",
                knew_on=today + dt.timedelta(days=1),
            )
        assert e.value.field == "knew_on" and "未来" in e.value.ja
        with pytest.raises(InvalidInput) as e:
            service.open_incident(
                s,
                world.actors["sec_sae"],
                kind="device",
                title="ノートPC紛失",
                seen="",
                knew_on=today - dt.timedelta(days=3),
                occurred_on=today - dt.timedelta(days=1),
            )
        assert e.value.field == "knew_on" and "発生日より前" in e.value.ja


def test_the_director_decides_with_a_reason_and_the_deadlines_run(world: World) -> None:
    knew = clinic_today() - dt.timedelta(days=3)
    iid = _open(world, knew_on=knew)
    with world.db.session(write=True) as s:
        with pytest.raises(Forbidden):  # the security officer runs it, the director decides
            service.decide(
                s,
                world.actors["sec_sae"],
                iid,
                reportable=True,
                reason="x",
                malicious=True,
                encrypted=False,
            )
        with pytest.raises(InvalidInput):
            service.decide(
                s,
                world.actors["director"],
                iid,
                reportable=True,
                reason=" ",
                malicious=True,
                encrypted=False,
            )
        service.decide(
            s,
            world.actors["director"],
            iid,
            reportable=True,
            reason="持ち出しを否定できない",
            malicious=True,
            encrypted=False,
        )
        s.commit()
    with world.db.session(write=True) as s:
        view = service.get(s, world.actors["director"], iid)
        prompt, final = view.deadlines
        assert prompt.due == knew + dt.timedelta(days=4) and prompt.state == "soon"
        assert final.due == knew + dt.timedelta(days=59)  # ransomware: the 60th day
        dues = service.due_soon(s, world.actors["sec_sae"])
        assert [d.deadline.key for d in dues] == ["prompt", "final"]
        assert service.remind(s, world.actors["director"].clinic_id) == 1
        assert service.remind(s, world.actors["director"].clinic_id) == 0  # once a day
        with pytest.raises(Conflict):
            service.mark_sent(s, world.actors["sec_sae"], iid, "final", clinic_today())
        service.mark_sent(s, world.actors["sec_sae"], iid, "prompt", clinic_today())
        s.commit()
    with world.db.session(write=True) as s:
        dues = service.due_soon(s, world.actors["director"])
        assert [d.deadline.key for d in dues] == ["final"]
        with pytest.raises(Conflict):  # no closing before the final report and the review
            service.update(s, world.actors["director"], iid, stage="closed")


def test_affected_patients_come_from_the_audit_trail(world: World) -> None:
    seen = [_register(world, given_name=f"花子{i}", phone=f"03-3812-000{i}") for i in range(3)]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    # the nurse's account reads two charts and one lab list; the physician reads the third
    for pid in seen[:2]:
        assert (
            world.http.get(
                f"/api/v1/patients/{pid}/chart", headers=world.h("nurse_ben")
            ).status_code
            == 200
        )
    world.http.get(f"/api/v1/patients/{seen[0]}/observations", headers=world.h("nurse_ben"))
    world.http.get(f"/api/v1/patients/{seen[2]}/chart", headers=world.h("dr_aiko"))
    # a denied request discloses nothing
    world.http.get(f"/api/v1/patients/{seen[2]}/notes", headers=world.h("clerk_chika"))
    iid = _open(world, kind="unauthorised", title="看護師アカウントの不正使用")
    scope = Scope(user_id=world.actors["nurse_ben"].user_id, start=start)
    with world.db.session(write=True) as s:
        found = service.save_scope(s, world.actors["sec_sae"], iid, scope)
        s.commit()
    assert sorted(str(r.patient_id) for r in found.rows) == sorted(seen[:2])
    row = next(r for r in found.rows if str(r.patient_id) == seen[0])
    assert "notes" in row.items and "labs" in row.items and row.opens >= 2
    assert row.address.startswith("〒113-0033 東京都文京区")
    assert found.clinical and found.item_counts["demographics"] == 2
    # reading the list names the patients: audited as a list of them
    with world.db.session(write=True) as s:
        before = s.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
        again = service.affected_list(s, world.actors["audit_aki"], iid)
        s.commit()
        assert again is not None and len(again.rows) == 2
        events = s.scalars(select(AuditEvent).where(AuditEvent.seq > before)).all()
        bodies = [json.loads(e.body) for e in events]
        assert any(
            b["tag"].startswith("patient:")
            and sorted(b["patients"]) == sorted(seen[:2])
            and b["detail"]["what"] == "incident-affected"
            for b in bodies
        ), bodies
    # the list's own reads never make a patient affected
    with world.db.session(write=True) as s:
        everything = service.preview_affected(
            s, world.actors["sec_sae"], iid, Scope(user_id=world.actors["audit_aki"].user_id)
        )
        assert everything.rows == []
    # the proposal: clinical data of one person is enough, and the cause is malicious
    with world.db.session(write=True) as s:
        view = service.get(s, world.actors["director"], iid)
        assert view.proposal.reportable and view.proposal.conditions == (1, 3)
        assert view.affected_count == 2


def test_the_evidence_downloads_from_the_incident_page_and_verifies_without_mamori(
    world: World, tmp_path: Any
) -> None:
    """The affected-patient list as CSV and the audit events it is made of, each proven against
    a checkpoint signed at the download, in one ZIP — for the incident's readers only, the
    download itself audited; its verifier runs with Python alone."""
    import io
    import subprocess
    import sys
    import zipfile

    seen = [_register(world, given_name=f"証拠{i}") for i in range(2)]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    for pid in seen:
        r = world.http.get(f"/api/v1/patients/{pid}/chart", headers=world.h("nurse_ben"))
        assert r.status_code == 200
    iid = _open(world, kind="unauthorised", title="看護師アカウントの不正使用")
    with world.db.session(write=True) as s:
        service.save_scope(
            s, world.actors["sec_sae"], iid, Scope(user_id=world.actors["nurse_ben"].user_id,
                                                   start=start)
        )  # fmt: skip
        s.commit()
    url = f"/admin/incidents/{iid}/evidence.zip"
    for who in ("nurse_ben", "clerk_chika", "dr_aiko"):
        assert world.http.get(url, headers=world.h(who)).status_code == 403
    page = world.http.get(f"/admin/incidents/{iid}", headers=world.h("sec_sae"))
    assert url in page.text and "証拠一式をダウンロード" in page.text
    r = world.http.get(url, headers=world.h("audit_aki"))
    assert r.status_code == 200, r.text
    assert (
        r.headers["content-type"] == "application/zip"
        and "attachment" in (r.headers["content-disposition"])
    )
    assert r.headers["cache-control"] == "no-store"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        assert {"README.txt", "affected.csv", "evidence/verify_bundle.py"} <= names
        listed = zf.read("affected.csv").decode("utf-8-sig")
        assert listed.count("証拠") == 2 and listed.startswith("患者番号,氏名")
        zf.extractall(tmp_path)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "evidence" / "verify_bundle.py"),
         str(tmp_path / "evidence")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with world.db.session(write=False) as s:
        bodies = [json.loads(b) for b in s.scalars(select(AuditEvent.body))]
    exported = [b for b in bodies if b["tag"] == "system:audit:exported"]
    assert exported and exported[-1]["detail"]["incident"] == str(iid)
    assert exported[-1]["actor"]["role"] == "auditor"


def test_merging_a_person_notified_under_both_registrations_keeps_both_notices(
    world: World,
) -> None:
    """Two registrations of one person, each sent a notice for the same incident: the merge
    goes through (it used to hit the one-notice-per-patient rule), the kept registration keeps
    its notice and the duplicate's stays on the duplicate, as it was sent; a staff member's
    link to the duplicate (staff-as-patient) follows the kept registration."""
    from mamori.detection import service as detection
    from mamori.detection.models import StaffPatientLink
    from mamori.incidents.models import IncidentNotice

    keep = _register(world, given_name="統合")
    dup = _register(world, given_name="統合")
    iid = _open(world, kind="device", title="USBメモリの紛失")
    with world.db.session(write=True) as s:
        for pid in (keep, dup):
            service.record_notice(
                s, world.actors["sec_sae"], iid, uuid.UUID(pid), method="mail",
                sent_on=clinic_today(),
            )  # fmt: skip
        detection.link_patient(
            s, world.actors["director"], world.actors["nurse_ben"].user_id, uuid.UUID(dup),
            "self",
        )  # fmt: skip
        s.commit()
    r = world.http.post(
        f"/api/v1/patients/{keep}/merge",
        json={"duplicate_id": dup, "reason": "二重登録"},
        headers=world.h("director"),
    )
    assert r.status_code == 200, r.text
    with world.db.session(write=False) as s:
        notices = {str(n.patient_id) for n in s.scalars(select(IncidentNotice))}
        links = [str(x.patient_id) for x in s.scalars(select(StaffPatientLink))]
        assert verify_all(s)[1] == []
    assert notices == {keep, dup} and links == [keep]
    with world.db.session(write=False) as s:
        assert service.get(s, world.actors["sec_sae"], iid).notices == 2


def test_a_device_and_a_backup_generation_as_the_scope(world: World) -> None:
    pid = _register(world)
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    iid = _open(world, kind="device", title="受付のノートPC紛失")
    with world.db.session(write=True) as s:
        # no such device: an empty list, not an error
        found = service.preview_affected(s, world.actors["sec_sae"], iid, Scope(device_id="x" * 64))
        assert found.rows == []
        with pytest.raises(NotFound):
            service.preview_affected(s, world.actors["sec_sae"], iid, Scope(generation=999))
        with pytest.raises(InvalidInput):
            service.preview_affected(s, world.actors["sec_sae"], iid, Scope())


def test_a_timeline_entry_cannot_be_changed_or_removed(world: World) -> None:
    iid = _open(world)
    with world.db.session(write=True) as s:
        service.add_note(s, world.actors["sec_sae"], iid, "ベンダーに電話した")
        s.commit()
    drop_insert_only_triggers(world.db.engine)
    with world.db.session(write=True) as s:
        note_id = s.scalar(
            select(IncidentEntry.id).where(
                IncidentEntry.incident_id == iid, IncidentEntry.kind == "note"
            )
        )
        assert note_id is not None
        # the step of the playbook rewritten: its outcome flipped in the database
        s.execute(update(IncidentEntry).where(IncidentEntry.id == note_id).values(outcome="done"))
        s.commit()
    with world.db.session(write=True) as s, pytest.raises(RecordIntegrityFailed):
        service.get(s, world.actors["director"], iid)
    with world.db.session(write=True) as s:
        _, problems = verify_all(s)
        assert any(p.record_type == "IncidentEntry" for p in problems)
    # removed outright (with its versions): the incident's own count no longer matches
    with world.db.session(write=True) as s:
        s.execute(update(IncidentEntry).where(IncidentEntry.id == note_id).values(outcome=""))
        s.execute(delete(IncidentEntry).where(IncidentEntry.id == note_id))
        s.execute(text("DELETE FROM record_version WHERE record_type = 'IncidentEntry'"))
        s.commit()
    with world.db.session(write=True) as s, pytest.raises(RecordIntegrityFailed):
        service.get(s, world.actors["director"], iid)
    # and the head itself: the incident's stage rewritten
    with world.db.session(write=True) as s:
        s.execute(update(Incident).where(Incident.id == iid).values(stage="closed"))
        s.commit()
    with world.db.session(write=True) as s:
        _, problems = verify_all(s)
        assert any(p.record_type == "Incident" for p in problems)


def test_opened_from_an_alert_a_lost_device_and_the_backup_alarm(world: World) -> None:
    """The open form is filled from where the incident was noticed, with the affected-patient
    scope ready: the account of an alert, the device whose sessions were revoked."""
    pid = _register(world)
    world.http.get(f"/api/v1/patients/{pid}", headers=world.h("clerk_chika"))
    with world.db.session(write=True) as s:
        clerk = world.actors["clerk_chika"]
        alert = SecurityAlert(
            clinic_id=clerk.clinic_id, kind="lockout", user_id=clerk.user_id, summary="ロック"
        )
        s.add(alert)
        s.commit()
        alert_id = alert.id
    with world.db.session(write=True) as s:
        pre = service.prefill(s, world.actors["sec_sae"], "alert", str(alert_id))
        assert pre.kind == "unauthorised" and pre.source == f"alert:{alert_id}"
        assert pre.scope is not None and pre.scope.user_id == world.actors["clerk_chika"].user_id
        pre = service.prefill(s, world.actors["sec_sae"], "backup-alarm", "")
        assert pre.kind == "ransomware" and pre.source == "backup-alarm"
        with pytest.raises(NotFound):
            service.prefill(s, world.actors["sec_sae"], "device", "no-such-device")
        with pytest.raises(Forbidden):  # the desk reports, it does not open incidents
            service.prefill(s, world.actors["clerk_chika"], "backup-alarm", "")
        # another clinic's alert is not found, and the attempt is recorded as such
        other_director = dataclasses.replace(
            world.actors["dr_chen"], role=world.actors["director"].role
        )
        with pytest.raises(NotFound):
            service.prefill(s, other_director, "alert", str(alert_id))


def test_the_contact_chart_warns_of_a_duty_nobody_answers(world: World) -> None:
    with world.db.session(write=True) as s:
        lines = service.contact_chart(s, world.actors["nurse_ben"])  # everyone may read it
        gaps = {line.duty for line in service.contact_gaps(lines)}
        # the outside bodies nobody entered, and the clinic's own roles without a number
        assert {"vendor", "police", "hokenjo"} <= gaps
        assert {"director", "security_officer"} <= gaps  # named from the accounts, no number
        mhlw = next(line for line in lines if line.duty == "mhlw")
        assert mhlw.shipped and mhlw.shipped["phone"] == "03-6812-7837"
        with pytest.raises(Forbidden):
            service.set_contact(
                s, world.actors["nurse_ben"], contact_id=None, duty="vendor", organisation="x",
                name="", deputy="", phone="", when_to_call="", active=True,
            )  # fmt: skip
        with pytest.raises(InvalidInput):
            service.set_contact(
                s, world.actors["sec_sae"], contact_id=None, duty="vendor", organisation="保守",
                name="", deputy="", phone="call me", when_to_call="", active=True,
            )  # fmt: skip
        service.set_contact(
            s, world.actors["sec_sae"], contact_id=None, duty="vendor",
            organisation="まもりシステム保守", name="担当 太郎", deputy="代理 次郎",
            phone="03-1234-5678", when_to_call="異常時すぐ", active=True,
        )  # fmt: skip
        s.commit()
    with world.db.session(write=True) as s:
        gaps = {
            line.duty
            for line in service.contact_gaps(service.contact_chart(s, world.actors["director"]))
        }
        assert "vendor" not in gaps and "police" in gaps


@pytest.mark.one_backend
def test_the_incident_pages_read_in_english_and_japanese(world: World) -> None:
    """Every screen of the register renders in both languages with no raw code showing."""
    iid = _open(world, kind="misdirected", title="FAXの誤送信")
    with world.db.session(write=True) as s:
        service.save_scope(
            s, world.actors["sec_sae"], iid, Scope(user_id=world.actors["dr_aiko"].user_id)
        )
        s.commit()
    pages = (
        f"/admin/incidents/{iid}",
        f"/admin/incidents/{iid}/affected",
        "/admin/incidents",
        "/admin/incidents/new?source=backup-alarm",
        "/admin/incidents/playbooks?kind=misdirected",
        "/incidents/contacts",
        "/incidents/report",
    )
    for lang, words in (("ja", ("誤送信", "連絡体制図")), ("en", ("Mis-sent", "Contact chart"))):
        world.http.cookies.set("mamori_lang", lang)
        seen = ""
        for url in pages:
            r = world.http.get(url, headers=world.h("director"))
            assert r.status_code == 200, (url, r.text[:300])
            seen += r.text
            raws = ("misdirected<", "ransomware<", ">open<", "security_officer<", ">incident-")
            for raw in raws if lang == "ja" else raws[:2]:
                assert raw not in r.text, (lang, url, raw)
        assert all(w in seen for w in words), (lang, words)
    world.http.cookies.clear()


def test_a_playbook_is_edited_in_the_words_the_screen_shows() -> None:
    steps = service.shipped_playbooks()["ransomware"]
    text = service.playbook_text(steps)
    assert text.splitlines()[1].startswith("安全管理者 | バックアップへの経路を遮断する")
    assert service.parse_playbook(text) == steps  # what the form shows reads back the same
    assert service.parse_playbook("security_officer | 確認 | isolate")[0]["action"] == "isolate"
    with pytest.raises(InvalidInput) as e:
        service.parse_playbook("受付係 | 確認する")
    assert "役割「受付係」はありません" in e.value.ja and "安全管理者" in e.value.ja
