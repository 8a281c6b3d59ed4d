"""受付 (reception desk) pages: today's list with visit states and check-in, patient search,
registration and editing (insurance check digits validated by the same models as the API).

Nothing here shows note text: the patient page holds demographics, insurance and visits; the
chart is a separate page that needs ``chart:read``, which reception does not hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from mamori.authz.permissions import P
from mamori.clinic.calendar import clinic_today
from mamori.clinic.service import confirming_physicians
from mamori.clinical import bookings
from mamori.clinical import service as clinical
from mamori.clinical.models import ENCOUNTER_STATUS_JA, ENCOUNTER_TRANSITIONS, EncounterStatus
from mamori.clinical.schemas import EncounterIn
from mamori.errors import Conflict, InvalidInput, PossibleDuplicate
from mamori.patients import postcodes
from mamori.patients import service as patients
from mamori.patients.kana import is_kana
from mamori.patients.models import CoverageKind
from mamori.patients.schemas import CoverageIn, PatientIn, PatientNew, PatientUpdate
from mamori.restrictions import service as restrictions
from mamori.ui.errors import UiError, form_error
from mamori.ui.forms import Form, form_fields, parse
from mamori.ui.render import go, html, local_path
from mamori.web.routing import Ctx, TransactionalRoute, requires

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

STATUS_EN = {
    "planned": "Booked",
    "arrived": "Checked in",
    "in-progress": "With doctor",
    "billing": "Awaiting payment",
    "finished": "Done",
    "cancelled": "Cancelled",
    "entered-in-error": "Voided",
}
SEX = {
    "male": ("男", "M"),
    "female": ("女", "F"),
    "other": ("その他", "Other"),
    "unknown": ("不明", "?"),
}
VISIT_TYPES = {
    "first": ("初診", "First visit"),
    "return": ("再診", "Return visit"),
    "online": ("オンライン診療", "Online"),
    "phone": ("電話再診", "Phone"),
    "home": ("往診", "Home visit"),
}
COVERAGE_KINDS = {
    "shaho": ("社保", "Employees' insurance"),
    "kokuho": ("国保", "National health insurance"),
    "kouki": ("後期高齢者", "Late-stage elderly"),
    "kouhi": ("公費", "Public expense"),
    "jihi": ("自費", "Self-pay"),
    "rousai": ("労災", "Workers' compensation"),
    "other": ("その他", "Other"),
}
PATIENT_LABELS = {
    "date": ("予約日", "date"),
    "time": ("時刻", "time"),
    "purpose": ("目的", "purpose"),
    "family_name": ("姓", "family name"),
    "given_name": ("名", "given name"),
    "family_kana": ("セイ", "family kana"),
    "given_kana": ("メイ", "given kana"),
    "birth_date": ("生年月日", "birth date"),
    "sex": ("性別", "sex"),
    "postal_code": ("郵便番号", "postcode"),
    "phone": ("電話番号", "phone"),
    "insurer_number": ("保険者番号", "insurer number"),
    "public_payer_number": ("公費負担者番号", "payer number"),
    "recipient_number": ("受給者番号", "recipient number"),
    "number": ("記号・番号", "number"),
    "branch": ("枝番", "branch"),
}
LABELS: dict[str, Any] = {
    "status_en": STATUS_EN,
    "status_ja": ENCOUNTER_STATUS_JA,
    "sex": SEX,
    "visit_types": VISIT_TYPES,
    "coverage_kinds": COVERAGE_KINDS,
}


# --- today's list ------------------------------------------------------------------------------


@router.get("/today")
def today(
    request: Request, day: dt.date | None = None, ctx: Ctx = Depends(requires(P.ENCOUNTER_READ))
) -> Response:
    """受付一覧: demographics and visit state only, never note text."""
    day = day or clinic_today()
    rows = clinical.list_day(ctx.session, ctx.actor, day)
    moves = {s.value: sorted(n.value for n in nxt) for s, nxt in ENCOUNTER_TRANSITIONS.items()}
    awaiting = clinical.awaiting_confirmation(ctx.session, ctx.actor)  # physicians only
    return html(
        request,
        "today.html",
        day=day,
        rows=rows,
        moves=moves,
        L=LABELS,
        error=None,
        awaiting=awaiting,
    )


# --- 予約 ---------------------------------------------------------------------------------------

BOOKING_WEEK = 7


@router.get("/bookings")
def bookings_page(
    request: Request,
    start: dt.date | None = None,
    days: int = Query(default=BOOKING_WEEK, ge=1, le=bookings.BOOKING_DAYS),
    ctx: Ctx = Depends(requires(P.ENCOUNTER_READ)),
) -> Response:
    """予約一覧: the day's and the next days' bookings, by day and time; moved, cancelled and
    checked in from here."""
    start = start or clinic_today()
    found = bookings.list_bookings(ctx.session, ctx.actor, start, days)
    by_day: dict[dt.date, list[bookings.Booking]] = {}
    for b in found:
        by_day.setdefault(b.encounter.visit_date, []).append(b)
    return html(
        request,
        "bookings.html",
        start=start,
        days=days,
        by_day=sorted(by_day.items()),
        today=clinic_today(),
        physicians=dict(confirming_physicians(ctx.session, ctx.actor)),
        prev_start=start - dt.timedelta(days=days),
        next_start=start + dt.timedelta(days=days),
        L=LABELS,
    )


@router.post("/patients/{patient_id}/bookings")
def book(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        enc = bookings.book(
            ctx.session,
            ctx.actor,
            patient_id,
            parse(bookings.BookingIn, form, attending_id=form.get("attending_id") or None),
        )
    except (InvalidInput, Conflict) as exc:
        return _patient_page(
            request,
            ctx,
            patient_id,
            409 if isinstance(exc, Conflict) else 422,
            booking_error=form_error(exc, PATIENT_LABELS),
            booking_form=form,
        )
    return go(request, f"/bookings?start={enc.visit_date.isoformat()}")


@router.post("/bookings/{encounter_id}/move")
def move_booking(
    request: Request,
    encounter_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    data = parse(bookings.BookingMove, form, attending_id=form.get("attending_id") or None)
    enc = bookings.move_booking(ctx.session, ctx.actor, encounter_id, data)
    return go(request, f"/bookings?start={enc.visit_date.isoformat()}")


@router.post("/encounters/{encounter_id}/move")
def move(
    request: Request,
    encounter_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        status = EncounterStatus(form.get("status", ""))
        version = int(form.get("expected_version", "0"))
        clinical.move_encounter(ctx.session, ctx.actor, encounter_id, status, version)
    except ValueError:
        raise InvalidInput("不正な状態です。", "Invalid visit state.", field="status") from None
    return go(request, local_path(form.get("back"), "/today"))


# --- patients ------------------------------------------------------------------------------------


@router.get("/patients")
def search(
    request: Request,
    kana: str = Query(default="", max_length=60),
    birth_date: str = Query(default="", max_length=10),
    number: str = Query(default="", max_length=12),
    phone: str = Query(default="", max_length=20),
    ctx: Ctx = Depends(requires(P.PATIENT_READ)),
) -> Response:
    """One name box for kana or kanji (佐藤, サトウ, ハナコ, 佐藤 花子), the phone, the date of
    birth, the number."""
    query = {"kana": kana, "birth_date": birth_date, "number": number, "phone": phone}
    words = kana.strip()
    as_kana = bool(words) and is_kana(words)
    found = None
    error = None
    if any(v.strip() for v in query.values()):
        try:
            born = dt.date.fromisoformat(birth_date) if birth_date.strip() else None
            num = int(number) if number.strip() else None
        except ValueError:
            error = UiError(
                "生年月日または患者番号の形式が正しくありません。",
                "The birth date or patient number is not valid.",
            )
        else:
            try:
                found = patients.search_patients(
                    ctx.session,
                    ctx.actor,
                    kana=words if as_kana else None,
                    name=words if words and not as_kana else None,
                    phone=phone.strip() or None,
                    birth_date=born,
                    patient_number=num,
                )
            except InvalidInput as exc:
                error = form_error(exc)
    return html(request, "patients.html", query=query, found=found, error=error, L=LABELS)


def _patient_form(request: Request, status: int, form: dict[str, Any], **ctx: Any) -> Response:
    ctx.setdefault("error", None)
    ctx.setdefault("patient", None)
    ctx.setdefault("duplicates", [])
    return html(request, "patient_form.html", status, form=form, L=LABELS, **ctx)


@router.get("/patients/new")
def new_patient(request: Request, ctx: Ctx = Depends(requires(P.PATIENT_WRITE))) -> Response:
    return _patient_form(request, 200, {})


@router.get("/postcodes/lookup")
def postcode_lookup(
    request: Request,
    postal_code: str = Query(default="", max_length=20),
    choice: int | None = Query(default=None, ge=0, le=50),
    prefecture: str = Query(default="", max_length=10),
    city: str = Query(default="", max_length=100),
    address_line: str = Query(default="", max_length=200),
    ctx: Ctx = Depends(requires(P.PATIENT_WRITE)),
) -> Response:
    """郵便番号 → 住所 on the registration form (htmx, as the postcode is typed): the empty
    address fields fill in; fields already typed are left alone and a button offers the
    replacement; a postcode of several towns offers each."""
    found = postcodes.areas(postal_code)
    chosen = found[choice] if choice is not None and choice < len(found) else None
    if chosen is None and len(found) == 1:
        chosen = found[0]
    current = {"prefecture": prefecture, "city": city, "address_line": address_line}
    fill: dict[str, str] = {}
    conflict = False
    if chosen is not None:
        proposed = {
            "prefecture": chosen.prefecture,
            "city": chosen.city,
            "address_line": chosen.town,
        }
        typed = {k: v for k, v in current.items() if v.strip()}
        conflict = choice is None and any(
            not proposed[k] or not v.startswith(proposed[k]) for k, v in typed.items()
        )
        if not conflict:
            fill = {k: v for k, v in proposed.items() if choice is not None or k not in typed}
    return html(
        request,
        "_postcode.html",
        postal_code=postal_code,
        digits=postcodes.normalise(postal_code),
        found=found,
        chosen=chosen,
        fill=fill,
        conflict=conflict,
    )


@router.post("/patients/new")
def register(
    request: Request,
    ctx: Ctx = Depends(requires(P.PATIENT_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        p = patients.register_patient(ctx.session, ctx.actor, parse(PatientNew, form))
    except PossibleDuplicate as exc:
        # the same kana and birth date is registered: offer that record, or a confirmed new one
        same = list(zip(exc.numbers, exc.ids, strict=True))
        return _patient_form(request, 409, form, error=form_error(exc), duplicates=same)
    except InvalidInput as exc:
        return _patient_form(request, 422, form, error=form_error(exc, PATIENT_LABELS))
    return go(request, f"/patients/{p.id}")


@router.get("/patients/{patient_id}")
def patient_page(
    request: Request,
    patient_id: uuid.UUID,
    saved: str = "",
    ctx: Ctx = Depends(requires(P.PATIENT_READ)),
) -> Response:
    """``saved``: what was just saved, to say so (the restriction flags)."""
    return _patient_page(request, ctx, patient_id, saved=saved[:20])


def _patient_page(
    request: Request, ctx: Ctx, patient_id: uuid.UUID, status: int = 200, **extra: Any
) -> Response:
    p = patients.get_patient(ctx.session, ctx.actor, patient_id)
    can = ctx.actor.can
    coverages = (
        patients.list_coverages(ctx.session, ctx.actor, p.id) if can(P.INSURANCE_READ) else []
    )
    encounters = (
        clinical.list_encounters(ctx.session, ctx.actor, p.id, 10) if can(P.ENCOUNTER_READ) else []
    )
    flags = (
        restrictions.flags_of(ctx.session, ctx.actor, p.id) if can(P.RESTRICTION_ADMIN) else None
    )
    extra.setdefault("error", None)
    extra.setdefault("cov_form", {})
    extra.setdefault("checkin_error", None)
    extra.setdefault("checkin_form", {})
    extra.setdefault("booking_error", None)
    extra.setdefault("booking_form", {})
    extra.setdefault("saved", "")
    return html(
        request,
        "patient.html",
        status,
        p=p,
        coverages=coverages,
        encounters=encounters,
        flags=flags,
        today=clinic_today(),
        # 初診 for a patient with no visit yet, else 再診 (as the service decides when unsaid)
        default_visit="return"
        if any(e.status not in ("cancelled", "entered-in-error") for e in encounters)
        else "first",
        L=LABELS,
        kinds=[k.value for k in CoverageKind],
        physicians=confirming_physicians(ctx.session, ctx.actor) if can(P.ENCOUNTER_WRITE) else [],
        **extra,
    )


@router.get("/patients/{patient_id}/edit")
def edit_patient(
    request: Request, patient_id: uuid.UUID, ctx: Ctx = Depends(requires(P.PATIENT_WRITE))
) -> Response:
    p = patients.get_patient(ctx.session, ctx.actor, patient_id)
    fields = {k: str(getattr(p, k) or "") for k in PatientIn.model_fields}
    fields["expected_version"] = str(p.version)
    return _patient_form(request, 200, fields, patient=p)


@router.post("/patients/{patient_id}/edit")
def update_patient(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.PATIENT_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        data = parse(PatientUpdate, form)
        patients.update_patient(ctx.session, ctx.actor, patient_id, data)
    except (InvalidInput, Conflict) as exc:
        err = form_error(exc, PATIENT_LABELS)
        return _patient_form(request, 422, form, error=err, patient={"id": patient_id})
    return go(request, f"/patients/{patient_id}")


@router.post("/patients/{patient_id}/coverages")
def add_coverage(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.INSURANCE_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        patients.add_coverage(ctx.session, ctx.actor, patient_id, parse(CoverageIn, form))
    except InvalidInput as exc:
        return html(
            request,
            "_coverage_form.html",
            422,
            p={"id": patient_id},
            cov_form=form,
            error=form_error(exc, PATIENT_LABELS),
            L=LABELS,
            kinds=[k.value for k in CoverageKind],
        )
    return go(request, f"/patients/{patient_id}")


@router.post("/patients/{patient_id}/check-in")
def check_in(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.ENCOUNTER_WRITE)),
    form: Form = Depends(form_fields),
) -> Response:
    try:
        clinical.check_in(ctx.session, ctx.actor, patient_id, parse(EncounterIn, form))
    except (InvalidInput, Conflict) as exc:
        # already checked in today: said so, with the visit type kept and a button to confirm
        return _patient_page(
            request, ctx, patient_id, 409, checkin_error=form_error(exc), checkin_form=form
        )
    return go(request, "/today")


@router.post("/patients/{patient_id}/restriction")
def set_restriction(
    request: Request,
    patient_id: uuid.UUID,
    ctx: Ctx = Depends(requires(P.RESTRICTION_ADMIN)),
    form: Form = Depends(form_fields),
) -> Response:
    restrictions.set_flags(
        ctx.session,
        ctx.actor,
        patient_id,
        vip=form.get("vip") == "on",
        sensitive=form.get("sensitive") == "on",
    )
    return go(request, f"/patients/{patient_id}?saved=restriction")
