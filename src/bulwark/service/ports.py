"""What the use cases need from storage, stated as protocols.

The use cases in this package depend on these protocols only. ``bulwark.store.uow.SqlUnitOfWork``
implements them on a database; the unit tests implement them with dictionaries. A repository method
a use case starts to call is added here first, then to both implementations.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from bulwark.auth.keys import SigningKey
from bulwark.domain.access import Principal
from bulwark.domain.actions import ActionStatus, MachineAction
from bulwark.domain.control import Behavior, ControlSnapshot, Fault
from bulwark.domain.machines import Machine
from bulwark.odata import ODataQuery, Page, StoredMachines

__all__ = [
    "ActionRepository",
    "AuditLog",
    "AuthorizationCodeStore",
    "ConsoleSessionStore",
    "ControlStore",
    "DeviceGroupRepository",
    "IdentityRepository",
    "ListQueries",
    "MachineRepository",
    "OnboardingPackageRepository",
    "PackageSigningKeyRepository",
    "PointReads",
    "SensorRepository",
    "SigningKeyRepository",
    "TenantRepository",
    "UnitOfWork",
    "UnitOfWorkFactory",
]


class TenantRepository(Protocol):
    def exists(self, tenant_id: str) -> bool: ...

    def add(self, tenant_id: str, name: str, created_at: datetime) -> None: ...

    def list(self) -> list[dict[str, Any]]: ...


class DeviceGroupRepository(Protocol):
    def add(self, tenant_id: str, name: str, description: str | None = None) -> int:
        """Create a device group and return its id."""
        ...

    def list(self, tenant_id: str) -> list[dict[str, Any]]: ...


class MachineRepository(Protocol):
    def get(self, principal: Principal, machine_id: str, *, with_tags: bool = True) -> Machine | None:
        """The machine if ``principal`` may see it (its device group is visible to them)."""
        ...

    def read_ahead(self, principal: Principal, machine_id: str) -> None:
        """A hint that ``get(principal, machine_id, with_tags=False)`` follows: a store running many
        units of work together may fetch their reads at once. Changes nothing else."""
        ...

    def find_by_dns_name(self, principal: Principal, dns_name: str) -> Machine | None:
        """A visible machine by computer DNS name, case-insensitively."""
        ...

    def get_in_tenant(self, tenant_id: str, machine_id: str, *, lock: bool = True, with_tags: bool = True) -> Machine | None:
        """The machine regardless of device groups (the device side has no user); without its tags if asked."""
        ...

    def add_many(self, items: Iterable[Machine]) -> None: ...

    def update_fields(self, machine_id: str, **values: Any) -> None: ...

    def mark_inactive_offboarded_before(self, cutoff: datetime) -> int:
        """Turn machines offboarded before ``cutoff`` Inactive; return how many changed."""
        ...

    def count(self, tenant_id: str | None = None) -> int: ...

    def tags(self, principal: Principal, limit: int = 200) -> list[str]:
        """The distinct tags of machines ``principal`` may see, alphabetically."""
        ...

    def ids_and_dns_names(self, tenant_id: str, health_status: str) -> list[tuple[str, str]]:
        """(id, DNS name) of the tenant's machines in ``health_status`` that are not offboarded."""
        ...


class ActionRepository(Protocol):
    def add(self, action: MachineAction, *, requestor_id: str | None = None) -> None:
        """Insert ``action``; raises ActiveRequestAlreadyExists if one of its type is already active."""
        ...

    def add_with_event(self, action: MachineAction, event: dict[str, Any], *, requestor_id: str | None = None) -> None:
        """Insert ``action`` and its audit event, or neither: ActiveRequestAlreadyExists (no error in the
        transaction) if one of its type is already active."""
        ...

    def get(self, tenant_id: str, action_id: str) -> MachineAction | None: ...

    def get_visible(self, principal: Principal, action_id: str) -> MachineAction | None:
        """The action if ``principal`` may see its machine."""
        ...

    def transition(
        self,
        action_id: str,
        target: ActionStatus,
        *,
        at: datetime,
        only_from: ActionStatus | None = None,
        machine_id: str | None = None,
        **values: Any,
    ) -> bool:
        """Move the action to ``target`` if the lifecycle allows it from its current status.

        ``bulwark.domain.actions.allowed_from(target)`` is the rule; ``only_from`` narrows it to one
        of those statuses and ``machine_id`` requires the action to belong to that machine. The
        check and the move are one step, so of two racing transitions exactly one wins; returns
        whether this one did.
        """
        ...

    def pending_for_machine(self, machine_id: str, limit: int = 10) -> list[MachineAction]:
        """The machine's Pending actions, oldest first."""
        ...

    def active_for_machine(self, machine_id: str) -> list[MachineAction]: ...

    def overdue(
        self,
        status: ActionStatus,
        *,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
        limit: int = 500,
    ) -> list[tuple[str, str]]:
        """Ids and types of actions in ``status`` created (or last updated) before the given instants."""
        ...


