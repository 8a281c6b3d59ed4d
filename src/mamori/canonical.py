"""Canonical JSON: the exact bytes that record versions, sealed fields and audit events hash.

Sorted keys, no insignificant whitespace, UTF-8 kept as is (NFC is done at input), no floats
(they do not round-trip exactly through every database), and one spelling for each of the
non-JSON types records hold.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any


def _encode(value: Any) -> Any:
    """``json.dumps`` hook for the non-JSON types our records hold."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in versioned content")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store {type(value).__name__} in versioned content")


def no_floats(content: Mapping[str, Any]) -> None:
    # Floats do not round-trip exactly through every database and JSON encoder, so a stored
    # hash could stop matching its record; numeric values are kept as decimal strings instead.
    for name, value in content.items():
        if isinstance(value, float):
            raise TypeError(f"float in versioned field {name}; use a Decimal string")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_encode, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 text kept as is (NFC done at input).
    One encoder for all calls (``json.dumps`` with options builds a new one each time); it
    keeps no state between calls."""
    return _ENCODER.encode(value)
