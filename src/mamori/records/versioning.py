"""Records are never destroyed: every change is a new version carrying who, when, why and a hash.

Each versioned record type has a *head* table (its current state, which queries read) and shares
one append-only ``record_version`` table holding every version ever written, as exact canonical
JSON bytes. A version's ``content_hash`` is SHA-256 over its canonical envelope, which includes
the previous version's hash, so each record's history is a hash chain: editing or removing a past
version breaks the chain, and editing a head row makes it disagree with its latest version.

Every write goes through :func:`write_version`: the stored content is sealed (``crypto``) and
each version is announced on ``hooks.on_version``, where the audit trail records its hash.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import (
    Mapped,
    Session,
    declared_attr,
    make_transient_to_detached,
    mapped_column,
)

from mamori.authz import gate
from mamori.authz.actor import Actor, Intent
from mamori.authz.hooks import hooks
from mamori.authz.permissions import RecordAccess, declare_kind
from mamori.canonical import canonical_json
from mamori.canonical import no_floats as _no_floats
from mamori.crypto.sealed import (
    Sealed,
    keyring_of,
    seal_failure,
    seal_mapping,
    sealed_fields,
    sealed_str,
)
from mamori.db import Base, DriverCursor, PatientData, UTCDateTime, driver_cursor, new_id, utcnow
from mamori.errors import InvalidInput, Isolated, ReadOnlyCopy, RecordIntegrityFailed, StaleVersion

HASH_ALGORITHM = "sha256"


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    FINALISED = "finalised"  # 確定
    CONFIRMED = "confirmed"  # 代行入力の承認
    AMENDED = "amended"  # 確定後の修正
    ENTERED_IN_ERROR = "entered-in-error"  # 「削除」: a status, never a DELETE
    MERGED = "merged"
    STATUS_CHANGED = "status-changed"


class RecordStatus(enum.StrEnum):
    ACTIVE = "active"
    ENTERED_IN_ERROR = "entered-in-error"
    # a scribe's (医師事務作業補助者) diagnosis, or a scribe's change to one, until a physician
    # confirms it: shown marked as such, never as the physician's own
    UNCONFIRMED = "unconfirmed"


def version_hash(envelope: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(envelope).encode("utf-8")).hexdigest()


class RecordVersion(Sealed, Base):
    """One immutable version of one record. Rows are only ever inserted; the one update
    allowed is re-encrypting ``sealed`` (content and reason) under a new data key."""

    __tablename__ = "record_version"
    __table_args__ = (
        UniqueConstraint("record_type", "record_id", "version"),
        # the versions of one bulk import batch, for the audit check of its event (0009);
        # partial: rows written through the services (NULL) cost the index nothing
        Index(
            "ix_record_version_import_batch",
            "import_batch",
            sqlite_where=text("import_batch IS NOT NULL"),
            postgresql_where=text("import_batch IS NOT NULL"),
        ),
    )

    # Indexed by the unique (record_type, record_id, version) only: every look-up (a record's
    # history, verification, the audit check of a version's hash) names the record and its
    # type. Three single-column indexes no query used cost each versioned write three B-tree
    # pages and the M clinic 208 MB, half the time of this table's restore check (0006).
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"))
    record_type: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[uuid.UUID] = mapped_column()
    patient_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(24))
    content = sealed_str()  # canonical JSON of the record's content
    changed_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    reason = sealed_str()  # free text ("why"): may describe the patient, so sealed
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # the bulk import batch that wrote this version (its ``system:data:imported`` event holds
    # a Merkle root over the batch's version hashes); None for a version written by a service,
    # which its own audit event names
    import_batch: Mapped[uuid.UUID | None] = mapped_column(nullable=True)

    def envelope(self) -> dict[str, Any]:
        return build_envelope(
            record_type=self.record_type,
            record_id=self.record_id,
            version=self.version,
            change=self.change,
            status=self.status,
            content=self.content,
            changed_by_id=self.changed_by_id,
            changed_at=self.changed_at,
            reason=self.reason,
            prev_hash=self.prev_hash,
        )


def build_envelope(
    *,
    record_type: str,
    record_id: uuid.UUID,
    version: int,
    change: str,
    status: str,
    content: str,
    changed_by_id: uuid.UUID,
    changed_at: dt.datetime,
    reason: str,
    prev_hash: str | None,
) -> dict[str, Any]:
    return {
        "alg": HASH_ALGORITHM,
        "type": record_type,
        "id": record_id,
        "version": version,
        "change": change,
        "status": status,
        "content": content,
        "by": changed_by_id,
        "at": changed_at,
        "reason": reason,
        "prev": prev_hash,
    }


class Versioned(PatientData, Sealed):
    """Mixin for head tables of versioned records.

    A subclass names its record type and the fields that make up its content; everything in
    ``__content_fields__`` is captured in each version and covered by its hash. Fields that
    identify or describe the patient are declared ``sealed_*`` (see ``crypto/sealed.py``) and
    exist in the database only as ciphertext; the rest are structural (IDs, status, dates a
    list is ordered by).
    """

    __record_type__: ClassVar[str]
    __content_fields__: ClassVar[tuple[str, ...]]
    # fields a kind gained after records of it existed: in a version's content only when set,
    # so every earlier version still matches its head (None and "" are "not set")
    __added_fields__: ClassVar[tuple[str, ...]] = ()
    # who may read and write this kind, and whether it is demographic: declared once here,
    # registered with the permission table when the class is made
    __access__: ClassVar[RecordAccess]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__record_type__" in cls.__dict__:
            if "__access__" not in cls.__dict__:
                raise TypeError(f"{cls.__name__} declares a record type but no __access__")
            declare_kind(cls.__record_type__, cls.__access__)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    version: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(24))
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # False where the table's composite indexes all start with clinic_id (their prefix serves)
    __clinic_index__: ClassVar[bool] = True

    @declared_attr
    def clinic_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805 - SQLAlchemy declared_attr
        return mapped_column(ForeignKey("clinic.id"), index=cls.__clinic_index__)

    @declared_attr
    def created_by_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805
        return mapped_column(ForeignKey("staff_user.id"))

    @declared_attr
    def updated_by_id(cls) -> Mapped[uuid.UUID]:  # noqa: N805
        return mapped_column(ForeignKey("staff_user.id"))

    def content(self) -> dict[str, Any]:
        content = {name: getattr(self, name) for name in self.__content_fields__}
        for name in self.__added_fields__:
            if content.get(name) in (None, ""):
                del content[name]
        _no_floats(content)
        return content

    def version_patient_id(self) -> uuid.UUID | None:
        value = getattr(self, "patient_id", None)
        return value if isinstance(value, uuid.UUID) else None


class PatientRecord(Versioned):
    """A versioned record about one patient. Each subclass declares its own ``patient_id``
    column (foreign key and indexes differ); the annotation here is for the type checker."""

    if TYPE_CHECKING:
        patient_id: Mapped[uuid.UUID]


def write_version(
    session: Session,
    actor: Actor,
    record: Versioned,
    change: ChangeKind,
    *,
    reason: str = "",
    expected_version: int | None = None,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Append the record's current state as its next version and update the head's hash.

    The caller has already changed the head object and passed the access gate. ``expected_version``
    gives optimistic concurrency: a stale editor gets ``StaleVersion`` instead of overwriting.
    Adds the head to the session and queues the version row, which the session's next flush
    inserts after the heads (:func:`_insert_versions`); a new record goes in at once with its
    first version instead (:func:`_insert_created`). Never commits. Returns the version's
    column values (its ``content_hash`` among them).
    """
    db = session.info.get("mamori_db")
    if db is not None and db.read_only:
        raise ReadOnlyCopy()  # a restored copy takes no record until it is promoted
    if db is not None and db.isolated:
        raise Isolated()  # nothing changes while an intrusion is examined
    if expected_version is not None and expected_version != record.version:
        raise StaleVersion(expected_version, record.version)
    if change in (ChangeKind.AMENDED, ChangeKind.ENTERED_IN_ERROR, ChangeKind.MERGED) and not (
        reason and reason.strip()
    ):
        raise InvalidInput(
            "理由の入力が必要です。", "A reason is required for this change.", field="reason"
        )
    now = at or utcnow()
    if record.id is None:
        record.id = new_id()
    if record.version is None:
        record.version = 0
    if change is ChangeKind.CREATED:
        record.clinic_id = actor.clinic_id
        record.created_by_id = actor.user_id
        record.created_at = now
        for column in _insert_for(type(record)).defaulted:
            if column.name not in record.__dict__:  # now, so that version 1's content has it
                setattr(record, column.name, _default(column))
    record.updated_by_id = actor.user_id
    record.updated_at = now
    values = seal_version(
        record_type=record.__record_type__,
        record_id=record.id,
        clinic_id=record.clinic_id,
        patient_id=record.version_patient_id(),
        version=record.version + 1,
        change=change,
        status=record.status,
        content=record.content(),
        changed_by_id=actor.user_id,
        changed_at=now,
        reason=reason,
        prev_hash=record.content_hash or None,
    )
    record.version = values["version"]
    record.content_hash = values["content_hash"]
    hooks.version_written(session, actor, values)
    if change is ChangeKind.CREATED and inspect(record).transient:
        _insert_created(session, record, values)
        return values
    session.add(record)
    # The head has just changed (version, hash, updated_at), so the session has a flush to do
    # before it can commit, and that flush inserts this version (``_insert_versions``).
    session.info.setdefault(_PENDING, []).append(values)
    return values


