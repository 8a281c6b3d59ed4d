"""Patient registration, demographics, coverage, search and merge.

Every function takes the acting user and the session first, passes the access gate before
touching patient data, writes versions through ``write_version`` and never commits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.hooks import hooks
from mamori.authz.permissions import Permission
from mamori.clinic.models import Clinic
from mamori.continuity.entries import claim
from mamori.crypto.sealed import keyring_of, lenient, seal_failure
from mamori.db import driver_cursor, expire_loaded
from mamori.errors import Conflict, InvalidInput, NotFound, PossibleDuplicate
from mamori.models import patient_scoped_models
from mamori.patients.access import patient_for
from mamori.patients.kana import search_key
from mamori.patients.lookup import patients_by_kana
from mamori.patients.models import (
    BIRTH,
    GIVEN_KANA,
    INSURANCE,
    KANA2,
    KANA4,
    NAME,
    NUMBER,
    PHONE,
    Coverage,
    Patient,
    PatientStatus,
    insurance_key,
    name_key,
    phone_key,
)
from mamori.patients.schemas import CoverageIn, PatientIn, PatientUpdate
from mamori.records.reader import read_views
from mamori.records.versioning import ChangeKind, RecordStatus, record_for_write, write_version
from mamori.restrictions.service import refresh_staff_flag

SEARCH_LIMIT_MAX = 200


def _next_patient_number(session: Session, clinic_id: uuid.UUID) -> int:
    # UPDATE … RETURNING takes the clinic row lock, so concurrent registrations on PostgreSQL
    # queue here rather than colliding on the unique (clinic_id, patient_number) constraint.
    # One fixed statement on the driver's cursor: through the ORM it cost more than the rest of
    # the registration's statements together.
    with driver_cursor(session) as cursor:
        cursor.execute(_NEXT_NUMBER_SQL, (cursor.bind(Clinic.__table__.c.id.type)(clinic_id),))
        row = cursor.fetchone()
    if row is None:
        raise NotFound("clinic")
    (number,) = row
    expire_loaded(session, Clinic, clinic_id, ["next_patient_number"])
    return int(number) - 1


_NEXT_NUMBER_SQL = (
    "UPDATE clinic SET next_patient_number = next_patient_number + 1 WHERE id = ? "
    "RETURNING next_patient_number"
)


def _apply(patient: Patient, data: PatientIn) -> None:
    patient.family_name = data.family_name
    patient.given_name = data.given_name
    patient.family_kana = data.family_kana
    patient.given_kana = data.given_kana
    patient.birth_date = data.birth_date
    patient.sex = data.sex.value
    patient.postal_code = data.postal_code
    patient.prefecture = data.prefecture
    patient.city = data.city
    patient.address_line = data.address_line
    patient.phone = data.phone


def register_patient(session: Session, actor: Actor, data: PatientIn) -> Patient:
    """Create a patient with the clinic's next 患者番号. Writes version 1.

    A registration that looks like an existing patient (same normalised kana and birth
    date) is refused with ``PossibleDuplicate`` naming their 患者番号, unless the data says
    ``register_anyway`` — the person has looked and it is someone else (同姓同名)."""
    actor.require(Permission.PATIENT_WRITE)
    if not getattr(data, "register_anyway", False):  # PatientNew's; a PatientIn never skips
        kana = search_key(data.family_kana) + search_key(data.given_kana)
        same = _same_person(session, actor.clinic_id, kana, data.birth_date)
        if same:
            gate.listed(session, actor, "Patient:duplicates", [p.id for p in same])
            same.sort(key=lambda p: p.patient_number)
            raise PossibleDuplicate([p.patient_number for p in same], [p.id for p in same])
    patient = Patient(status=PatientStatus.ACTIVE.value, merged_into_id=None, deceased_date=None)
    patient.patient_number = _next_patient_number(session, actor.clinic_id)
    _apply(patient, data)
    number = getattr(data, "downtime_number", None)  # PatientNew's: a paper 新患登録票
    patient.downtime_number = number
    write_version(session, actor, patient, ChangeKind.CREATED)
    if number is not None:
        claim(session, actor, number, "Patient", patient.id)
    session.flush()
    refresh_staff_flag(session, [patient], new=True)
    hooks.fire(session, actor, Intent.WRITE, "Patient", [patient.id], [patient.id])
    return patient


def get_patient(session: Session, actor: Actor, patient_id: uuid.UUID) -> Patient:
    return patient_for(session, actor, patient_id, Intent.READ)


def update_patient(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: PatientUpdate
) -> Patient:
    """New demographics version; ``expected_version`` stops lost updates."""
    patient = patient_for(session, actor, patient_id, Intent.WRITE)
    if patient.status != PatientStatus.ACTIVE:
        raise Conflict(
            "この患者は統合済みまたは無効のため変更できません。",
            "This patient is merged or retired and cannot be changed.",
        )
    _apply(patient, data)
    write_version(
        session,
        actor,
        patient,
        ChangeKind.UPDATED,
        reason=data.reason,
        expected_version=data.expected_version,
    )
    refresh_staff_flag(session, [patient])
    return patient


def search_patients(
    session: Session,
    actor: Actor,
    *,
    kana: str | None = None,
    name: str | None = None,
    phone: str | None = None,
    birth_date: dt.date | None = None,
    patient_number: int | None = None,
    insurance: tuple[str | None, str | None] | None = None,
    include_inactive: bool = False,
    limit: int = 50,
) -> list[Patient]:
    """Kana (a prefix of セイメイ, or メイ alone; half-width, hiragana and small kana
    normalised), name as written (佐藤, or 佐藤 花子), phone number (its digits), birth date,
    number, or 保険者番号 + 被保険者番号 (needs insurance:read). Blind indexes narrow the
    candidates; each is decrypted and tested exactly."""
    if not any(v is not None for v in (kana, name, phone, birth_date, patient_number, insurance)):
        raise InvalidInput(
            "検索条件を1つ以上指定してください。",
            "Give at least one search criterion.",
            field="kana",
        )
    limit = max(1, min(limit, SEARCH_LIMIT_MAX))
    keyring = keyring_of(session)
    clinic = actor.clinic_id
    stmt = select(Patient).where(Patient.clinic_id == clinic)
    tests: list[Callable[[Patient], bool]] = []
    if kana is not None:
        key = search_key(kana)
        if not key:
            raise InvalidInput("カナを入力してください。", "Enter kana to search.", field="kana")
        if len(key) < 2 and birth_date is None and patient_number is None:
            raise InvalidInput(
                "カナは2文字以上入力してください（生年月日と組み合わせれば1文字でも可）。",
                "Enter at least two kana (or one together with the birth date).",
                field="kana",
            )
        prefix = (
            Patient.bi_kana4 == keyring.blind(KANA4, clinic, key[:4])
            if len(key) >= 4
            else Patient.bi_kana2 == keyring.blind(KANA2, clinic, key[:2])
            if len(key) >= 2
            else None
        )
        given = Patient.bi_given_kana == keyring.blind(GIVEN_KANA, clinic, key)
        if prefix is not None:
            stmt = stmt.where(or_(prefix, given))
        tests.append(lambda p: p.kana_key.startswith(key) or search_key(p.given_kana) == key)
    if name is not None:
        parts = [name_key(x) for x in name.replace("\u3000", " ").split()]
        parts = [x for x in parts if x]
        if not parts or len(parts) > 2:
            raise InvalidInput(
                "氏名は「姓」「名」または「姓 名」で入力してください。",
                "Enter a family name, a given name, or both separated by a space.",
                field="name",
            )
        if len(parts) == 2:
            family, given_name = parts
            stmt = stmt.where(
                Patient.bi_family == keyring.blind(NAME, clinic, family),
                Patient.bi_given == keyring.blind(NAME, clinic, given_name),
            )
            tests.append(
                lambda p: name_key(p.family_name) == family and name_key(p.given_name) == given_name
            )
        else:
            (word,) = parts
            value = keyring.blind(NAME, clinic, word)
            stmt = stmt.where(or_(Patient.bi_family == value, Patient.bi_given == value))
            tests.append(lambda p: word in (name_key(p.family_name), name_key(p.given_name)))
    if phone is not None:
        digits = phone_key(phone)
        if len(digits) < 6:
            raise InvalidInput(
                "電話番号は6桁以上の数字で入力してください。",
                "Enter at least six digits of the phone number.",
                field="phone",
            )
        stmt = stmt.where(Patient.bi_phone == keyring.blind(PHONE, clinic, digits))
        tests.append(lambda p: phone_key(p.phone) == digits)
    if birth_date is not None:
        stmt = stmt.where(Patient.bi_birth == keyring.blind(BIRTH, clinic, birth_date.isoformat()))
        tests.append(lambda p: p.birth_date == birth_date)
    if patient_number is not None:
        stmt = stmt.where(Patient.bi_number == keyring.blind(NUMBER, clinic, str(patient_number)))
        tests.append(lambda p: p.patient_number == patient_number)
    if insurance is not None:
        stmt = stmt.where(Patient.id.in_(_insured(session, actor, *insurance)))
    if not include_inactive:
        stmt = stmt.where(Patient.status == PatientStatus.ACTIVE.value)
    with lenient(session):  # a damaged row is left out of the list, not shown or fatal
        candidates = [p for p in session.scalars(stmt) if seal_failure(p) is None]
    found = [p for p in candidates if all(test(p) for test in tests)]
    found.sort(key=lambda p: (p.kana_key, p.birth_date, p.patient_number))
    found = found[:limit]
    gate.listed(session, actor, "Patient:search", [p.id for p in found])
    return found


def _insured(
    session: Session, actor: Actor, insurer_number: str | None, number: str | None
) -> list[uuid.UUID]:
    actor.require(Permission.INSURANCE_READ)
    if not insurer_number or not number:
        raise InvalidInput(
            "保険者番号と被保険者番号の両方を入力してください。",
            "Give both the insurer number and the insured person's number.",
            field="insurer_number",
        )
    key = insurance_key(insurer_number, number)
    value = keyring_of(session).blind(INSURANCE, actor.clinic_id, key)
    rows = session.scalars(
        select(Coverage).where(
            Coverage.clinic_id == actor.clinic_id,
            Coverage.bi_insurance == value,
            Coverage.status == RecordStatus.ACTIVE.value,
        )
    )
    return [c.patient_id for c in rows if insurance_key(c.insurer_number, c.number) == key]


def find_possible_duplicates(
    session: Session, actor: Actor, patient_id: uuid.UUID
) -> list[Patient]:
    """Same normalised kana and birth date (同姓同名 and re-registrations)."""
    patient = patient_for(session, actor, patient_id, Intent.READ)
    found = [
        p
        for p in _same_person(session, actor.clinic_id, patient.kana_key, patient.birth_date)
        if p.id != patient.id
    ]
    gate.listed(session, actor, "Patient:duplicates", [p.id for p in found])
    return found


def _same_person(
    session: Session, clinic_id: uuid.UUID, kana_key: str, birth_date: dt.date
) -> list[Patient]:
    """Active patients with this normalised kana and birth date: the same person registered
    twice, or 同姓同名 (a person decides which). The caller records the list it shows."""
    return [
        p
        for p in patients_by_kana(session, clinic_id, kana_key, birth_date)
        if p.status == PatientStatus.ACTIVE
    ]


def merge_patients(
    session: Session, actor: Actor, keep_id: uuid.UUID, duplicate_id: uuid.UUID, reason: str
) -> Patient:
    """Fold a duplicate registration into ``keep``.

    Every record of the duplicate gets a new version pointing at ``keep`` (so its history still
    shows where it came from); the duplicate becomes ``merged`` with ``merged_into_id``.
    Nothing is deleted.
    """
    if keep_id == duplicate_id:
        raise InvalidInput(
            "同じ患者は統合できません。",
            "Cannot merge a patient into itself.",
            field="duplicate_id",
        )
    keep = patient_for(session, actor, keep_id, Intent.WRITE)
    dup = patient_for(session, actor, duplicate_id, Intent.WRITE)
    for p in (keep, dup):
        if p.status != PatientStatus.ACTIVE:
            raise Conflict(
                "統合できるのは有効な患者だけです。", "Only active patients can be merged."
            )
    for model in patient_scoped_models():
        rows = session.scalars(
            select(model).where(model.clinic_id == actor.clinic_id, model.patient_id == dup.id)
        ).all()
        # a kind unique per patient and some key (``__merge_unique__``): a row whose key the
        # kept registration already has stays where it is, as it happened
        unique: tuple[str, ...] = getattr(model, "__merge_unique__", ())
        held = (
            {
                tuple(getattr(r, k) for k in unique)
                for r in session.scalars(
                    select(model).where(
                        model.clinic_id == actor.clinic_id, model.patient_id == keep.id
                    )
                )
            }
            if unique
            else set()
        )
        for row in rows:
            if unique and tuple(getattr(row, k) for k in unique) in held:
                continue
            row.patient_id = keep.id
            write_version(
                session,
                actor,
                row,
                ChangeKind.MERGED,
                reason=f"患者統合 {dup.patient_number}→{keep.patient_number}: {reason}",
            )
    _carry_staff_links(session, dup.id, keep.id)
    dup.status = PatientStatus.MERGED.value
    dup.merged_into_id = keep.id
    write_version(session, actor, dup, ChangeKind.MERGED, reason=reason)
    return keep


def _carry_staff_links(session: Session, dup: uuid.UUID, keep: uuid.UUID) -> None:
    """A staff member (or their family) registered twice is still theirs once merged: the
    detector's staff-as-patient links follow the kept registration (a link it already has
    stays single)."""
    from mamori.detection.models import StaffPatientLink  # the detector's own table

    kept = set(
        session.scalars(select(StaffPatientLink.user_id).where(StaffPatientLink.patient_id == keep))
    )
    for link in session.scalars(select(StaffPatientLink).where(StaffPatientLink.patient_id == dup)):
        if link.user_id not in kept:
            link.patient_id = keep


def active_patient(
    session: Session, actor: Actor, patient_id: uuid.UUID, what: str
) -> gate.PatientRef:
    """The patient a new record of kind ``what`` is written for, through the gate; a merged
    or retired registration takes no new records (409), they belong on the surviving one."""
    patient = gate.patient_ref(session, actor, patient_id, Intent.WRITE, what)
    if patient.status != PatientStatus.ACTIVE:
        raise Conflict("この患者は統合済みまたは無効です。", "This patient is merged or retired.")
    return patient


def add_coverage(
    session: Session, actor: Actor, patient_id: uuid.UUID, data: CoverageIn
) -> Coverage:
    patient = active_patient(session, actor, patient_id, "Coverage")
    cov = Coverage(patient_id=patient.id, status=RecordStatus.ACTIVE.value)
    _apply_coverage(cov, data)
    write_version(session, actor, cov, ChangeKind.CREATED)
    return cov


def _apply_coverage(cov: Coverage, data: CoverageIn) -> None:
    cov.kind = data.kind.value
    cov.insurer_number = data.insurer_number
    cov.symbol = data.symbol
    cov.number = data.number
    cov.branch = data.branch
    cov.relationship = data.relationship.value
    cov.copay_percent = data.copay_percent
    cov.valid_from = data.valid_from
    cov.valid_to = data.valid_to
    cov.public_payer_number = data.public_payer_number
    cov.recipient_number = data.recipient_number
    cov.priority = data.priority


def update_coverage(
    session: Session, actor: Actor, coverage_id: uuid.UUID, data: CoverageIn, expected_version: int
) -> Coverage:
    cov = record_for_write(session, actor, Coverage, coverage_id)
    _apply_coverage(cov, data)
    write_version(session, actor, cov, ChangeKind.UPDATED, expected_version=expected_version)
    return cov


def list_coverages(session: Session, actor: Actor, patient_id: uuid.UUID) -> Sequence[Coverage]:
    patient = gate.patient_ref(session, actor, patient_id, Intent.READ, "Coverage")
    return read_views(
        session,
        Coverage,
        [("patient_id", "=", patient.id), ("clinic_id", "=", actor.clinic_id)],
        order_by=[("priority", False), ("created_at", False)],
    )
