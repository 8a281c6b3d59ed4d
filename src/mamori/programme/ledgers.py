"""The equipment ledger (CL-2-1, BCP 1-1a) and the vendor ledger (委託先), kept in mamori and
exchanged as CSV with the spreadsheet a clinic may keep today; and the information inventory
(取扱い情報の把握) generated from mamori's own model.

The equipment ledger offers the devices mamori has seen sign in (their browser, address and
last use, from the sessions) for a person to add and confirm; servers and network devices are
entered by hand. Every change is an audit event."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori.audit.trail import AuditTag, record
from mamori.auth.models import AuthSession, VendorWindow
from mamori.authz import gate
from mamori.authz.actor import Actor
from mamori.authz.permissions import Permission
from mamori.clinic.calendar import clinic_today
from mamori.clinic.models import StaffUser
from mamori.db import new_id, utcnow
from mamori.errors import InvalidInput
from mamori.programme.models import Asset, Vendor

ASSET_KINDS = {
    "server": ("サーバ", "server"),
    "pc": ("端末PC", "PC"),
    "tablet": ("タブレット", "tablet"),
    "network": ("ネットワーク機器", "network device"),
    "printer": ("プリンタ・複合機", "printer"),
    "other": ("その他", "other"),
}
ASSET_COLUMNS = (
    ("kind", "種別"), ("name", "名称"), ("os", "OS・ファームウェア"), ("ip", "IPアドレス"),
    ("location", "設置場所"), ("owner", "管理者"), ("patch_state", "パッチ適用状況"),
    ("antivirus", "ウイルス対策"), ("remote_maintenance", "リモート保守"),
    ("stocktaken_on", "棚卸日"), ("note", "備考"),
)  # fmt: skip
VENDOR_COLUMNS = (
    ("name", "事業者名"), ("contract", "契約"), ("maintains", "保守対象"),
    ("remote_route", "リモート保守の経路"), ("sds_received_on", "MDS/SDS受領日"),
    ("checklist_received_on", "事業者確認用チェックリスト受領日"), ("contact", "連絡先"),
    ("reviewed_on", "最終確認日"),
)  # fmt: skip
_TRUE = {"1", "true", "yes", "はい", "あり", "有", "○", "y"}


def _manage(actor: Actor) -> None:
    actor.require(Permission.PROGRAMME_MANAGE)


def _text(value: Any, limit: int) -> str:
    return str(value or "").strip()[:limit]


def _day(value: Any, field: str) -> dt.date | None:
    raw = str(value or "").strip().replace("/", "-")
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"日付は YYYY-MM-DD で入力してください（{field}: {raw}）。",
            f"Dates are YYYY-MM-DD ({field}: {raw}).",
            field=field,
        ) from None


# --- equipment ------------------------------------------------------------------------------


def assets(session: Session, actor: Actor) -> list[Asset]:
    actor.require(Permission.PROGRAMME_READ)
    return list(
        session.scalars(
            select(Asset)
            .where(Asset.clinic_id == actor.clinic_id, Asset.active.is_(True))
            .order_by(Asset.kind, Asset.name)
        )
    )


def device_label(user_agent: str) -> tuple[str, str]:
    """A name and an OS for a browser's user agent (enough for a person to recognise it)."""
    ua = user_agent or ""
    os_name = next(
        (
            label
            for key, label in (
                ("Windows NT 10", "Windows 10/11"),
                ("Windows", "Windows"),
                ("iPad", "iPadOS"),
                ("iPhone", "iOS"),
                ("Android", "Android"),
                ("Mac OS X", "macOS"),
                ("CrOS", "ChromeOS"),
                ("Linux", "Linux"),
            )
            if key in ua
        ),
        "不明",
    )
    browser = next(
        (b for b in ("Edg", "Chrome", "Firefox", "Safari") if b in ua), "ブラウザ"
    ).replace("Edg", "Edge")
    return f"{os_name} / {browser}", os_name


@dataclass
class SeenDevice:
    device_id: str
    name: str
    os: str
    ip: str
    last_seen_at: dt.datetime
    users: int


