"""The security review pages: open alerts (break-the-glass, lockouts, new devices), vendor
maintenance windows and their reports, who opened a patient, what a user opened, and the
recorded reviews that are the checklist's evidence of log review."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.audit import review
from mamori.auth import admin
from mamori.auth.schemas import WindowIn
from mamori.authz.permissions import P
from mamori.authz.roles import Role
from mamori.clinic.calendar import JST
from mamori.clinic.service import staff_names
from mamori.errors import Conflict, InvalidInput, MamoriError, ReauthRequired
from mamori.restrictions import service as restrictions
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_fields, parse
from mamori.ui.render import go, html
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

ALERT_KINDS = {
    "break-glass": ("緊急時アクセス（ブレークグラス）", "Break-the-glass"),
    "restricted-opened": ("閲覧制限患者の閲覧", "Restricted patient opened"),
    "lockout": ("アカウントロック", "Account locked"),
    "new-device": ("新しい端末からのログイン", "Sign-in from a new device"),
    "integrity": ("記録の改ざんの疑い", "Record integrity failure"),
    "detection": ("不審アクセス（即時）", "Abnormal access (immediate)"),
    "standby-failed": ("待機系の更新失敗", "Standby refresh failed"),
    "incident": ("インシデントの報告", "Incident reported"),
    "account-disabled": ("未使用アカウントの自動無効化", "Unused accounts disabled"),
    "incident-deadline": ("報告期限（個人情報保護委員会）", "APPI reporting deadline"),
    "backup-missing": ("バックアップ未設定で稼働中", "Running without backups"),
    "denied-burst": ("短時間に繰り返し拒否された操作", "Repeated refused requests"),
    "downtime-failed": ("ダウンタイム資料の書き出し失敗", "Downtime bundle failed"),
    "isolated": ("サーバーの隔離・解除", "Server isolated or released"),
}
WINDOW_LABELS = {
    "vendor_user_id": ("業者", "vendor"),
    "ticket": ("作業票番号", "ticket"),
    "reason": ("理由", "reason"),
    "minutes": ("時間（分）", "minutes"),
}


# --- reviews -------------------------------------------------------------------------------------


def _reviews_page(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    windows_admin = ctx.actor.can(P.VENDOR_WINDOW_ADMIN)
    alerts = admin.list_alerts(ctx.session, ctx.actor, open_only=True)
    # what each alert asks the reviewer to judge: whose record, and the reason given
    patients: dict[uuid.UUID, str] = {}
    for pid in {a.patient_id for a in alerts if a.patient_id}:
        try:
            pt = review.patient_of(ctx.session, ctx.actor, pid)
            patients[pid] = f"No.{pt.patient_number} {pt.full_name}"
        except MamoriError:
            patients[pid] = ""
    reasons = restrictions.grant_reasons(
        ctx.session, ctx.actor, [a.ref_id for a in alerts if a.kind == "break-glass" and a.ref_id]
    )
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    return html(
        request,
        "admin_reviews.html",
        status,
        state=review.review_status(ctx.session, ctx.actor),
        alerts=alerts,
        alert_patients=patients,
        alert_reasons=reasons,
        windows=admin.list_vendor_windows(ctx.session, ctx.actor) if windows_admin else [],
        vendors=[
            v
            for v in admin.list_staff(ctx.session, ctx.actor)
            if v.role == Role.VENDOR.value and v.active
        ]
        if windows_admin
        else [],
        reviews=review.list_reviews(ctx.session, ctx.actor, limit=20),
        unreviewed=review.unreviewed(ctx.session, ctx.actor, limit=100),
        tag_ja=review.tag_ja,
        names=staff_names(ctx.session, ctx.actor),
        kinds=ALERT_KINDS,
        now=dt.datetime.now(dt.UTC),
        max_window_minutes=admin.MAX_WINDOW_HOURS * 60,
        **extra,
    )


@router.get("/admin/reviews")
def reviews(request: Request, ctx: Ctx = Depends(requires(P.AUDIT_READ))) -> Response:
    return _reviews_page(request, ctx)


@router.post("/admin/alerts/{alert_id}/review")
def review_alert(
    request: Request,
    alert_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.AUDIT_REVIEW)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        admin.review_alert(
            ctx.session,
            ctx.actor,
            alert_id,
            outcome=form.get("outcome", ""),
            finding=form.get("finding", "")[:1000],
        )
    except (InvalidInput, Conflict) as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


@router.post("/admin/reviews")
def record_review(
    request: Request,
    ctx: Ctx = Depends(requires(P.AUDIT_REVIEW)),
    form: Form = Depends(form_fields),
) -> Response:
    """The periodic log review, done: the MHLW checklist's evidence of log review."""
    try:
        review.record_review(
            ctx.session,
            ctx.actor,
            scope="period",
            subject_id=None,
            outcome=form.get("outcome", ""),
            finding=form.get("finding", "")[:1000],
        )
    except InvalidInput as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


