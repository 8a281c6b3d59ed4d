"""Check digits of insurance numbers (保険者番号設定要領), with the worked examples from
clinic-domain.md §1.4 and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mamori.clinic.service import institution_code_valid
from mamori.patients import insurance


@pytest.mark.parametrize(("body", "digit"), [("3312001", 5), ("0113001", 2)])
def test_worked_examples(body: str, digit: int) -> None:
    assert insurance.check_digit(body) == digit


def test_valid_and_invalid_insurer_numbers() -> None:
    assert insurance.is_valid("33120015", insurance.INSURER_LENGTHS)
    assert insurance.is_valid("01130012", insurance.INSURER_LENGTHS)
    assert not insurance.is_valid("01130013", insurance.INSURER_LENGTHS)
    assert not insurance.is_valid("0113001", insurance.INSURER_LENGTHS)  # 7 digits
    assert not insurance.is_valid("０１１３００１２", insurance.INSURER_LENGTHS)  # not normalised
    assert insurance.normalise_number("０１１３-００１２") == "01130012"


@given(st.text(alphabet="0123456789", min_size=5, max_size=7))
def test_generated_numbers_validate_and_any_single_digit_change_is_caught(body: str) -> None:
    number = insurance.with_check_digit(body)
    assert insurance.is_valid(number, (len(number),))
    # mod-10 with 2-1 weights detects every single-digit substitution
    for i in range(len(number)):
        for d in "0123456789":
            if d != number[i]:
                mutated = number[:i] + d + number[i + 1 :]
                assert not insurance.is_valid(mutated, (len(number),))


def test_institution_code() -> None:
    assert institution_code_valid("1310123455")
    assert not institution_code_valid("1310123456")
    assert not institution_code_valid("131012345")
