"""The APPI arithmetic and the reportability proposal, as pure functions: the day the clinic
knew is day 1; the 速報 falls on days 3–5, the 確報 on day 30, or day 60 for an improper
purpose; no deadline moves off a weekend; month and year ends and leap years are calendar
arithmetic, not 30-day months."""

from __future__ import annotations

import datetime as dt

import pytest

from mamori.errors import InvalidInput
from mamori.incidents import rules

D = dt.date


@pytest.mark.parametrize(
    ("knew", "malicious", "final"),
    [
        (D(2026, 12, 7), False, D(2027, 1, 5)),  # across the year end
        (D(2026, 12, 7), True, D(2027, 2, 4)),  # 60 days: the 60th day
        (D(2027, 1, 31), False, D(2027, 3, 1)),  # February has 28 days in 2027
        (D(2028, 1, 31), False, D(2028, 2, 29)),  # …and 29 in 2028
        (D(2028, 2, 29), True, D(2028, 4, 28)),
        (D(2026, 3, 31), False, D(2026, 4, 29)),  # from a month end
        (D(2026, 11, 3), True, D(2027, 1, 1)),  # lands on 元日: it does not move
    ],
)
def test_final_report_falls_on_the_30th_or_60th_day(
    knew: dt.date, malicious: bool, final: dt.date
) -> None:
    assert rules.final_due(knew, malicious) == final
    days = 60 if malicious else 30
    # day 1 is the day the clinic knew: the due date is day N, counted inclusively
    assert (final - knew).days + 1 == days


def test_prompt_report_window_is_days_three_to_five() -> None:
    assert rules.prompt_window(D(2026, 12, 30)) == (D(2027, 1, 1), D(2027, 1, 3))
    assert rules.prompt_window(D(2028, 2, 27)) == (D(2028, 2, 29), D(2028, 3, 2))


def test_deadline_states_from_today() -> None:
    knew = D(2026, 12, 1)
    prompt, final = rules.deadlines(knew, False, None, None, today=D(2026, 12, 2))
    assert (prompt.due, prompt.days_left, prompt.state) == (D(2026, 12, 5), 3, "pending")
    assert rules.deadlines(knew, False, None, None, D(2026, 12, 3))[0].state == "soon"
    assert rules.deadlines(knew, False, None, None, D(2026, 12, 5))[0].state == "today"
    late = rules.deadlines(knew, False, None, None, D(2026, 12, 8))[0]
    assert late.state == "overdue" and late.days_left == -3
    sent = rules.deadlines(knew, False, D(2026, 12, 9), None, D(2026, 12, 10))[0]
    assert sent.state == "sent"  # late, but sent: no more reminders
    assert final.due == D(2026, 12, 30) and final.label_ja.startswith("確報（30日")
    assert rules.deadlines(knew, True, None, None, D(2026, 12, 2))[1].label_ja.startswith(
        "確報（60日"
    )


def test_knew_on_cannot_be_in_the_future_or_before_the_incident() -> None:
    today = D(2026, 12, 7)
    rules.check_dates(today, today, today)
    rules.check_dates(D(2026, 12, 1), D(2026, 11, 20), today)
    with pytest.raises(InvalidInput) as e:
        rules.check_dates(D(2026, 12, 8), None, today)
    assert e.value.field == "knew_on" and "未来" in e.value.ja
    with pytest.raises(InvalidInput) as e:
        rules.check_dates(D(2026, 12, 1), D(2026, 12, 3), today)
    assert e.value.field == "knew_on" and "発生日より前" in e.value.ja
    with pytest.raises(InvalidInput) as e:
        rules.check_dates(D(2026, 12, 7), D(2026, 12, 9), today)
    assert e.value.field == "occurred_on"


def _facts(**over: object) -> rules.Facts:
    base: dict[str, object] = {
        "kind": "insider", "patients": 1, "clinical": True, "malicious": True, "encrypted": False,
    }  # fmt: skip
    base.update(over)
    return rules.Facts(**base)  # type: ignore[arg-type]


def test_one_persons_medical_data_is_reportable() -> None:
    p = rules.propose(_facts())
    assert p.reportable and p.conditions == (1, 3) and not p.exempt


def test_demographics_alone_by_mistake_is_not_proposed_but_is_flagged() -> None:
    p = rules.propose(_facts(kind="other", clinical=False, malicious=False))
    assert not p.reportable and p.conditions == ()
    assert any("受診の事実" in ja for ja, _ in p.reasons)


def test_more_than_a_thousand_people_is_condition_four() -> None:
    p = rules.propose(_facts(kind="other", patients=1001, clinical=False, malicious=False))
    assert p.reportable and p.conditions == (4,)
    assert not rules.propose(
        _facts(kind="other", patients=1000, clinical=False, malicious=False)
    ).reportable


def test_strong_encryption_and_a_backup_generation_are_exempt_proposals() -> None:
    lost = rules.propose(_facts(kind="device", malicious=False, encrypted=True))
    assert lost.exempt and not lost.reportable
    stolen_backup = rules.propose(_facts(kind="device", patients=800, backup_copy=True))
    assert stolen_backup.exempt and not stolen_backup.reportable
    assert any("age" in ja for ja, _ in stolen_backup.reasons)


def test_ransomware_is_proposed_reportable_before_any_patient_is_listed() -> None:
    p = rules.propose(_facts(kind="ransomware", patients=0, clinical=False))
    assert p.reportable and 3 in p.conditions
    assert any("持ち出し" in ja for ja, _ in p.reasons)


def test_nothing_touched_is_not_reportable() -> None:
    p = rules.propose(_facts(kind="fault", patients=0, clinical=False, malicious=False))
    assert not p.reportable
