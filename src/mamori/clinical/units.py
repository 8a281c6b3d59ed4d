"""Units as people read them. Records keep UCUM codes (what FHIR and lab interfaces exchange:
``Cel``, ``mm[Hg]``, ``10^3/uL``); screens and PDFs show ℃, mmHg, ×10³/μL."""

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
