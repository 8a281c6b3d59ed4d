"""The record versions an audit event names, as ``mamori audit verify`` reads them from the
stored bytes: the canonical spelling through one pattern, anything else through JSON, and the
same answer either way. A reference that is not a well-formed version is reported, never
passed over and never a crash."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mamori.audit.verify import _refs_in
from mamori.canonical import canonical_json

refs = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Patient", "ProgressNote", "Observation", "Coverage_2"]),
            "id": st.uuids().map(str),
            "version": st.integers(1, 10**17),
            "hash": st.binary(min_size=32, max_size=32).map(bytes.hex),
        }
    ),
    max_size=4,
)
details = st.one_of(
    st.none(),
    st.fixed_dictionaries({"records": st.integers(0, 10**6)}),  # a system event's count
    st.fixed_dictionaries({"records": refs}),  # nested: never the event's own references
)


def _event(seq: int, records: list[dict[str, Any]], detail: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "v": 1,
        "tag": "record:updated",
        "seq": seq,
        "outcome": "success",
        "actor": {"user": str(uuid.uuid4()), "role": "physician"},
        "patients": [str(uuid.uuid4())],
    }
    if records:
        event["records"] = records
    if detail is not None:
        event["detail"] = detail
    return event


def _expected(seq: int, records: list[dict[str, Any]]) -> list[tuple[int, str, str, int, str]]:
    return [(seq, r["type"], r["id"], r["version"], r["hash"]) for r in records]


@given(st.integers(1, 2**40), refs, details)
def test_canonical_bytes_name_exactly_the_top_level_references(
    seq: int, records: list[dict[str, Any]], detail: Any
) -> None:
    body = canonical_json(_event(seq, records, detail)).encode()
    assert _refs_in(seq, body) == _expected(seq, records)


@given(st.integers(1, 2**40), refs, details)
def test_any_other_spelling_gives_the_same_references(
    seq: int, records: list[dict[str, Any]], detail: Any
) -> None:
    body = json.dumps(_event(seq, records, detail), indent=1).encode()  # unsorted, spaced
    assert _refs_in(seq, body) == _expected(seq, records)


def test_malformed_references_are_reported() -> None:
    good = {"type": "ProgressNote", "id": str(uuid.uuid4()), "version": 2, "hash": "ab" * 32}
    for bad in (
        {**good, "version": "2"},
        {**good, "version": True},
        {**good, "version": 0},
        {**good, "id": good["id"].upper()},
        {**good, "id": "not-a-uuid"},
        {**good, "hash": None},
        {k: v for k, v in good.items() if k != "type"},
        "ProgressNote",
    ):
        body = canonical_json(_event(9, [good, bad], None)).encode()  # type: ignore[list-item]
        assert isinstance(_refs_in(9, body), str), bad
    assert _refs_in(9, b'{"records":[{"hash":') == "body is not valid JSON"
