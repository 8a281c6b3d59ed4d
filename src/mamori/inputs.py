"""Input rules shared by every schema: NFC text, bounded lengths, bilingual error messages.

A validator that rejects input raises :func:`bad`, which carries the Japanese message in the
error's context; the HTTP edge shows both languages and names the field.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from pydantic_core import PydanticCustomError


def bad(ja: str, en: str) -> PydanticCustomError:
    return PydanticCustomError("mamori", en, {"ja": ja})


def _nfc(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t\r" for c in value):
        raise bad("制御文字は使えません。", "Control characters are not allowed.")
    return value


def text(max_length: int) -> Any:
    return Annotated[
        str, StringConstraints(max_length=max_length, strip_whitespace=True), AfterValidator(_nfc)
    ]


Name = text(60)
ShortText = text(200)
LongText = text(20000)  # one SOAP section; p99 of real notes is ~2,000 characters
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True), AfterValidator(_nfc)
]


class InputModel(BaseModel):
    """Unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
