"""The audit trail: every read and write of patient data, in a tamper-evident log.

Services never call this directly for ordinary access: the access gate and ``write_version``
fire hooks, and :func:`install` subscribes to them. Events are queued on the session during the
unit of work and appended when it commits:

* in a **write** transaction, in ``before_commit`` — the events commit *in the same
  transaction* as the change they record;
* after a **read** transaction, in ``after_commit`` — a separate write transaction appends
  them before ``commit()`` returns, so no caller gets the data before its audit event is
  durable (log-before-release). If the append fails, ``commit()`` raises and nothing is sent.

Each event is canonical JSON bytes with a contiguous ``seq``; it is hashed as an RFC 9162
Merkle leaf and chained (``chain_i = SHA-256(chain_{i-1} ‖ SHA-256(body_i))``). Bodies hold IDs,
roles, tags, hashes and versions — never secrets, tokens or clinical free text.

In development and test (``MAMORI_ENV=dev|test``) a unit of work that loaded patient data and
recorded no event raises :class:`AuditMissing`: a new code path that forgot the gate fails
loudly instead of leaking silently.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mamori.audit import merkle
from mamori.audit.appender import Appender
from mamori.audit.models import (
    AuditEvent,
    AuditEventPatient,
    AuditHead,
    chain_next,
)
from mamori.authz.actor import Actor, Intent
from mamori.authz.hooks import hooks
from mamori.canonical import canonical_json
from mamori.db import PatientData, driver_cursor, expire_loaded, utcnow
from mamori.errors import AuditUnavailable

QUEUE = "mamori_audit_queue"
PHI_LOADED = "mamori_phi_loaded"
RECORDED = "mamori_audit_recorded"
FORMAT_VERSION = 1


class AuditTag(enum.StrEnum):
    """Past-tense ``source:subject:action`` tags. Chosen once; renaming needs a migration."""

    CHART_VIEWED = "patient:chart:viewed"
    CHART_PRINTED = "patient:chart:printed"
    PRESCRIPTION_PRINTED = "patient:prescription:printed"  # 院外処方箋
    RECORD_VIEWED = "patient:record:viewed"
    LIST_VIEWED = "patient:list:viewed"
    DATA_EXPORTED = "patient:data:exported"
    RECORDS_VERIFIED = "system:records:verified"
    DATA_IMPORTED = "system:data:imported"  # bulk load (synthetic data, future migrations)
    INDEX_BUILT = "system:index:built"  # blind-index values for rows written before an index
    AUDIT_VERIFIED = "system:audit:verified"
    AUDIT_EXPORTED = "system:audit:exported"
    AUDIT_VIEWED = "audit:log:viewed"
    REVIEW_RECORDED = "audit:review:recorded"
    # sign-in and sessions
    LOGIN_SUCCEEDED = "auth:login:succeeded"
    LOGIN_FAILED = "auth:login:failed"
    LOGIN_THROTTLED = "auth:login:throttled"
    FACTOR_FAILED = "auth:factor:failed"
    FACTOR_ENROLLED = "auth:factor:enrolled"
    FACTOR_REVOKED = "auth:factor:revoked"
    ACCOUNT_LOCKED = "auth:account:locked"
    ACCOUNT_UNLOCKED = "auth:account:unlocked"
    LOGGED_OUT = "auth:session:ended"
    SESSION_EXPIRED = "auth:session:expired"
    SESSION_REVOKED = "auth:session:revoked"
    REAUTHENTICATED = "auth:reauth:succeeded"
    PASSWORD_CHANGED = "auth:password:changed"  # noqa: S105 - an event name
    TOKEN_ISSUED = "auth:token:issued"  # noqa: S105 - an event name
    TOKEN_REVOKED = "auth:token:revoked"  # noqa: S105 - an event name
    # access control
    ACCESS_DENIED = "access:permission:denied"
    CROSS_CLINIC = "access:other-clinic:attempted"
    BREAK_GLASS = "access:break-glass:granted"
    RESTRICTED_OPENED = "access:restricted:opened"
    INTEGRITY_FAILED = "system:record:integrity-failed"  # a head that is not its latest version
    # administration
    STAFF_CREATED = "admin:staff:created"
    STAFF_CHANGED = "admin:staff:changed"
    ROLE_CHANGED = "admin:role:changed"
    STAFF_DISABLED = "admin:staff:disabled"
    RESTRICTION_CHANGED = "admin:restriction:changed"
    VENDOR_WINDOW_OPENED = "admin:vendor-window:opened"
    VENDOR_WINDOW_CLOSED = "admin:vendor-window:closed"
    VENDOR_WINDOW_ACKNOWLEDGED = "admin:vendor-window:acknowledged"
    ALERT_REVIEWED = "admin:alert:reviewed"
    # keys (encryption at rest)
    KEYS_CREATED = "system:keys:created"
    KEK_ROTATED = "system:kek:rotated"
    DATA_KEY_ADDED = "system:data-key:added"
    DATA_REENCRYPTED = "system:data:reencrypted"
    DATA_KEY_RETIRED = "system:data-key:retired"
    KEYS_EXPORTED = "system:keys:exported"
    # backup and recovery
    BACKUP_KEYS_CREATED = "system:backup-keys:created"
    BACKUP_COMPLETED = "system:backup:completed"
    BACKUP_FAILED = "system:backup:failed"
    BACKUP_ALARM = "system:backup:alarm-raised"
    BACKUP_HOLD_RELEASED = "system:backup:hold-released"
    BACKUP_VERIFIED = "system:backup:verified"
    BACKUP_PRUNED = "system:backup:pruned"
    BACKUP_RESTORED = "system:backup:restored"
    BACKUP_DRILLED = "system:backup:drilled"
    COPY_PROMOTED = "system:copy:promoted"  # a restored copy made the clinic's record
    # business continuity
    STANDBY_KEY_ADDED = "continuity:standby-key:added"
    STANDBY_KEY_REVOKED = "continuity:standby-key:revoked"
    DOWNTIME_BUNDLED = "continuity:bundle:written"  # lists the patients it contains
    DOWNTIME_CLOSED = "continuity:bundle:closed"  # its unused numbers, after downtime
    ISOLATED = "continuity:isolation:on"  # the isolation switch (BCP 3-2)
    ISOLATION_LIFTED = "continuity:isolation:lifted"
    DRILL_RECORDED = "continuity:drill:recorded"
    STANDBY_LOG_MERGED = "continuity:standby-log:merged"  # one per segment merged
    # detection of abnormal access
    DETECTION_RUN = "detection:pass:completed"
    DETECTION_VIEWED = "detection:queue:viewed"
    DETECTION_REVIEWED = "detection:case:reviewed"
    ROSTER_CHANGED = "admin:roster:changed"
    STAFF_FACTS_CHANGED = "admin:staff-facts:changed"
    # incidents (the register's writes are record versions; these are the rest)
    INCIDENT_VIEWED = "incident:register:viewed"
    INCIDENT_PRINTED = "incident:draft:printed"  # a report, letter or chart drafted (patients)
    INCIDENT_REMINDED = "incident:deadline:reminded"
    PLAYBOOK_CHANGED = "admin:incident-playbook:changed"
    CONTACTS_CHANGED = "admin:contact-chart:changed"
    # the clinic's programme (answers are record versions)
    CHECKLIST_VIEWED = "programme:checklist:viewed"
    ACCOUNTS_REVIEWED = "programme:accounts:reviewed"
    DUTY_DONE = "programme:duty:done"
    TRAINING_RECORDED = "programme:training:recorded"
    BCP_APPROVED = "programme:bcp:approved"
    BCP_READ = "programme:bcp:acknowledged"
    LEDGER_CHANGED = "programme:ledger:changed"  # the asset or vendor ledger


class AuditMissing(RuntimeError):
    """Patient data was loaded and no audit event was recorded (dev/test safety net)."""


def strict() -> bool:
    return os.environ.get("MAMORI_ENV", "") in ("dev", "test")


def _actor(actor: Actor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "user": str(actor.user_id),
        "role": actor.role.value,
        "clinic": str(actor.clinic_id),
        "channel": actor.channel,
        "auth": actor.auth_method,
    }
    if actor.session_id:
        out["session"] = str(actor.session_id)
    if actor.source_ip:
        out["ip"] = actor.source_ip
    if actor.user_agent:
        # a hash: enough to tell workstations apart, without storing arbitrary header text
        out["ua"] = hashlib.sha256(actor.user_agent.encode()).hexdigest()[:16]
    return out


def record(
    session: Session,
    actor: Actor,
    tag: AuditTag | str,
    *,
    patients: Sequence[uuid.UUID] = (),
    records: Sequence[dict[str, Any]] = (),
    detail: dict[str, Any] | None = None,
    outcome: str = "success",
) -> None:
    """Queue one event on the session; it is appended when the unit of work commits.

    Reads of the same kind on the same patients within one unit of work are merged into one
    event (a chart open is one event, not one per section)."""
    queue: list[dict[str, Any]] = session.info.setdefault(QUEUE, [])
    session.info[RECORDED] = True
    pids = sorted({str(p) for p in patients})
    what = (detail or {}).get("what")
    if not records:
        for queued in queue:
            if (
                queued["tag"] == tag
                and queued["patients"] == pids
                and queued["actor"]["user"] == str(actor.user_id)
                and queued.get("detail", {}).get("what") == what
            ):
                return
    ev: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "tag": str(tag),
        "actor": _actor(actor),
        "patients": pids,
        "outcome": outcome,
    }
    if records:
        ev["records"] = list(records)
    if detail:
        ev["detail"] = detail
    queue.append(ev)


def record_system(
    session: Session, tag: AuditTag, detail: dict[str, Any], channel: str = "cli"
) -> None:
    """An event of mamori itself (maintenance, verification), with no staff member acting."""
    queue: list[dict[str, Any]] = session.info.setdefault(QUEUE, [])
    session.info[RECORDED] = True
    queue.append(
        {
            "v": FORMAT_VERSION,
            "tag": str(tag),
            "patients": [],
            "outcome": "success",
            "actor": {"user": None, "role": "system", "channel": channel},
            "detail": detail,
        }
    )


def record_anonymous(
    session: Session,
    tag: AuditTag,
    detail: dict[str, Any],
    *,
    source_ip: str | None,
    user_agent: str | None,
    channel: str = "api",
) -> None:
    """An event with no signed-in actor (a failed sign-in for an unknown login ID)."""
    queue: list[dict[str, Any]] = session.info.setdefault(QUEUE, [])
    session.info[RECORDED] = True
    who: dict[str, Any] = {"user": None, "role": "anonymous", "channel": channel}
    if source_ip:
        who["ip"] = source_ip
    if user_agent:
        who["ua"] = hashlib.sha256(user_agent.encode()).hexdigest()[:16]
    queue.append(
        {
            "v": FORMAT_VERSION,
            "tag": str(tag),
            "patients": [],
            "outcome": "failure",
            "actor": who,
            "detail": detail,
        }
    )


def queue_event(session: Session, ev: dict[str, Any]) -> None:
    """An event recorded elsewhere in this clinic's log (a standby's, ``continuity.standby``),
    queued as it was: its tag, actor, patients and outcome; the caller adds where it came from
    to its detail. Its shape is checked, since the append indexes what it names."""
    try:
        ok = (
            isinstance(ev["tag"], str)
            and isinstance(ev["actor"], dict)
            and all(isinstance(p, str) and str(uuid.UUID(p)) == p for p in ev["patients"])
            and (ev["actor"].get("user") is None or uuid.UUID(ev["actor"]["user"]) is not None)
            and isinstance(ev.get("outcome"), str)
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ValueError("not an audit event body")
    session.info.setdefault(QUEUE, []).append(ev)
    session.info[RECORDED] = True


def _chart_logged(session: Session, actor: Actor, patient_ids: Sequence[uuid.UUID]) -> bool:
    pids = sorted({str(p) for p in patient_ids})
    return any(
        ev["tag"] == AuditTag.CHART_VIEWED
        and ev["patients"] == pids
        and ev["actor"]["user"] == str(actor.user_id)
        for ev in session.info.get(QUEUE, ())
    )


def _on_access(
    session: Session,
    actor: Actor,
    intent: Intent,
    what: str,
    patient_ids: Sequence[uuid.UUID],
    record_ids: Sequence[uuid.UUID],
) -> None:
    if intent is Intent.WRITE:
        return  # every write produces a version, and the version event records it
    if what == "chart":
        tag = AuditTag.CHART_VIEWED
    elif _chart_logged(session, actor, patient_ids):
        return  # the sections of a chart already logged in this unit of work
    elif ":" in what and not what.startswith("fhir:"):
        tag = AuditTag.LIST_VIEWED  # searches and lists: one event with every patient shown
    else:
        tag = AuditTag.RECORD_VIEWED
    record(session, actor, tag, patients=patient_ids, detail={"what": what})


def _on_restricted(
    session: Session, actor: Actor, patient_id: uuid.UUID, *, break_glass: bool
) -> None:
    detail = {"what": "break-glass" if break_glass else "desk"}
    record(session, actor, AuditTag.RESTRICTED_OPENED, patients=[patient_id], detail=detail)


def _on_version(session: Session, actor: Actor, version: dict[str, Any]) -> None:
    pid = version.get("patient_id")
    record(
        session,
        actor,
        f"record:{version['change']}",
        patients=[pid] if pid else [],
        records=[
            {
                "type": version["record_type"],
                "id": str(version["record_id"]),
                "version": version["version"],
                "hash": version["content_hash"],
            }
        ],
    )


_HEAD_SQL = "SELECT size, chain_hash, frontier FROM audit_head WHERE id = 1"
_EVENT_SQL = (
    "INSERT INTO audit_event (seq, recorded_at, tag, body, leaf_hash, chain_hash) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_PATIENT_SQL = "INSERT INTO audit_event_patient (seq, patient_id) VALUES (?, ?)"
_USER_SQL = "INSERT INTO audit_event_user (seq, user_id) VALUES (?, ?)"
_UPDATE_SQL = "UPDATE audit_head SET size = ?, chain_hash = ?, frontier = ? WHERE id = 1"


def append(session: Session, events: list[dict[str, Any]]) -> int:
    """Append events under the head row's lock; returns the new log size.

    Runs in every audited transaction, so its statements go to the driver's own cursor: through
    SQLAlchemy their execution cost several times the hashing and the inserts
    (``bench/README.md``)."""
    with driver_cursor(session) as cursor:
        # PostgreSQL locks the head row; on SQLite, BEGIN IMMEDIATE already holds the database
        cursor.execute(_HEAD_SQL + (" FOR UPDATE" if cursor.postgres else ""))
        size, chain, stored = cursor.fetchone()
        nodes = json.loads(stored) if isinstance(stored, str) else stored
        frontier = merkle.Frontier(size, [bytes.fromhex(h) for h in nodes])
        chain = bytes(chain)
        now = utcnow()
        at = cursor.bind(AuditEvent.__table__.c.recorded_at.type)(now)
        uid = cursor.bind(AuditEventPatient.__table__.c.patient_id.type)
        rows = []
        patient_rows: list[tuple[int, Any]] = []
        user_rows: list[tuple[int, Any]] = []
        for ev in events:
            seq = frontier.size + 1
            body = canonical_json({**ev, "seq": seq, "at": now}).encode("utf-8")
            leaf = merkle.leaf_hash(body)
            chain = chain_next(chain, body)
            frontier.append(leaf)
            rows.append((seq, at, ev["tag"], body, leaf, chain))
            patient_rows += [(seq, uid(uuid.UUID(p))) for p in ev["patients"]]
            if ev["actor"].get("user"):
                user_rows.append((seq, uid(uuid.UUID(ev["actor"]["user"]))))
        stored = cursor.bind(AuditHead.__table__.c.frontier.type)([n.hex() for n in frontier.nodes])
        inserts = ((_EVENT_SQL, rows), (_PATIENT_SQL, patient_rows), (_USER_SQL, user_rows))
        with cursor.pipeline():  # PostgreSQL: four statements, one round trip
            for sql, values in inserts:
                cursor.insert(sql, values)
            cursor.execute(_UPDATE_SQL, (frontier.size, chain, stored))
    expire_loaded(session, AuditHead, 1)
    return frontier.size


def _check_net(session: Session) -> None:
    if strict() and session.info.get(PHI_LOADED) and not session.info.get(RECORDED):
        raise AuditMissing("patient data was loaded but no audit event was recorded")


def _before_commit(session: Session) -> None:
    _check_net(session)
    queue = session.info.pop(QUEUE, None)
    if queue and session.info.get("mamori_write"):
        try:
            append(session, queue)
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc
    elif queue:
        session.info[PENDING] = queue


PENDING = "mamori_audit_pending"
DEFER = "mamori_audit_deferred"


def defer_release(session: Session) -> None:
    """The caller will release pending read events itself after closing the session.

    Edges that run many sessions at once (the HTTP server) must not hold a read session's
    connection while waiting for another to append its events: with enough concurrent
    requests the pool runs dry and every request waits on every other.
    """
    session.info[DEFER] = True


def release(session: Session) -> None:
    """Commit-time events of a deferred read session: append them now, durably. Call after
    ``session.close()``; raises ``AuditUnavailable`` if they cannot be stored."""
    pending = session.info.pop(PENDING, None)
    if pending:
        append_durably(session.info["mamori_db"], pending)


def _after_commit(session: Session) -> None:
    _reset(session)
    if session.info.get(DEFER):
        return
    pending = session.info.pop(PENDING, None)
    if pending:
        append_durably(session.info["mamori_db"], pending)


def append_durably(db: Any, pending: list[dict[str, Any]]) -> None:
    """Durable before returning: through the database's group-commit appender, which shares
    one write transaction (one fsync) among all the read requests waiting at that moment."""
    appender = getattr(db, "audit_appender", None)
    if appender is None:
        with _APPENDER_LOCK:
            appender = getattr(db, "audit_appender", None)
            if appender is None:
                appender = Appender(lambda events: _append_batch(db, events))
                db.audit_appender = appender
                db.on_dispose.append(appender.close)
    appender.submit(pending)


def _append_batch(db: Any, events: list[dict[str, Any]]) -> None:
    try:
        with db.session(write=True) as writer:
            append(writer, events)
            writer.commit()
    except SQLAlchemyError as exc:
        raise AuditUnavailable() from exc


_APPENDER_LOCK = threading.Lock()


def _reset(session: Session, *_: Any) -> None:
    for key in (QUEUE, PHI_LOADED, RECORDED):
        session.info.pop(key, None)


def _loaded(session: Session, instance: object) -> None:
    if isinstance(instance, PatientData):
        note_phi_loaded(session)


def note_phi_loaded(session: Session) -> None:
    """Patient data was read in this unit of work (the safety net: it must also record an
    audit event). The ORM's load event calls this; reads that bypass the ORM must too."""
    session.info[PHI_LOADED] = True


_installed = False


def install() -> None:
    """Subscribe to the gate and version hooks and to session events (idempotent)."""
    global _installed
    if _installed:
        return
    hooks.on_access.append(_on_access)
    hooks.on_version.append(_on_version)
    hooks.on_restricted.append(_on_restricted)
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _reset)
    event.listen(Session, "loaded_as_persistent", _loaded)
    _installed = True
