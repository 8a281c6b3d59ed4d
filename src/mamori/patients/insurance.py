"""Check digits of Japanese insurance numbers (保険者番号設定要領, clinic-domain.md §1.4).

保険者番号 (6 digits for 国保, 8 otherwise), 公費負担者番号 (8) and 公費受給者番号 (7) end in a
mod-10 check digit: starting from the rightmost digit of the body, weights alternate 2, 1; a
two-digit product counts as the sum of its digits; check = (10 − sum mod 10) mod 10.
"""

from __future__ import annotations

import re
import unicodedata


def check_digit(body: str) -> int:
    if not body.isdigit():
        raise ValueError("digits only")
    total = 0
    for i, ch in enumerate(reversed(body)):
        product = int(ch) * (2 if i % 2 == 0 else 1)
        total += product // 10 + product % 10
    return (10 - total % 10) % 10


def with_check_digit(body: str) -> str:
    return body + str(check_digit(body))


def normalise_number(raw: str) -> str:
    """Full-width digits to ASCII, spaces and hyphens removed."""
    return re.sub(r"[\s\-‐－ー]", "", unicodedata.normalize("NFKC", raw))


def is_valid(number: str, lengths: tuple[int, ...]) -> bool:
    return (
        number.isascii()
        and number.isdigit()
        and len(number) in lengths
        and check_digit(number[:-1]) == int(number[-1])
    )


INSURER_LENGTHS = (6, 8)
PUBLIC_PAYER_LENGTHS = (8,)
RECIPIENT_LENGTHS = (7,)
