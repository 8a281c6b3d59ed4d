"""Downtime bundles (BCP 1-2c, 3-4): what the clinic needs to keep seeing the day's patients
when mamori cannot be reached, readable on another PC with Debian's ``age`` alone.

A bundle is one ``tar`` archive encrypted with age to every live **standby key**: a chart
summary PDF per booked or checked-in patient of the day, the day sheet, the numbered blank
forms and a README in Japanese saying how to open it. Standby keys are made by
``mamori downtime keygen``: the identity (private part) is written once to a file for the
downtime PC or a USB stick kept at reception, and only the public recipient stays here.

Restricted patients (staff, VIP, sensitive) have no summary in a bundle: opening their
chart needs a reason given by a person (break-the-glass), which a bundle written ahead of time
cannot have. The day sheet lists them, marked, so the desk knows to ask the director.

Writing a bundle records, in one transaction: the downtime numbers it reserved, its file and
hash per destination, and an audit event listing every patient it contains (each summary is
also a chart print). A destination that is missing or full is an error that leaves the
previous bundle where it was (the new file is written beside it and renamed into place).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyrage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mamori import isolation
from mamori.audit import trail
from mamori.authz.actor import Actor
from mamori.authz.permissions import P
from mamori.authz.restricted import require_recent_auth
from mamori.chart.pdf import render_chart_pdf
from mamori.chart.service import print_chart
from mamori.clinic.calendar import JST, clinic_today
from mamori.clinic.service import clinic_of, staff_names
from mamori.clinical.models import ENCOUNTER_STATUS_JA, EncounterStatus
from mamori.clinical.service import list_day
from mamori.continuity.models import DowntimeBundle, StandbyKey
from mamori.continuity.paper import SheetRow, day_sheet_pdf, forms_pdf, numbers_needed
from mamori.db import utcnow
from mamori.errors import BreakGlassRequired, InvalidInput, Isolated, MamoriError, NotFound
from mamori.incidents import service as incidents
from mamori.incidents.drafts import contact_chart as contact_chart_pdf
from mamori.patients.models import SEX_JA
from mamori.programme.bcp import document as bcp_document
from mamori.programme.report_pdf import render_bcp

log = logging.getLogger("mamori.continuity")
MAX_STANDBY_KEYS = 10


class BundleError(MamoriError):
    status = 409
    code = "downtime_bundle_failed"


@dataclass(frozen=True)
class Written:
    bundle: DowntimeBundle
    places: list[str]  # each destination as recorded (a folder, an sftp:// URL)
    patients: list[uuid.UUID]
    summaries: int  # patients with a chart summary (restricted ones have none)


# --- standby keys ------------------------------------------------------------------------------


def make_standby_key(session: Session, actor: Actor, out: Path, label: str) -> StandbyKey:
    """A new standby key: its recipient recorded first (every check passed), then the age
    identity written once to ``out`` (0600, never overwritten). A file that cannot be written
    fails the caller's transaction, so no key is recorded without its file, nor a file left
    behind for a key that was refused."""
    identity = pyrage.x25519.Identity.generate()
    key = add_standby_key(session, actor, str(identity.to_public()), label)
    _write_identity(
        out,
        "# mamori downtime standby key — keep on the downtime PC or the reception USB stick\n"
        "# mamori ダウンタイム用の鍵 — 待機用PCまたは受付のUSBメモリに保管（サーバーに置かない）\n"
        f"# clinic: {clinic_of(session, actor).name}\n# label: {label}\n"
        f"# public key: {key.recipient}\n{identity}\n",
    )
    return key


def _write_identity(out: Path, text: str) -> None:
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(
            f"{out} はすでにあります。上書きしません。",
            f"{out} already exists; it is never overwritten.",
            field="out",
        ) from None
    except OSError as exc:
        raise InvalidInput(
            f"鍵を書き込めません（{out}）: {exc.strerror}",
            f"Cannot write the key ({out}): {exc.strerror}",
            field="out",
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def add_standby_key(session: Session, actor: Actor, recipient: str, label: str) -> StandbyKey:
    actor.require(P.CONTINUITY_ADMIN)
    try:
        pyrage.x25519.Recipient.from_str(recipient)
    except pyrage.RecipientError:
        raise InvalidInput(
            "age の公開鍵（age1…）ではありません。",
            "Not an age recipient (age1…).",
            field="recipient",
        ) from None
    if len(live_keys(session, actor)) >= MAX_STANDBY_KEYS:
        raise InvalidInput(
            f"待機用の鍵は{MAX_STANDBY_KEYS}個までです。使わない鍵を失効させてください。",
            f"At most {MAX_STANDBY_KEYS} standby keys; revoke one no longer used.",
            field="recipient",
        )
    key = StandbyKey(
        clinic_id=actor.clinic_id, label=label, recipient=recipient, created_by_id=actor.user_id
    )
    session.add(key)
    session.flush()
    trail.record(
        session,
        actor,
        trail.AuditTag.STANDBY_KEY_ADDED,
        detail={"key": str(key.id), "label": label, "recipient": recipient},
    )
    return key


def live_keys(session: Session, actor: Actor) -> Sequence[StandbyKey]:
    actor.require(P.CONTINUITY_ADMIN)
    return session.scalars(
        select(StandbyKey)
        .where(StandbyKey.clinic_id == actor.clinic_id, StandbyKey.revoked_at.is_(None))
        .order_by(StandbyKey.created_at)
    ).all()


def revoke_standby_key(session: Session, actor: Actor, key_id: uuid.UUID) -> StandbyKey:
    """A lost USB stick: no later bundle is readable with its key (earlier ones still are —
    the bundle's own lifetime is one day)."""
    actor.require(P.CONTINUITY_ADMIN)
    key = session.get(StandbyKey, key_id)
    if key is None or key.clinic_id != actor.clinic_id:
        raise NotFound("standby key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by_id = actor.user_id
        trail.record(
            session,
            actor,
            trail.AuditTag.STANDBY_KEY_REVOKED,
            detail={"key": str(key.id), "label": key.label},
        )
    return key


# --- the bundle --------------------------------------------------------------------------------

README = """mamori ダウンタイム資料 / downtime bundle
==========================================

診療所: {clinic}
対象日: {day}（作成 {made}）
ダウンタイム番号: {first} 〜 {last}

開き方（mamori もネットワークも不要です）:
  age -d -i 待機用の鍵.txt {name} | tar -x
  （Windows では age.exe と 7-Zip などで同じように開けます）

中身:
  00_受付一覧.pdf          その日の予約・受付の一覧
  10_カルテ要約/*.pdf       患者ごとのカルテ要約（病名・処方・アレルギー・最近の記録と検査）
  20_記録用紙.pdf           受付票・経過記録・処方控え・バイタル記録・新患登録票（番号入り）
  30_連絡体制図.pdf         インシデント発生時の連絡先（院内・ベンダー・厚労省・警察など）
  40_BCP.pdf                事業継続計画（想定・初動・紙運用・バックアップ・復旧の優先順位）

閲覧制限のある患者（職員・VIP・要配慮）の要約は入っていません。院長に確認してください。
復旧後は用紙のダウンタイム番号を添えて「事後入力」してください。
この資料は患者情報です。印刷物は鍵のかかる場所で保管し、不要になったら溶解・裁断してください。
"""


def _reserve(session: Session, actor: Actor) -> int:
    last = session.scalar(
        select(func.max(DowntimeBundle.last_number)).where(
            DowntimeBundle.clinic_id == actor.clinic_id
        )
    )
    return int(last or 0) + 1


@dataclass(frozen=True)
class SftpAccess:
    """How this server signs in to a standby PC's SFTP server (the host key pinned)."""

    key_file: Path | None = None
    known_hosts: Path | None = None


def _send(destination: str, name: str, data: bytes, sftp: SftpAccess) -> str:
    """One destination: a local folder (a USB disk, a share) or ``sftp://user@host/dir``
    (the standby PC). Returns the place as recorded."""
    if not destination.startswith("sftp://"):
        return str(_write_atomically(Path(destination), name, data).parent.resolve())
    from mamori.backup.config import spec_from_url
    from mamori.backup.fmt import BackupError
    from mamori.backup.targets import SftpTarget

    spec = spec_from_url(destination, key_file=sftp.key_file, known_hosts=sftp.known_hosts)
    try:
        target = SftpTarget(spec, PurePosixPath(spec.path))
        try:
            target.put_bytes(name, data, None)  # a temporary name, then renamed into place
        finally:
            target.close()
    except (BackupError, OSError) as exc:
        raise BundleError(
            f"待機用PC（{spec.host}）に書き出せませんでした: {exc}。"
            "前回の資料はそのまま残っています。",
            f"Could not write to the standby PC ({spec.host}): {exc}. The previous bundle is "
            "untouched.",
        ) from None
    return spec.url()


def _write_atomically(directory: Path, name: str, data: bytes) -> Path:
    if not directory.is_dir():
        raise BundleError(
            f"書き出し先のフォルダがありません: {directory}"
            "（USBメモリが挿さっているか確認してください）",
            f"The destination folder does not exist: {directory} (is the USB disk plugged in?)",
        )
    final = directory / name
    part = directory / f".{name}.part"
    try:
        with part.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, final)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise BundleError(
            f"書き出せませんでした（{directory}）: {exc.strerror}。"
            "前回の資料はそのまま残っています。",
            f"Could not write to {directory}: {exc.strerror}. The previous bundle is untouched.",
        ) from None
    return final


def write_bundle(
    session: Session,
    actor: Actor,
    destinations: Sequence[Path | str],
    day: dt.date | None = None,
    sftp: SftpAccess | None = None,
    settings: Any = None,
) -> Written:
    """The day's bundle, encrypted to every live standby key, written to each destination
    (with the BCP when the instance's settings are given: it names the backups)."""
    actor.require(P.CONTINUITY_ADMIN)
    actor.require(P.CHART_PRINT)
    db = session.info.get("mamori_db")
    if db is not None and db.isolated:
        raise Isolated()  # nothing leaves an isolated server, not even to a USB disk
    day = day or clinic_today()
    if not destinations:
        raise BundleError("書き出し先がありません。", "No destination given.")
    keys = live_keys(session, actor)
    if not keys:
        raise BundleError(
            "待機用の鍵がありません。`mamori downtime keygen` で作成してください。",
            "No standby key: create one with `mamori downtime keygen`.",
        )
    recipients = [pyrage.x25519.Recipient.from_str(k.recipient) for k in keys]
    clinic = clinic_of(session, actor)
    names = staff_names(session, actor)
    made_at = utcnow()
    visits = list_day(session, actor, day)
    rows: list[SheetRow] = []
    summaries: dict[str, bytes] = {}
    patients: list[uuid.UUID] = []
    for enc, pt in visits:
        if enc.status in (EncounterStatus.CANCELLED, EncounterStatus.ENTERED_IN_ERROR):
            continue
        note = ""
        if pt.id not in patients:
            patients.append(pt.id)
            try:
                chart = print_chart(session, actor, pt.id)
            except BreakGlassRequired:
                note = "閲覧制限: 要約なし"
            else:
                summaries[
                    f"10_カルテ要約/{pt.patient_number:06d}_{pt.family_name}{pt.given_name}.pdf"
                ] = render_chart_pdf(chart, clinic.name, actor.display_name, names)
        when = enc.arrived_at or enc.scheduled_at
        rows.append(
            SheetRow(
                time=f"{when.astimezone(JST):%H:%M}" if when else "",
                patient_number=pt.patient_number,
                name=f"{pt.family_name} {pt.given_name}",
                kana=f"{pt.family_kana} {pt.given_kana}",
                birth_date=pt.birth_date,
                sex=SEX_JA.get(pt.sex, ""),
                physician=names.get(enc.attending_id, "") if enc.attending_id else "",
                purpose=enc.purpose,
                state=ENCOUNTER_STATUS_JA.get(EncounterStatus(enc.status), enc.status),
                note=note,
            )
        )
    first = _reserve(session, actor)
    last = first + numbers_needed() - 1
    name = f"mamori-downtime-{day:%Y%m%d}-{made_at.astimezone(JST):%H%M%S}.tar.age"
    files = {
        "README.txt": README.format(
            clinic=clinic.name,
            day=f"{day:%Y/%m/%d}",
            made=f"{made_at.astimezone(JST):%Y/%m/%d %H:%M}",
            first=f"DT-{first:06d}",
            last=f"DT-{last:06d}",
            name=name,
        ).encode("utf-8"),
        "00_受付一覧.pdf": day_sheet_pdf(clinic.name, day, rows, made_at),
        **summaries,
        "20_記録用紙.pdf": forms_pdf(clinic.name, day, first),
        # whom to call is needed most when mamori is down (BCP 1-2a)
        "30_連絡体制図.pdf": contact_chart_pdf(
            incidents.contact_chart(session, actor), clinic, actor.display_name
        ),
    }
    if settings is not None:
        files["40_BCP.pdf"] = render_bcp(bcp_document(session, actor, settings), actor.display_name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = int(made_at.timestamp())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    sealed = pyrage.encrypt(buf.getvalue(), recipients)
    digest = hashlib.sha256(sealed).hexdigest()
    places = [_send(str(d), name, sealed, sftp or SftpAccess()) for d in destinations]
    row = DowntimeBundle(
        clinic_id=actor.clinic_id,
        made_at=made_at,
        made_by_id=actor.user_id,
        day=day,
        destinations=json.dumps(places, ensure_ascii=False),
        file_name=name,
        sha256=digest,
        size=len(sealed),
        patients=len(patients),
        first_number=first,
        last_number=last,
    )
    session.add(row)
    session.flush()
    trail.record(
        session,
        actor,
        trail.AuditTag.DOWNTIME_BUNDLED,
        patients=patients,
        detail={
            "day": day.isoformat(),
            "file": name,
            "sha256": digest,
            "destinations": json.loads(row.destinations),
            "numbers": [first, last],
            "summaries": len(summaries),
            "keys": [str(k.id) for k in keys],
        },
    )
    return Written(row, places, patients, len(summaries))


def bundles(session: Session, actor: Actor, limit: int = 50) -> Sequence[DowntimeBundle]:
    """The bundles written, newest first (the director's view of each destination)."""
    actor.require(P.CONTINUITY_ADMIN)
    return session.scalars(
        select(DowntimeBundle)
        .where(DowntimeBundle.clinic_id == actor.clinic_id)
        .order_by(DowntimeBundle.made_at.desc())
        .limit(limit)
    ).all()


def run_scheduled(database: Any, settings: Any, day: dt.date) -> Written | None:
    """One scheduled bundle (``mamori serve``), under the ``[downtime] run_as`` account; a
    failure is logged and raised as an alert for the director, never as a crash of the server.
    ``database``/``settings``: the server's ``Database`` and ``Settings``."""
    from mamori.auth.models import SecurityAlert
    from mamori.clinic.models import Clinic
    from mamori.clinic.service import actor_for, find_staff

    conf = settings.downtime
    if isolation.marker(settings.home) is not None:
        log.warning("isolated: no downtime bundle is written")
        return None
    with database.session(write=True) as session:
        clinic = session.scalars(select(Clinic).order_by(Clinic.created_at)).first()
        if clinic is None:
            return None
        user = find_staff(session, clinic.id, conf.run_as)
        try:
            if user is None or not user.active:
                raise BundleError(
                    f"[downtime] run_as の職員 {conf.run_as} が見つからないか無効です。",
                    f"[downtime] run_as: no active staff account {conf.run_as}.",
                )
            # attributable to the director who configured it, marked as the schedule's doing
            actor = dataclasses.replace(
                actor_for(user, "cli"), channel="schedule", auth_method="schedule"
            )
            written = write_bundle(
                session,
                actor,
                list(conf.destinations),
                day,
                SftpAccess(conf.sftp_key_file, conf.sftp_known_hosts),
                settings=settings,
            )
            session.commit()
            return written
        except MamoriError as exc:
            session.rollback()
            log.error("downtime bundle failed: %s / %s", exc.en, exc.ja)
            session.add(
                SecurityAlert(
                    clinic_id=clinic.id,
                    kind="downtime-failed",
                    user_id=user.id if user is not None else None,
                    summary=f"ダウンタイム資料を書き出せませんでした: {exc.ja}"[:300],
                )
            )
            session.commit()
            return None


# --- the isolation switch (BCP 3-2) ---------------------------------------------------------


def isolate(
    session: Session, actor: Actor, home: Path, reason: str, reauth_minutes: int = 0
) -> dict[str, Any]:
    """Switch isolation on (``mamori.isolation``): recorded, with an alert for the director.
    The marker is written only after the event is queued, and the caller commits both. On the
    screen it needs a fresh re-authentication (the console's operator holds the instance)."""
    actor.require(P.CONTINUITY_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("隔離の理由を入力してください。", "Give the reason.", field="reason")
    why = {"by": actor.display_name, "user": str(actor.user_id), "reason": reason[:500]}
    trail.record(session, actor, trail.AuditTag.ISOLATED, detail={"reason": reason[:500]})
    _isolation_alert(session, actor, f"{actor.display_name} さんがサーバーを隔離しました: {reason}")
    session.flush()
    isolation.mark(home, why)
    return why


def lift_isolation(
    session: Session, actor: Actor, home: Path, reason: str, reauth_minutes: int = 0
) -> None:
    actor.require(P.CONTINUITY_ADMIN)
    require_recent_auth(actor, reauth_minutes)
    if isolation.marker(home) is None:
        raise InvalidInput("隔離されていません。", "The server is not isolated.", field="lift")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("解除の理由を入力してください。", "Give the reason.", field="reason")
    trail.record(session, actor, trail.AuditTag.ISOLATION_LIFTED, detail={"reason": reason[:500]})
    _isolation_alert(session, actor, f"{actor.display_name} さんが隔離を解除しました: {reason}")
    session.flush()
    isolation.unmark(home)


def _isolation_alert(session: Session, actor: Actor, summary: str) -> None:
    from mamori.auth.models import SecurityAlert

    session.add(
        SecurityAlert(
            clinic_id=actor.clinic_id, kind="isolated", user_id=actor.user_id, summary=summary[:300]
        )
    )
