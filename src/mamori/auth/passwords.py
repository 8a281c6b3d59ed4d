"""Passwords: Argon2id hashes, and a policy that satisfies the MHLW checklist on its own.

* CL-2-7: at least 13 characters (so no forced rotation is needed, whatever the second factor),
  and not guessable: zxcvbn's estimate (common passwords, keyboard walks, dates, names and the
  account's own login ID and name) must reach score 3 (~10^8 guesses) — length alone lets
  ``password12345`` through.
* CL-2-8: none of the account's last :data:`HISTORY` passwords may be reused.

Unknown accounts are answered in the same time as known ones: :func:`verify` is called against
a dummy hash, so response time does not reveal which login IDs exist.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable

import jaconv
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

from mamori.errors import InvalidInput

MIN_LENGTH = 13
MAX_LENGTH = 128  # Argon2 takes any length; a bound keeps a hostile request cheap


def policy_text() -> tuple[str, str]:
    """The policy as the forms state it (Japanese, English): one source with the check."""
    return (
        f"{MIN_LENGTH}文字以上、推測されにくいもの、最近の{HISTORY}回と異なるもの",
        f"{MIN_LENGTH}+ characters, hard to guess, none of your last {HISTORY}",
    )


MIN_SCORE = 3
HISTORY = 5

# RFC 9106 "second recommended" profile (64 MiB, 3 passes, 4 lanes); bench/login.py reports
# its cost per sign-in. The test suite (MAMORI_ENV=test) uses the same algorithm with a small
# memory cost so that hundreds of sign-ins stay quick; stored hashes carry their parameters, so
# the two never mix up.
if os.environ.get("MAMORI_ENV") == "test":
    _hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
else:
    _hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)


@functools.cache
def _dummy() -> str:
    """A hash to verify against for an account without one (made on first use: an Argon2id
    hash at import cost every command ~0.1 s and 64 MiB)."""
    return _hasher.hash("mamori-dummy-password-for-unknown-accounts")


def warm_up() -> None:
    """Make the dummy hash now (servers call this at start)."""
    _dummy()


def normalise(password: str) -> str:
    """NFC, so the same password typed on a Mac and on Windows is the same password."""
    return unicodedata.normalize("NFC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(normalise(password))


def verify(stored: str | None, password: str) -> bool:
    """Constant-work check: an account without a hash costs the same as a wrong password."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(stored or _dummy(), normalise(password)) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def generate() -> str:
    """An initial password to hand over on paper: 4 groups of 5 from an unambiguous alphabet
    (~98 bits), e.g. ``k7fq2-m9xhp-4cw8t-z3nae``."""

    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    raw = "".join(secrets.choice(alphabet) for _ in range(20))
    return "-".join(raw[i : i + 5] for i in range(0, 20, 5))


def personal_words(login_id: str, display_name: str, display_kana: str) -> list[str]:
    """The words of a person's own identity a guesser tries first: login ID and its parts, name,
    kana and the kana's romaji (田中 千佳 → タナカ チカ → tanaka, chika)."""
    words = [login_id, *re.split(r"[_.\-]+", login_id), display_name, *display_name.split()]
    for part in display_kana.split():
        words += [part, jaconv.kana2alphabet(jaconv.kata2hira(part))]
    return [w for w in words if len(w) >= 2]


def _mostly_personal(password: str, words: Iterable[str]) -> bool:
    """True when little is left once the person's own words, digits and separators are taken
    out (``tanaka-chika-1990``): zxcvbn rates such long strings strong, a guesser does not."""
    rest = password.lower()
    for word in sorted({w.lower() for w in words if len(w) >= 3}, key=len, reverse=True):
        rest = rest.replace(word, "")
    return rest != password.lower() and len(re.sub(r"[\W\d_]", "", rest)) < 6


def check_policy(password: str, *, personal: Iterable[str], previous: Iterable[str] = ()) -> None:
    """Raise ``InvalidInput`` (ja/en) when the password is too short, guessable or reused."""
    password = normalise(password)
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"パスワードは{MIN_LENGTH}文字以上にしてください。",
            f"Passwords must be at least {MIN_LENGTH} characters long.",
            field="password",
        )
    if len(password) > MAX_LENGTH:
        raise InvalidInput(
            f"パスワードは{MAX_LENGTH}文字以内にしてください。",
            f"Passwords may be at most {MAX_LENGTH} characters long.",
            field="password",
        )
    inputs = [p for p in personal if p] + ["mamori", "守り", "clinic", "kurinikku"]
    if zxcvbn(password, user_inputs=inputs)["score"] < MIN_SCORE or _mostly_personal(
        password, inputs
    ):
        raise InvalidInput(
            "推測されやすいパスワードです（よく使われる語、名前、ログインID、キーボード配列、"
            "日付などを避け、長い文やランダムな文字列にしてください）。",
            "This password is easy to guess (avoid common words, names, the login ID, keyboard "
            "patterns and dates; use a long phrase or random characters).",
            field="password",
        )
    for old in previous:
        if verify(old, password):
            raise InvalidInput(
                f"最近使ったパスワード（直近{HISTORY}回）は使えません。",
                f"You may not reuse any of your last {HISTORY} passwords.",
                field="password",
            )
