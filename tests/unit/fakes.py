"""An in-memory unit of work implementing ``bulwark.service.ports``, for unit tests of the use cases.

Repositories are dictionaries and lists in one ``FakeDatabase``. A unit of work snapshots the data
when entered and puts the snapshot back when left without ``commit()``, so a test sees exactly what
a use case committed. The one-active-action rule and the lifecycle guard behave as the database's do;
everything SQL-specific (locking, races, OData compilation) is left to the database tests.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from bulwark.auth.keys import SigningKey
from bulwark.domain.access import Principal
from bulwark.domain.actions import ACTIVE_STATUSES, ActionStatus, MachineAction, transition_sources
from bulwark.domain.control import Behavior, ControlSnapshot, Fault
from bulwark.domain.errors import ActiveRequestAlreadyExists
from bulwark.domain.machines import Machine
from bulwark.odata import ODataQuery, Page
from bulwark.service.ports import UnitOfWorkFactory


@dataclass
class FakeDatabase:
    """Everything the fake repositories store, as plain data."""

    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    device_groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    actions: dict[str, MachineAction] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    onboarding_packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    package_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    signing_keys: dict[str, SigningKey] = field(default_factory=dict)
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    user_groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    authorization_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    console_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock_offset: float = 0.0
    reset_epoch: int = 0
    behaviors: dict[str, Behavior] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    authority_settings: dict[str, str] = field(default_factory=dict)
    next_id: int = 1

    def new_id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value


class _Repository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def db(self) -> FakeDatabase:
        return self._uow.db


class FakeTenants(_Repository):
    def exists(self, tenant_id: str) -> bool:
        return tenant_id in self.db.tenants

    def add(self, tenant_id: str, name: str, created_at: datetime) -> None:
        self.db.tenants[tenant_id] = {"id": tenant_id, "name": name, "created_at": created_at}

    def list(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.db.tenants.values()]


class FakeDeviceGroups(_Repository):
    def add(self, tenant_id: str, name: str, description: str | None = None) -> int:
        group_id = self.db.new_id()
        self.db.device_groups[group_id] = {"id": group_id, "tenant_id": tenant_id, "name": name, "description": description}
        return group_id

    def list(self, tenant_id: str) -> list[dict[str, Any]]:
        return [dict(g) for g in self.db.device_groups.values() if g["tenant_id"] == tenant_id]


def _visible(principal: Principal, machine: Machine) -> bool:
    return machine.tenant_id == principal.tenant_id and principal.sees_group(machine.rbac_group_id)


class FakeMachines(_Repository):
    def _copy(self, machine: Machine, *, with_tags: bool = True) -> Machine:
        group = self.db.device_groups.get(machine.rbac_group_id) if machine.rbac_group_id is not None else None
        return dataclasses.replace(
            machine,
            rbac_group_name=group["name"] if group else None,
            machine_tags=list(machine.machine_tags) if with_tags else [],
        )

    def get(self, principal: Principal, machine_id: str, *, with_tags: bool = True) -> Machine | None:
        machine = self.db.machines.get(machine_id)
        return self._copy(machine, with_tags=with_tags) if machine and _visible(principal, machine) else None

    def find_by_dns_name(self, principal: Principal, dns_name: str) -> Machine | None:
        found = [
            m for m in self.db.machines.values() if _visible(principal, m) and m.computer_dns_name.lower() == dns_name.lower()
        ]
        return self._copy(max(found, key=lambda m: m.last_seen)) if found else None

    def get_in_tenant(self, tenant_id: str, machine_id: str, *, lock: bool = True, with_tags: bool = True) -> Machine | None:
        machine = self.db.machines.get(machine_id)
        return self._copy(machine) if machine and machine.tenant_id == tenant_id else None

    def add_many(self, items: Iterable[Machine]) -> None:
        for machine in items:
            assert machine.id not in self.db.machines, f"duplicate machine id {machine.id}"
            self.db.machines[machine.id] = dataclasses.replace(machine, machine_tags=list(machine.machine_tags))

    def update_fields(self, machine_id: str, **values: Any) -> None:
        machine = self.db.machines.get(machine_id)
        if machine is not None:
            self.db.machines[machine_id] = dataclasses.replace(machine, **values)

    def mark_inactive_offboarded_before(self, cutoff: datetime) -> int:
        changed = 0
        for machine in self.db.machines.values():
            if machine.offboarded_at is not None and machine.offboarded_at <= cutoff and machine.health_status != "Inactive":
                machine.health_status = "Inactive"
                changed += 1
        return changed

    def count(self, tenant_id: str | None = None) -> int:
        return sum(1 for m in self.db.machines.values() if tenant_id is None or m.tenant_id == tenant_id)

    def tags(self, principal: Principal, limit: int = 200) -> list[str]:
        visible = [
            m for m in self.db.machines.values() if m.tenant_id == principal.tenant_id and principal.sees_group(m.rbac_group_id)
        ]
        return sorted({t for m in visible for t in m.machine_tags})[:limit]

    def ids_and_dns_names(self, tenant_id: str, health_status: str) -> list[tuple[str, str]]:
        found = [
            (m.id, m.computer_dns_name)
            for m in self.db.machines.values()
            if m.tenant_id == tenant_id and m.health_status == health_status and m.offboarded_at is None
        ]
        return sorted(found, key=lambda pair: pair[1])


class FakeActions(_Repository):
    def add(self, action: MachineAction, *, requestor_id: str | None = None) -> None:
        if action.status in ACTIVE_STATUSES and any(
            a.machine_id == action.machine_id and a.type is action.type and a.status in ACTIVE_STATUSES
            for a in self.db.actions.values()
        ):
            raise ActiveRequestAlreadyExists()
        self.db.actions[action.id] = copy.deepcopy(action)

    def add_with_event(self, action: MachineAction, event: dict[str, Any], *, requestor_id: str | None = None) -> None:
        self.add(action, requestor_id=requestor_id)
        self.db.audit.append(dict(event))

    def get(self, tenant_id: str, action_id: str) -> MachineAction | None:
        action = self.db.actions.get(action_id)
        return copy.deepcopy(action) if action and action.tenant_id == tenant_id else None

    def get_visible(self, principal: Principal, action_id: str) -> MachineAction | None:
        action = self.db.actions.get(action_id)
        if action is None or action.tenant_id != principal.tenant_id:
            return None
        machine = self.db.machines.get(action.machine_id)
        return copy.deepcopy(action) if machine and _visible(principal, machine) else None

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
        allowed = transition_sources(target, only_from)
        action = self.db.actions.get(action_id)
        if action is None or action.status not in allowed or (machine_id is not None and action.machine_id != machine_id):
            return False
        self.db.actions[action_id] = dataclasses.replace(action, status=target, last_update_date_time_utc=at, **values)
        return True

    def _by_machine(self, machine_id: str, statuses: Iterable[ActionStatus]) -> list[MachineAction]:
        wanted = set(statuses)
        found = [a for a in self.db.actions.values() if a.machine_id == machine_id and a.status in wanted]
        return [copy.deepcopy(a) for a in sorted(found, key=lambda a: (a.creation_date_time_utc, a.id))]

    def pending_for_machine(self, machine_id: str, limit: int = 10) -> list[MachineAction]:
        return self._by_machine(machine_id, [ActionStatus.PENDING])[:limit]

    def active_for_machine(self, machine_id: str) -> list[MachineAction]:
        return self._by_machine(machine_id, ACTIVE_STATUSES)

    def overdue(
        self,
        status: ActionStatus,
        *,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
        limit: int = 500,
    ) -> list[tuple[str, str]]:
        found = [
            (a.id, a.type.value)
            for a in self.db.actions.values()
            if a.status is status
            and (created_before is None or a.creation_date_time_utc < created_before)
            and (updated_before is None or a.last_update_date_time_utc < updated_before)
        ]
        return found[:limit]


class FakeAuditLog(_Repository):
    def append(self, **event: Any) -> None:
        self.db.audit.append(dict(event))

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
        def matches(e: dict[str, Any]) -> bool:
            return (
                (not tenant_id or e["tenant_id"] == tenant_id)
                and (not action or e["action"] == action or e["action"].startswith(action.rstrip(".") + "."))
                and (not machine_id or (e.get("machine_id") or "").lower() == machine_id.lower())
                and (not caller or caller.lower() in ((e.get("actor_name") or "").lower(), (e.get("actor_id") or "").lower()))
                and (since is None or e["occurred_at"] >= since)
            )

        events = [e for e in reversed(self.db.audit) if matches(e)]
        return [dict(e) for e in (events if limit is None else events[:limit])]

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
        def visible(e: dict[str, Any]) -> bool:
            machine = self.db.machines.get(e.get("machine_id") or "")
            if e.get("machine_id") is None:
                return True
            return (
                machine is not None and machine.tenant_id == principal.tenant_id and principal.sees_group(machine.rbac_group_id)
            )

        found = [
            dict(e)
            for e in reversed(self.db.audit)
            if e["tenant_id"] == principal.tenant_id
            and visible(e)
            and (action is None or e["action"] == action)
            and (actor is None or (e.get("actor_name") or "").lower().startswith(actor.lower()))
            and (machine_id is None or e.get("machine_id") == machine_id)
            and (outcome is None or (e["outcome_status"] < 400) == (outcome == "success"))
            and (since is None or e["occurred_at"] >= since)
            and (until is None or e["occurred_at"] <= until)
        ]
        return found[offset : offset + limit]

    def action_names(self, tenant_id: str) -> builtins.list[str]:
        return sorted({e["action"] for e in self.db.audit if e["tenant_id"] == tenant_id})


class FakeAuthorizationCodes(_Repository):
    def add(self, **values: Any) -> None:
        self.db.authorization_codes[values["code_hash"]] = {**values, "redeemed_at": None}

    def redeem(self, code_hash: str, at: datetime) -> dict[str, Any] | None:
        row = self.db.authorization_codes.get(code_hash)
        if row is None or row["redeemed_at"] is not None:
            return None
        row["redeemed_at"] = at
        return dict(row)

    def was_redeemed(self, code_hash: str) -> bool:
        row = self.db.authorization_codes.get(code_hash)
        return row is not None and row["redeemed_at"] is not None

    def purge_expired(self, before: datetime) -> int:
        gone = [k for k, v in self.db.authorization_codes.items() if v["expires_at"] < before]
        for key in gone:
            del self.db.authorization_codes[key]
        return len(gone)


class FakeConsoleSessions(_Repository):
    def add(self, **values: Any) -> None:
        self.db.console_sessions[values["id_hash"]] = dict(values)

    def get(self, id_hash: str) -> dict[str, Any] | None:
        row = self.db.console_sessions.get(id_hash)
        return dict(row) if row else None

    def delete(self, id_hash: str) -> bool:
        return self.db.console_sessions.pop(id_hash, None) is not None

    def purge_expired(self, before: datetime) -> int:
        gone = [k for k, v in self.db.console_sessions.items() if v["expires_at"] < before]
        for key in gone:
            del self.db.console_sessions[key]
        return len(gone)


class FakeSensors(_Repository):
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
    ) -> None:
        self.db.sensors[sensor_id] = {
            "id": sensor_id,
            "tenant_id": tenant_id,
            "machine_id": machine_id,
            "credential_hash": credential_hash,
            "generation": generation,
            "enrolled_at": enrolled_at,
            "superseded_at": None,
            "proof_hash": proof_hash,
        }

    def current_for_machine(self, machine_id: str) -> dict[str, Any] | None:
        for sensor in self.db.sensors.values():
            if sensor["machine_id"] == machine_id and sensor["superseded_at"] is None:
                return dict(sensor)
        return None

    def latest_generation(self, machine_id: str) -> int:
        return max((s["generation"] for s in self.db.sensors.values() if s["machine_id"] == machine_id), default=0)

    def supersede(self, machine_id: str, at: datetime) -> None:
        for sensor in self.db.sensors.values():
            if sensor["machine_id"] == machine_id and sensor["superseded_at"] is None:
                sensor["superseded_at"] = at

    def by_credential_hash(self, credential_hash: str) -> dict[str, Any] | None:
        for sensor in self.db.sensors.values():
            if sensor["credential_hash"] == credential_hash and sensor["superseded_at"] is None:
                return dict(sensor)
        return None

    def is_current(self, sensor_id: str) -> bool:
        sensor = self.db.sensors.get(sensor_id)
        return sensor is not None and sensor["superseded_at"] is None


class FakeOnboardingPackages(_Repository):
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
    ) -> None:
        self.db.onboarding_packages[package_id] = {
            "id": package_id,
            "tenant_id": tenant_id,
            "key_hash": key_hash,
            "created_at": created_at,
            "created_by": created_by,
            "expires_at": expires_at,
            "replaces_sensors": replaces_sensors,
            "revoked_at": None,
        }

    def find_valid(self, tenant_id: str, key_hash: str, now: datetime) -> dict[str, Any] | None:
        for package in self.db.onboarding_packages.values():
            usable = package["revoked_at"] is None and (package["expires_at"] is None or package["expires_at"] > now)
            if package["tenant_id"] == tenant_id and package["key_hash"] == key_hash and usable:
                return dict(package)
        return None

    def is_valid(self, tenant_id: str, key_hash: str, now: datetime) -> bool:
        return self.find_valid(tenant_id, key_hash, now) is not None

    def revoke(self, tenant_id: str, package_id: str, at: datetime) -> bool:
        package = self.db.onboarding_packages.get(package_id)
        if package is None or package["tenant_id"] != tenant_id or package["revoked_at"] is not None:
            return False
        package["revoked_at"] = at
        return True


class FakePackageKeys(_Repository):
    def get(self, tenant_id: str) -> tuple[str, str] | None:
        return self.db.package_keys.get(tenant_id)

    def add_if_missing(self, tenant_id: str, private_key: str, public_key: str, created_at: datetime) -> None:
        self.db.package_keys.setdefault(tenant_id, (private_key, public_key))


class FakeLists(_Repository):
    """Lists without OData evaluation (that is SQL, tested on the database): every visible row, one page."""

    def machines(self, principal: Principal, query: ODataQuery) -> Page[Machine]:
        items = [m for m in self.db.machines.values() if _visible(principal, m)]
        return Page(items, has_more=False, total=len(items) if query.count else None)

    def actions(self, principal: Principal, query: ODataQuery, *, machine_id: str | None = None) -> Page[MachineAction]:
        items = [
            a
            for a in self.db.actions.values()
            if a.tenant_id == principal.tenant_id
            and (machine_id is None or a.machine_id == machine_id)
            and _visible(principal, self.db.machines[a.machine_id])
        ]
        return Page(items, has_more=False, total=len(items) if query.count else None)


class FakeSigningKeys(_Repository):
    def list(self) -> list[SigningKey]:
        return list(self.db.signing_keys.values())

    def add_first(self, key: SigningKey) -> bool:
        if self.db.signing_keys:
            return False
        self.db.signing_keys[key.kid] = key
        return True

    def replace_active(self, new_key: SigningKey) -> None:
        for kid, key in self.db.signing_keys.items():
            if key.active:
                self.db.signing_keys[kid] = dataclasses.replace(key, active=False)
        self.db.signing_keys[new_key.kid] = new_key

    def retire(self, kid: str, at: datetime) -> bool:
        key = self.db.signing_keys.get(kid)
        if key is None or key.active or key.retired_at is not None:
            return False
        self.db.signing_keys[kid] = dataclasses.replace(key, retired_at=at)
        return True

    def setting(self, name: str) -> str | None:
        return self.db.authority_settings.get(name)

    def record_setting(self, name: str, value: str, *, replace: bool) -> str:
        if replace or name not in self.db.authority_settings:
            self.db.authority_settings[name] = value
        return self.db.authority_settings[name]


class DuplicateName(Exception):
    """What the database's unique constraints raise, as the fake sees it."""


