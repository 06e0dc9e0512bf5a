"""Who is calling, and what they may do: principals, permissions and device-group access."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bulwark.domain.errors import DisallowedOperation, Forbidden


class PrincipalKind(str, enum.Enum):
    """Application (client credentials, ``roles``) or user (delegated, ``scp``)."""

    APPLICATION = "application"
    USER = "user"


class Permission(str, enum.Enum):
    """API permissions as the live service names them."""

    MACHINE_OFFBOARD = "Machine.Offboard"
    MACHINE_ISOLATE = "Machine.Isolate"
    MACHINE_SCAN = "Machine.Scan"
    MACHINE_COLLECT_FORENSICS = "Machine.CollectForensics"
    MACHINE_RESTRICT_EXECUTION = "Machine.RestrictExecution"
    MACHINE_STOP_AND_QUARANTINE = "Machine.StopAndQuarantine"
    MACHINE_LIVE_RESPONSE = "Machine.LiveResponse"
    MACHINE_READ_ALL = "Machine.Read.All"
    MACHINE_READWRITE_ALL = "Machine.ReadWrite.All"
    MACHINE_READ = "Machine.Read"
    MACHINE_READWRITE = "Machine.ReadWrite"


ACTION_PERMISSIONS = frozenset(
    {
        Permission.MACHINE_OFFBOARD,
        Permission.MACHINE_ISOLATE,
        Permission.MACHINE_SCAN,
        Permission.MACHINE_COLLECT_FORENSICS,
        Permission.MACHINE_RESTRICT_EXECUTION,
        Permission.MACHINE_STOP_AND_QUARANTINE,
        Permission.MACHINE_LIVE_RESPONSE,
    }
)
READ_PERMISSIONS = frozenset(
    {Permission.MACHINE_READ_ALL, Permission.MACHINE_READWRITE_ALL, Permission.MACHINE_READ, Permission.MACHINE_READWRITE}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``device_group_ids`` is None when the caller may see every device group (applications), or
    the set of rbac group ids a user may reach; ``include_ungrouped`` says whether machines in no
    group are visible. ``can_manage`` is the user's role allowing security operations such as
    offboarding (always true for applications, whose roles are the permissions).
    """

    tenant_id: str
    kind: PrincipalKind
    id: str
    name: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    device_group_ids: frozenset[int] | None = None
    include_ungrouped: bool = True
    can_manage: bool = True

    @property
    def is_user(self) -> bool:
        """Whether this is a delegated (user) caller."""
        return self.kind is PrincipalKind.USER

    def sees_group(self, rbac_group_id: int | None) -> bool:
        """Whether a machine in ``rbac_group_id`` (None: ungrouped) is visible to this caller."""
        if self.device_group_ids is None:
            return True
        if rbac_group_id is None:
            return self.include_ungrouped
        return rbac_group_id in self.device_group_ids


def _role_label(principal: Principal) -> str:
    return "application roles" if principal.kind is PrincipalKind.APPLICATION else "user permissions"


def require_any(principal: Principal, required: frozenset[Permission] | set[Permission]) -> None:
    """Raise Forbidden, worded like the live service, unless the caller holds one of ``required``."""
    names = {p.value for p in required}
    if principal.permissions & names:
        return
    label = _role_label(principal)
    held = ", ".join(sorted(principal.permissions)) or "none"
    wanted = ", ".join(sorted(names))
    raise Forbidden(f"Missing {label}. API required roles: {wanted}, {label}: {held}.")


@dataclass(frozen=True, slots=True)
class WriteRule:
    """The one rule for every use case that writes machine actions or device state.

    Applications need one of ``permissions`` as an application role and reach every device group.
    Users need all three: one of ``permissions`` among their delegated scopes, a role that may
    manage devices (``can_manage``), and access to the device group of the machine concerned. The
    rule runs in two steps because the target is loaded in between: ``check_caller`` before
    anything is read, ``check_target`` once the machine is known. A machine outside the caller's
    device groups is answered as missing by the use case (``sees_group`` false), so that group
    membership never leaks; the role check comes after, as on the live service.
    """

    permissions: frozenset[Permission]
    doing: str

    def check_caller(self, principal: Principal) -> None:
        """The permission (application role or delegated scope)."""
        require_any(principal, self.permissions)

    def check_role(self, principal: Principal) -> None:
        """A user's role must allow managing devices; applications' roles are their permissions."""
        if principal.is_user and not principal.can_manage:
            raise DisallowedOperation(f"The user's role does not allow {self.doing}.")


OFFBOARD_RULE = WriteRule(frozenset({Permission.MACHINE_OFFBOARD}), "offboarding devices")
# The live service lets any action permission cancel an action.
CANCEL_RULE = WriteRule(ACTION_PERMISSIONS, "cancelling machine actions")
