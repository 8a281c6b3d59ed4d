"""An instance: its settings, database and keys — opened by every command and by restore, and
created by ``mamori init``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from mamori import copies, isolation, migrate
from mamori.audit.checkpointer import CheckpointRefused, make_checkpoint
from mamori.audit.trail import AuditTag, defer_release, record_system, release
from mamori.auth import passwords
from mamori.auth import service as auth_service
from mamori.authz.actor import Actor
from mamori.authz.roles import Role
from mamori.backup import alarm
from mamori.clinic import service as clinic_service
from mamori.clinic.models import Clinic
from mamori.crypto.startup import open_keys
from mamori.db import Database
from mamori.errors import InstanceError
from mamori.models import open_database
from mamori.settings import Settings, load_settings, resolve_home, write_instance_files


@dataclass
class Instance:
    settings: Settings
    db: Database

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Session]:
        """The CLI's unit of work: commit once at the end, roll back on any error."""
        session = self.db.session(write=write)
        defer_release(session)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            session.close()
            raise
        session.close()
        release(session)  # read events: appended once the read connection is back

    def close(self) -> list[str]:
        """End of a process's use of the instance: the events it appended are covered by a
        signed checkpoint now, not when the server next signs one (until then a truncation of
        them would go unnoticed). Returns the problems to report; never raises."""
        problems: list[str] = []
        try:
            result = make_checkpoint(self.db, self.settings)
            problems += result.copy_errors
        except CheckpointRefused as exc:
            problems.append(f"{exc.ja} / {exc.en}")
        except Exception as exc:  # the command's own work is done; say why, do not mask it
            problems.append(f"audit checkpoint failed: {exc!r}")
        finally:
            self.db.dispose()
        return problems

    def actor(self, session: Session, login_id: str, channel: str = "cli") -> Actor:
        clinic = clinic_service.the_clinic(session)
        user = clinic_service.find_staff(session, clinic.id, login_id)
        if user is None or not user.active:
            raise InstanceError(
                f"職員アカウント {login_id} が見つからないか無効です。",
                f"Staff account {login_id} does not exist or is disabled.",
            )
        return clinic_service.actor_for(user, channel)


def open_instance(option: str | None, *, check_schema: bool = True) -> Instance:
    """Settings, database and keys; without its key an instance does not open at all."""
    settings = load_settings(resolve_home(option))
    db = open_database(settings.database_url)
    db.read_only = copies.marker(settings.home) is not None
    db.isolated = isolation.marker(settings.home) is not None
    if check_schema:
        try:
            migrate.require_current(db.engine)
            open_keys(db, settings)
        except Exception as exc:
            db.dispose()
            if alarm.is_damage(exc):  # the file is no longer a database: the loudest alarm
                raise alarm.raise_alarm(settings, exc, "open") from exc
            raise
        except BaseException:
            db.dispose()
            raise
    return Instance(settings=settings, db=db)


@dataclass
class Created:
    instance: Instance
    clinic: Clinic
    admin_login: str
    admin_password: str


def create_instance(
    home: Path,
    *,
    clinic_name: str,
    institution_code: str,
    database_url: str | None = None,
    port: int = 8000,
    admin_login: str = "admin",
    admin_name: str = "院長",
    is_synthetic: bool = False,
    postal_code: str = "",
    address: str = "",
    phone: str = "",
    key_source: str = "file",
    key_file: Path | None = None,
    pkcs11_module: Path | None = None,
    pkcs11_token: str = "",
    public_names: Sequence[str] = (),
) -> Created:
    """Directory, secrets, migrated database, the clinic and its first administrator."""
    write_instance_files(
        home,
        database_url=database_url,
        port=port,
        key_source=key_source,
        key_file=key_file,
        pkcs11_module=pkcs11_module,
        pkcs11_token=pkcs11_token,
        public_names=public_names,
    )
    settings = load_settings(home)
    db = open_database(settings.database_url)
    migrate.upgrade(db.engine)
    keyring = open_keys(db, settings, create=True)
    instance = Instance(settings=settings, db=db)
    with instance.transaction(write=True) as session:
        assert keyring.kek is not None
        record_system(
            session,
            AuditTag.KEYS_CREATED,
            {"kek": keyring.kek.kek_id, "source": keyring.kek.source},
        )
        clinic = clinic_service.create_clinic(
            session,
            name=clinic_name,
            institution_code=institution_code,
            postal_code=postal_code,
            address=address,
            phone=phone,
            is_synthetic=is_synthetic,
        )
        admin = clinic_service.add_staff(
            session, clinic, login_id=admin_login, display_name=admin_name, role=Role.DIRECTOR
        )
        password = passwords.generate()
        auth_service.set_password(session, admin, password, initial=True)
    return Created(
        instance=instance,
        clinic=clinic,
        admin_login=admin_login,
        admin_password=password,
    )
