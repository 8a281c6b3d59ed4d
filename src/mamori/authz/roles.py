"""Staff roles: the one list of who a person is to the clinic (their permissions are in
``permissions.py``)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """Staff roles (clinic-domain.md §6); their permissions are in ``permissions.py``."""

    PHYSICIAN = "physician"  # 医師
    NURSE = "nurse"  # 看護師
    RECEPTION = "reception"  # 医療事務・受付
    SCRIBE = "scribe"  # 医師事務作業補助者
    DIRECTOR = "director"  # 院長・管理者
    SECURITY_OFFICER = "security_officer"  # 安全管理者
    VENDOR = "vendor"  # IT保守ベンダー
    AUDITOR = "auditor"  # 監査

    @property
    def label_ja(self) -> str:
        return ROLE_LABELS_JA[self]

    @property
    def signs_clinical_records(self) -> bool:
        """Roles that may finalise (確定) notes and confirm proxy entries (ES-A2, ES-A4)."""
        return self in (Role.PHYSICIAN, Role.DIRECTOR)


ROLE_LABELS_JA = {
    Role.PHYSICIAN: "医師",
    Role.NURSE: "看護師",
    Role.RECEPTION: "医療事務・受付",
    Role.SCRIBE: "医師事務作業補助者",
    Role.DIRECTOR: "院長・管理者",
    Role.SECURITY_OFFICER: "安全管理者",
    Role.VENDOR: "IT保守ベンダー",
    Role.AUDITOR: "監査",
}
