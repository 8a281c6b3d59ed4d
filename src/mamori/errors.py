"""Errors that reach a person: each carries a stable code and a Japanese and an English message.

Services raise these; the HTTP edge turns them into JSON (see ``web/errors.py``) and the CLI
prints them. Nothing here knows about HTTP except the suggested status code.
"""

from __future__ import annotations

from typing import Any


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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (both messages, code, field and a subclass's own attributes), so an
        # error raised in a worker process reaches the parent as itself; the default would
        # call the class again with ``args`` alone.
        return (_rebuilt, (type(self), self.args), self.__dict__)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "field": self.field,
            "message_ja": self.ja,
            "message_en": self.en,
        }


def _rebuilt(cls: type[MamoriError], args: tuple[Any, ...]) -> MamoriError:
    error = cls.__new__(cls)
    error.args = args
    return error


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


class PossibleDuplicate(Conflict):
    """A registration that looks like an existing patient (same kana and birth date)."""

    code = "possible_duplicate"

    def __init__(self, numbers: list[int], ids: list[Any] | None = None) -> None:
        listed = "、".join(f"No.{n}" for n in numbers)
        super().__init__(
            f"同じカナ氏名・生年月日の患者がすでに登録されています（{listed}）。同じ方ならその記録を"
            "使ってください。別の方の場合だけ、確認して新規登録してください。",
            f"A patient with the same kana name and birth date is registered ({listed}). Use "
            "that record if it is the same person; register anew only for someone else.",
        )
        self.numbers = numbers
        self.ids = ids or []  # the existing patients, for a screen to offer them


class NoteAlreadyFinal(Conflict):
    code = "note_already_final"

    def __init__(self) -> None:
        super().__init__(
            "確定済みの記録は変更できません。修正は理由を付けて追記（修正版）として行ってください。",
            "A finalised note cannot be changed; amend it with a reason instead.",
        )


class RecordIntegrityFailed(Conflict):
    """A record's head row no longer matches its latest version: someone changed the database
    behind mamori (a status flipped, a row moved to another patient). Nothing is written; the
    edge records the incident and alerts the administrator."""

    code = "record_integrity_failed"

    def __init__(self, record_type: str, record_id: object, patient_id: object, why: str) -> None:
        super().__init__(
            "この記録はデータベース上で直接書き換えられた可能性があります（最新の版と一致しません）。"
            "変更を中止し、管理者に通知しました。",
            f"This record does not match its latest version ({why}); it may have been changed "
            "in the database directly. Nothing was written; the administrator was alerted.",
        )
        self.record_type, self.record_id, self.patient_id, self.why = (
            record_type,
            record_id,
            patient_id,
            why,
        )


class ReadOnlyCopy(MamoriError):
    """A read-only copy: the standby, or a restored or drilled copy before it is promoted
    (``mamori.copies``)."""

    status = 409
    code = "read_only_copy"

    def __init__(self) -> None:
        super().__init__(
            "これは参照専用のコピー（待機系、または復元したコピー）です。ここでは記録を書けません。"
            "停止中の記録は紙の記録用紙に書き、復旧後に事後入力してください。",
            "This is a read-only copy (the standby, or a restored copy): no record can be "
            "written here. Write on the paper forms while the server is down and enter them "
            "after recovery.",
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


class Forbidden(MamoriError):
    """An access-control decision: the role (or the moment) does not allow this. Recorded in
    the audit trail as a denial."""

    status = 403
    code = "forbidden"

    def __init__(self, permission: str) -> None:
        super().__init__(
            f"この操作の権限がありません（{permission}）。",
            f"You do not have the permission {permission!r}.",
            code="forbidden",
        )
        self.permission = permission


class BreakGlassRequired(MamoriError):
    """The patient is restricted (staff, VIP, sensitive): opening the record needs a stated
    reason (break-the-glass), which alerts the administrator."""

    status = 403
    code = "break_glass_required"

    def __init__(self, patient_id: str) -> None:
        super().__init__(
            "この患者は閲覧制限の対象です。緊急閲覧（理由の入力）が必要です。",
            "This patient is restricted; opening the record needs break-the-glass with a reason.",
            code="break_glass_required",
        )
        self.patient_id = patient_id


class Unauthenticated(MamoriError):
    status = 401
    code = "unauthenticated"

    def __init__(
        self,
        ja: str = "ログインが必要です。",
        en: str = "Authentication required.",
        *,
        code: str = "unauthenticated",
    ) -> None:
        super().__init__(ja, en, code=code)


class ReauthRequired(MamoriError):
    status = 401
    code = "reauth_required"

    def __init__(self) -> None:
        super().__init__(
            "この操作の前に、パスワードと二要素認証で本人確認をやり直してください。",
            "Confirm your identity again (password and second factor) before this action.",
        )


class TooManyAttempts(MamoriError):
    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"試行回数が多すぎます。{retry_after}秒後にもう一度お試しください。",
            f"Too many attempts. Try again in {retry_after} seconds.",
        )
        self.retry_after = retry_after


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


class Isolated(MamoriError):
    """The isolation switch is on (``mamori.isolation``)."""

    status = 503
    code = "isolated"

    def __init__(self) -> None:
        super().__init__(
            "このサーバーは隔離中です（インシデント対応）。院内の端末・連携からは使えません。"
            "記録は紙の記録用紙に書き、復旧後に事後入力してください。",
            "This server is isolated (incident response): other computers and integrations "
            "cannot use it. Record care on the paper forms and enter it after recovery.",
        )
