"""Errors cross process boundaries whole (a restore's worker process, verify's workers)."""

from __future__ import annotations

import pickle

import pytest

from mamori.backup.fmt import BackupInvalid
from mamori.crypto.keyring import SealBroken
from mamori.errors import Forbidden, InvalidInput, MamoriError, StaleVersion


@pytest.mark.parametrize(
    "error",
    [
        BackupInvalid("文書が目録と一致しません。", "Document 0123456789ab differs."),
        SealBroken("patient.sealed"),
        InvalidInput("カナを入力してください。", "Enter kana to search.", field="kana"),
        Forbidden("note:write"),
        StaleVersion(2, 3),
    ],
)
def test_an_error_pickles_with_both_messages_and_its_own_fields(error: MamoriError) -> None:
    back = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, in memory
    assert type(back) is type(error)
    assert (back.ja, back.en, back.code, back.field, back.status) == (
        error.ja,
        error.en,
        error.code,
        error.field,
        error.status,
    )
    assert str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)
