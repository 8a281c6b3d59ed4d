"""The clinic's calendar: Japan Standard Time, whatever the server's time zone.

Timestamps are stored in UTC; "today" (for visits, birth-date checks, prescriptions) is the
clinic's date in JST, so a visit at 08:30 JST is not filed under yesterday.
"""

from __future__ import annotations

import datetime as dt

JST = dt.timezone(dt.timedelta(hours=9), "JST")


def clinic_today() -> dt.date:
    return dt.datetime.now(JST).date()
