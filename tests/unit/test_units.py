"""Units on screens and PDFs: UCUM codes stay in the records, people read ℃ and mmHg."""

from __future__ import annotations

import pytest

from mamori.clinical.units import unit_en, unit_ja


@pytest.mark.parametrize(
    ("code", "ja", "en"),
    [
        ("Cel", "℃", "℃"),
        ("mm[Hg]", "mmHg", "mmHg"),
        ("/min", "回/分", "/min"),
        ("10^3/uL", "×10³/μL", "×10³/μL"),
        ("10^4/uL", "×10⁴/μL", "×10⁴/μL"),
        ("mg/dL", "mg/dL", "mg/dL"),
        ("%", "%", "%"),
        ("", "", ""),
        (None, "", ""),
    ],
)
def test_units_read_as_people_write_them(code: str | None, ja: str, en: str) -> None:
    assert (unit_ja(code), unit_en(code)) == (ja, en)
