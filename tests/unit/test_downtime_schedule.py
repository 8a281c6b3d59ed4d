"""When serve writes downtime bundles: mornings and noons for the day, evenings for the next
working day (Sunday and 祝日 skipped)."""

from __future__ import annotations

import datetime as dt

import pytest

from mamori.clinic.calendar import JST
from mamori.continuity.schedule import DowntimeSettings, downtime_settings, next_run
from mamori.errors import InstanceError

S = DowntimeSettings()


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=JST)


@pytest.mark.parametrize(
    ("now", "when", "day"),
    [
        ("2026-12-07 06:00", "2026-12-07 07:30", "2026-12-07"),  # Monday morning
        ("2026-12-07 07:30", "2026-12-07 12:00", "2026-12-07"),  # just after: noon
        ("2026-12-07 13:00", "2026-12-07 18:00", "2026-12-08"),  # evening: tomorrow's
        ("2026-12-12 19:00", "2026-12-13 07:30", "2026-12-13"),  # Saturday night → Sunday 07:30
        ("2026-12-12 17:00", "2026-12-12 18:00", "2026-12-14"),  # Saturday evening: Monday's
        ("2026-12-31 17:00", "2026-12-31 18:00", "2027-01-02"),  # 元日 (祝日) skipped
    ],
)
def test_the_next_bundle(now: str, when: str, day: str) -> None:
    got_when, got_day = next_run(at(now), S)
    assert got_when == at(when) and got_day == dt.date.fromisoformat(day)


def test_the_settings_and_their_errors() -> None:
    s = downtime_settings({"destinations": ["/media/usb"], "run_as": "director", "noon": "12:30"})
    assert s.enabled and s.noon == dt.time(12, 30)
    assert not downtime_settings({"destinations": ["/media/usb"]}).enabled  # no run_as
    with pytest.raises(InstanceError):
        downtime_settings({"morning": "7時"})
