"""Rendering the web UI: one Jinja2 environment, the page's language, Japanese dates and the
headers every HTML response carries.

Pages are server-rendered; htmx (vendored in ``static/``, no CDN) swaps form fragments. No page
has inline script or style: the Content-Security-Policy below allows scripts and styles from
this origin only, so an injected ``<script>`` in a patient's name would not run even if
autoescaping ever failed.
"""

from __future__ import annotations

import datetime as dt
import math
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from mamori import copies
from mamori.auth import passwords
from mamori.auth import service as auth
from mamori.auth.admin import open_alert_count
from mamori.authz.permissions import Permission
from mamori.clinic.calendar import JST, age_on, wareki, wareki_en
from mamori.clinical.units import rp_count_en, rp_count_ja, unit_en, unit_ja
from mamori.settings import Settings
from mamori.web.routing import session_cookie

LANG_COOKIE = "mamori_lang"
LANGS = ("ja", "en")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# The shared layout in ``ui/templates``, each domain's pages in its own ``templates/`` folder
# (one namespace: a page may include another domain's fragment, such as ``_reauth.html``).
_PACKAGE = Path(str(resources.files("mamori")))
_TEMPLATES = [
    str(_PACKAGE / "ui" / "templates"),
    *sorted(str(d) for d in _PACKAGE.glob("*/templates") if d.parent.name != "ui"),
]

env = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(("html",), default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def jdate(day: dt.date | dt.datetime | None) -> str:
    if day is None:
        return ""
    if isinstance(day, dt.datetime):
        day = day.astimezone(JST).date()
    return f"{day.year}/{day.month:02d}/{day.day:02d}"


def jtime(moment: dt.datetime | None) -> str:
    """A moment in clinic time (JST), minutes precision."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(JST).strftime("%Y/%m/%d %H:%M")


def hhmm(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(JST).strftime("%H:%M")


def sparkline(values: list[float], width: int = 96, height: int = 24) -> str:
    """SVG polyline points for a trend (oldest first); empty when fewer than two values."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
        for i, v in enumerate(values)
    )


def _nice_step(span: float, count: int = 4) -> float:
    """A step of 1, 2 or 5 × 10ⁿ giving about ``count`` intervals over ``span``."""
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def trend_chart(
    values: list[float],
    labels: list[str],
    ref_low: float | None = None,
    ref_high: float | None = None,
    width: int = 640,
    height: int = 220,
) -> dict[str, Any]:
    """The geometry of one test's trend, drawn with its scale: y-axis ticks at round numbers
    over the range shown (the reference range included), the reference band, and each point
    with its value and date. Oldest first."""
    if not values:
        return {}
    pad_l, pad_r, pad_t, pad_b, inset = 48, 24, 18, 34, 20
    shown = [*values, *(v for v in (ref_low, ref_high) if v is not None)]
    lo, hi = min(shown), max(shown)
    step = _nice_step((hi - lo) or abs(hi) or 1.0)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if hi == lo:
        hi = lo + step
    plot_w, plot_h = width - pad_l - pad_r - 2 * inset, height - pad_t - pad_b

    def y(v: float) -> float:
        return round(pad_t + (hi - v) / (hi - lo) * plot_h, 1)

    gap = plot_w / (len(values) - 1) if len(values) > 1 else 0.0
    points = [
        {
            "x": round(pad_l + inset + (i * gap if len(values) > 1 else plot_w / 2), 1),
            "y": y(v),
            "value": f"{v:g}",
            "label": labels[i],
        }
        for i, v in enumerate(values)
    ]
    count = round((hi - lo) / step)
    ticks = [
        {"y": y(lo + i * step), "value": f"{round(lo + i * step, 6):g}"} for i in range(count + 1)
    ]
    band = None
    if ref_low is not None or ref_high is not None:
        top = y(ref_high if ref_high is not None else hi)
        bottom = y(ref_low if ref_low is not None else lo)
        band = {"y": top, "h": round(bottom - top, 1)}
    return {
        "width": width,
        "height": height,
        "left": pad_l,
        "right": width - pad_r,
        "top": pad_t,
        "bottom": height - pad_b,
        "points": points,
        "line": " ".join(f"{p['x']},{p['y']}" for p in points),
        "ticks": ticks,
        "band": band,
    }


env.filters.update(
    wareki=wareki,
    jdate=jdate,
    jtime=jtime,
    hhmm=hhmm,
    urlquote=quote,
    unit_ja=unit_ja,
    unit_en=unit_en,
    rp_count_ja=rp_count_ja,
    wareki_en=wareki_en,
    rp_count_en=rp_count_en,
)
env.globals.update(
    age_on=age_on,
    sparkline=sparkline,
    trend_chart=trend_chart,
    P=Permission,
    password_policy=passwords.policy_text(),
    password_min_length=passwords.MIN_LENGTH,
)