class AuditLog(Protocol):
    def append(self, **event: Any) -> None: ...

    def list(
        self,
        tenant_id: str | None = None,
        limit: int | None = 100,
        *,
        action: str | None = None,
        machine_id: str | None = None,
        caller: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The newest matching events first (see ``bulwark.store.repositories.AuditRepository.list``)."""
        ...

    def search(
        self,
        principal: Principal,
        *,
        action: str | None = None,
        actor: str | None = None,
        machine_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[dict[str, Any]]:
        """Events of the caller's tenant on machines the caller may see (or on none), newest first."""
        ...

    def action_names(self, tenant_id: str) -> builtins.list[str]: ...


class AuthorizationCodeStore(Protocol):
    def add(self, **values: Any) -> None: ...

    def redeem(self, code_hash: str, at: datetime) -> dict[str, Any] | None:
        """Mark the code redeemed and return it; None if unknown or redeemed before (exactly one racer wins)."""
        ...

    def was_redeemed(self, code_hash: str) -> bool: ...

    def purge_expired(self, before: datetime) -> int: ...


class ConsoleSessionStore(Protocol):
    def add(self, **values: Any) -> None: ...

    def get(self, id_hash: str) -> dict[str, Any] | None: ...

    def delete(self, id_hash: str) -> bool: ...

    def purge_expired(self, before: datetime) -> int: ...


class SensorRepository(Protocol):
    def add(
        self,
        *,
        sensor_id: str,
        tenant_id: str,
        machine_id: str,
        credential_hash: str,
        generation: int,
        enrolled_at: datetime,
        proof_hash: str | None = None,
    ) -> None: ...

    def current_for_machine(self, machine_id: str) -> dict[str, Any] | None:
        """The machine's current sensor: keys as ``by_credential_hash``, plus credential_hash and proof_hash."""
        ...

    def latest_generation(self, machine_id: str) -> int:
        """The highest generation enrolled for the machine, 0 when none."""
        ...

    def supersede(self, machine_id: str, at: datetime) -> None:
        """Retire every current credential of the machine."""
        ...

    def by_credential_hash(self, credential_hash: str) -> dict[str, Any] | None:
        """The current sensor holding this credential: keys id, tenant_id, machine_id, generation."""
        ...

    def is_current(self, sensor_id: str) -> bool: ...


class OnboardingPackageRepository(Protocol):
    def add(
        self,
        package_id: str,
        tenant_id: str,
        key_hash: str,
        created_at: datetime,
        created_by: str | None,
        *,
        expires_at: datetime | None = None,
        replaces_sensors: bool = False,
    ) -> None: ...

    def find_valid(self, tenant_id: str, key_hash: str, now: datetime) -> dict[str, Any] | None:
        """The unrevoked, unexpired package with this key: keys id, replaces_sensors, expires_at, ..."""
        ...

    def is_valid(self, tenant_id: str, key_hash: str, now: datetime) -> bool: ...

    def revoke(self, tenant_id: str, package_id: str, at: datetime) -> bool:
        """Revoke the package; False when the tenant has no such unrevoked package."""
        ...


class PackageSigningKeyRepository(Protocol):
    def get(self, tenant_id: str) -> tuple[str, str] | None:
        """The tenant's (private, public) package signing key pair."""
        ...

    def add_if_missing(self, tenant_id: str, private_key: str, public_key: str, created_at: datetime) -> None: ...


class ListQueries(Protocol):
    def machines(self, principal: Principal, query: ODataQuery) -> Page[Machine]: ...

    def stored_machines(self, principal: Principal, query: ODataQuery) -> StoredMachines | None:
        """``machines`` as stored values, where the store can hand them out (None: build the machines)."""
        ...

    def actions(self, principal: Principal, query: ODataQuery, *, machine_id: str | None = None) -> Page[MachineAction]: ...


class SigningKeyRepository(Protocol):
    def list(self) -> list[SigningKey]: ...

    def add_first(self, key: SigningKey) -> bool:
        """Store the first key unless another process already did; return whether this one was stored."""
        ...

    def replace_active(self, new_key: SigningKey) -> None: ...

    def retire(self, kid: str, at: datetime) -> bool: ...

    def setting(self, name: str) -> str | None:
        """A recorded setting of the token authority (e.g. ``issuer_base_url``), or None."""
        ...

    def record_setting(self, name: str, value: str, *, replace: bool) -> str:
        """Record a setting (a concurrent first record wins unless ``replace``); return what is recorded."""
        ...


class IdentityRepository(Protocol):
    def add_application(
        self,
        *,
        client_id: str,
        tenant_id: str,
        display_name: str,
        secret_hash: str | None,
        roles: Iterable[str],
        delegated_permissions: Iterable[str],
        created_at: datetime,
        enabled: bool = True,
        public_client: bool = False,
    ) -> None: ...

    def get_application(self, client_id: str) -> dict[str, Any] | None: ...

    def find_application(self, tenant_id: str, client_id_or_name: str) -> dict[str, Any] | None:
        """An application of the tenant by client id or display name."""
        ...

    def list_applications(self, tenant_id: str | None = None) -> list[dict[str, Any]]: ...

    def update_application(self, client_id: str, **values: Any) -> bool: ...

    def add_user(
        self,
        *,
        user_id: str,
        tenant_id: str,
        upn: str,
        display_name: str,
        password_hash: str | None,
        created_at: datetime,
        enabled: bool = True,
    ) -> None: ...

    def get_user(self, user_id: str) -> dict[str, Any] | None: ...

    def find_user(self, tenant_id: str, upn: str) -> dict[str, Any] | None:
        """A user of the tenant by UPN, case-insensitively."""
        ...

    def find_external_user(self, tenant_id: str, issuer: str, object_id: str) -> dict[str, Any] | None:
        """The user of the tenant linked to the external account ``object_id`` (oid) of ``issuer``."""
        ...

    def list_users(self, tenant_id: str | None = None) -> list[dict[str, Any]]: ...

    def update_user(self, user_id: str, **values: Any) -> bool: ...

    def add_role(self, tenant_id: str, name: str, capabilities: Iterable[str]) -> int: ...

    def add_user_group(self, tenant_id: str, name: str) -> int: ...

    def id_by_name(self, kind: str, tenant_id: str, name: str) -> int | None:
        """The id of a role, user group or device group (``kind``) by name in the tenant."""
        ...

    def add_member(self, user_group_id: int, user_id: str) -> None: ...

    def assign_role(self, user_group_id: int, role_id: int) -> None: ...

    def grant_device_group(self, device_group_id: int, user_group_id: int) -> None: ...

    def list_roles(self, tenant_id: str) -> list[dict[str, Any]]: ...

    def list_user_groups(self, tenant_id: str) -> list[dict[str, Any]]: ...

    def capabilities_of(self, user_id: str) -> set[str]: ...

    def reachable_device_groups(self, tenant_id: str, user_id: str) -> set[int]: ...

    def count_users(self, tenant_id: str) -> int: ...


class ControlStore(Protocol):
    """The control plane of a test server: clock offset and reset epoch, behaviours, faults, request log."""

    def state(self) -> tuple[float, int]: ...

    def snapshot(self) -> ControlSnapshot: ...

    def advance_clock(self, seconds: float) -> float: ...

    def set_behavior(self, behavior: Behavior, now: datetime) -> None: ...

    def get_behavior(self, machine_id: str) -> Behavior | None: ...

    def delete_behavior(self, machine_id: str) -> bool: ...

    def add_fault(self, fault: Fault) -> None: ...

    def count_faults(self) -> int: ...

    def list_faults(self) -> list[Fault]: ...

    def delete_fault(self, fault_id: str) -> bool: ...

    def take_fault(self, fault_id: str) -> bool: ...

    def record_request(self, *, keep: int, **values: Any) -> None: ...

    def list_requests(self, operation: str | None, limit: int) -> list[dict[str, Any]]: ...

    def wipe_fleet(self) -> int: ...


class VisibleActionReads(Protocol):
    def get_visible(self, principal: Principal, action_id: str) -> MachineAction | None: ...


class VisibleMachineReads(Protocol):
    def get(self, principal: Principal, machine_id: str, *, with_tags: bool = True) -> Machine | None: ...

    def find_by_dns_name(self, principal: Principal, dns_name: str) -> Machine | None: ...


class PointReads(Protocol):
    """What reading one action or one machine needs: any unit of work has it, and so does the
    store's lighter one for reads by key on SQLite."""

    @property
    def actions(self) -> VisibleActionReads: ...

    @property
    def machines(self) -> VisibleMachineReads: ...

    def __enter__(self) -> PointReads: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...


class UnitOfWork(Protocol):
    """Repositories sharing one transaction: entered with ``with``, left rolled back unless committed."""

    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def device_groups(self) -> DeviceGroupRepository: ...

    @property
    def machines(self) -> MachineRepository: ...

    @property
    def actions(self) -> ActionRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def sensors(self) -> SensorRepository: ...

    @property
    def onboarding_packages(self) -> OnboardingPackageRepository: ...

    @property
    def package_keys(self) -> PackageSigningKeyRepository: ...

    @property
    def lists(self) -> ListQueries: ...

    @property
    def identity(self) -> IdentityRepository: ...

    @property
    def signing_keys(self) -> SigningKeyRepository: ...

    @property
    def authorization_codes(self) -> AuthorizationCodeStore: ...

    @property
    def console_sessions(self) -> ConsoleSessionStore: ...

    @property
    def control(self) -> ControlStore: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def commit(self) -> None:
        """Make everything done in this unit of work durable."""
        ...


class UnitOfWorkFactory(Protocol):
    """Makes a fresh unit of work: ``factory()`` to write, ``factory(write=False)`` to only read."""

    def __call__(self, *, write: bool = True) -> UnitOfWork: ...
