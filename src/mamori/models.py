"""Every table and record kind of mamori, derived from the mapped classes.

Each record kind is declared once, on its model: its access (``__access__``: read and write
permissions, demographic or not), that it is sealed (the ``Sealed`` mixin), that it is patient
data (``Versioned``). The lists other code needs — the record types the generic routes accept,
the tables re-encryption walks and key retirement checks, the tables a backup counts, the kinds
a merge moves — are computed here from those declarations, never kept by hand.

Model modules are found by walking the package (every ``mamori.<domain>.models``), so a new
domain's tables are part of all of these as soon as its ``models.py`` exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

import mamori
from mamori import copies
from mamori.audit import trail
from mamori.crypto import sealed
from mamori.crypto.sealed import Sealed
from mamori.db import Base, Database, PatientData
from mamori.records import versioning
from mamori.records.versioning import PatientRecord, RecordVersion, Versioned, versioned_models

# tables defined outside a domain's models.py (imported here so they are part of the metadata)
_SPINE_TABLES = ("mamori.crypto.keyring", "mamori.records.versioning")


def load_all() -> None:
    """Import every module that defines tables, so ``Base.metadata`` is complete (Alembic,
    start-up checks, the derived lists below)."""
    for name in _SPINE_TABLES:
        importlib.import_module(name)
    for info in pkgutil.iter_modules(mamori.__path__):
        if info.ispkg and importlib.util.find_spec(f"mamori.{info.name}.models") is not None:
            importlib.import_module(f"mamori.{info.name}.models")


def open_database(url: str, **engine_kwargs: Any) -> Database:
    """The database with everything that protects it attached: the audit trail subscribed to
    the gate's and the version writer's hooks, sealing and the version listeners on the ORM,
    every table known. Every process (server, CLI, tests, benchmarks) opens it this way."""
    load_all()
    trail.install()
    sealed.install()
    versioning.install()
    copies.install()
    return Database(url, **engine_kwargs)


def mapped_classes() -> list[type[Any]]:
    load_all()
    return [mapper.class_ for mapper in Base.registry.mappers]


def record_kinds() -> tuple[type[Versioned], ...]:
    """Every versioned record kind (the patient first, then in foreign-key order)."""
    load_all()
    return versioned_models()


def record_types() -> dict[str, type[Versioned]]:
    """Record kinds by their FHIR-style type name (``Patient``, ``Observation`` …)."""
    return {model.__record_type__: model for model in record_kinds()}


def patient_scoped_models() -> tuple[type[PatientRecord], ...]:
    """The record kinds that belong to one patient (everything but the patient itself)."""
    return tuple(m for m in record_kinds() if issubclass(m, PatientRecord))


def sealed_models() -> list[type[Sealed]]:
    """Every table with a sealed column: what re-encryption walks and what key retirement
    checks for rows still under an old key."""
    return sorted(
        (cls for cls in mapped_classes() if issubclass(cls, Sealed)),
        key=lambda cls: (cls is RecordVersion, cls.__tablename__),  # type: ignore[attr-defined]
    )


def patient_data_tables() -> list[str]:
    """The tables holding patient data (what a backup counts to notice mass change)."""
    return sorted(
        cls.__tablename__  # type: ignore[attr-defined]
        for cls in mapped_classes()
        if issubclass(cls, PatientData)
    )
