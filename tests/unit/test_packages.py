"""Onboarding and offboarding packages, and machine ids derived from device identities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bulwark.domain.machines import normalize_machine_id
from bulwark.domain.sensors import (
    InvalidPackage,
    build_offboarding_package,
    build_onboarding_package,
    derive_machine_id,
    new_signing_key,
    read_onboarding_package,
    verify_offboarding_package,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"


def test_machine_ids_are_stable_40_hex_and_differ_by_tenant() -> None:
    machine_id = derive_machine_id(TENANT, "device-1")
    assert machine_id == derive_machine_id(TENANT, "device-1")
    assert normalize_machine_id(machine_id) == machine_id and len(machine_id) == 40
    assert machine_id != derive_machine_id("another-tenant", "device-1")


def test_onboarding_package_round_trip_and_shape_checks() -> None:
    package = build_onboarding_package(
        tenant_id=TENANT, server_url="http://x/", onboarding_key="bwo_k", signing_public_key="pub", created_at=NOW
    )
    assert read_onboarding_package(package)["serverUrl"] == "http://x"
    with pytest.raises(InvalidPackage):
        read_onboarding_package({**package, "kind": "something-else"})
    with pytest.raises(InvalidPackage):
        read_onboarding_package({**package, "onboardingKey": ""})


@pytest.fixture
def keys() -> tuple[str, str]:
    return new_signing_key()


def offboarding(private: str, issued: datetime = NOW, days: float = 7) -> dict:
    return build_offboarding_package(
        tenant_id=TENANT, private_key=private, issued_at=issued, expires_at=issued + timedelta(days=days), package_id="p1"
    )


def test_offboarding_package_is_accepted_until_it_expires(keys: tuple[str, str]) -> None:
    private, public = keys
    package = offboarding(private)
    verify_offboarding_package(package, tenant_id=TENANT, public_key=public, now=NOW + timedelta(days=6, hours=23))
    with pytest.raises(InvalidPackage, match="expired"):
        verify_offboarding_package(package, tenant_id=TENANT, public_key=public, now=NOW + timedelta(days=7))


def test_offboarding_package_refuses_forgery_and_other_tenants(keys: tuple[str, str]) -> None:
    private, public = keys
    package = offboarding(private)
    extended = {**package, "expiresAt": "2099-01-01T00:00:00Z"}
    with pytest.raises(InvalidPackage, match="signature"):
        verify_offboarding_package(extended, tenant_id=TENANT, public_key=public, now=NOW)
    other_private, _ = new_signing_key()
    with pytest.raises(InvalidPackage, match="signature"):
        verify_offboarding_package(offboarding(other_private), tenant_id=TENANT, public_key=public, now=NOW)
    with pytest.raises(InvalidPackage, match="another tenant"):
        verify_offboarding_package(package, tenant_id="someone-else", public_key=public, now=NOW)
    with pytest.raises(InvalidPackage):
        verify_offboarding_package({"kind": "bulwark-onboarding-package"}, tenant_id=TENANT, public_key=public, now=NOW)