class FakeIdentity(_Repository):
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
    ) -> None:
        if client_id in self.db.applications:
            raise DuplicateName(client_id)
        self.db.applications[client_id] = {
            "client_id": client_id,
            "tenant_id": tenant_id,
            "display_name": display_name,
            "secret_hash": secret_hash,
            "roles": sorted(set(roles)),
            "delegated_permissions": sorted(set(delegated_permissions)),
            "enabled": enabled,
            "created_at": created_at,
            "public_client": public_client,
        }

    def get_application(self, client_id: str) -> dict[str, Any] | None:
        app = self.db.applications.get(client_id)
        return dict(app) if app else None

    def find_application(self, tenant_id: str, client_id_or_name: str) -> dict[str, Any] | None:
        for app in self.db.applications.values():
            if app["tenant_id"] == tenant_id and client_id_or_name in (app["client_id"], app["display_name"]):
                return dict(app)
        return None

    def list_applications(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        return [dict(a) for a in self.db.applications.values() if not tenant_id or a["tenant_id"] == tenant_id]

    def update_application(self, client_id: str, **values: Any) -> bool:
        app = self.db.applications.get(client_id)
        if app is None:
            return False
        app.update(values)
        return True

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
    ) -> None:
        if any(u["tenant_id"] == tenant_id and u["upn"] == upn.lower() for u in self.db.users.values()):
            raise DuplicateName(upn)
        self.db.users[user_id] = {
            "id": user_id,
            "tenant_id": tenant_id,
            "upn": upn.lower(),
            "display_name": display_name,
            "password_hash": password_hash,
            "enabled": enabled,
            "created_at": created_at,
            "external_issuer": None,
            "external_object_id": None,
            "groups": set(),
        }

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        user = self.db.users.get(user_id)
        return dict(user) if user else None

    def find_user(self, tenant_id: str, upn: str) -> dict[str, Any] | None:
        for user in self.db.users.values():
            if user["tenant_id"] == tenant_id and user["upn"] == upn.lower():
                return dict(user)
        return None

    def find_external_user(self, tenant_id: str, issuer: str, object_id: str) -> dict[str, Any] | None:
        for user in self.db.users.values():
            if user["tenant_id"] == tenant_id and (user["external_issuer"], user["external_object_id"]) == (issuer, object_id):
                return dict(user)
        return None

    def list_users(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        return [dict(u) for u in self.db.users.values() if not tenant_id or u["tenant_id"] == tenant_id]

    def update_user(self, user_id: str, **values: Any) -> bool:
        user = self.db.users.get(user_id)
        if user is None:
            return False
        user.update(values)
        return True

    def _add_named(self, table: dict[int, dict[str, Any]], tenant_id: str, name: str, **extra: Any) -> int:
        if any(row["tenant_id"] == tenant_id and row["name"] == name for row in table.values()):
            raise DuplicateName(name)
        row_id = self.db.new_id()
        table[row_id] = {"id": row_id, "tenant_id": tenant_id, "name": name, **extra}
        return row_id

    def add_role(self, tenant_id: str, name: str, capabilities: Iterable[str]) -> int:
        return self._add_named(self.db.roles, tenant_id, name, capabilities=sorted(set(capabilities)))

    def add_user_group(self, tenant_id: str, name: str) -> int:
        return self._add_named(self.db.user_groups, tenant_id, name, members=set(), roles=set(), device_groups=set())

    def id_by_name(self, kind: str, tenant_id: str, name: str) -> int | None:
        table = {"role": self.db.roles, "user_group": self.db.user_groups, "device_group": self.db.device_groups}[kind]
        return next((i for i, row in table.items() if row["tenant_id"] == tenant_id and row["name"] == name), None)

    def add_member(self, user_group_id: int, user_id: str) -> None:
        self.db.user_groups[user_group_id]["members"].add(user_id)

    def assign_role(self, user_group_id: int, role_id: int) -> None:
        self.db.user_groups[user_group_id]["roles"].add(role_id)

    def grant_device_group(self, device_group_id: int, user_group_id: int) -> None:
        self.db.user_groups[user_group_id]["device_groups"].add(device_group_id)

    def list_roles(self, tenant_id: str) -> list[dict[str, Any]]:
        return sorted((dict(r) for r in self.db.roles.values() if r["tenant_id"] == tenant_id), key=lambda r: r["name"])

    def list_user_groups(self, tenant_id: str) -> list[dict[str, Any]]:
        groups = []
        for group in sorted(self.db.user_groups.values(), key=lambda g: g["name"]):
            if group["tenant_id"] != tenant_id:
                continue
            groups.append(
                {
                    "id": group["id"],
                    "tenant_id": tenant_id,
                    "name": group["name"],
                    "members": sorted(self.db.users[u]["upn"] for u in group["members"]),
                    "roles": sorted(self.db.roles[r]["name"] for r in group["roles"]),
                    "device_groups": sorted(self.db.device_groups[d]["name"] for d in group["device_groups"]),
                }
            )
        return groups

    def _groups_of(self, user_id: str) -> list[dict[str, Any]]:
        return [g for g in self.db.user_groups.values() if user_id in g["members"]]

    def capabilities_of(self, user_id: str) -> set[str]:
        return {c for g in self._groups_of(user_id) for r in g["roles"] for c in self.db.roles[r]["capabilities"]}

    def reachable_device_groups(self, tenant_id: str, user_id: str) -> set[int]:
        assigned = {d for g in self.db.user_groups.values() for d in g["device_groups"]}
        mine = {d for g in self._groups_of(user_id) for d in g["device_groups"]}
        return {i for i, d in self.db.device_groups.items() if d["tenant_id"] == tenant_id and (i not in assigned or i in mine)}

    def count_users(self, tenant_id: str) -> int:
        return sum(1 for u in self.db.users.values() if u["tenant_id"] == tenant_id)


class FakeControl(_Repository):
    def state(self) -> tuple[float, int]:
        return self.db.clock_offset, self.db.reset_epoch

    def snapshot(self) -> ControlSnapshot:
        return ControlSnapshot(self.db.clock_offset, self.db.reset_epoch, tuple(self.list_faults()))

    def advance_clock(self, seconds: float) -> float:
        self.db.clock_offset += seconds
        return self.db.clock_offset

    def set_behavior(self, behavior: Behavior, now: datetime) -> None:
        self.db.behaviors[behavior.machine_id] = behavior

    def get_behavior(self, machine_id: str) -> Behavior | None:
        return self.db.behaviors.get(machine_id)

    def delete_behavior(self, machine_id: str) -> bool:
        return self.db.behaviors.pop(machine_id, None) is not None

    def add_fault(self, fault: Fault) -> None:
        self.db.faults[fault.id] = fault

    def count_faults(self) -> int:
        return len(self.db.faults)

    def list_faults(self) -> list[Fault]:
        return sorted(self.db.faults.values(), key=lambda f: (f.created_at, f.id))

    def delete_fault(self, fault_id: str) -> bool:
        return self.db.faults.pop(fault_id, None) is not None

    def take_fault(self, fault_id: str) -> bool:
        fault = self.db.faults.get(fault_id)
        if fault is None or fault.remaining is None or fault.remaining <= 0:
            return False
        if fault.remaining == 1:
            del self.db.faults[fault_id]
        else:
            self.db.faults[fault_id] = dataclasses.replace(fault, remaining=fault.remaining - 1)
        return True

    def record_request(self, *, keep: int, **values: Any) -> None:
        self.db.requests = [*self.db.requests, values][-keep:]

    def list_requests(self, operation: str | None, limit: int) -> list[dict[str, Any]]:
        rows = [r for r in reversed(self.db.requests) if operation is None or r.get("operation") == operation]
        return rows[:limit]

    def wipe_fleet(self) -> int:
        db = self.db
        db.behaviors, db.faults, db.requests = {}, {}, []
        db.actions, db.sensors, db.machines, db.audit = {}, {}, {}, []
        db.clock_offset = 0.0
        db.reset_epoch += 1
        return db.reset_epoch


class FakeUnitOfWork:
    """One unit of work on a ``FakeDatabase``: changes are kept only when committed."""

    def __init__(self, db: FakeDatabase, *, write: bool = True) -> None:
        self.db = db
        self.write = write
        self.commits = 0
        self._snapshot: FakeDatabase | None = None
        self.tenants = FakeTenants(self)
        self.device_groups = FakeDeviceGroups(self)
        self.machines = FakeMachines(self)
        self.actions = FakeActions(self)
        self.audit = FakeAuditLog(self)
        self.sensors = FakeSensors(self)
        self.onboarding_packages = FakeOnboardingPackages(self)
        self.package_keys = FakePackageKeys(self)
        self.lists = FakeLists(self)
        self.identity = FakeIdentity(self)
        self.signing_keys = FakeSigningKeys(self)
        self.authorization_codes = FakeAuthorizationCodes(self)
        self.console_sessions = FakeConsoleSessions(self)
        self.control = FakeControl(self)

    def __enter__(self) -> FakeUnitOfWork:
        assert self._snapshot is None, "a unit of work is not re-entrant"
        self._snapshot = copy.deepcopy(self.db)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._snapshot is not None
        # Left without commit: put back what was there when the unit of work began.
        self.db.__dict__.update(self._snapshot.__dict__)
        self._snapshot = None

    def commit(self) -> None:
        assert self._snapshot is not None, "commit outside the unit of work"
        if not self.write:
            raise AssertionError("a read-only unit of work was committed")
        self._snapshot = copy.deepcopy(self.db)
        self.commits += 1


class FakeUnitOfWorkFactory:
    """Makes fake units of work that share one ``FakeDatabase``."""

    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.db = db or FakeDatabase()

    def __call__(self, *, write: bool = True) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.db, write=write)


def _conforms_to_the_ports(factory: FakeUnitOfWorkFactory) -> UnitOfWorkFactory:
    """Never called: `MYPYPATH=src mypy tests/unit/fakes.py` confirms the fake implements every port."""
    return factory
