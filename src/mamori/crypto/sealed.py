"""Sealed rows: every field that identifies or describes a patient lives only in ciphertext.

A model mixes in :class:`Sealed` and declares such fields with :func:`sealed` instead of
``mapped_column``. They stay ordinary attributes in Python (services, schemas and the FHIR
mapping use them unchanged) but are stored together as one AES-256-GCM ciphertext in the
row's ``sealed`` column, bound to table, record, version and field by its associated data.

* writing: the ORM's ``before_insert``/``before_update`` seal the row (and compute its blind
  indexes); the bulk loader calls :func:`seal_mapping`, the same code for mappings;
* reading: the ORM's ``load``/``refresh`` open the ciphertext. A failure raises
  ``SealBroken`` — an altered or moved ciphertext is never shown as data.

The keyring comes from the session (``Database.session``); a session without one cannot read
or write sealed rows at all (fail closed).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, overload

from sqlalchemy import LargeBinary, event
from sqlalchemy.orm import Mapped, Session, mapped_column, object_session

from mamori.canonical import canonical_json
from mamori.crypto.keyring import BlindIndex, Keyring, SealBroken, UnknownKey
from mamori.errors import InstanceError

T = TypeVar("T")
PLAIN = "_mamori_plain"
BROKEN = "_mamori_broken"
LENIENT = "mamori_lenient_seal"  # session.info flag: mark bad rows instead of raising


@contextmanager
def lenient(session: Session) -> Iterator[None]:
    """Within this block, rows whose ciphertext fails load as *broken* (see ``seal_failure``)
    instead of stopping the query: for verification and for search, which skips them."""
    before = session.info.get(LENIENT)
    session.info[LENIENT] = True
    try:
        yield
    finally:
        session.info[LENIENT] = before


FIELD = "sealed"


def _date(v: Any) -> dt.date | None:
    return None if v is None else dt.date.fromisoformat(v)


def _datetime(v: Any) -> dt.datetime | None:
    return None if v is None else dt.datetime.fromisoformat(v.replace("Z", "+00:00"))


def _uuid(v: Any) -> uuid.UUID | None:
    return None if v is None else uuid.UUID(v)


def _same(v: Any) -> Any:
    return v


class SealedField(Generic[T]):
    """A plain Python attribute whose value is stored in the row's ciphertext."""

    def __init__(self, decode: Callable[[Any], Any], default: Callable[[], T]) -> None:
        self.decode = decode
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> SealedField[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return self
        broken = obj.__dict__.get(BROKEN)
        if broken is not None:
            raise broken  # a row whose ciphertext failed is never read as data
        plain = obj.__dict__.get(PLAIN)
        if plain is None or self.name not in plain:
            return self.default()
        return plain[self.name]

    def __set__(self, obj: object, value: T) -> None:
        obj.__dict__.setdefault(PLAIN, {})[self.name] = value


def sealed_str(default: str = "") -> SealedField[str]:
    return SealedField(_same, lambda: default)


def sealed_int(default: int = 0) -> SealedField[int]:
    return SealedField(_same, lambda: default)


def sealed_opt_int() -> SealedField[int | None]:
    return SealedField(_same, lambda: None)


def sealed_bool(default: bool = False) -> SealedField[bool]:
    return SealedField(_same, lambda: default)


def sealed_date() -> SealedField[dt.date]:
    return SealedField(_date, lambda: None)  # type: ignore[arg-type, return-value]


def sealed_opt_date() -> SealedField[dt.date | None]:
    return SealedField(_date, lambda: None)


def sealed_opt_datetime() -> SealedField[dt.datetime | None]:
    return SealedField(_datetime, lambda: None)


def sealed_opt_uuid() -> SealedField[uuid.UUID | None]:
    return SealedField(_uuid, lambda: None)


def sealed_json() -> SealedField[Any]:
    return SealedField(_same, list)


Getter = Callable[[str], Any]


@dataclass(frozen=True)
class IndexSpec:
    """A blind index column: its index (name, bits) and the value it is computed from."""

    column: str
    index: BlindIndex
    value: Callable[[Getter], str | None]


class Sealed:
    """Mixin: a ``sealed`` ciphertext column plus the :class:`SealedField` attributes."""

    __blind_indexes__: ClassVar[tuple[IndexSpec, ...]] = ()

    sealed: Mapped[bytes] = mapped_column(LargeBinary)


_FIELDS: dict[type, dict[str, SealedField[Any]]] = {}


def sealed_fields(cls: type) -> dict[str, SealedField[Any]]:
    found = _FIELDS.get(cls)
    if found is None:
        found = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, SealedField):
                    found[name] = value
        _FIELDS[cls] = found
    return found


def aad_for(cls: type, get: Getter) -> bytes:
    """Table, record and version (and, for a version row, the record it versions)."""
    table = cls.__tablename__  # type: ignore[attr-defined]
    if table == "record_version":
        return (
            f"mamori/v1|{table}|{get('record_type')}|{get('record_id')}|{get('version')}|{FIELD}"
        ).encode()
    return f"mamori/v1|{table}|{get('id')}|{get('version')}|{FIELD}".encode()


