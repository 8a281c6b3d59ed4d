"""The incident screens: 「インシデントかも？」 for everyone, whom to call, and the register the
director and the security officer run (steps, decision, deadlines, affected patients,
notices, the review) with its drafts as PDFs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mamori.audit.checkpointer import make_checkpoint
from mamori.auth import admin
from mamori.authz.permissions import P
from mamori.clinic.calendar import JST
from mamori.clinic.service import clinic_of, staff_names
from mamori.errors import Conflict, InvalidInput, MamoriError, NotFound
from mamori.incidents import drafts, evidence, rules, service
from mamori.incidents.affected import ITEMS, ITEMS_SHORT, Scope, describe
from mamori.ui.errors import form_error
from mamori.ui.forms import Form, form_date, form_fields
from mamori.ui.render import go, html, local_path, pdf
from mamori.web.routing import Ctx, TransactionalRoute, requires, start_over

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

LABELS = {
    "seen": ("見たこと", "what was seen"),
    "place": ("場所", "where"),
    "device": ("端末", "device"),
    "when": ("いつ", "when"),
    "kind": ("種類", "kind"),
    "title": ("件名", "title"),
    "knew_on": ("知った日", "date known"),
    "occurred_on": ("発生日", "date it happened"),
    "severity": ("重大度", "severity"),
    "outcome": ("結果", "outcome"),
    "note": ("メモ", "note"),
    "reason": ("理由", "reason"),
    "which": ("報告", "report"),
    "on": ("日付", "date"),
    "result": ("結果", "result"),
    "leak": ("漏えいの有無", "leak"),
    "missing": ("足りなかったこと", "what was missing"),
    "text": ("内容", "text"),
    "owner_id": ("担当", "owner"),
    "due_on": ("期日", "due"),
    "scope": ("範囲", "scope"),
    "start": ("開始", "start"),
    "end": ("終了", "end"),
    "method": ("方法", "method"),
    "sent_on": ("通知日", "date sent"),
    "steps": ("手順", "steps"),
    "duty": ("役割", "duty"),
    "name": ("氏名", "name"),
    "phone": ("電話", "phone"),
    "stage": ("状態", "stage"),
}


def _date(raw: str, field: str, *, required: bool = True) -> dt.date | None:
    day = form_date(raw, field)
    if day is None and required:
        raise InvalidInput("日付を入力してください。", "Enter a date.", field=field)
    return day


def _when(raw: str, field: str) -> dt.datetime | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            "日時が正しくありません。", "Invalid date and time.", field=field
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=JST)


def _uuid(raw: str, field: str) -> uuid.UUID | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidInput("選択が正しくありません。", "Invalid choice.", field=field) from None


# --- everyone: 「インシデントかも？」 and whom to call -------------------------------------------


@router.get("/incidents/report")
def report_form(
    request: Request, back: str = "/", ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))
) -> Response:
    return html(
        request,
        "incident_report.html",
        form={},
        error=None,
        back=local_path(back),
        kinds=rules.KINDS,
    )


@router.post("/incidents/report")
def report(
    request: Request,
    ctx: Ctx = Depends(requires(P.INCIDENT_REPORT)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        incident = service.report(
            ctx.session,
            ctx.actor,
            seen=form.get("seen", "")[:2000],
            place=form.get("place", "")[:200],
            device=form.get("device", "")[:200],
            when=form.get("when", "")[:100],
            kind=form.get("kind", "other") or "other",
        )
    except InvalidInput as exc:
        start_over(request, ctx.session)
        return html(
            request,
            "incident_report.html",
            422,
            form=form,
            error=form_error(exc, LABELS),
            back=local_path(form.get("back")),
            kinds=rules.KINDS,
        )
    return go(request, f"/incidents/reported?number={incident.number}")


@router.get("/incidents/reported")
def reported(
    request: Request, number: int = 0, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))
) -> Response:
    lines = service.contact_chart(ctx.session, ctx.actor)
    return html(request, "incident_reported.html", number=number, lines=lines)


@router.get("/incidents/contacts")
def contacts(request: Request, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> Response:
    return _contacts(request, ctx)


def _contacts(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    lines = service.contact_chart(ctx.session, ctx.actor)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    return html(
        request,
        "incident_contacts.html",
        status,
        lines=lines,
        gaps=service.contact_gaps(lines),
        duties=service.DUTIES,
        can_edit=ctx.actor.can(P.INCIDENT_MANAGE),
        **extra,
    )


@router.post("/incidents/contacts")
def save_contact(
    request: Request,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        try:
            position = int(form.get("position", "0") or "0")
        except ValueError:
            position = 0
        service.set_contact(
            ctx.session,
            ctx.actor,
            contact_id=_uuid(form.get("contact_id", ""), "duty"),
            duty=form.get("duty", ""),
            organisation=form.get("organisation", "")[:120],
            name=form.get("name", "")[:80],
            deputy=form.get("deputy", "")[:80],
            phone=form.get("phone", "")[:40],
            when_to_call=form.get("when_to_call", "")[:300],
            active=form.get("active", "on") == "on",
            position=position,
        )
    except (InvalidInput, NotFound) as exc:
        return _contacts(request, ctx, 422, error=form_error(exc, LABELS), form=form)
    return go(request, "/incidents/contacts")


@router.get("/incidents/contacts.pdf")
def contactspdf(request: Request, ctx: Ctx = Depends(requires(P.INCIDENT_REPORT))) -> Response:
    lines = service.contact_chart(ctx.session, ctx.actor)
    clinic = clinic_of(ctx.session, ctx.actor)
    return pdf(drafts.contact_chart(lines, clinic, ctx.actor.display_name), "contacts.pdf")


# --- the register ---------------------------------------------------------------------------


@router.get("/admin/incidents")
def register(request: Request, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    views = service.list_incidents(ctx.session, ctx.actor)
    return html(
        request,
        "incidents.html",
        views=views,
        dues=service.due_soon(ctx.session, ctx.actor),
        names=staff_names(ctx.session, ctx.actor),
        kind_label=service.kind_label,
        stages=rules.STAGES,
        gaps=service.contact_gaps(service.contact_chart(ctx.session, ctx.actor)),
    )


def _new(request: Request, ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    extra.setdefault("error", None)
    return html(
        request,
        "incident_new.html",
        status,
        kinds=rules.KINDS,
        severities=rules.SEVERITIES,
        staff=admin.list_staff(ctx.session, ctx.actor),
        today=service.today(),
        **extra,
    )


@router.get("/admin/incidents/new")
def new_form(
    request: Request,
    source: str = "",
    ref: str = "",
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
) -> Response:
    try:
        pre = service.prefill(ctx.session, ctx.actor, source, ref, request.app.state.settings)
    except (ValueError, NotFound):
        pre = service.Prefill()
    form = {
        "kind": pre.kind,
        "title": pre.title,
        "seen": pre.seen,
        "source": pre.source,
        "knew_on": service.today().isoformat(),
        "scope": "" if pre.scope is None else _scope_text(pre.scope),
    }
    return _new(request, ctx, form=form)


def _scope_text(scope: Scope) -> str:
    return json.dumps(scope.as_dict())


@router.post("/admin/incidents")
def create(
    request: Request,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        incident = service.open_incident(
            ctx.session,
            ctx.actor,
            kind=form.get("kind", ""),
            title=form.get("title", "")[:120],
            seen=form.get("seen", "")[:4000],
            knew_on=_date(form.get("knew_on", ""), "knew_on") or service.today(),
            occurred_on=_date(form.get("occurred_on", ""), "occurred_on", required=False),
            place=form.get("place", "")[:200],
            device=form.get("device", "")[:200],
            severity=form.get("severity", "unknown") or "unknown",
            source=form.get("source", "direct")[:80] or "direct",
            owner_id=_uuid(form.get("owner_id", ""), "owner_id"),
        )
        raw_scope = form.get("scope", "")
        if raw_scope:
            try:
                scope = Scope.from_dict(json.loads(raw_scope))
            except (ValueError, KeyError, TypeError):
                scope = None
            if scope is not None:
                service.save_scope(ctx.session, ctx.actor, incident.id, scope)
    except (InvalidInput, Conflict) as exc:
        return _new(request, ctx, 422, error=form_error(exc, LABELS), form=form)
    return go(request, f"/admin/incidents/{incident.id}")


def _page(
    request: Request, ctx: Ctx, incident_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    view = service.get(ctx.session, ctx.actor, incident_id)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    names = staff_names(ctx.session, ctx.actor)
    scope_words = describe(view.scope, names) if view.scope else ""
    return html(
        request,
        "incident.html",
        status,
        v=view,
        names=names,
        kind_label=service.kind_label,
        kinds=rules.KINDS,
        stages=rules.STAGES,
        severities=rules.SEVERITIES,
        roles=service.ROLES,
        actions=service.ACTIONS,
        items=ITEMS,
        staff=admin.list_staff(ctx.session, ctx.actor),
        scope_words=scope_words,
        fields=drafts.fields(view, None, names),
        can_manage=ctx.actor.can(P.INCIDENT_MANAGE),
        can_decide=ctx.actor.can(P.INCIDENT_DECIDE),
        today=service.today(),
        **extra,
    )


@router.get("/admin/incidents/playbooks")
def playbooks(
    request: Request, kind: str = "ransomware", ctx: Ctx = Depends(requires(P.INCIDENT_READ))
) -> Response:
    return _playbooks(request, ctx, kind)


def _playbooks(request: Request, ctx: Ctx, kind: str, status: int = 200, **extra: Any) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    if kind not in rules.KINDS:
        kind = "ransomware"
    steps = service.playbook(ctx.session, ctx.actor.clinic_id, kind)
    extra.setdefault("error", None)
    extra.setdefault("text", service.playbook_text(steps))
    return html(
        request,
        "incident_playbooks.html",
        status,
        kind=kind,
        kinds=rules.KINDS,
        steps=steps,
        roles=service.ROLES,
        actions=service.ACTIONS,
        can_edit=ctx.actor.can(P.INCIDENT_MANAGE),
        **extra,
    )


@router.post("/admin/incidents/playbooks")
def save_playbook(
    request: Request,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    kind = form.get("kind", "")
    try:
        service.set_playbook(ctx.session, ctx.actor, kind, form.get("steps", "")[:20000])
    except InvalidInput as exc:
        return _playbooks(
            request, ctx, kind, 422, error=form_error(exc, LABELS), text=form.get("steps", "")
        )
    return go(request, f"/admin/incidents/playbooks?kind={kind}")


@router.get("/admin/incidents/{incident_id}")
def incident_page(
    request: Request, incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))
) -> Response:
    return _page(request, ctx, incident_id)


def _act(request: Request, ctx: Ctx, incident_id: uuid.UUID, form: Form, do: Any) -> Response:
    """Run one change; a refusal shows the page again with the message and the form."""
    try:
        do()
    except (InvalidInput, Conflict) as exc:
        return _page(request, ctx, incident_id, 422, error=form_error(exc, LABELS), form=form)
    return go(request, f"/admin/incidents/{incident_id}")


@router.post("/admin/incidents/{incident_id}/steps/{step_no}")
def check_step(
    request: Request,
    incident_id: uuid.UUID,
    step_no: int,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    return _act(
        request,
        ctx,
        incident_id,
        form,
        lambda: service.check_step(
            ctx.session,
            ctx.actor,
            incident_id,
            step_no,
            outcome=form.get("outcome", ""),
            note=form.get("note", "")[:1000],
        ),
    )


@router.post("/admin/incidents/{incident_id}/note")
def add_note(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    return _act(
        request,
        ctx,
        incident_id,
        form,
        lambda: service.add_note(ctx.session, ctx.actor, incident_id, form.get("text", "")[:4000]),
    )


@router.post("/admin/incidents/{incident_id}/update")
def update(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    def do() -> None:
        current = service.get(ctx.session, ctx.actor, incident_id).incident
        owner = _uuid(form.get("owner_id", ""), "owner_id")
        service.update(
            ctx.session,
            ctx.actor,
            incident_id,
            stage=form.get("stage") or None,
            severity=form.get("severity") or None,
            owner_id=owner if owner != current.owner_id else None,
            kind=form.get("kind") or None,
            note=form.get("note", "")[:1000],
        )

    return _act(request, ctx, incident_id, form, do)


@router.post("/admin/incidents/{incident_id}/decision")
def decide(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_DECIDE)),
    form: Form = Depends(form_fields),
) -> Response:
    def do() -> None:
        answer = form.get("reportable", "")
        if answer not in ("yes", "no"):
            raise InvalidInput(
                "報告対象かどうかを選んでください。", "Choose yes or no.", field="reason"
            )
        service.decide(
            ctx.session,
            ctx.actor,
            incident_id,
            reportable=answer == "yes",
            reason=form.get("reason", "")[:2000],
            malicious=form.get("malicious") == "on",
            encrypted=form.get("encrypted") == "on",
        )

    return _act(request, ctx, incident_id, form, do)


@router.post("/admin/incidents/{incident_id}/sent")
def mark_sent(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    return _act(
        request,
        ctx,
        incident_id,
        form,
        lambda: service.mark_sent(
            ctx.session,
            ctx.actor,
            incident_id,
            form.get("which", ""),
            _date(form.get("on", ""), "on") or service.today(),
            form.get("note", "")[:1000],
        ),
    )


@router.post("/admin/incidents/{incident_id}/review")
def review(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    return _act(
        request,
        ctx,
        incident_id,
        form,
        lambda: service.set_review(
            ctx.session,
            ctx.actor,
            incident_id,
            result=form.get("result", "")[:4000],
            leak=form.get("leak", "")[:2000],
            missing=form.get("missing", "")[:4000],
        ),
    )


@router.post("/admin/incidents/{incident_id}/measures")
def add_measure(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    def do() -> None:
        owner = _uuid(form.get("owner_id", ""), "owner_id")
        if owner is None:
            raise InvalidInput("担当を選んでください。", "Choose an owner.", field="owner_id")
        service.add_measure(
            ctx.session,
            ctx.actor,
            incident_id,
            text=form.get("text", "")[:1000],
            owner_id=owner,
            due_on=_date(form.get("due_on", ""), "due_on") or service.today(),
        )

    return _act(request, ctx, incident_id, form, do)


# --- affected patients and notices ------------------------------------------------------------


def _affected(
    request: Request,
    ctx: Ctx,
    incident_id: uuid.UUID,
    found: service.Affected | None,
    status: int = 200,
    **extra: Any,
) -> Response:
    if status >= 400:
        start_over(request, ctx.session)
    view = service.get(ctx.session, ctx.actor, incident_id)
    if found is None and status < 400:
        found = service.affected_list(ctx.session, ctx.actor, incident_id)
    names = staff_names(ctx.session, ctx.actor)
    extra.setdefault("error", None)
    extra.setdefault("form", {})
    extra.setdefault("preview", False)
    return html(
        request,
        "incident_affected.html",
        status,
        v=view,
        found=found,
        items=ITEMS,
        short=ITEMS_SHORT,
        words=describe(found.scope, names) if found else "",
        staff=admin.list_staff(ctx.session, ctx.actor),
        methods=service.METHODS,
        can_manage=ctx.actor.can(P.INCIDENT_MANAGE),
        today=service.today(),
        **extra,
    )


@router.get("/admin/incidents/{incident_id}/affected")
def affected(
    request: Request, incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))
) -> Response:
    return _affected(request, ctx, incident_id, None)


def _scope_from(form: Form) -> Scope:
    generation = (form.get("generation") or "").strip()
    export_seq = (form.get("export_seq") or "").strip()
    device = (form.get("device_id") or "").strip()
    try:
        return Scope(
            user_id=_uuid(form.get("user_id", ""), "user_id"),
            device_id=device[:64] or None,
            start=_when(form.get("start", ""), "start"),
            end=_when(form.get("end", ""), "end"),
            export_seq=int(export_seq) if export_seq else None,
            generation=int(generation) if generation else None,
        )
    except ValueError:
        raise InvalidInput("番号が正しくありません。", "Invalid number.", field="scope") from None


@router.post("/admin/incidents/{incident_id}/affected")
def save_affected(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        scope = _scope_from(form)
        if form.get("save") == "on":
            service.save_scope(ctx.session, ctx.actor, incident_id, scope)
        else:
            found = service.preview_affected(ctx.session, ctx.actor, incident_id, scope)
            return _affected(request, ctx, incident_id, found, form=form, preview=True)
    except InvalidInput as exc:
        return _affected(
            request, ctx, incident_id, None, 422, error=form_error(exc, LABELS), form=form
        )
    return go(request, f"/admin/incidents/{incident_id}/affected")


@router.post("/admin/incidents/{incident_id}/notices")
def record_notice(
    request: Request,
    incident_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INCIDENT_MANAGE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        pid = _uuid(form.get("patient_id", ""), "method")
        if pid is None:
            raise InvalidInput("患者を選んでください。", "Choose a patient.", field="method")
        service.record_notice(
            ctx.session,
            ctx.actor,
            incident_id,
            pid,
            method=form.get("method", ""),
            sent_on=_date(form.get("sent_on", ""), "sent_on") or service.today(),
        )
    except (InvalidInput, Conflict) as exc:
        return _affected(
            request, ctx, incident_id, None, 422, error=form_error(exc, LABELS), form=form
        )
    return go(request, f"/admin/incidents/{incident_id}/affected")


# --- drafts -------------------------------------------------------------------------------------


def _draft_inputs(ctx: Ctx, incident_id: uuid.UUID) -> tuple[service.View, Any, Any]:
    view = service.get(ctx.session, ctx.actor, incident_id)
    found = service.affected_list(ctx.session, ctx.actor, incident_id)
    return view, found, clinic_of(ctx.session, ctx.actor)


@router.get("/admin/incidents/{incident_id}/ppc.pdf")
def ppcpdf(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    view, found, clinic = _draft_inputs(ctx, incident_id)
    names = staff_names(ctx.session, ctx.actor)
    body = drafts.ppc_report(view, found, clinic, ctx.actor.display_name, names)
    return pdf(body, f"ppc-report-{view.incident.number}.pdf")


@router.get("/admin/incidents/{incident_id}/letters.pdf")
def letterspdf(
    incident_id: uuid.UUID, patient: str = "", ctx: Ctx = Depends(requires(P.INCIDENT_READ))
) -> Response:
    view, found, clinic = _draft_inputs(ctx, incident_id)
    rows = list(found.rows) if found else []
    if patient:
        rows = [r for r in rows if str(r.patient_id) == patient]
    service.letters_printed(ctx.session, ctx.actor, view.incident, [r.patient_id for r in rows])
    body = drafts.letters(view, rows, clinic, ctx.actor.display_name)
    return pdf(body, f"notice-letters-{view.incident.number}.pdf")


@router.get("/admin/incidents/{incident_id}/public.pdf")
def publicpdf(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    view, found, clinic = _draft_inputs(ctx, incident_id)
    body = drafts.public_notice(view, found, clinic, ctx.actor.display_name)
    return pdf(body, f"public-notice-{view.incident.number}.pdf")


@router.get("/admin/incidents/{incident_id}/mhlw.pdf")
def mhlwpdf(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    view, found, clinic = _draft_inputs(ctx, incident_id)
    body = drafts.mhlw_report(view, found, clinic, ctx.actor.display_name)
    return pdf(body, f"mhlw-report-{view.incident.number}.pdf")


@router.get("/admin/incidents/{incident_id}/review.pdf")
def reviewpdf(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    view = service.get(ctx.session, ctx.actor, incident_id)
    names = staff_names(ctx.session, ctx.actor)
    body = drafts.review_report(
        view, clinic_of(ctx.session, ctx.actor), ctx.actor.display_name, names
    )
    return pdf(body, f"review-{view.incident.number}.pdf")


@router.get("/admin/incidents/{incident_id}/evidence.zip")
def evidence_zip(incident_id: uuid.UUID, ctx: Ctx = Depends(requires(P.INCIDENT_READ))) -> Response:
    """The affected-patient list and the audit events it is made of, each proven against a
    checkpoint signed just now (``incidents.evidence``; the CLI's ``incident report`` writes
    the same)."""
    # a copy, or a refusal already alarmed: the newest checkpoint there is covers what it can
    with contextlib.suppress(MamoriError):
        make_checkpoint(ctx.session.info["mamori_db"], ctx.settings)
    body, number = evidence.package(ctx.session, ctx.actor, ctx.settings, incident_id)
    return Response(
        body,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="incident-{number}-evidence.zip"',
            "Cache-Control": "no-store",
        },
    )
