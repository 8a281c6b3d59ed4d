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


def test_an_rp_counts_days_or_for_a_prn_doses() -> None:
    from mamori.clinical.units import dose_ja, rp_count_en, rp_count_ja

    daily = {"usage": "1日3回毎食後", "days": 14}
    prn = {"usage": "発熱時頓用", "days": 5}
    assert (rp_count_ja(daily), rp_count_ja(prn)) == ("14日分", "5回分")
    assert (rp_count_en(daily), rp_count_en(prn)) == ("14 days", "5 doses")
    assert dose_ja({"dose": "1", "unit": "錠", "per": "dose"}) == "1錠/回"
    assert dose_ja({"dose": "3", "unit": "錠", "per": "day"}) == "3錠"
