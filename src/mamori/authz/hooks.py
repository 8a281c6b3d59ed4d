"""Where the audit trail attaches to the spine: every patient-data access the gate lets
through, every record version written, every restricted patient opened.

The spine fires these hooks; ``audit.trail.install()`` subscribes to them (``open_database``
installs it). Firing with nobody subscribed is refused: a process that forgot to attach the
audit trail must not serve patient data unlogged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from mamori.authz.actor import Actor, Intent


class AuditNotAttached(RuntimeError):
    """Patient data was reached in a process whose audit trail was never installed."""


# (session, actor, intent, what, patient IDs, record IDs)
AccessHook = Callable[[Session, Actor, Intent, str, Sequence[uuid.UUID], Sequence[uuid.UUID]], None]


class VersionHook(Protocol):
    def __call__(self, session: Session, actor: Actor, version: dict[str, Any]) -> None: ...


class RestrictedHook(Protocol):
    def __call__(
        self, session: Session, actor: Actor, patient_id: uuid.UUID, *, break_glass: bool
    ) -> None: ...


@dataclass
class Hooks:
    """Listeners called on every patient-data access, every record version written and every
    restricted patient opened (the audit trail attaches here)."""

    on_access: list[AccessHook] = field(default_factory=list)
    on_version: list[VersionHook] = field(default_factory=list)
    on_restricted: list[RestrictedHook] = field(default_factory=list)

    def version_written(self, session: Session, actor: Actor, version: dict[str, Any]) -> None:
        _attached(self.on_version)
        for hook in self.on_version:
            hook(session, actor, version)

    def restricted_opened(
        self, session: Session, actor: Actor, patient_id: uuid.UUID, *, break_glass: bool
    ) -> None:
        _attached(self.on_restricted)
        for hook in self.on_restricted:
            hook(session, actor, patient_id, break_glass=break_glass)

    def fire(
        self, session: Session, actor: Actor, intent: Intent, what: str,
        patient_ids: Sequence[uuid.UUID], record_ids: Sequence[uuid.UUID] = (),
    ) -> None:  # fmt: skip
        _attached(self.on_access)
        for hook in self.on_access:
            hook(session, actor, intent, what, patient_ids, record_ids)


def _attached(listeners: Sequence[object]) -> None:
    if not listeners:
        raise AuditNotAttached("the audit trail is not installed (use mamori.models.open_database)")


hooks = Hooks()
