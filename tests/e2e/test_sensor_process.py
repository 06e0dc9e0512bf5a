"""Real server and real sensor processes: offboard, re-onboard, crashes, packages, cross-process wake-ups."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bulwark.clock import FrozenClock, SystemClock
from bulwark.sensor.agent import E_ABORT, E_FAIL
from bulwark.service.sensors import issue_offboarding_package, issue_onboarding_package
from bulwark.store.db import create_db_engine
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import child_env, server_process

pytestmark = pytest.mark.slow

WINDOWS_DEVICE = ["--os-platform", "Windows11", "--os-version", "23H2", "--os-build", "22631"]


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {"BULWARK_DATABASE_URL": database_url, "BULWARK_DATA_DIR": str(data_dir), "BULWARK_DEFAULT_TENANT_ID": TENANT}


HEADERS: dict[str, str] = {}


def write_package(uow_factory: SqlUnitOfWorkFactory, base: str, path: Path, api_base: str | None = None) -> Path:
    """Seed the tenant, sign in an application for API calls to ``api_base``, write an onboarding package."""
    seed(uow_factory, [])
    with httpx.Client(base_url=api_base or base) as client:
        HEADERS.update(bearer(app_token(client, register_app(uow_factory, name=f"e2e {path.parent.name}"))))
    path.write_text(json.dumps(issue_onboarding_package(TENANT, base, None, uow_factory(), SystemClock())))
    return path


def bulwark(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start ``bulwark ARGS`` as a real process."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "bulwark.cli", *args], env=child_env(env), stdout=out, stderr=subprocess.STDOUT
    )


def sensor(state: Path, *args: str, log: Path) -> subprocess.Popen:
    return bulwark(
        "sensor", "run", "--state", str(state), "--check-in-interval", "1", "--poll-wait", "20", *WINDOWS_DEVICE, *args, log=log
    )


def read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_enrolled(state: Path, generation: int = 1) -> str:
    enrolment = wait_for(
        lambda: (read_state(state).get("enrolment") or {}).get("generation") == generation and read_state(state)["enrolment"],
        what=f"enrolment generation {generation}",
    )
    return enrolment["machineId"]


def offboard(base: str, machine_id: str) -> dict:
    response = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "e2e"}, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def action(base: str, action_id: str) -> dict:
    return httpx.get(f"{base}/api/machineactions/{action_id}", headers=HEADERS).json()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_offboard_stops_the_sensor_and_reonboard_restores_the_id(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "device" / "sensor-state.json"
    with server_process(env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        proc = sensor(state, "--onboarding-package", str(package), "--dns-name", "e2e-1.contoso.com", log=log)
        try:
            machine_id = wait_enrolled(state)
            created = offboard(base, machine_id)
            assert proc.wait(20) == 0, log.read_text()
        finally:
            stop(proc)
        # The service stopped, but the onboarding information is still on the device.
        kept = read_state(state)
        assert kept["service"] == "stopped"
        assert kept["onboarding"]["tenantId"] == TENANT and kept["onboarding"]["onboardingKey"]
        assert action(base, created["id"])["status"] == "Succeeded"

        # It does not start again on its own.
        again = sensor(state, log=log)
        assert again.wait(20) == 3, log.read_text()

        # Offboarding it again is refused: nobody would carry the action out.
        refused = httpx.post(f"{base}/api/machines/{machine_id}/offboard", json={"Comment": "again"}, headers=HEADERS)
        assert refused.status_code == 400 and "already offboarded" in refused.json()["error"]["message"]
        reonboarded = sensor(state, "--reonboard", log=log)
        try:
            assert wait_enrolled(state, generation=2) == machine_id
            second = offboard(base, machine_id)
            assert reonboarded.wait(20) == 0, log.read_text()
            assert action(base, second["id"])["status"] == "Succeeded"
        finally:
            stop(reonboarded)


def test_sensor_run_simulates_a_windows_11_device_it_names_and_reonboard_refreshes_it(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "device" / "sensor-state.json"

    def run(*args: str) -> subprocess.Popen:
        return bulwark("sensor", "run", "--state", str(state), "--check-in-interval", "1", "--poll-wait", "20", *args, log=log)

    def machine(base: str, machine_id: str) -> dict:
        return httpx.get(f"{base}/api/machines/{machine_id}", headers=HEADERS).json()

    with server_process(env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        proc = run("--onboarding-package", str(package))  # no profile flags
        try:
            machine_id = wait_enrolled(state)
            seen = machine(base, machine_id)
            assert seen["osPlatform"] == "Windows11" and seen["osBuild"] == 22631
            assert seen["computerDnsName"].startswith("sim-") and seen["computerDnsName"] != "localhost"
            assert f"Simulating: {seen['computerDnsName']}, Windows11" in log.read_text()
            created = offboard(base, machine_id)  # the walkthrough's offboard works on it
            assert proc.wait(20) == 0, log.read_text()
        finally:
            stop(proc)
        assert action(base, created["id"])["status"] == "Succeeded"
        again = run("--reonboard", "--dns-name", "rebuilt.contoso.com", "--os-platform", "Windows10", "--os-build", "19045")
        try:
            assert wait_enrolled(state, generation=2) == machine_id
            assert "Starting from the existing state" in log.read_text()
            refreshed = machine(base, machine_id)
            assert (refreshed["computerDnsName"], refreshed["osPlatform"], refreshed["osBuild"]) == (
                "rebuilt.contoso.com",
                "Windows10",
                19045,
            )
        finally:
            stop(again)


def test_a_sensor_crashing_mid_action_still_ends_it(database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "state.json"
    with server_process(env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        slow = sensor(state, "--onboarding-package", str(package), "--action-delay", "60", log=log)
        try:
            machine_id = wait_enrolled(state)
            created = offboard(base, machine_id)
            wait_for(lambda: action(base, created["id"])["status"] == "InProgress", what="the claim")
            # The server records the claim before the sensor has read its answer: wait for the
            # sensor's own record too, so the kill lands while it carries the action out.
            wait_for(
                lambda: (read_state(state).get("currentAction") or {}).get("id") == created["id"], what="the sensor's record"
            )
            slow.kill()
            slow.wait()
        finally:
            stop(slow)
        assert read_state(state)["currentAction"]["id"] == created["id"]

        restarted = sensor(state, log=log)
        try:
            ended = wait_for(
                lambda: action(base, created["id"])["status"] != "InProgress" and action(base, created["id"]), what="the end"
            )
            assert (ended["status"], ended["errorHResult"]) == ("Failed", E_ABORT)
            # Still onboarded and running: a new offboard goes through.
            again = offboard(base, machine_id)
            assert restarted.wait(20) == 0, log.read_text()
            assert action(base, again["id"])["status"] == "Succeeded"
        finally:
            stop(restarted)


def test_a_sensor_killed_between_the_servers_claim_and_its_own_record_finishes_the_action(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "state.json"
    with server_process(env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        first = sensor(state, "--onboarding-package", str(package), log=log)
        try:
            machine_id = wait_enrolled(state)
        finally:
            first.kill()
            first.wait()
        # The claim the dead sensor's long poll would have made: recorded by the server, never
        # seen by the device (its state has no current action).
        created = offboard(base, machine_id)
        credential = read_state(state)["enrolment"]["credential"]
        claimed = httpx.get(f"{base}/sensor/v1/actions/next", headers={"Authorization": f"Bearer {credential}"})
        # The dead sensor's own long poll may still be held by the server and claim the action first
        # (204 here): either way the server recorded a claim the device never saw.
        assert claimed.status_code in (200, 204)
        if claimed.status_code == 200:
            assert claimed.json()["id"] == created["id"]
        assert action(base, created["id"])["status"] == "InProgress" and not read_state(state).get("currentAction")

        restarted = sensor(state, log=log)
        try:
            assert restarted.wait(30) == 0, log.read_text()  # it learnt the action, carried it out, stopped
        finally:
            stop(restarted)
        assert action(base, created["id"])["status"] == "Succeeded"
        assert read_state(state)["service"] == "stopped"


def test_a_sensor_told_to_fail_offboards_reports_them_failed_and_keeps_running(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "state.json"
    with server_process(env=_env(database_url, tmp_path), log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        proc = sensor(state, "--onboarding-package", str(package), "--fail-offboard", log=log)
        try:
            machine_id = wait_enrolled(state)
            # Twice: a failed offboard leaves the device onboarded, so the playbook may try again.
            for attempt in range(2):
                created = offboard(base, machine_id)
                ended = wait_for(
                    lambda: (
                        action(base, created["id"])["status"] not in ("Pending", "InProgress") and action(base, created["id"])
                    ),
                    what=f"offboard {attempt} to end",
                )
                assert (ended["status"], ended["errorHResult"]) == ("Failed", E_FAIL)
                assert proc.poll() is None, log.read_text()
            kept = read_state(state)
            assert kept["service"] == "running" and kept["currentAction"] is None
        finally:
            stop(proc)


def test_offboarding_package_removes_onboarding_and_expired_ones_are_refused(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    log, state = tmp_path / "sensor.log", tmp_path / "state.json"
    env = _env(database_url, tmp_path)
    with server_process(env=env, log=tmp_path / "server.log") as base:
        package = write_package(uow_factory, base, tmp_path / "onboarding.json")
        proc = sensor(state, "--onboarding-package", str(package), log=log)
        try:
            wait_enrolled(state)
            eight_days_ago = FrozenClock(SystemClock().now() - timedelta(days=8))
            expired = tmp_path / "expired.json"
            expired.write_text(
                json.dumps(issue_offboarding_package(TENANT, timedelta(days=7), None, uow_factory(), eight_days_ago))
            )
            refused = subprocess.run(
                [sys.executable, "-m", "bulwark.cli", "sensor", "offboard", "--state", str(state), "--package", str(expired)],
                env=child_env(env),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert refused.returncode == 2 and "expired" in refused.stderr
            assert read_state(state)["onboarding"] is not None and proc.poll() is None

            valid = tmp_path / "offboarding.json"
            issued = subprocess.run(
                [sys.executable, "-m", "bulwark.cli", "sensor", "package", "offboarding", "--out", str(valid)],
                env=child_env(env),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert issued.returncode == 0, issued.stderr
            applied = subprocess.run(
                [sys.executable, "-m", "bulwark.cli", "sensor", "offboard", "--state", str(state), "--package", str(valid)],
                env=child_env(env),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert applied.returncode == 0, applied.stderr
            # The running sensor notices and stops; nothing of the onboarding is left.
            assert proc.wait(20) == 0, log.read_text()
        finally:
            stop(proc)
        removed = read_state(state)
        assert removed["onboarding"] is None and removed["enrolment"] is None
        not_onboarded = sensor(state, log=log)
        assert not_onboarded.wait(20) == 2


@pytest.mark.postgres
def test_a_sensor_on_one_server_is_woken_by_an_action_created_on_another(postgres_database: str, tmp_path: Path) -> None:
    engine = create_db_engine(postgres_database, pool_size=2)
    uow_factory = SqlUnitOfWorkFactory(engine)
    log, state = tmp_path / "sensor.log", tmp_path / "state.json"
    env = _env(postgres_database, tmp_path)
    try:
        with server_process(env=env, log=tmp_path / "a.log") as base_a, server_process(env=env, log=tmp_path / "b.log") as base_b:
            # The sensor talks to A; the offboard goes to B (whose tokens name B as their issuer).
            package = write_package(uow_factory, base_a, tmp_path / "onboarding.json", api_base=base_b)
            # Long polls of 20 s and rare check-ins: only a wake-up through PostgreSQL is quick.
            proc = bulwark(
                "sensor",
                "run",
                "--state",
                str(state),
                "--onboarding-package",
                str(package),
                "--check-in-interval",
                "600",
                "--poll-wait",
                "20",
                *WINDOWS_DEVICE,
                log=log,
            )
            try:
                machine_id = wait_enrolled(state)
                time.sleep(0.5)  # the sensor is now waiting in its long poll on server A
                started = time.monotonic()
                created = offboard(base_b, machine_id)
                assert proc.wait(20) == 0, log.read_text()
                assert time.monotonic() - started < 10
            finally:
                stop(proc)
            assert action(base_b, created["id"])["status"] == "Succeeded"
    finally:
        engine.dispose()
