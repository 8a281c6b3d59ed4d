"""Each record kind is declared once, on its model, and every list other code needs is derived
from the mapped classes. The checks here look at the schema independently (a ``sealed`` column,
a ``patient_id`` column, a versioned head table) and fail when a derived list misses a table:
re-encryption skipping a sealed table would let a data key be retired while rows are still
encrypted under it. The last test shows that retirement is refused in exactly that case."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Table, select, update

from mamori.authz.permissions import declared_kinds, is_demographic, permission_for
from mamori.backup.sources import counted_tables
from mamori.clinic.models import Clinic
from mamori.crypto import rekey
from mamori.crypto.kek import KeyUnavailable
from mamori.crypto.sealed import FIELD
from mamori.db import Base
from mamori.documents.store import DocumentStore
from mamori.errors import NotAllowed
from mamori.instance import create_instance
from mamori.models import (
    load_all,
    patient_data_tables,
    patient_scoped_models,
    record_types,
    sealed_models,
)
from mamori.synth.generator import generate


def _tables_with(column: str) -> set[str]:
    load_all()
    return {t.name for t in Base.metadata.tables.values() if column in t.c}


def test_every_sealed_table_is_walked_by_reencryption() -> None:
    walked = {m.__tablename__ for m in sealed_models()}  # type: ignore[attr-defined]
    assert walked == _tables_with(FIELD)
    assert "record_version" in walked and "patient" in walked


def test_every_versioned_table_is_a_declared_record_kind() -> None:
    versioned = _tables_with("content_hash") - {"record_version"}
    kinds = record_types()
    assert {m.__tablename__ for m in kinds.values()} == versioned  # type: ignore[attr-defined]
    declared = declared_kinds()
    for name, model in kinds.items():
        assert declared[name] is model.__access__
        assert permission_for(name, write=False) is model.__access__.read
        assert permission_for(name, write=True) is model.__access__.write


def test_every_patient_table_is_counted_by_the_backup_and_moved_by_a_merge() -> None:
    with_patient = _tables_with("patient_id") & _tables_with("content_hash")
    scoped = {m.__tablename__ for m in patient_scoped_models()}  # type: ignore[attr-defined]
    assert scoped == with_patient - {"record_version"}
    # the clinic's own versioned records (an incident and its timeline, the checklist's
    # answers) are counted with the patient data: their free text can name a patient, and a
    # mass change is a mass change
    clinic_records = _tables_with("content_hash") - _tables_with("patient_id") - {"patient"}
    assert clinic_records == {"incident", "incident_entry", "checklist_answer"}
    assert set(patient_data_tables()) == scoped | {"patient"} | clinic_records
    assert set(patient_data_tables()) <= set(counted_tables())


def test_the_patient_comes_first_in_foreign_key_order() -> None:
    order = [m.__tablename__ for m in record_types().values()]  # type: ignore[attr-defined]
    assert order[0] == "patient"
    for model in patient_scoped_models():
        table: Table = model.__table__  # type: ignore[attr-defined]
        for fk in table.foreign_keys:
            referred = fk.column.table.name
            if referred in order:
                assert order.index(referred) < order.index(table.name)


def test_demographic_kinds_are_the_desks_and_unknown_kinds_fail_closed() -> None:
    desk = {"Patient", "Coverage", "Encounter", "ContactLog"}  # 電話対応: the desk's own log
    # a notice to an affected patient reaches a restricted patient too (their address only)
    assert {k for k in record_types() if is_demographic(k)} == desk | {"IncidentNotice"}
    assert not is_demographic("ProgressNote") and not is_demographic("no-such-kind")
    with pytest.raises(NotAllowed):
        permission_for("no-such-kind", write=False)


def test_retiring_a_key_with_rows_still_under_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = create_instance(
        tmp_path / "home", clinic_name="鍵試験", institution_code="1310123455"
    )
    inst = created.instance
    try:
        store = DocumentStore(inst.settings.documents_dir, inst.db)
        with inst.transaction(write=True) as s:
            generate(s, s.scalars(select(Clinic)).one(), "XS", seed=3, store=store)
        old_key = inst.db.keyring.active
        # Every sealed table re-encrypted under a new key except one observation row, put back
        # under the old key as a walk that skipped its table would have left it.
        with inst.db.session(write=False) as s:
            table: Table = record_types()["Observation"].__table__  # type: ignore[attr-defined]
            row = s.execute(select(table.c.id, table.c[FIELD]).limit(1)).one()
        rekey.add_data_key(inst.db)
        retire = rekey.retire_old_keys
        with monkeypatch.context() as m:  # the walk alone; retirement asked for separately
            m.setattr(rekey, "retire_old_keys", lambda db, store: [])
            rekey.reencrypt(inst.db, store, grace=0)
        assert rekey.count_stale(inst.db) == 0
        with inst.db.session(write=True) as s:
            s.execute(update(table).where(table.c.id == row.id).values({FIELD: row.sealed}))
            s.commit()
        assert rekey.count_stale(inst.db) == 1
        with pytest.raises(KeyUnavailable, match="still encrypted"):
            retire(inst.db, store)
        assert old_key in inst.db.keyring.key_ids  # nothing was destroyed
        # the next walk finds the row, and then the old key can go
        done = rekey.reencrypt(inst.db, store, grace=0)
        assert done.rows == 1 and done.retired == [old_key]
    finally:
        inst.db.dispose()