@dataclass(frozen=True)
class _Insert:
    """One row's INSERT on the driver's cursor for a model's table (column names from the
    model, never from input)."""

    sql: str
    columns: tuple[Column[Any], ...]
    defaulted: tuple[Column[Any], ...]  # those with a default in the model

    def params(self, cursor: DriverCursor, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """A sealed row mapping as the statement's parameters, through the column types."""
        return tuple(cursor.bind(c.type)(row[c.name]) for c in self.columns)


_INSERTS: dict[type, _Insert] = {}


def _insert_for(model: type) -> _Insert:
    found = _INSERTS.get(model)
    if found is None:
        mapper: Any = inspect(model)
        table: Table = mapper.local_table
        columns = tuple(table.columns)
        for c in columns:  # the row mapping is keyed by attribute, the statement by column
            assert mapper.get_property_by_column(c).key == c.name, c
            assert c.server_default is None, c  # a value the database fills is not read back
        names = ", ".join(c.name for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"  # noqa: S608
        defaulted = tuple(c for c in columns if c.default is not None)
        found = _INSERTS[model] = _Insert(sql, columns, defaulted)
    return found


def _default(column: Column[Any]) -> Any:
    """The model's default for a column the record did not set, as the ORM applies it."""
    default = column.default
    arg = default.arg  # type: ignore[union-attr]
    return arg(None) if default.is_callable else arg  # type: ignore[union-attr]


def _insert_created(session: Session, record: Versioned, version: dict[str, Any]) -> None:
    """A new record and its first version, inserted at once on the driver's cursor, and the
    object then joined to the session as if it had been read: the ORM's unit of work (change
    tracking, dependency sort, statement compilation) for a row just built cost a sixth of a
    registration's CPU (bench/README.md). Sealed by the same :func:`seal_mapping` as every other
    row; whatever the session still had pending goes first, so foreign keys meet rows."""
    model = type(record)
    head, versions = _insert_for(model), _insert_for(RecordVersion)
    state = record.__dict__  # defaults applied by write_version; a column never set is NULL
    values = {c.name: state.get(c.name) for c in head.columns}
    values.update((name, getattr(record, name)) for name in sealed_fields(model))
    keyring = keyring_of(session)
    row = seal_mapping(keyring, model, values)  # ``sealed`` and the blind indexes filled in
    version_row = seal_mapping(keyring, RecordVersion, version)
    with driver_cursor(session) as cursor, cursor.pipeline():
        cursor.execute(head.sql, head.params(cursor, row))
        cursor.execute(versions.sql, versions.params(cursor, version_row))
    for c in head.columns:  # the values stored, as a load would give them
        if c.name not in state:
            setattr(record, c.name, row[c.name])
    make_transient_to_detached(record)  # persistent once added, with nothing left to flush
    session.add(record)


_PENDING = "mamori_versions_pending"


def _insert_versions(session: Session, _context: object) -> None:
    """After the ORM has flushed the heads: insert the versions queued by :func:`write_version`,
    sealed by the same code as every other row, on the driver's own cursor. A version needs no
    ORM identity: nothing changes it once written (re-encryption aside, in its own
    transactions), and a read in the same transaction finds it in the table. Through the unit
    of work each version cost about a tenth of a registration's CPU (bench/README.md)."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    keyring = keyring_of(session)
    versions = _insert_for(RecordVersion)
    with driver_cursor(session, flush=False) as cursor:
        rows = [versions.params(cursor, seal_mapping(keyring, RecordVersion, v)) for v in pending]
        cursor.insert(versions.sql, rows)


def _drop_pending(session: Session, *_: object) -> None:
    # any rollback, a savepoint's too: what is still queued was written inside it (a savepoint
    # begins with a flush), and its heads' changes are gone with it
    session.info.pop(_PENDING, None)


def install() -> None:
    """Insert queued versions at every flush (idempotent; ``Database`` calls it)."""
    if not event.contains(Session, "after_flush", _insert_versions):
        event.listen(Session, "after_flush", _insert_versions)
        event.listen(Session, "after_soft_rollback", _drop_pending)


def content_of(model: type[Versioned], values: Mapping[str, Any]) -> dict[str, Any]:
    """The versioned content of a head row given as a mapping (bulk loading)."""
    content = {name: values[name] for name in model.__content_fields__ if name in values}
    for name in model.__added_fields__:
        if content.get(name) in (None, ""):
            content.pop(name, None)
    missing = set(model.__content_fields__) - set(model.__added_fields__) - set(content)
    if missing:
        raise KeyError(sorted(missing)[0])
    _no_floats(content)
    return content


def seal_version(
    *,
    record_type: str,
    record_id: uuid.UUID,
    clinic_id: uuid.UUID,
    patient_id: uuid.UUID | None,
    version: int,
    change: ChangeKind,
    status: str,
    content: Mapping[str, Any],
    changed_by_id: uuid.UUID,
    changed_at: dt.datetime,
    reason: str,
    prev_hash: str | None,
    version_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The column values of one ``record_version`` row, hash included. The one place a
    version's bytes and hash are made, for services and the bulk loader alike."""
    content_text = canonical_json(content)
    reason = reason.strip()
    digest = version_hash(
        build_envelope(
            record_type=record_type,
            record_id=record_id,
            version=version,
            change=change.value,
            status=status,
            content=content_text,
            changed_by_id=changed_by_id,
            changed_at=changed_at,
            reason=reason,
            prev_hash=prev_hash,
        )
    )
    return {
        "id": version_id or new_id(),
        "clinic_id": clinic_id,
        "record_type": record_type,
        "record_id": record_id,
        "patient_id": patient_id,
        "version": version,
        "change": change.value,
        "status": status,
        "content": content_text,
        "changed_by_id": changed_by_id,
        "changed_at": changed_at,
        "reason": reason,
        "prev_hash": prev_hash,
        "content_hash": digest,
        "import_batch": None,  # a bulk import names its batch (``records/bulk.py``)
    }


def list_versions(session: Session, record_type: str, record_id: uuid.UUID) -> list[RecordVersion]:
    """All versions, oldest first. Callers pass the access gate for the record first."""
    stmt = (
        select(RecordVersion)
        .where(RecordVersion.record_type == record_type, RecordVersion.record_id == record_id)
        .order_by(RecordVersion.version)
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class VerifyProblem:
    record_type: str
    record_id: uuid.UUID
    version: int | None
    problem: str


def verify_history(versions: list[RecordVersion], head: Versioned | None) -> list[VerifyProblem]:
    """Recompute one record's chain; compare the head with its latest version."""
    problems: list[VerifyProblem] = []
    prev: str | None = None
    for expected, v in enumerate(versions, start=1):
        where = (v.record_type, v.record_id, v.version)
        if seal_failure(v) is not None:
            problems.append(VerifyProblem(*where, "ciphertext fails authentication"))
            prev = v.content_hash
            continue
        if v.version != expected:
            problems.append(VerifyProblem(*where, f"version gap: expected {expected}"))
        if v.prev_hash != prev:
            problems.append(VerifyProblem(*where, "chain broken: prev_hash mismatch"))
        if version_hash(v.envelope()) != v.content_hash:
            problems.append(VerifyProblem(*where, "content hash mismatch"))
        prev = v.content_hash
    if head is not None and seal_failure(head) is not None:
        problems.append(
            VerifyProblem(
                head.__record_type__, head.id, head.version, "ciphertext fails authentication"
            )
        )
    elif head is not None:
        rtype = head.__record_type__
        if not versions:
            problems.append(VerifyProblem(rtype, head.id, None, "head without versions"))
        else:
            last = versions[-1]
            if head.version != last.version or head.content_hash != last.content_hash:
                problems.append(
                    VerifyProblem(rtype, head.id, head.version, "head/version mismatch")
                )
            if seal_failure(last) is not None:
                pass  # reported above
            elif canonical_json(head.content()) != last.content or head.status != last.status:
                problems.append(
                    VerifyProblem(rtype, head.id, head.version, "head differs from latest version")
                )
    return problems


def check_head(session: Session, record: Versioned) -> None:
    """Before a write acts on a record: its head must be exactly its latest version — same
    version, hash, content, status and patient — or someone changed the database behind
    mamori (a finalised note reopened by flipping its status column, a row moved to another
    patient). One look-up on the unique (type, id, version) index.

    Raises ``RecordIntegrityFailed``; call it right after loading, before changing the head."""
    last = session.scalars(
        select(RecordVersion)
        .where(
            RecordVersion.record_type == record.__record_type__,
            RecordVersion.record_id == record.id,
        )
        .order_by(RecordVersion.version.desc())
        .limit(1)
    ).first()
    why = ""
    if last is None:
        why = "no version"
    elif seal_failure(last) is not None or seal_failure(record) is not None:
        why = "ciphertext fails authentication"
    elif record.version != last.version or record.content_hash != last.content_hash:
        why = "version or hash differs"
    elif record.status != last.status:
        why = "status differs"
    elif record.version_patient_id() != last.patient_id:
        why = "patient differs"
    elif canonical_json(record.content()) != last.content:
        why = "content differs"
    if why:
        raise RecordIntegrityFailed(
            record.__record_type__, record.id, record.version_patient_id(), why
        )


_LATEST_SQL = (
    "SELECT record_id, version, content_hash, status, patient_id FROM record_version "
    "WHERE record_type = ? AND record_id IN ({})"
)
HEADS_PER_LOOKUP = 500  # record IDs per statement (well under any bound-variable limit)


def _spelled(value: object) -> str:
    """An ID as 32 hex digits, however the driver handed it back (SQLite text, a UUID)."""
    return value.hex if isinstance(value, uuid.UUID) else str(value).replace("-", "").lower()


def check_heads(session: Session, records: Sequence[Versioned]) -> None:
    """The list form of :func:`check_head`, for the chart and every list: each head's version,
    hash, status and patient against its latest version — plaintext columns only, one
    statement per kind on the unique (type, id, version) index, no decryption. A status column
    flipped, a row moved to another patient or rolled back to an old version is refused as it
    is for a single record. (A head whose *sealed content* was re-encrypted by someone holding
    the key keeps its hash: a record served alone compares content too, and ``verify`` does.)"""
    if not records:
        return
    record_type = records[0].__record_type__
    latest: dict[str, tuple[int, str, str, str]] = {}
    ids = [r.id for r in records]
    with driver_cursor(session, flush=False) as cursor:
        bind = cursor.bind(RecordVersion.__table__.c.record_id.type)
        for at in range(0, len(ids), HEADS_PER_LOOKUP):
            part = ids[at : at + HEADS_PER_LOOKUP]
            cursor.execute(
                _LATEST_SQL.format(", ".join("?" * len(part))),
                [record_type, *(bind(i) for i in part)],
            )
            for rid, version, digest, status, pid in cursor.fetchall():
                key = _spelled(rid)
                if key not in latest or latest[key][0] < version:
                    latest[key] = (version, digest, status, _spelled(pid) if pid else "")
    for record in records:
        found = latest.get(record.id.hex)
        pid = record.version_patient_id()
        why = ""
        if found is None:
            why = "no version"
        elif (record.version, record.content_hash) != found[:2]:
            why = "version or hash differs"
        elif record.status != found[2]:
            why = "status differs"
        elif (pid.hex if pid else "") != found[3]:
            why = "patient differs"
        if why:
            raise RecordIntegrityFailed(record.__record_type__, record.id, pid, why)


V = TypeVar("V", bound="PatientRecord")


def record_checked(
    session: Session, actor: Actor, model: type[V], record_id: uuid.UUID, intent: Intent
) -> V:
    """``gate.record_for``, and the head checked against its latest version: before a write
    acts on one record, and before a single record is served on its own (a note, a document,
    a FHIR read). Lists and the chart check their rows with :func:`check_heads`."""
    record = gate.record_for(session, actor, model, record_id, intent)
    check_head(session, record)
    return record


def record_for_write(session: Session, actor: Actor, model: type[V], record_id: uuid.UUID) -> V:
    """``gate.record_for`` for a write, and the head checked against its latest version."""
    return record_checked(session, actor, model, record_id, Intent.WRITE)


def versioned_models() -> tuple[type[Versioned], ...]:
    """Every mapped record kind defined so far, in foreign-key order (patients first, then
    what refers to them). ``mamori.models.record_kinds`` loads every model module first;
    call that when the list must be complete."""
    kinds: dict[str, type[Versioned]] = {
        mapper.tables[0].name: mapper.class_
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, Versioned)
    }
    ordered = [kinds[t.name] for t in Base.metadata.sorted_tables if t.name in kinds]
    # the patient first: a clinic's own record kind (an incident) refers to no patient and
    # may sort before it; nothing the patient table refers to is a record kind
    ordered.sort(key=lambda m: m.__record_type__ != "Patient")
    return tuple(ordered)