def keyring_of(session: Session | None) -> Keyring:
    db = session.info.get("mamori_db") if session is not None else None
    keyring = getattr(db, "keyring", None)
    if keyring is None:
        raise InstanceError(
            "暗号鍵が読み込まれていないため、患者データを読み書きできません。",
            "No keys are loaded, so patient data can be neither read nor written.",
            code="key_unavailable",
        )
    return keyring  # type: ignore[no-any-return]


def refreshed(session: Session | None) -> Keyring:
    db = session.info.get("mamori_db") if session is not None else None
    refresher = getattr(db, "key_refresher", None)
    if refresher is not None:
        refresher(force=True)
    return keyring_of(session)


def plaintext(cls: type, get: Getter) -> bytes:
    return canonical_json({name: get(name) for name in sealed_fields(cls)}).encode("utf-8")


_MISSING = object()


def _resolving(cls: type, lookup: Getter) -> Getter:
    """A getter that gives a sealed field's default where the row has no value for it."""
    fields = sealed_fields(cls)

    def get(name: str) -> Any:
        value = lookup(name)
        if value is _MISSING:
            f = fields.get(name)
            return f.default() if f is not None else None
        return value

    return get


def seal_values(keyring: Keyring, cls: type, get: Getter) -> bytes:
    return keyring.seal(plaintext(cls, get), aad_for(cls, get))


def blind_values(keyring: Keyring, cls: type, get: Getter, clinic: object) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for spec in getattr(cls, "__blind_indexes__", ()):
        value = spec.value(get)
        out[spec.column] = None if value is None else keyring.blind(spec.index, clinic, value)
    return out


def open_values(keyring: Keyring, cls: type, blob: bytes, get: Getter) -> dict[str, Any]:
    where = f"{cls.__tablename__} {get('id')}"  # type: ignore[attr-defined]
    # decoded here: json.loads of bytes first sniffs for a byte-order mark, three prefix tests
    # per row that cost more than the decoding (measured on the bulk export)
    raw = json.loads(keyring.open(blob, aad_for(cls, get), where).decode("utf-8"))
    fields = sealed_fields(cls)
    return {name: f.decode(raw[name]) if name in raw else f.default() for name, f in fields.items()}


def seal_mapping(keyring: Keyring, cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """A row mapping for a Core insert: sealed fields replaced by the ciphertext and indexes."""
    fields = sealed_fields(cls)
    get = _resolving(cls, lambda name: values.get(name, _MISSING))
    row = {k: v for k, v in values.items() if k not in fields}
    row[FIELD] = seal_values(keyring, cls, get)
    row.update(blind_values(keyring, cls, get, values.get("clinic_id")))
    return row


def _getter(target: Any) -> Getter:
    plain = target.__dict__.get(PLAIN, {})

    def lookup(name: str) -> Any:
        if name in plain:
            return plain[name]
        return target.__dict__.get(name, _MISSING)

    return _resolving(type(target), lookup)


def _seal(target: Any) -> None:
    keyring = keyring_of(object_session(target))
    get = _getter(target)
    target.sealed = seal_values(keyring, type(target), get)
    for column, value in blind_values(keyring, type(target), get, target.clinic_id).items():
        setattr(target, column, value)


def open_loaded(target: Any, session: Session | None) -> None:
    """Open a just-read row's ciphertext into its sealed fields (the ORM's load event, and
    the read views of ``mamori.records.reader``): ``SealBroken`` unless the session is lenient."""
    blob = target.__dict__.get(FIELD)
    if blob is None:
        return
    keyring = keyring_of(session)
    try:
        try:
            plain = open_values(keyring, type(target), blob, target.__dict__.get)
        except UnknownKey:
            keyring = refreshed(session)  # a key made since this process loaded its keys?
            plain = open_values(keyring, type(target), blob, target.__dict__.get)
        target.__dict__[PLAIN] = plain
        target.__dict__.pop(BROKEN, None)
    except SealBroken as exc:
        if session is None or not session.info.get(LENIENT):
            raise  # an altered or moved ciphertext is an error, never data
        # Lenient sessions (verification, search) go on past a bad row: any read of its
        # sealed fields raises, and ``seal_failure`` reports it.
        target.__dict__.pop(PLAIN, None)
        target.__dict__[BROKEN] = exc


def seal_failure(obj: object) -> SealBroken | None:
    return obj.__dict__.get(BROKEN)


def install() -> None:
    """Hook sealing into the ORM (idempotent)."""
    if event.contains(Sealed, "load", _on_load):
        return
    event.listen(Sealed, "load", _on_load, propagate=True)
    event.listen(Sealed, "refresh", _on_refresh, propagate=True)
    event.listen(Sealed, "before_insert", _on_write, propagate=True)
    event.listen(Sealed, "before_update", _on_write, propagate=True)


def _on_load(target: Any, context: Any) -> None:
    open_loaded(target, context.session)


def _on_refresh(target: Any, context: Any, attrs: Any) -> None:
    if attrs is None or FIELD in attrs:
        open_loaded(target, context.session)


def _on_write(_mapper: Any, _connection: Any, target: Any) -> None:
    _seal(target)
