"""When ``mamori serve`` writes downtime bundles on its own (``[downtime]`` in mamori.toml):
each morning before opening and at noon for that day, and in the evening for the next working
day (Sundays and 祝日 skipped), so the morning of an outage always finds a bundle waiting.

A scheduled bundle is made under the account named in ``run_as`` (a director's), so its reads
are attributable like any other; a failure (a missing USB disk, no standby key) raises an
alert on the director's list and leaves the previous bundle in place.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jpholiday

from mamori.errors import InstanceError

log = logging.getLogger("mamori.continuity")


@dataclass(frozen=True)
class DowntimeSettings:
    destinations: tuple[str, ...] = ()  # folders, or sftp://user@host/dir (the standby PC)
    run_as: str = ""  # the director whose account the scheduled bundles are made under
    morning: dt.time = dt.time(7, 30)
    noon: dt.time = dt.time(12, 0)
    evening: dt.time = dt.time(18, 0)  # for the next working day
    closed_weekdays: tuple[int, ...] = field(default=(6,))  # Sunday
    sftp_key_file: Path | None = None  # this server's key for the standby PC's SFTP
    sftp_known_hosts: Path | None = None  # the standby PC's host key, pinned

    @property
    def enabled(self) -> bool:
        return bool(self.destinations and self.run_as)


def downtime_settings(raw: dict[str, Any]) -> DowntimeSettings:
    base = DowntimeSettings()
    try:

        def time(key: str, default: dt.time) -> dt.time:
            return dt.time.fromisoformat(str(raw[key])) if key in raw else default

        return DowntimeSettings(
            destinations=tuple(
                str(d) if str(d).startswith("sftp://") else str(Path(str(d)).expanduser())
                for d in raw.get("destinations", ())
            ),
            run_as=str(raw.get("run_as", "")),
            morning=time("morning", base.morning),
            noon=time("noon", base.noon),
            evening=time("evening", base.evening),
            closed_weekdays=tuple(int(d) for d in raw.get("closed_weekdays", base.closed_weekdays)),
            sftp_key_file=Path(str(raw["sftp_key_file"])) if raw.get("sftp_key_file") else None,
            sftp_known_hosts=Path(str(raw["sftp_known_hosts"]))
            if raw.get("sftp_known_hosts")
            else None,
        )
    except (TypeError, ValueError) as exc:
        raise InstanceError(
            f"[downtime] の設定が正しくありません: {exc}", f"[downtime] is not valid: {exc}"
        ) from exc


def working_day_after(day: dt.date, s: DowntimeSettings) -> dt.date:
    nxt = day + dt.timedelta(days=1)
    while nxt.weekday() in s.closed_weekdays or jpholiday.is_holiday(nxt):
        nxt += dt.timedelta(days=1)
    return nxt


def next_run(now: dt.datetime, s: DowntimeSettings) -> tuple[dt.datetime, dt.date]:
    """The next scheduled bundle after ``now`` (aware, JST): when, and for which day."""
    tz = now.tzinfo
    candidates = []
    for offset in (0, 1, 2):
        day = now.date() + dt.timedelta(days=offset)
        candidates += [
            (dt.datetime.combine(day, s.morning, tz), day),
            (dt.datetime.combine(day, s.noon, tz), day),
            (dt.datetime.combine(day, s.evening, tz), working_day_after(day, s)),
        ]
    return min((c for c in candidates if c[0] > now), key=lambda c: c[0])
