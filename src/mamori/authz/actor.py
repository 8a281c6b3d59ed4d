"""Who is acting, and with what intent: the caller every service and the gate take first."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

from mamori.authz.permissions import Permission, role_permissions
from mamori.authz.roles import Role
from mamori.errors import Forbidden


class Intent(enum.StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in staff member (or a CLI command run as one)."""

    user_id: uuid.UUID
    clinic_id: uuid.UUID
    role: Role
    display_name: str
    channel: str = "api"  # api | fhir | cli | web
    auth_method: str = "api-token"  # totp | webauthn | recovery | api-token | cli
    source_ip: str | None = None
    user_agent: str | None = None
    session_id: uuid.UUID | None = None
    # None: the role's permissions; a vendor inside a maintenance window gets a wider set
    permissions: frozenset[Permission] | None = None
    # when the person last re-entered password and second factor (sensitive actions need it)
    reauth_at: dt.datetime | None = None

    @property
    def granted(self) -> frozenset[Permission]:
        return self.permissions if self.permissions is not None else role_permissions(self.role)

    def can(self, permission: Permission) -> bool:
        return permission in self.granted

    def require(self, permission: Permission) -> None:
        """Raise ``Forbidden`` unless the actor holds ``permission``."""
        if permission not in self.granted:
            raise Forbidden(permission.value)
