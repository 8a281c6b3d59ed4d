"""Units and amounts as people read them. Records keep UCUM codes (what FHIR and lab
interfaces exchange: ``Cel``, ``mm[Hg]``, ``10^3/uL``); screens and PDFs show ℃, mmHg,
×10³/μL; an RP's number is 日分, or 回分 for a 頓用; a dose per administration reads 2錠/回."""

from __future__ import annotations

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_COMMON = {
    "Cel": "℃",
    "[degF]": "℉",
    "mm[Hg]": "mmHg",
    "[iU]/L": "IU/L",
    "U/L": "U/L",
}
_JA = {**_COMMON, "/min": "回/分", "{beats}/min": "回/分", "{breaths}/min": "回/分"}
_EN = {**_COMMON, "/min": "/min", "{beats}/min": "/min", "{breaths}/min": "/min"}


def _generic(code: str) -> str:
    """``10^3/uL`` → ×10³/μL; ``uL``/``ug`` → μL/μg; anything else as it is."""
    out = code
    if out.startswith("10^"):
        power, _, rest = out[3:].partition("/")
        out = f"×10{power.translate(_SUPERSCRIPT)}" + (f"/{rest}" if rest else "")
    return out.replace("uL", "μL").replace("ug", "μg").replace("umol", "μmol")


def unit_ja(code: str | None) -> str:
    if not code:
        return ""
    return _JA.get(code) or _generic(code)


def unit_en(code: str | None) -> str:
    if not code:
        return ""
    return _EN.get(code) or _generic(code)


def is_prn(group: dict[str, object]) -> bool:
    """A 頓用/頓服 RP ("発熱時頓用"): its number is of doses (回分), not of days (日分)."""
    usage = str(group.get("usage") or "")
    return "頓" in usage


def rp_count_ja(group: dict[str, object]) -> str:
    return f"{group.get('days')}{'回分' if is_prn(group) else '日分'}"


def rp_count_en(group: dict[str, object]) -> str:
    return f"{group.get('days')} {'doses' if is_prn(group) else 'days'}"


def dose_ja(item: dict[str, object]) -> str:
    """``2錠/回`` for a dose per administration, ``3錠`` for a daily amount."""
    per = "/回" if item.get("per") == "dose" else ""
    return f"{item.get('dose')}{item.get('unit')}{per}"
