"""Input rules shared by every schema: NFC text, bounded lengths, bilingual error messages.

A validator that rejects input raises :func:`bad`, which carries the Japanese message in the
error's context; the HTTP edge shows both languages and names the field.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from pydantic_core import PydanticCustomError


def bad(ja: str, en: str) -> PydanticCustomError:
    return PydanticCustomError("mamori", en, {"ja": ja})


def _nfc(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t\r" for c in value):
        raise bad("制御文字は使えません。", "Control characters are not allowed.")
    return value


NFC = AfterValidator(_nfc)
# NFC-normalised, stripped strings of bounded length, one alias per bound so that both
# pydantic and mypy read them.
Text2 = Annotated[str, StringConstraints(max_length=2, strip_whitespace=True), NFC]
Text10 = Annotated[str, StringConstraints(max_length=10, strip_whitespace=True), NFC]
Text20 = Annotated[str, StringConstraints(max_length=20, strip_whitespace=True), NFC]
Text40 = Annotated[str, StringConstraints(max_length=40, strip_whitespace=True), NFC]
Name = Annotated[str, StringConstraints(max_length=60, strip_whitespace=True), NFC]
Text100 = Annotated[str, StringConstraints(max_length=100, strip_whitespace=True), NFC]
ShortText = Annotated[str, StringConstraints(max_length=200, strip_whitespace=True), NFC]
Text500 = Annotated[str, StringConstraints(max_length=500, strip_whitespace=True), NFC]
LongText = Annotated[
    str, StringConstraints(max_length=20000, strip_whitespace=True), NFC
]  # one SOAP section; p99 of real notes is ~2,000 chars
Reason = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1000, strip_whitespace=True),
    AfterValidator(_nfc),
]


class InputModel(BaseModel):
    """Unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