def seen_devices(session: Session, actor: Actor) -> list[SeenDevice]:
    """Devices that signed in to mamori and are not in the ledger yet (for a person to add)."""
    actor.require(Permission.PROGRAMME_READ)
    known = set(
        session.scalars(
            select(Asset.device_id).where(Asset.clinic_id == actor.clinic_id, Asset.device_id != "")
        )
    )
    rows = session.execute(
        select(
            AuthSession.device_id,
            func.max(AuthSession.last_seen_at),
            func.count(func.distinct(AuthSession.user_id)),
        )
        .where(AuthSession.clinic_id == actor.clinic_id)
        .group_by(AuthSession.device_id)
    ).all()
    out = []
    for device, last, users in rows:
        if not device or device in known:
            continue
        latest = session.scalar(
            select(AuthSession)
            .where(AuthSession.clinic_id == actor.clinic_id, AuthSession.device_id == device)
            .order_by(AuthSession.last_seen_at.desc())
            .limit(1)
        )
        assert latest is not None
        name, os_name = device_label(latest.user_agent)
        out.append(SeenDevice(device, name, os_name, latest.source_ip or "", last, int(users)))
    out.sort(key=lambda d: d.last_seen_at, reverse=True)
    return out


def save_asset(
    session: Session, actor: Actor, asset_id: uuid.UUID | None, values: dict[str, Any]
) -> Asset:
    _manage(actor)
    kind = _text(values.get("kind"), 16) or "other"
    if kind not in ASSET_KINDS:
        raise InvalidInput("種別を選んでください。", "Choose a kind.", field="kind")
    name = _text(values.get("name"), 100)
    if not name:
        raise InvalidInput("名称を入力してください。", "Enter a name.", field="name")
    if asset_id is None:
        row = Asset(id=new_id(), clinic_id=actor.clinic_id, updated_by_id=actor.user_id)
        session.add(row)
    else:
        row = gate.clinic_row_for(session, actor, Asset, asset_id, "asset")
    row.kind, row.name = kind, name
    for key, limit in (("os", 100), ("ip", 64), ("location", 100), ("owner", 100),
                       ("patch_state", 200), ("antivirus", 100), ("note", 500)):  # fmt: skip
        if key in values:
            setattr(row, key, _text(values[key], limit))
    if "remote_maintenance" in values:
        row.remote_maintenance = str(values["remote_maintenance"]).strip().lower() in _TRUE
    if "stocktaken_on" in values:
        row.stocktaken_on = _day(values["stocktaken_on"], "stocktaken_on")
    if values.get("device_id"):
        row.device_id = _text(values["device_id"], 64)
    if "active" in values:
        row.active = bool(values["active"])
    row.confirmed = True  # saved by a person
    row.updated_by_id, row.updated_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.LEDGER_CHANGED,
        detail={"ledger": "asset", "id": str(row.id), "active": row.active},
    )
    session.flush()
    return row


def add_seen(session: Session, actor: Actor, device_id: str) -> Asset:
    """A device mamori saw sign in, into the ledger as it was seen (the person completes it)."""
    found = next((d for d in seen_devices(session, actor) if d.device_id == device_id), None)
    if found is None:
        raise InvalidInput("その端末はありません。", "No such device.", field="device_id")
    row = save_asset(
        session,
        actor,
        None,
        {"kind": "pc", "name": found.name, "os": found.os, "ip": found.ip,
         "device_id": found.device_id},
    )  # fmt: skip
    row.last_seen_at = found.last_seen_at
    return row


def stocktake(session: Session, actor: Actor, on: dt.date | None = None) -> int:
    """棚卸し: every confirmed, active device checked on ``on``."""
    _manage(actor)
    on = on or clinic_today()
    rows = assets(session, actor)
    for row in rows:
        row.stocktaken_on = on
    record(
        session,
        actor,
        AuditTag.LEDGER_CHANGED,
        detail={"ledger": "asset", "stocktake": on.isoformat(), "count": len(rows)},
    )
    return len(rows)


# --- vendors --------------------------------------------------------------------------------


@dataclass
class VendorView:
    vendor: Vendor
    windows: int  # maintenance windows opened for its accounts (last 365 days)
    last_window: dt.datetime | None


def vendors(session: Session, actor: Actor) -> list[VendorView]:
    actor.require(Permission.PROGRAMME_READ)
    rows = list(
        session.scalars(
            select(Vendor)
            .where(Vendor.clinic_id == actor.clinic_id, Vendor.active.is_(True))
            .order_by(Vendor.name)
        )
    )
    year_ago = utcnow() - dt.timedelta(days=365)
    out = []
    for v in rows:
        ids = [uuid.UUID(a) for a in v.accounts]
        count, last = (0, None)
        if ids:
            count, last = session.execute(
                select(func.count(), func.max(VendorWindow.starts_at)).where(
                    VendorWindow.clinic_id == actor.clinic_id,
                    VendorWindow.vendor_user_id.in_(ids),
                    VendorWindow.starts_at >= year_ago,
                )
            ).one()
        out.append(VendorView(v, int(count or 0), last))
    return out


