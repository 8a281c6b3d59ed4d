"""The clinic's calendar: Japan Standard Time, whatever the server's time zone.

Timestamps are stored in UTC; "today" (for visits, birth-date checks, prescriptions) is the
clinic's date in JST, so a visit at 08:30 JST is not filed under yesterday.
"""

from __future__ import annotations

import datetime as dt

JST = dt.timezone(dt.timedelta(hours=9), "JST")


def clinic_today() -> dt.date:
    return dt.datetime.now(JST).date()


# 元号: the first day of each era (the Gregorian date the era began)
_ERAS = (
    (dt.date(2019, 5, 1), "令和", "R"),
    (dt.date(1989, 1, 8), "平成", "H"),
    (dt.date(1926, 12, 25), "昭和", "S"),
    (dt.date(1912, 7, 30), "大正", "T"),
    (dt.date(1868, 10, 23), "明治", "M"),
)


def wareki(day: dt.date | None) -> str:
    """和暦: 1948-04-03 → 昭和23年4月3日; the first year of an era is 元年."""
    if day is None:
        return ""
    for start, name, _ in _ERAS:
        if day >= start:
            year = day.year - start.year + 1
            return f"{name}{'元' if year == 1 else year}年{day.month}月{day.day}日"
    return f"{day.year}年{day.month}月{day.day}日"


ERA_EN = {"令和": "Reiwa", "平成": "Heisei", "昭和": "Showa", "大正": "Taisho", "明治": "Meiji"}


def wareki_en(day: dt.date | None) -> str:
    """The Japanese era in English: 1948-04-03 → Showa 23 (an English page shows no kanji)."""
    if day is None:
        return ""
    for start, name, _ in _ERAS:
        if day >= start:
            return f"{ERA_EN[name]} {day.year - start.year + 1}"
    return str(day.year)


def age_on(birth: dt.date, today: dt.date | None = None) -> int:
    """Age in completed years on ``today`` (the clinic's today by default)."""
    today = today or clinic_today()
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
