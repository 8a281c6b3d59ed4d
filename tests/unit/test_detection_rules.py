"""Each explanation and rule of the detector fires on what it names and stays quiet on its
hard negative (``detection.engine``); each case type has its sentence."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from mamori.authz.roles import Role
from mamori.clinic.calendar import JST
from mamori.detection import engine
from mamori.detection.engine import Event, PatientFacts, Shift, Staff, World
from mamori.detection.models import DetectionCase
from mamori.detection.service import sentence

DAY = dt.date(2026, 6, 17)  # a Wednesday, after the レセプト days
U = {name: uuid.UUID(int=i + 1) for i, name in enumerate(
    ("doc", "doc2", "nurse", "clerk", "clerk2", "tech", "vendor", "gone")
)}  # fmt: skip
P = [uuid.UUID(int=1000 + i) for i in range(200)]
ROLES = {
    "doc": "physician", "doc2": "physician", "nurse": "nurse", "clerk": "reception",
    "clerk2": "reception", "tech": "nurse", "vendor": "vendor", "gone": "reception",
}  # fmt: skip


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), JST).astimezone(dt.UTC)


def world(**over: Any) -> World:
    staff = {U[n]: Staff(role=r, name=n) for n, r in ROLES.items()}
    w = World(
        staff=staff,
        visits={},
        links={},
        roster={},
        vendor_windows={},
        suppressed={},
    )
    for k, v in over.items():
        setattr(w, k, v)
    return w


class Log:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(
        self, who: str, tag: str, patients: list[uuid.UUID], when: dt.datetime, **kw: Any
    ) -> None:
        self.events.append(
            Event(
                seq=len(self.events) + 1,
                at=when,
                tag=tag,
                user=U[who],
                role=ROLES[who],
                patients=tuple(patients),
                **kw,
            )
        )

    def read(
        self, who: str, p: uuid.UUID, when: dt.datetime, what: str = "chart", **kw: Any
    ) -> None:
        tag = "patient:chart:viewed" if what == "chart" else "patient:record:viewed"
        self.add(who, tag, [p], when, what=what, **kw)

    def write(self, who: str, p: uuid.UUID, when: dt.datetime, rtype: str = "ProgressNote") -> None:
        self.add(who, "record:created", [p], when, record_type=rtype)


def cases(w: World, log: Log) -> dict[tuple[uuid.UUID, uuid.UUID | None], engine.Hit]:
    out = engine.run(w, log.events)
    return {(h.user, h.patient): h for h in out.hits}


# --- explanations ------------------------------------------------------------------------------


def test_visits_records_calls_care_and_receipts_explain_and_share_is_counted() -> None:
    w = world(
        visits={
            P[0]: [(DAY, U["doc"], False)],
            P[1]: [(DAY - dt.timedelta(days=200), U["doc"], False)],
            P[3]: [(dt.date(2026, 5, 20), U["doc"], False)],
        }
    )
    log = Log()
    log.read("doc", P[0], at(10))  # E1: the attending, on the visit day
    log.read("nurse", P[0], at(9))  # E1 (weak): on duty on the visit day
    log.read("doc", P[1], at(11))  # E5: seen by this physician within a year
    log.write("nurse", P[2], at(12))
    log.read("nurse", P[2], at(12, 5))  # E2: wrote for the patient
    log.write("clerk", P[4], at(13), rtype="ContactLog")
    log.read("doc2", P[4], at(15))  # E4: a call about the patient was logged
    out = engine.run(w, log.events)
    assert out.reads == out.explained_reads == 5
    by = {(a.user, a.patient): a.explained_by for a in out.accesses}
    assert by[(U["doc"], P[0])] == "E1" and by[(U["nurse"], P[0])] == engine.WEAK
    assert by[(U["doc"], P[1])] == "E5" and by[(U["nurse"], P[2])] == "E2"
    assert by[(U["doc2"], P[4])] == "E4"
    assert out.hits == []
    # レセプト: last month's visit, read by the desk in the first days of the month
    early = dt.date(2026, 6, 3)
    log = Log()
    log.read("clerk", P[3], at(10, day=early), what="Condition")
    out = engine.run(w, log.events)
    assert out.accesses[0].explained_by == "E3"
    # … also when the patient comes again that day: レセプト work, not one more of a crowd
    # (the weak visit-day reason gives way to the stronger one; B4 counts only weak reads)
    w.visits[P[3]] = [*w.visits[P[3]], (early, U["doc"], False)]
    log = Log()
    log.read("clerk", P[3], at(10, day=early), what="Condition")
    log.read("nurse", P[3], at(10, day=early))
    by = {a.user: a.explained_by for a in engine.run(w, log.events).accesses}
    assert by == {U["clerk"]: "E3", U["nurse"]: engine.WEAK}
    log = Log()
    log.read("clerk", P[3], at(10, day=dt.date(2026, 6, 20)), what="Condition")
    assert engine.run(w, log.events).accesses[0].explained_by is None  # not in レセプト days


def test_the_review_itself_is_explained() -> None:
    log = Log()
    log.read("doc", P[0], at(10), what="audit-review")
    log.read("doc", P[1], at(10), what="detection-review")
    out = engine.run(world(), log.events)
    assert out.explained_reads == 2 and out.hits == []


# --- relationship flags -----------------------------------------------------------------------


def test_r1_a_colleague_as_patient_and_not_when_explained() -> None:
    w = world(links={P[0]: [(U["nurse"], "self")]})
    log = Log()
    log.read("clerk", P[0], at(10), what="Patient")
    hit = cases(w, log)[(U["clerk"], P[0])]
    assert "R1" in hit.rules and hit.tier == "daily"
    w.visits = {P[0]: [(DAY, U["doc"], False)]}  # the colleague is a patient today: care
    assert cases(w, log) == {}


def test_r2_household_needs_surname_and_address_or_phone() -> None:
    w = world()
    w.staff[U["clerk"]].family_kana = "ヤマダ"
    w.staff[U["clerk"]].phone = "0312345678"
    w.facts = {
        P[0]: PatientFacts(family_kana="ヤマダ", phone="0312345678"),
        P[1]: PatientFacts(family_kana="ヤマダ", phone="0699999999", address="大阪"),
    }
    w.visits = {P[1]: [(DAY - dt.timedelta(days=10), None, False)]}
    w.visits[P[0]] = [(DAY - dt.timedelta(days=10), None, False)]
    log = Log()
    log.read("clerk", P[0], at(10), what="Patient")
    log.read("clerk", P[1], at(10, 5), what="Patient")
    found = cases(w, log)
    assert "R2" in found[(U["clerk"], P[0])].rules
    assert (U["clerk"], P[1]) not in found  # a shared surname alone is never enough
    # the user's own registered family
    w2 = world(links={P[2]: [(U["nurse"], "family")]})
    log = Log()
    log.read("nurse", P[2], at(10))
    hit = cases(w2, log)[(U["nurse"], P[2])]
    assert "R2" in hit.rules and hit.facts["own"] == "family"


def test_r3_r4_flags_raise_and_r5_alone_is_no_case() -> None:
    w = world(facts={P[0]: PatientFacts(vip=True), P[1]: PatientFacts(sensitive=True)})
    log = Log()
    log.read("nurse", P[0], at(10))
    log.read("nurse", P[1], at(10, 1))
    log.read("nurse", P[2], at(10, 2), what="Patient")  # no visit for long: R5 only
    found = cases(w, log)
    assert "R3" in found[(U["nurse"], P[0])].rules
    assert "R4" in found[(U["nurse"], P[1])].rules
    assert (U["nurse"], P[2]) not in found


def test_r6_the_desk_reading_clinical_data_and_refused_attempts() -> None:
    w = world(visits={P[0]: [(DAY - dt.timedelta(days=40), None, False)]})
    log = Log()
    log.read("clerk", P[0], at(10), what="MedicationRequest")
    assert "R6" in cases(w, log)[(U["clerk"], P[0])].rules
    log = Log()
    for i in range(3):
        log.add("clerk", "access:permission:denied", [P[i]], at(11, i), outcome="failure")
    hit = cases(world(), log)[(U["clerk"], None)]
    assert hit.rules == {"R6"} and hit.facts["denied"] == 3
    log = Log()
    for i in range(2):
        log.add("clerk", "access:permission:denied", [P[i]], at(11, i), outcome="failure")
    assert cases(world(), log) == {}  # a mis-click or two is not probing


# --- behaviour ----------------------------------------------------------------------------------


def test_b1_volume_over_the_floor_and_the_baseline() -> None:
    log = Log()
    for i in range(8):
        log.read("nurse", P[i], at(10, i))
    hit = cases(world(), log)[(U["nurse"], None)]
    assert "B1" in hit.rules and hit.facts["patients"] == 8
    log = Log()
    for i in range(3):
        log.read("nurse", P[i], at(10, i))
    assert (U["nurse"], None) not in cases(world(), log)
    # a snooper present from the first week does not make it normal: peers set the bar
    w = world(daily_counts={U["nurse"]: [10] * 30, U["tech"]: [0] * 30})
    log = Log()
    for i in range(9):
        log.read("nurse", P[i], at(10, i))
    assert "B1" in cases(w, log)[(U["nurse"], None)].rules


def test_b2_bulk_export_and_print_bursts_are_immediate() -> None:
    log = Log()
    log.add("doc", "patient:data:exported", P[:120], at(23), what="fhir:bulk", exported=120)
    (hit,) = engine.immediate(world(), log.events)
    assert hit.rules == {"B2"} and hit.tier == "immediate"
    log = Log()
    log.add("doc", "patient:data:exported", P[:50], at(23), what="fhir:bulk", exported=50)
    assert engine.immediate(world(), log.events) == []
    log = Log()
    for i in range(engine.PRINT_BURST):
        log.add("nurse", "patient:chart:printed", [P[i]], at(12, i // 2))
    assert [h.rules for h in engine.immediate(world(), log.events)] == [{"B2"}]
    log = Log()
    for i in range(engine.PRINT_BURST):
        log.add("nurse", "patient:chart:printed", [P[i]], at(9 + i // 2, 0))  # over hours
    assert engine.immediate(world(), log.events) == []


def test_b3_name_browsing_after_searches() -> None:
    log = Log()
    for i in range(3):
        log.add("clerk", "patient:list:viewed", P[10:15], at(14, i), what="Patient:search")
    log.read("clerk", P[10], at(14, 5), what="Patient")
    log.read("clerk", P[11], at(14, 6), what="Patient")
    w = world(visits={p: [(DAY - dt.timedelta(days=30), None, False)] for p in P[10:15]})
    found = cases(w, log)
    assert "B3" in found[(U["clerk"], P[10])].rules
    # the same searches for a patient booked today: explained, nothing raised
    w = world(visits={p: [(DAY, None, True)] for p in P[10:15]})
    assert cases(w, log) == {}


def test_b4_a_crowd_on_one_patient_and_not_the_treating_team() -> None:
    w = world(visits={P[0]: [(DAY, U["doc"], False)]})
    log = Log()
    log.read("doc", P[0], at(9))  # the attending
    for who in ("nurse", "clerk", "tech", "clerk2"):
        log.read(who, P[0], at(11))  # on duty, but neither treating nor writing
    found = cases(w, log)
    assert {"B4"} <= found[(U["tech"], P[0])].rules
    assert (U["doc"], P[0]) not in found
    log = Log()
    log.read("doc", P[0], at(9))
    log.write("nurse", P[0], at(9, 30))
    log.read("nurse", P[0], at(9, 31))
    log.read("tech", P[0], at(8, 45))  # chart prep
    log.read("clerk", P[0], at(12))  # 会計
    assert cases(w, log) == {}  # a visit's ordinary team


def test_b5_repeated_opens_of_one_patient_over_weeks() -> None:
    w = world(
        prior_days={(U["tech"], P[0]): {DAY - dt.timedelta(days=d) for d in (9, 23)}},
        visits={P[0]: [(DAY + dt.timedelta(days=1), None, True)]},
    )
    log = Log()
    log.read("tech", P[0], at(16), what="Patient")
    hit = cases(w, log)[(U["tech"], P[0])]
    assert "B5" in hit.rules and hit.facts.get("before_booking")
    w.prior_days = {(U["tech"], P[0]): {DAY - dt.timedelta(days=d) for d in (120, 150)}}
    assert cases(w, log) == {}  # long ago: not a pattern


def test_b6_contact_harvesting_against_the_peers() -> None:
    w = world(prior_demographic={U["tech"]: set(P[20:25]), U["nurse"]: {P[50]}})
    w.visits = {p: [(DAY - dt.timedelta(days=200), None, False)] for p in P}  # not in care now
    log = Log()
    log.read("tech", P[30], at(10), what="Patient")
    log.read("tech", P[31], at(10, 5), what="Patient")
    hit = cases(w, log)[(U["tech"], None)]
    assert "B6" in hit.rules and hit.facts["patients"] == 7
    w.prior_demographic = {U["tech"]: set(P[20:25]), U["nurse"]: set(P[60:70])}
    assert "B6" not in {r for h in cases(w, log).values() for r in h.rules}  # peers do too
    # patients in the clinic's care just now (the desk's calls): not harvesting
    w.prior_demographic = {U["tech"]: set(P[20:25]), U["nurse"]: {P[50]}}
    w.visits = {p: [(DAY - dt.timedelta(days=20), None, False)] for p in P}
    assert cases(w, log) == {}


def test_several_lesser_hits_of_one_user_are_one_case_and_a_colleague_stays_apart() -> None:
    w = world(links={P[9]: [(U["doc"], "self")]})
    w.visits = {p: [(DAY - dt.timedelta(days=300), None, False)] for p in P}
    w.roster = {(U["nurse"], DAY): Shift("leave")}
    log = Log()
    for i in range(3):
        log.read("nurse", P[i], at(20, i))  # on leave, patients not seen for long: B7 + R5
    log.read("nurse", P[9], at(20, 30))  # and a colleague's record
    found = cases(w, log)
    assert set(found) == {(U["nurse"], None), (U["nurse"], P[9])}
    folded = found[(U["nurse"], None)]
    assert folded.facts["folded"] == 3 and {"B7", "R5"} <= folded.rules
    text = sentence(_case(sorted(folded.rules), dict(folded.facts), None), NAMES, {})
    assert "予約・受診・記録・電話対応のない患者3人のカルテ" in text and "休暇中を含む" in text, (
        text
    )


def test_b7_off_roster_and_its_hard_negatives() -> None:
    w = world(roster={(U["nurse"], DAY): Shift("leave")})
    w.visits = {p: [(DAY - dt.timedelta(days=40), None, False)] for p in P}
    log = Log()
    log.read("nurse", P[0], at(21))
    hit = cases(w, log)[(U["nurse"], P[0])]
    assert "B7" in hit.rules and hit.facts["off"] == "leave"
    w.roster = {(U["nurse"], DAY): Shift("oncall", 0, 24 * 60)}
    assert cases(w, log) == {}  # on call
    # a physician documenting their own patients in the evening: explained by the writing
    w.roster = {}
    log = Log()
    log.write("doc", P[1], at(21, 30))
    log.read("doc", P[1], at(21, 29))
    assert cases(w, log) == {}
    # a roster error: records for several patients that day prove the person was at work
    w.roster = {(U["nurse"], DAY): Shift("off")}
    log = Log()
    for i in range(3):
        log.write("nurse", P[40 + i], at(10, i))
    log.read("nurse", P[0], at(11))
    assert all("B7" not in h.rules for h in cases(w, log).values())


def test_b8_account_misuse() -> None:
    w = world()
    w.staff[U["gone"]].disabled_at = at(9)
    log = Log()
    log.read("gone", P[0], at(10), what="Patient")
    (hit,) = engine.immediate(w, log.events)
    assert hit.rules == {"B8"} and hit.facts["misuse"] == "disabled"
    w.staff[U["gone"]].disabled_at = None
    w.staff[U["gone"]].left_on = DAY
    assert engine.immediate(w, log.events)[0].facts["misuse"] == "left"
    # the vendor: only inside an open maintenance window
    log = Log()
    log.read("vendor", P[0], at(10), what="Patient")
    assert engine.immediate(w, log.events)[0].facts["misuse"] == "vendor-outside-window"
    w.vendor_windows = {U["vendor"]: [(at(9), at(11))]}
    assert engine.immediate(w, log.events) == []
    # one account in use from two addresses at once (A → B → A within minutes)
    log = Log()
    log.read("doc", P[0], at(10), session="a", ip="10.0.0.5")
    log.read("doc", P[1], at(10, 2), session="b", ip="203.0.113.9")
    log.read("doc", P[2], at(10, 4), session="a", ip="10.0.0.5")
    assert any(h.facts.get("misuse") == "concurrent" for h in engine.run(world(), log.events).hits)
    log = Log()  # moving to another room's PC: A, then B for good
    log.read("doc", P[0], at(10), session="a", ip="10.0.0.5")
    log.read("doc", P[1], at(10, 2), session="b", ip="10.0.0.6")
    log.read("doc", P[2], at(10, 4), session="b", ip="10.0.0.6")
    assert not any(h.facts.get("misuse") for h in engine.run(world(), log.events).hits)
    # a sign-in on a leave day
    w = world(roster={(U["clerk"], DAY): Shift("leave")})
    log = Log()
    log.add("clerk", "auth:login:succeeded", [], at(10))
    assert engine.run(w, log.events).hits[0].facts["misuse"] == "leave-login"


def test_suppression_quiets_a_pair_until_its_date_but_never_the_immediate_tier() -> None:
    w = world(links={P[0]: [(U["nurse"], "self")]}, suppressed={(U["clerk"], P[0]): DAY})
    log = Log()
    log.read("clerk", P[0], at(10), what="Patient")
    assert cases(w, log) == {}
    w.suppressed = {(U["clerk"], P[0]): DAY - dt.timedelta(days=1)}
    assert (U["clerk"], P[0]) in cases(w, log)


def test_the_same_log_gives_the_same_cases() -> None:
    w = world(links={P[0]: [(U["nurse"], "self")]})
    log = Log()
    for i in range(9):
        log.read("clerk", P[i], at(10, i), what="Patient")
    first = [(h.user, h.patient, sorted(h.rules), h.score) for h in engine.run(w, log.events).hits]
    again = [(h.user, h.patient, sorted(h.rules), h.score) for h in engine.run(w, log.events).hits]
    assert first == again and first


# --- sentences --------------------------------------------------------------------------------


def _case(rules: list[str], facts: dict[str, Any], patient: uuid.UUID | None) -> DetectionCase:
    return DetectionCase(
        user_id=U["clerk"], patient_id=patient, tier="daily", score=5, rules=rules,
        facts=facts, first_seq=1, last_seq=2, first_at=at(10), last_at=at(11), status="open",
    )  # fmt: skip


NAMES = {U["clerk"]: ("山田", Role.RECEPTION), U["nurse"]: ("佐藤", Role.NURSE)}


@pytest.mark.parametrize(
    ("rules", "facts", "patient", "want"),
    [
        (["R1"], {"staff_of": str(U["nurse"]), "kinds": ["Observation"], "opens": 3}, P[0],
         "山田 が 職員 佐藤（看護師）本人（No.5 佐藤 花子）のカルテ（検査結果）を3回閲覧"),
        (["R2"], {"household": True, "opens": 1, "kinds": ["Patient"]}, P[0],
         "同じ世帯と思われる患者 No.5 佐藤 花子の基本情報・連絡先を1回閲覧"),
        (["B5"], {"prior_days": 4, "before_booking": True, "opens": 1}, P[0],
         "過去90日に同じ患者を4日閲覧（今回を除く）。予約日の直前"),
        (["B7", "R5"], {"off": "leave", "opens": 2, "kinds": ["chart"]}, P[0], "休暇中"),
        (["B4"], {"crowd": 5, "visit_day": True, "opens": 1}, P[0],
         "72時間内に職員5人がこの患者を閲覧"),
        (["B1"], {"patients": 12, "day": "2026-06-17"}, None, "説明のつかない患者12人"),
        (["B2"], {"exported": 400}, None, "患者400人分のデータを一括で書き出し"),
        (["B6"], {"patients": 9}, None, "基本情報・連絡先だけを閲覧"),
        (["B8"], {"misuse": "vendor-outside-window"}, None, "保守作業枠の外"),
        (["R6"], {"denied": 7}, None, "7回開こうとして拒否"),
    ],
)  # fmt: skip
def test_every_case_type_has_a_sentence_of_facts(
    rules: list[str], facts: dict[str, Any], patient: uuid.UUID | None, want: str
) -> None:
    text = sentence(_case(rules, facts, patient), NAMES, {P[0]: "No.5 佐藤 花子"})
    assert want in text, text
    assert text.endswith("。") and "None" not in text and "{" not in text
    en = sentence(_case(rules, facts, patient), NAMES, {P[0]: "No.5 佐藤 花子"}, lang="en")
    assert en and not any("\u3040" <= ch <= "\u30ff" for ch in en.replace("佐藤 花子", ""))


def test_break_the_glass_and_a_maintenance_window_explain_and_a_night_read_does_not() -> None:
    w = world(
        visits={P[0]: [(DAY, U["doc"], False)]},
        vendor_windows={U["vendor"]: [(at(13), at(15))]},
    )
    log = Log()
    log.add("nurse", "access:break-glass:granted", [P[5]], at(10))
    log.read("nurse", P[5], at(10, 1))  # E6
    log.read("vendor", P[6], at(14), what="Patient")  # E7: inside the window
    log.read("vendor", P[7], at(16), what="Patient")  # after it: not explained
    log.read("nurse", P[0], at(23, 30))  # the visit day, but at 23:30: not the day's work
    by = {(a.user, a.patient): a.explained_by for a in engine.run(w, log.events).accesses}
    assert by[(U["nurse"], P[5])] == "E6" and by[(U["vendor"], P[6])] == "E7"
    assert by[(U["vendor"], P[7])] is None and by[(U["nurse"], P[0])] is None


def test_a_weak_explanation_does_not_clear_ones_own_family() -> None:
    w = world(
        links={P[0]: [(U["clerk"], "family")], P[1]: [(U["nurse"], "self")]},
        visits={P[0]: [(DAY, U["doc"], False)], P[1]: [(DAY, U["doc"], False)]},
    )
    log = Log()
    log.read("clerk", P[0], at(12), what="Patient")  # on duty on the mother's visit day
    log.read("clerk", P[1], at(12, 5), what="Patient")  # a colleague's visit: everyday work
    found = cases(w, log)
    assert found[(U["clerk"], P[0])].rules == {"R2"}
    assert (U["clerk"], P[1]) not in found


def test_a_bigger_clinic_needs_a_bigger_crowd() -> None:
    small = world()
    big = world(staff={uuid.UUID(int=500 + i): Staff("nurse", f"n{i}") for i in range(30)})
    assert engine.crowd_threshold(small) == 3 and engine.crowd_threshold(big) == 5
