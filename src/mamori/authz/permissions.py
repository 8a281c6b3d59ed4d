"""Permissions (``resource:action``) and the one role → permissions table.

The table follows the default policy in ``clinic-domain.md`` §6: reception sees demographics,
insurance and visits but never note text; nurses write vitals and nursing entries; physicians
sign; the scribe drafts; the vendor sees no patient data outside a maintenance window; the
auditor reads the log and compliance evidence, never charts.

Routes declare one permission each (``web.routing.requires``), and the access gate checks the
permission of the record type it hands out, so a path that forgets its route permission still
cannot reach data the role may not see (the FHIR and CLI edges rely on that).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mamori.authz.roles import Role
from mamori.errors import NotAllowed


class Permission(enum.StrEnum):
    # patient data
    PATIENT_READ = "patient:read"
    PATIENT_WRITE = "patient:write"
    PATIENT_MERGE = "patient:merge"
    INSURANCE_READ = "insurance:read"
    INSURANCE_WRITE = "insurance:write"
    ENCOUNTER_READ = "encounter:read"
    ENCOUNTER_WRITE = "encounter:write"
    CHART_READ = "chart:read"
    CHART_PRINT = "chart:print"
    NOTE_READ = "note:read"
    NOTE_WRITE = "note:write"
    NOTE_SIGN = "note:sign"
    CONDITION_READ = "condition:read"
    CONDITION_WRITE = "condition:write"
    ALLERGY_READ = "allergy:read"
    ALLERGY_WRITE = "allergy:write"
    PRESCRIPTION_READ = "prescription:read"
    PRESCRIPTION_WRITE = "prescription:write"
    OBSERVATION_READ = "observation:read"
    OBSERVATION_WRITE = "observation:write"
    DOCUMENT_READ = "document:read"
    DOCUMENT_WRITE = "document:write"
    RECORD_RETRACT = "record:retract"  # entered-in-error
    RECORD_VERIFY = "record:verify"
    EXPORT_BULK = "export:bulk"
    BREAK_GLASS = "break-glass:use"
    # the clinic's programme
    AUDIT_READ = "audit:read"
    AUDIT_REVIEW = "audit:review"
    STAFF_READ = "staff:read"
    STAFF_ADMIN = "staff:admin"
    SESSION_ADMIN = "session:admin"
    RESTRICTION_ADMIN = "restriction:admin"
    VENDOR_WINDOW_ADMIN = "vendor-window:admin"
    SYSTEM_HEALTH = "system:health"
    CONTINUITY_ADMIN = "continuity:admin"  # downtime bundles and their standby keys
    DETECTION_REVIEW = "detection:review"  # the abnormal-access review queue
    INCIDENT_REPORT = "incident:report"  # 「インシデントかも？」: every account
    INCIDENT_READ = "incident:read"  # the incident register, its affected patients and drafts
    INCIDENT_MANAGE = "incident:manage"  # open, run the steps, list affected patients, notices
    INCIDENT_DECIDE = "incident:decide"  # whether an incident is reportable (院長 only)
    PROGRAMME_READ = "programme:read"  # the checklist and its evidence (the auditor too)
    PROGRAMME_MANAGE = "programme:manage"  # answering the checklist
    # every signed-in account: its own profile, sessions and second factors
    SELF = "self:manage"

    @property
    def label_ja(self) -> str:
        return PERMISSION_LABELS_JA[self]

    @property
    def writes(self) -> bool:
        """Whether a request holding this permission runs in a write transaction."""
        return not self.value.endswith(":read") and self not in (
            Permission.SYSTEM_HEALTH,
            Permission.RECORD_VERIFY,
        )


P = Permission

PERMISSION_LABELS_JA = {
    P.PATIENT_READ: "患者基本情報の閲覧",
    P.PATIENT_WRITE: "患者登録・変更",
    P.PATIENT_MERGE: "患者の統合",
    P.INSURANCE_READ: "保険情報の閲覧",
    P.INSURANCE_WRITE: "保険情報の登録",
    P.ENCOUNTER_READ: "受診歴の閲覧",
    P.ENCOUNTER_WRITE: "受付・受診の登録",
    P.CHART_READ: "カルテの閲覧",
    P.CHART_PRINT: "カルテの印刷",
    P.NOTE_READ: "記事の閲覧",
    P.NOTE_WRITE: "記事の記載",
    P.NOTE_SIGN: "記事の確定（署名）",
    P.CONDITION_READ: "病名の閲覧",
    P.CONDITION_WRITE: "病名の登録",
    P.ALLERGY_READ: "アレルギーの閲覧",
    P.ALLERGY_WRITE: "アレルギーの登録",
    P.PRESCRIPTION_READ: "処方の閲覧",
    P.PRESCRIPTION_WRITE: "処方の登録",
    P.OBSERVATION_READ: "検査・バイタルの閲覧",
    P.OBSERVATION_WRITE: "検査・バイタルの登録",
    P.DOCUMENT_READ: "文書の閲覧",
    P.DOCUMENT_WRITE: "文書の登録",
    P.RECORD_RETRACT: "記録の取消",
    P.RECORD_VERIFY: "記録の検証",
    P.EXPORT_BULK: "一括書き出し",
    P.BREAK_GLASS: "緊急時アクセス",
    P.AUDIT_READ: "監査証跡の閲覧",
    P.AUDIT_REVIEW: "監査証跡の点検",
    P.STAFF_READ: "職員一覧の閲覧",
    P.STAFF_ADMIN: "職員と権限の管理",
    P.SESSION_ADMIN: "セッションの管理",
    P.RESTRICTION_ADMIN: "閲覧制限の管理",
    P.VENDOR_WINDOW_ADMIN: "保守作業枠の管理",
    P.SYSTEM_HEALTH: "システム状態の確認",
    P.CONTINUITY_ADMIN: "業務継続（ダウンタイム資料・待機用の鍵）の管理",
    P.DETECTION_REVIEW: "不審アクセスの確認と判定",
    P.INCIDENT_REPORT: "インシデントの報告（インシデントかも？）",
    P.INCIDENT_READ: "インシデント台帳の閲覧",
    P.INCIDENT_MANAGE: "インシデント対応の管理",
    P.INCIDENT_DECIDE: "個人情報保護委員会への報告要否の判断",
    P.PROGRAMME_READ: "チェックリストと根拠の閲覧",
    P.PROGRAMME_MANAGE: "チェックリストへの回答",
    P.SELF: "自分のアカウント管理",
}

# every signed-in account: its own profile and factors, and 「インシデントかも？」 (BCP 2-1)
_EVERYONE = frozenset({P.SELF, P.INCIDENT_REPORT})

_CLINICAL_READ = frozenset(
    {
        P.PATIENT_READ,
        P.INSURANCE_READ,
        P.ENCOUNTER_READ,
        P.CHART_READ,
        P.NOTE_READ,
        P.CONDITION_READ,
        P.ALLERGY_READ,
        P.PRESCRIPTION_READ,
        P.OBSERVATION_READ,
        P.DOCUMENT_READ,
    }
)

_PHYSICIAN = _CLINICAL_READ | {
    P.PATIENT_WRITE,
    P.ENCOUNTER_WRITE,
    P.CHART_PRINT,
    P.NOTE_WRITE,
    P.NOTE_SIGN,
    P.CONDITION_WRITE,
    P.ALLERGY_WRITE,
    P.PRESCRIPTION_WRITE,
    P.OBSERVATION_WRITE,
    P.DOCUMENT_WRITE,
    P.RECORD_RETRACT,
    P.RECORD_VERIFY,
    P.BREAK_GLASS,
    *_EVERYONE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.PHYSICIAN: frozenset(_PHYSICIAN),
    # Nursing entries, vitals, allergy reports (unconfirmed) and draft orders on instruction.
    # The services keep nurses to nursing notes and unconfirmed entries; they cannot sign.
    Role.NURSE: frozenset(
        _CLINICAL_READ
        | {
            P.ENCOUNTER_WRITE,
            P.CHART_PRINT,
            P.NOTE_WRITE,
            P.ALLERGY_WRITE,
            P.PRESCRIPTION_WRITE,
            P.OBSERVATION_WRITE,
            P.BREAK_GLASS,
            *_EVERYONE,
        }
    ),
    # Registration, insurance, visits; diagnosis names and Rx lines for レセプト; scans uploaded
    # write-only. Never note text, lab values or clinical documents; no break-the-glass.
    Role.RECEPTION: frozenset(
        {
            P.PATIENT_READ,
            P.PATIENT_WRITE,
            P.INSURANCE_READ,
            P.INSURANCE_WRITE,
            P.ENCOUNTER_READ,
            P.ENCOUNTER_WRITE,
            P.CONDITION_READ,
            P.ALLERGY_READ,
            P.PRESCRIPTION_READ,
            P.DOCUMENT_WRITE,
            *_EVERYONE,
        }
    ),
    # Drafts notes, diagnoses, orders and letters; all stay unconfirmed until a physician signs.
    Role.SCRIBE: frozenset(
        {
            P.PATIENT_READ,
            P.ENCOUNTER_READ,
            P.CHART_READ,
            P.NOTE_READ,
            P.NOTE_WRITE,
            P.CONDITION_READ,
            P.CONDITION_WRITE,
            P.ALLERGY_READ,
            P.ALLERGY_WRITE,
            P.PRESCRIPTION_READ,
            P.PRESCRIPTION_WRITE,
            P.OBSERVATION_READ,
            P.OBSERVATION_WRITE,
            P.DOCUMENT_READ,
            P.DOCUMENT_WRITE,
            *_EVERYONE,
        }
    ),
    Role.DIRECTOR: frozenset(
        _PHYSICIAN
        | {
            P.PATIENT_MERGE,
            P.INSURANCE_WRITE,
            P.EXPORT_BULK,
            P.AUDIT_READ,
            P.AUDIT_REVIEW,
            P.STAFF_READ,
            P.STAFF_ADMIN,
            P.SESSION_ADMIN,
            P.RESTRICTION_ADMIN,
            P.VENDOR_WINDOW_ADMIN,
            P.SYSTEM_HEALTH,
            P.CONTINUITY_ADMIN,
            P.DETECTION_REVIEW,
            P.INCIDENT_READ,
            P.INCIDENT_MANAGE,
            P.INCIDENT_DECIDE,  # 報告要否の判断は院長
            P.PROGRAMME_READ,
            P.PROGRAMME_MANAGE,
        }
    ),
    # 安全管理者: runs the security programme (log review, accounts' sessions and lockouts,
    # vendor windows) without reading charts.
    Role.SECURITY_OFFICER: frozenset(
        {
            P.AUDIT_READ,
            P.AUDIT_REVIEW,
            P.STAFF_READ,
            P.SESSION_ADMIN,
            P.VENDOR_WINDOW_ADMIN,
            P.SYSTEM_HEALTH,
            P.CONTINUITY_ADMIN,  # isolates the server in an incident; cannot print charts
            P.DETECTION_REVIEW,
            P.INCIDENT_READ,
            P.INCIDENT_MANAGE,  # runs the response; the director decides reportability
            P.PROGRAMME_READ,
            P.PROGRAMME_MANAGE,
            *_EVERYONE,
        }
    ),
    # No patient data by default: system health only. See VENDOR_WINDOW_PERMISSIONS.
    Role.VENDOR: frozenset({P.SYSTEM_HEALTH, *_EVERYONE}),
    # Reads audit and compliance evidence, never charts.
    Role.AUDITOR: frozenset(
        {
            P.AUDIT_READ,
            P.AUDIT_REVIEW,
            P.STAFF_READ,
            P.INCIDENT_READ,
            P.PROGRAMME_READ,
            *_EVERYONE,
        }
    ),
}

# What a vendor account may do inside an open maintenance window: read, never write or sign.
VENDOR_WINDOW_PERMISSIONS = ROLE_PERMISSIONS[Role.VENDOR] | _CLINICAL_READ


@dataclass(frozen=True)
class RecordAccess:
    """What a record kind needs: declared once, on its model (``__access__``), and registered
    here when the model class is created (``records.versioning.Versioned``).

    ``demographic``: a restricted patient's rows of this kind stay reachable for the desk
    (with an alert); every other kind of a restricted patient needs break-the-glass.
    ``aliases``: other names the same kind is asked for by (a FHIR resource name)."""

    read: Permission
    write: Permission
    demographic: bool = False
    aliases: tuple[str, ...] = ()


# Accesses that are not one record kind: views over several rows or kinds. Record kinds are
# added by ``declare_kind`` as their models are defined.
_VIEWS: dict[str, RecordAccess] = {
    "patient": RecordAccess(P.PATIENT_READ, P.PATIENT_WRITE, demographic=True),
    "Patient:search": RecordAccess(P.PATIENT_READ, P.PATIENT_WRITE, demographic=True),
    "Patient:duplicates": RecordAccess(P.PATIENT_READ, P.PATIENT_MERGE, demographic=True),
    "Encounter:day-list": RecordAccess(P.ENCOUNTER_READ, P.ENCOUNTER_WRITE, demographic=True),
    "Encounter:bookings": RecordAccess(P.ENCOUNTER_READ, P.ENCOUNTER_WRITE, demographic=True),
    # the physicians' start page: patients with entries waiting for their confirmation
    "Patient:awaiting-confirmation": RecordAccess(P.PATIENT_READ, P.NOTE_SIGN, demographic=True),
    "chart": RecordAccess(P.CHART_READ, P.CHART_READ),
    "verify": RecordAccess(P.RECORD_VERIFY, P.RECORD_VERIFY),
    "audit-review": RecordAccess(P.AUDIT_READ, P.AUDIT_REVIEW, demographic=True),
    # the detection queue names the patient of each case (to its two reviewers only)
    "detection-review": RecordAccess(P.DETECTION_REVIEW, P.DETECTION_REVIEW, demographic=True),
    # an incident's affected-patient list names patients (read like a list, audited as one)
    "incident-affected": RecordAccess(P.INCIDENT_READ, P.INCIDENT_MANAGE, demographic=True),
}
_KINDS: dict[str, RecordAccess] = dict(_VIEWS)


def declare_kind(name: str, access: RecordAccess) -> None:
    """Register a record kind's access (called once per model class; a second, different
    declaration of the same name is a programming error)."""
    for key in (name, *access.aliases):
        known = _KINDS.get(key)
        if known is not None and known != access:
            raise RuntimeError(f"record kind {key!r} declared twice with different access")
        _KINDS[key] = access


def access_of(what: str) -> RecordAccess:
    """The declared access of kind ``what``; unknown kinds fail closed."""
    try:
        return _KINDS[what.removeprefix("fhir:")]
    except KeyError:
        raise NotAllowed(
            "この種類のデータへのアクセスは定義されていません。",
            f"No permission is defined for access to {what!r}.",
        ) from None


def is_demographic(what: str) -> bool:
    """Whether a restricted patient's rows of kind ``what`` stay open to the desk."""
    access = _KINDS.get(what.removeprefix("fhir:"))
    return access is not None and access.demographic


def declared_kinds() -> dict[str, RecordAccess]:
    return dict(_KINDS)


def permission_for(what: str, write: bool) -> Permission:
    """The permission an access of kind ``what`` needs; unknown kinds fail closed."""
    access = access_of(what)
    return access.write if write else access.read


def role_permissions(role: Role) -> frozenset[Permission]:
    return ROLE_PERMISSIONS.get(role, frozenset())