@router.post("/admin/vendor-windows")
def open_window(
    request: Request,
    ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    """A maintenance window for a vendor account: the only time it can sign in (and then it
    reads, never writes). Opening one needs a fresh re-authentication."""
    try:
        body = parse(WindowIn, form)
        admin.open_vendor_window(
            ctx.session,
            ctx.actor,
            vendor_user_id=body.vendor_user_id,
            ticket=body.ticket,
            reason=body.reason,
            starts_at=None,
            minutes=body.minutes,
            reauth_minutes=ctx.settings.auth.reauth_minutes,
        )
    except (InvalidInput, ReauthRequired) as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc, WINDOW_LABELS), form=form)
    return go(request, "/admin/reviews#windows")


@router.post("/admin/vendor-windows/{window_id}/close")
def close_window(
    request: Request, window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> Response:
    admin.close_vendor_window(ctx.session, ctx.actor, window_id)
    return go(request, "/admin/reviews#windows")


@router.get("/admin/vendor-windows/{window_id}")
def window_report(
    request: Request, window_id: uuid.UUID, ctx: Ctx = Depends(requires(P.VENDOR_WINDOW_ADMIN))
) -> Response:
    """What the vendor's account did inside the window, from the audit trail: the report the
    director acknowledges afterwards."""
    report = admin.vendor_window_report(ctx.session, ctx.actor, window_id)
    return html(
        request,
        "admin_window.html",
        report=report,
        tag_ja=review.tag_ja,
        names=staff_names(ctx.session, ctx.actor),
        now=dt.datetime.now(dt.UTC),
    )


@router.post("/admin/vendor-windows/{window_id}/acknowledge")
def acknowledge_window(
    request: Request,
    window_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.STAFF_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        admin.acknowledge_vendor_window(ctx.session, ctx.actor, window_id, form.get("note", ""))
    except Conflict as exc:
        return _reviews_page(request, ctx, 422, error=form_error(exc))
    return go(request, "/admin/reviews")


def _when(raw: str) -> dt.datetime | None:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(), JST) if raw else None
    except ValueError:
        raise InvalidInput("日付が正しくありません。", "Invalid date.", field="since") from None


@router.get("/admin/reviews/patients/{patient_id}")
def who_opened(
    request: Request,
    patient_id: uuid.UUID,
    since: str = "",
    until: str = "",
    user: str = "",
    action: str = "",
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> Response:
    """この患者を誰が見たか: filter by period, staff member and action."""
    end = _when(until)
    rows = review.who_opened(
        ctx.session,
        ctx.actor,
        patient_id,
        since=_when(since),
        until=end + dt.timedelta(days=1) if end else None,
    )
    people = sorted({(r.user_id or "", r.user_name) for r in rows}, key=lambda x: x[1])
    actions = sorted({r.tag for r in rows})
    shown = [r for r in rows if (not user or r.user_id == user) and (not action or r.tag == action)]
    return html(
        request,
        "admin_accesses.html",
        rows=shown,
        scope="patient",
        subject=patient_id,
        filters={"since": since, "until": until, "user": user, "action": action},
        people=people,
        actions=actions,
        tag_ja=review.tag_ja,
        what_ja=review.what_ja,
    )


@router.get("/admin/reviews/users/{user_id}")
def what_user_opened(
    request: Request,
    user_id: uuid.UUID,
    since: str = "",
    until: str = "",
    ctx: Ctx = Depends(requires(P.AUDIT_READ)),
) -> Response:
    end = _when(until)
    rows = review.what_user_opened(
        ctx.session,
        ctx.actor,
        user_id,
        since=_when(since),
        until=end + dt.timedelta(days=1) if end else None,
    )
    return html(
        request,
        "admin_accesses.html",
        rows=rows,
        scope="user",
        subject=user_id,
        filters={"since": since, "until": until, "user": "", "action": ""},
        people=[],
        actions=[],
        tag_ja=review.tag_ja,
        what_ja=review.what_ja,
    )
