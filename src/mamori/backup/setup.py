"""A first backup, configured when the instance is made: the offline recovery keys written
outside the instance and a first target (a folder standing for the USB disk is enough).

A fresh install must have backups configured or refuse to run (MISSION.md): ``mamori init
--backup-keys DIR --backup-target DIR`` and ``mamori demo`` call :func:`configure`; ``mamori
serve`` refuses an instance without backups unless started ``--without-backups``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mamori.audit.checkpointer import signer
from mamori.audit.trail import AuditTag, record_system
from mamori.backup import fmt
from mamori.backup.identity import Generated, install_recipients, keep_trust_root, keygen
from mamori.clinic import service as clinic_service
from mamori.crypto.kek import check_outside
from mamori.instance import Instance


@dataclass
class Configured:
    keys: Generated
    target: Path


def configure(inst: Instance, keys_out: Path, target: Path, passphrase: str) -> Configured:
    """Make the offline identities in ``keys_out``, install their public keys, and add
    ``target`` as a folder target named ``usb`` to mamori.toml. Both must be outside the
    instance. The caller reopens the settings to see the target."""
    home = inst.settings.home
    keys_out, target = keys_out.resolve(), target.resolve()
    check_outside(keys_out, [home])
    check_outside(target, [home])
    with inst.transaction(write=False) as session:
        clinic = clinic_service.the_clinic(session).name
    made = keygen(
        keys_out,
        instance_id=inst.settings.instance_id,
        clinic=clinic,
        signer=fmt.public_text(fmt.signing_key(inst.settings.audit_signing_key)),
        passphrase=passphrase,
    )
    install_recipients(inst.settings.backup_dir, made.recipients, inst.settings.instance_id)
    keep_trust_root(keys_out, signer(inst.settings).verifier().vkey())
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (home / "mamori.toml").open("a", encoding="utf-8") as fh:
        fh.write(
            "\n# the first backup target, made by mamori init (rotate two USB disks; add an\n"
            "# immutable remote copy, docs/backup.md)\n"
            f'[[backup.targets]]\nname = "usb"\nkind = "dir"\npath = "{_toml(str(target))}"\n'
        )
    with inst.transaction(write=True) as session:
        record_system(
            session, AuditTag.BACKUP_KEYS_CREATED, {"recipients": made.recipients, "at": "init"}
        )
    return Configured(made, target)


def _toml(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