def save_vendor(
    session: Session, actor: Actor, vendor_id: uuid.UUID | None, values: dict[str, Any]
) -> Vendor:
    _manage(actor)
    name = _text(values.get("name"), 120)
    if not name:
        raise InvalidInput("事業者名を入力してください。", "Enter the vendor.", field="name")
    if vendor_id is None:
        row = Vendor(id=new_id(), clinic_id=actor.clinic_id, updated_by_id=actor.user_id)
        session.add(row)
    else:
        row = gate.clinic_row_for(session, actor, Vendor, vendor_id, "vendor")
    row.name = name
    for key, limit in (("contract", 200), ("maintains", 300), ("remote_route", 200),
                       ("contact", 200)):  # fmt: skip
        if key in values:
            setattr(row, key, _text(values[key], limit))
    for key in ("sds_received_on", "checklist_received_on", "reviewed_on"):
        if key in values:
            setattr(row, key, _day(values[key], key))
    if "accounts" in values:
        ids = [uuid.UUID(str(a)) for a in values["accounts"]]
        for uid in ids:
            if gate.clinic_reference(session, actor, StaffUser, uid) is None:
                raise InvalidInput("その職員はいません。", "No such account.", field="accounts")
        row.accounts = [str(u) for u in ids]
    if "active" in values:
        row.active = bool(values["active"])
    row.updated_by_id, row.updated_at = actor.user_id, utcnow()
    record(
        session,
        actor,
        AuditTag.LEDGER_CHANGED,
        detail={"ledger": "vendor", "id": str(row.id), "active": row.active},
    )
    session.flush()
    return row


# --- CSV ------------------------------------------------------------------------------------


def _csv(columns: Iterable[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = list(columns)
    w = csv.writer(buf)
    w.writerow([label for _, label in cols])
    for row in rows:
        w.writerow(["" if row.get(k) is None else row.get(k) for k, _ in cols])
    return buf.getvalue()


def export_assets(session: Session, actor: Actor) -> str:
    rows = []
    for a in assets(session, actor):
        rows.append(
            {k: getattr(a, k) for k, _ in ASSET_COLUMNS}
            | {
                "kind": ASSET_KINDS[a.kind][0],
                "remote_maintenance": "あり" if a.remote_maintenance else "なし",
            }
        )
    return _csv(ASSET_COLUMNS, rows)


def export_vendors(session: Session, actor: Actor) -> str:
    return _csv(
        VENDOR_COLUMNS,
        ({k: getattr(v.vendor, k) for k, _ in VENDOR_COLUMNS} for v in vendors(session, actor)),
    )


def _read(text: str, columns: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """Rows keyed by field name; the header may use the Japanese labels or the field names."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("CSV が空です。", "The CSV is empty.", field="file") from None
    by_label = {label: key for key, label in columns} | {key: key for key, _ in columns}
    keys = [by_label.get(h.strip()) for h in header]
    if "name" not in keys:
        raise InvalidInput(
            "見出しに「名称」（または「事業者名」）の列がありません。",
            "The header has no name column.",
            field="file",
        )
    out = []
    for n, line in enumerate(reader, 2):
        if not any(cell.strip() for cell in line):
            continue
        if len(line) > len(keys):
            raise InvalidInput(
                f"{n}行目の列が多すぎます。", f"Line {n} has too many columns.", field="file"
            )
        out.append({k: v for k, v in zip(keys, line, strict=False) if k})
    if len(out) > 2000:
        raise InvalidInput("行が多すぎます（2,000行まで）。", "At most 2,000 rows.", field="file")
    return out


def import_assets(session: Session, actor: Actor, text: str) -> int:
    """Rows matched by name (updated) or added; all or nothing (the caller's transaction)."""
    _manage(actor)
    existing = {a.name: a for a in assets(session, actor)}
    kinds = {label: key for key, (label, _) in ASSET_KINDS.items()} | {k: k for k in ASSET_KINDS}
    rows = _read(text, ASSET_COLUMNS)
    for n, row in enumerate(rows, 2):
        row["kind"] = kinds.get(row.get("kind", "").strip(), "")
        if not row["kind"]:
            raise InvalidInput(
                f"{n}行目: 種別は {'・'.join(v[0] for v in ASSET_KINDS.values())} のどれかです。",
                f"Line {n}: unknown kind.",
                field="file",
            )
        found = existing.get(row.get("name", "").strip())
        save_asset(session, actor, found.id if found else None, row)
    return len(rows)


def import_vendors(session: Session, actor: Actor, text: str) -> int:
    _manage(actor)
    existing = {v.vendor.name: v.vendor for v in vendors(session, actor)}
    rows = _read(text, VENDOR_COLUMNS)
    for row in rows:
        found = existing.get(row.get("name", "").strip())
        save_vendor(session, actor, found.id if found else None, row)
    return len(rows)
