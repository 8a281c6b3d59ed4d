"""Sign-in throttling that stops guessing without handing an attacker a way to lock staff out.

Three counters, each with exponential backoff once its free allowance is used up:

* ``acct-src:<account>:<source>`` — one account from one address: 5 free failures, then
  1 s, 2 s, 4 s … up to 15 minutes between attempts;
* ``src:<source>`` — one address across all accounts (password spraying): 20 free, then the
  same backoff up to an hour;
* ``acct:<account>`` — one account from anywhere: after 50 failures the account is **locked**
  until an administrator unlocks it, and an alert is raised. The lock does not apply on devices
  the person has fully signed in from before (a device cookie), so an attacker elsewhere cannot
  keep staff out of their own terminals.

A successful sign-in (both factors) clears the account+source counter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mamori.auth.models import Throttle

ACCT_SRC_FREE = 5
SRC_FREE = 20
ACCT_LOCK_AT = 50
ACCT_SRC_CAP = 15 * 60
SRC_CAP = 60 * 60


@dataclass(frozen=True)
class Keys:
    acct_src: str
    src: str
    acct: str | None  # None when the login ID matches no account

    def all(self) -> list[str]:
        return [k for k in (self.acct_src, self.src, self.acct) if k]


def keys_for(account: str | None, login_id: str, source: str | None) -> Keys:
    src = source or "unknown"
    who = account or "unknown:" + hashlib.sha256(login_id.encode()).hexdigest()[:16]
    return Keys(
        acct_src=f"acct-src:{who}:{src}",
        src=f"src:{src}",
        acct=f"acct:{account}" if account else None,
    )


def _backoff(failures: int, free: int, cap: int) -> int:
    if failures < free:
        return 0
    return int(min(2 ** (failures - free), cap))


def _rows(session: Session, keys: list[str]) -> dict[str, Throttle]:
    return {t.key: t for t in session.scalars(select(Throttle).where(Throttle.key.in_(keys))).all()}


def retry_after(session: Session, keys: Keys, now: dt.datetime, *, known_device: bool) -> int:
    """Seconds the caller must wait (0: may try now). -1: the account is locked."""
    rows = _rows(session, keys.all())
    acct = rows.get(keys.acct or "")
    if acct is not None and acct.locked and not known_device:
        return -1
    wait = 0
    for key in (keys.acct_src, keys.src):
        row = rows.get(key)
        if row is not None and row.blocked_until is not None and row.blocked_until > now:
            wait = max(wait, int((row.blocked_until - now).total_seconds()) + 1)
    return wait


def fail(session: Session, keys: Keys, now: dt.datetime) -> bool:
    """Count one failure on every counter; True if this failure locked the account."""
    rows = _rows(session, keys.all())
    locked_now = False
    for key in keys.all():
        row = rows.get(key)
        if row is None:
            row = Throttle(key=key, failures=0, locked=False)
            session.add(row)
        row.failures = (row.failures or 0) + 1
        row.last_failure_at = now
        if key == keys.acct:
            if row.failures >= ACCT_LOCK_AT and not row.locked:
                row.locked = True
                locked_now = True
        else:
            free, cap = (
                (ACCT_SRC_FREE, ACCT_SRC_CAP) if key == keys.acct_src else (SRC_FREE, SRC_CAP)
            )
            wait = _backoff(row.failures, free, cap)
            row.blocked_until = now + dt.timedelta(seconds=wait) if wait else None
    session.flush()
    return locked_now


def succeed(session: Session, keys: Keys) -> None:
    row = session.get(Throttle, keys.acct_src)
    if row is not None:
        row.failures = 0
        row.blocked_until = None


def unlock(session: Session, account: str) -> bool:
    """Administrator unlock: clears the account-wide lock and its counter."""
    row = session.get(Throttle, f"acct:{account}")
    if row is None or (not row.locked and not row.failures):
        return False
    row.locked = False
    row.failures = 0
    return True


def is_locked(session: Session, account: str) -> bool:
    row = session.get(Throttle, f"acct:{account}")
    return bool(row is not None and row.locked)