def lang_of(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "ja")
    return lang if lang in LANGS else "ja"


def translator(lang: str) -> Any:
    def t(ja: str, en: str) -> str:
        return en if lang == "en" else ja

    return t


def csrf_for(request: Request) -> str:
    """The CSRF token of the browser's session (sent back by htmx in ``X-CSRF-Token``)."""
    settings: Settings = request.app.state.settings
    token = request.cookies.get(session_cookie(settings))
    return auth.csrf_token(settings.token_pepper, token) if token else ""


def html(
    request: Request,
    template: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    lang = lang_of(request)
    context.setdefault("actor", getattr(request.state, "actor", None))
    context.setdefault("csrf", csrf_for(request))
    context.setdefault("read_only", request.app.state.db.read_only)
    if context["read_only"]:  # the standby's banner: how old its data is (its marker, per page)
        context.setdefault("standby", copies.copy_banner(request.app.state.settings.home))
    context.setdefault("isolated", request.app.state.db.isolated)
    context.setdefault("backups_missing", getattr(request.app.state, "backups_missing", False))
    settings: Settings = request.app.state.settings
    context.setdefault("reauth_minutes", settings.auth.reauth_minutes)
    context.setdefault("alerts_waiting", _alerts_waiting(request, context["actor"]))
    context.setdefault("cases_waiting", _cases_waiting(request, context["actor"]))
    incidents_open, incident_dues = _incidents(request, context["actor"])
    context.setdefault("incidents_open", incidents_open)
    context.setdefault("incident_dues", incident_dues)
    changed, overdue = _programme(request, context["actor"])
    context.setdefault("checklist_changed", changed)
    context.setdefault("duties_overdue", overdue)
    context.setdefault(
        "idle_seconds", getattr(request.state, "idle_seconds", settings.auth.idle_minutes * 60)
    )
    body = env.get_template(template).render(
        request=request, lang=lang, t=translator(lang), path=request.url.path, **context
    )
    out = HTMLResponse(body, status_code=status, headers=headers)
    out.headers["content-security-policy"] = CSP
    return out


def _alerts_waiting(request: Request, actor: Any) -> int:
    """Open security alerts, for the menu of those who review them (a count, no patient)."""
    if actor is None or not actor.can(Permission.AUDIT_READ):
        return 0
    with request.app.state.db.session(write=False) as session:
        return open_alert_count(session, actor)


def _cases_waiting(request: Request, actor: Any) -> int:
    """Open detection cases, for the menu of their two reviewers (a count, no patient)."""
    if actor is None or not actor.can(Permission.DETECTION_REVIEW):
        return 0
    from mamori.detection.service import open_case_count

    with request.app.state.db.session(write=False) as session:
        return open_case_count(session, actor)


def _incidents(request: Request, actor: Any) -> tuple[int, list[Any]]:
    """Incidents not closed and the APPI deadlines coming or missed, for the menu and the
    banner of those who run incidents (numbers and dates, no patient)."""
    if actor is None or not actor.can(Permission.INCIDENT_READ):
        return 0, []
    from mamori.incidents.service import due_soon, open_count

    with request.app.state.db.session(write=False) as session:
        return open_count(session, actor), due_soon(session, actor)


def _programme(request: Request, actor: Any) -> tuple[int, list[tuple[str, str]]]:
    """This year's checklist answers mamori's evidence no longer supports, and the duties
    overdue: on the start pages only (they read accounts, backups and the log), for those who
    read the programme."""
    if actor is None or not actor.can(Permission.PROGRAMME_READ):
        return 0, []
    if request.url.path not in ("/today", "/admin/reviews", "/admin/checklist"):
        return 0, []
    from mamori.programme.checklist import changed_count
    from mamori.programme.duties import status

    with request.app.state.db.session(write=False) as session:
        changed = changed_count(session, actor, request.app.state.settings)
        return changed, status(session, actor)["names"]


def go(request: Request, url: str) -> Response:
    """After a successful form post: htmx navigates to ``url`` (a fresh GET: post/redirect/get);
    a plain browser request gets a 303. No ``#fragment``: from the same page, a URL that
    differs only by its fragment would scroll instead of loading the page again."""
    url = url.split("#", 1)[0]
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return Response(status_code=303, headers={"location": url})


def local_path(raw: str | None, default: str = "/") -> str:
    """Only a path on this site is a redirect target (no open redirect via ``next=``)."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return default
    return raw


def pdf(body: bytes, filename: str) -> Response:
    """A printed page for the browser's viewer: shown inline, never cached (it may name
    patients), with an ASCII file name for the download."""
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
