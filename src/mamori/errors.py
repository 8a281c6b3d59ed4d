"""Errors that reach a person: each carries a stable code and a Japanese and an English message.

Services raise these; the HTTP edge turns them into JSON (see ``web/errors.py``) and the CLI
prints them. Nothing here knows about HTTP except the suggested status code.
"""

from __future__ import annotations


class MamoriError(Exception):
    """Base class: ``code`` is stable for programs, ``ja``/``en`` are for people."""

    status = 400
    code = "error"

    def __init__(self, ja: str, en: str, *, field: str | None = None, code: str | None = None):
        super().__init__(en)
        self.ja = ja
        self.en = en
        self.field = field
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "field": self.field,
            "message_ja": self.ja,
            "message_en": self.en,
        }


class InvalidInput(MamoriError):
    status = 422
    code = "invalid_input"


class NotFound(MamoriError):
    """Absent, or not the actor's to see: the two are deliberately indistinguishable."""

    status = 404
    code = "not_found"

    def __init__(self, what: str = "record") -> None:
        super().__init__("記録が見つかりません。", f"No such {what}.", code="not_found")


class Conflict(MamoriError):
    status = 409
    code = "conflict"


class NoteAlreadyFinal(Conflict):
    code = "note_already_final"

    def __init__(self) -> None:
        super().__init__(
            "確定済みの記録は変更できません。修正は理由を付けて追記（修正版）として行ってください。",
            "A finalised note cannot be changed; amend it with a reason instead.",
        )


class StaleVersion(Conflict):
    code = "stale_version"

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            f"他の人が先に更新しました（版 {actual}）。画面を読み込み直してください。",
            f"The record was changed by someone else (version {actual}, you had {expected}).",
        )


class NotAllowed(MamoriError):
    """A domain rule, not an access-control decision: e.g. only a physician may finalise."""

    status = 403
    code = "not_allowed"


class Unauthenticated(MamoriError):
    status = 401
    code = "unauthenticated"

    def __init__(self) -> None:
        super().__init__("ログインが必要です。", "Authentication required.")


class AuditUnavailable(MamoriError):
    """The audit event could not be stored: the data is not released, the write not kept."""

    status = 503
    code = "audit_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "監査記録を保存できないため、処理を中止しました（データは表示・保存されていません）。"
            "管理者に連絡してください。",
            "The audit trail could not be written, so nothing was shown or saved. "
            "Contact the administrator.",
        )


class InstanceError(MamoriError):
    """The instance is missing, incomplete or unsafe; the process must not start."""

    code = "instance_error"
