"""HTML forms → the API's own input models, so a page validates exactly as the JSON API does.

A form field left empty means "not given" (the model's default applies), a ticked checkbox sends
``on``. A form that does not validate is shown again with the submitted values and the
messages in Japanese and English; nothing is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from mamori.errors import InvalidInput
from mamori.web.errors import validation_details

M = TypeVar("M", bound=BaseModel)

Form = dict[str, str]


async def form_fields(request: Request) -> Form:
    """The posted form's text fields (files are read by the endpoints that take them)."""
    form = await request.form()
    return {k: v for k, v in form.multi_items() if isinstance(v, str)}


class FormInvalid(InvalidInput):
    """A form that did not validate: every field's message, for the form shown again."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        first = details[0] if details else {"message_ja": "", "message_en": "", "field": None}
        super().__init__(
            "入力内容を確認してください。", "Please check the form.", field=first["field"]
        )
        self.details = details


def parse(model: type[M], form: Mapping[str, str], **extra: Any) -> M:
    data: dict[str, Any] = {
        k: v for k, v in form.items() if k in model.model_fields and v.strip() != ""
    }
    data.update(extra)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FormInvalid(validation_details(list(exc.errors()))) from exc


def expected_version(form: Mapping[str, str]) -> int:
    """The version a form was shown at (its hidden ``expected_version``), or a clear 422."""
    try:
        return int(form.get("expected_version", ""))
    except ValueError:
        raise InvalidInput(
            "版の指定がありません。画面を開き直してください。",
            "Missing version; reload the page.",
            field="expected_version",
        ) from None


def form_date(raw: str | None, field: str) -> dt.date | None:
    """A date field (``YYYY-MM-DD`` as a date input sends it); empty is None; anything else
    is refused naming the field."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("日付が正しくありません。", "Invalid date.", field=field) from None
