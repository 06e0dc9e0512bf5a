"""Holding an onboarding package is not enough to become another, active device."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.service.sensors import issue_onboarding_package
from bulwark.settings import Settings
from bulwark.store.tables import onboarding_packages
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import TENANT
from tests.identity_support import ALL_APP_ROLES, app_token, bearer, register_app
from tests.support import child_env

WINDOWS = {"computerDnsName": "finance-01.contoso.com", "osPlatform": "Windows11", "osBuild": 22631}


@pytest.fixture
def client(settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock):
    with TestClient(create_app(settings, clock=clock)) as test_client:
        test_client.headers.update(bearer(app_token(test_client, register_app(uow_factory, ALL_APP_ROLES))))
        yield test_client


def package(client: TestClient) -> dict:
    answer = client.get("/api/onboarding/package")
    assert answer.status_code == 200, answer.text
    return answer.json()


def enrol(client: TestClient, pkg: dict, identity: str = "finance-01", **proof: str | None):
    body = {"tenantId": pkg["tenantId"], "onboardingKey": pkg["onboardingKey"], "deviceIdentity": identity, "properties": WINDOWS}
    return client.post("/sensor/v1/enrol", json={**body, **{k: v for k, v in proof.items() if v is not None}})


def sensor(enrolment: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {enrolment['credential']}"}


def test_enrolling_as_an_active_device_without_its_proof_is_refused(client: TestClient) -> None:
    device = enrol(client, package(client)).json()
    pending = client.post(f"/api/machines/{device['machineId']}/offboard", json={"Comment": "leaver"}).json()

    # The attacker downloads (or finds) another package and claims the Finance machine's identity.
    attempts = [
        enrol(client, package(client)),
        enrol(client, package(client), currentCredential="bws_guessed"),
        enrol(client, package(client), reonboardingProof="bwr_guessed"),
    ]
    for attempt in attempts:
        assert attempt.status_code == 409, attempt.text
        assert attempt.json()["error"]["code"] == "DeviceAlreadyEnrolled"
        assert "credential" not in attempt.json()

    # The real device is untouched: its credential works and the pending offboard is still its own.
    claimed = client.get("/sensor/v1/actions/next", headers=sensor(device))
    assert claimed.status_code == 200 and claimed.json()["id"] == pending["id"]


def test_the_device_itself_re_enrols_with_its_credential_or_its_proof(client: TestClient) -> None:
    first = enrol(client, package(client)).json()
    assert first["reonboardingProof"].startswith("bwr_")
    second = enrol(client, package(client), currentCredential=first["credential"])
    assert second.status_code == 200, second.text
    assert second.json()["generation"] == 2
    assert client.post("/sensor/v1/checkin", json={}, headers=sensor(first)).status_code == 401

    # After a local offboarding package the device has no credential, but keeps its proof.
    third = enrol(client, package(client), reonboardingProof=second.json()["reonboardingProof"])
    assert third.status_code == 200, third.text
    assert third.json()["generation"] == 3
    # Each enrolment hands out a new proof; the earlier ones prove nothing any more.
    stale = enrol(client, package(client), reonboardingProof=second.json()["reonboardingProof"])
    assert stale.status_code == 409


def test_an_offboarded_machine_onboards_again_without_proof(client: TestClient) -> None:
    device = enrol(client, package(client)).json()
    action = client.post(f"/api/machines/{device['machineId']}/offboard", json={"Comment": "leaver"}).json()
    client.get("/sensor/v1/actions/next", headers=sensor(device))
    client.post(f"/sensor/v1/actions/{action['id']}/outcome", json={"status": "Succeeded"}, headers=sensor(device))
    again = enrol(client, package(client))
    assert again.status_code == 200, again.text
    assert again.json()["machineId"] == device["machineId"]


def test_an_operator_package_may_replace_active_sensors(
    client: TestClient, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    enrol(client, package(client))
    operator = issue_onboarding_package(TENANT, "http://testserver", None, uow_factory(), clock, replaces_sensors=True)
    assert enrol(client, operator).status_code == 200


def test_onboarding_packages_expire(
    client: TestClient, settings: Settings, clock: FrozenClock, uow_factory: UnitOfWorkFactory
) -> None:
    pkg = package(client)
    assert pkg["expiresAt"] > pkg["createdAt"]
    clock.advance(settings.onboarding_package_valid_days * 86400 + 1)
    expired = enrol(client, pkg, identity="new-device")
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "Unauthorized"


def test_a_revoked_package_enrols_nothing_and_revocation_is_a_command(
    client: TestClient, database_url: str, uow_factory: UnitOfWorkFactory, tmp_path
) -> None:
    pkg = package(client)
    assert enrol(client, pkg, identity="before-revoke").status_code == 200
    env = child_env(
        {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(tmp_path), "BULWARK_DEFAULT_TENANT_ID": TENANT}
    )
    done = subprocess.run(
        [sys.executable, "-m", "bulwark.cli", "sensor", "package", "revoke", pkg["packageId"]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"Revoked onboarding package {pkg['packageId']}" in done.stderr
    refused = enrol(client, pkg, identity="after-revoke")
    assert refused.status_code == 401
    with uow_factory(write=False) as uow:
        revoked_at = uow.conn.execute(
            select(onboarding_packages.c.revoked_at).where(onboarding_packages.c.id == pkg["packageId"])
        ).scalar()
    assert revoked_at is not None
    again = subprocess.run(
        [sys.executable, "-m", "bulwark.cli", "sensor", "package", "revoke", pkg["packageId"]],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1
