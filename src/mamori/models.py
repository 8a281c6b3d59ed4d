"""Import every model module so ``Base.metadata`` is complete (Alembic, startup checks)."""

from __future__ import annotations


def load_all() -> None:
    import mamori.audit.models
    import mamori.auth.models
    import mamori.clinic.models
    import mamori.clinical.models
    import mamori.crypto.keyring
    import mamori.patients.models
    import mamori.records.versioning  # noqa: F401
