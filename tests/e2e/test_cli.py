"""The `bulwark` command line against real servers and simulated devices: offboard, machines, actions, errors, 429."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bulwark.cli.api.output import (
    EXIT_API_ERROR,
    EXIT_AUTH_ERROR,
    EXIT_NOT_SUCCEEDED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
)
from bulwark.client import (
    DEFAULT_SCOPE,
    NO_RETRIES,
    BulwarkClient,
    ClientCredentials,
    MachineAction,
    TokenCache,
    TooManyRequests,
)
from bulwark.client.token_cache import CacheKey
from bulwark.sensor.agent import E_FAIL
from tests.conftest import make_machine
from tests.e2e.cli_support import LiveServer, live_server, sdk, sensor_fleet, wait_until
from tests.support import free_port

pytestmark = pytest.mark.slow

MAC = make_machine(
    100,
    os_platform="macOS",
    version="14.5",
    os_build=None,
    agent_version="101.24052.0001",
    computer_dns_name="mac-100.contoso.com",
)
OLD_WINDOWS = make_machine(101, os_platform="Windows10", version="1607", os_build=14393, computer_dns_name="old-101.contoso.com")
SERVERS = [make_machine(i, os_platform="WindowsServer2022", version="21H2", os_build=20348) for i in (200, 201, 202)]
NETWORKED = make_machine(
    23, ip_addresses=[{"ipAddress": "10.1.2.3", "macAddress": None, "type": None, "operationalStatus": "Up"}]
)
FLEET = [make_machine(i) for i in range(1, 41) if i != 23] + [NETWORKED, MAC, OLD_WINDOWS] + SERVERS


def machine_id(index: int) -> str:
    """The id of seeded machine `index` (see `make_machine`)."""
    return make_machine(index).id


def dns_name(index: int) -> str:
    """The computer DNS name of seeded machine `index`."""
    return make_machine(index).computer_dns_name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each test offboards machines no other test touches."""
    with live_server(tmp_path_factory.mktemp("cli-server"), FLEET) as live:
        yield live


# Simulated devices check in every few seconds and hold their long polls briefly; an offboard
# wakes them at once. Refusing devices work a second on each action, so that the wait sees it
# InProgress before it fails.
DEVICE_PACING = ("--check-in-interval", "5", "--poll-wait", "2")
REFUSING_WORK_SECONDS = "1"
# A machine of the sensor server that no device serves: its actions stay Pending.
UNSERVED = make_machine(400)


@dataclass(frozen=True)
class Devices:
    """Machine ids of the simulated devices of `sensor_server`, one per test that offboards one."""

    complying: list[str]  # offboards succeed
    refusing: list[str]  # offboards fail (E_FAIL), the devices keep running


@pytest.fixture(scope="module")
def sensor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: its devices join an inventory that other tests list and offboard by filter."""
    with live_server(tmp_path_factory.mktemp("sensor-server"), [UNSERVED]) as live:
        yield live


@pytest.fixture(scope="module")
def devices(sensor_server: LiveServer) -> Iterator[Devices]:
    """Two simulated fleets enrolled with an onboarding package downloaded over the API."""
    with (
        sensor_fleet(sensor_server, "complies", 3, *DEVICE_PACING) as complying,
        sensor_fleet(
            sensor_server, "refuses", 3, "--fail-offboard", "--action-delay", REFUSING_WORK_SECONDS, *DEVICE_PACING
        ) as refusing,
    ):
        yield Devices(complying=complying, refusing=refusing)


@pytest.fixture(scope="module")
def sweeping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose sweeper times out actions not picked up within a second."""
    settings = {"BULWARK_ACTION_PICKUP_TIMEOUT_SECONDS": "1", "BULWARK_SWEEP_INTERVAL_SECONDS": "0.5"}
    with live_server(tmp_path_factory.mktemp("sweeping-server"), [UNSERVED], settings=settings) as live:
        yield live


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server allowing two calls a second per operation, to meet 429 quickly."""
    machines = [make_machine(i) for i in range(300, 310)]
    with live_server(tmp_path_factory.mktemp("limited-server"), machines, rate_limit="2/second") as live:
        yield live


def actions_of(server: LiveServer, machine: str) -> list[dict]:
    """The machine's actions, as the API lists them."""
    with sdk(server) as client:
        return [a.model_dump(mode="json", by_alias=True) for a in client.list_actions(filter=f"machineId eq '{machine}'")]


# offboard -----------------------------------------------------------------------------------


def test_offboard_prints_the_new_pending_action(server: LiveServer) -> None:
    result = server.run_cli("offboard", machine_id(1), "--comment", "Retired laptop", "--external-id", "CHG-1")
    assert result.exit_code == EXIT_OK, result.stderr
    [action] = actions_of(server, machine_id(1))
    assert action["id"] in result.stdout and "Pending" in result.stdout
    assert action["requestorComment"] == "Retired laptop" and action["externalId"] == "CHG-1"
    assert f"action {action['id']} is Pending" in result.stderr


def test_offboard_json_prints_only_the_action(server: LiveServer) -> None:
    result = server.run_cli("offboard", dns_name(2), "--comment", "by name", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    action = json.loads(result.stdout)
    assert action["type"] == "Offboard" and action["status"] == "Pending"
    assert action["machineId"] == machine_id(2) and action["computerDnsName"] == dns_name(2)
    assert result.stderr == ""


def test_wait_gives_up_with_exit_5_when_no_device_answers(server: LiveServer) -> None:
    result = server.run_cli(
        "offboard", machine_id(3), "-c", "nobody home", "--wait", "--timeout", "0.6", "--poll-interval", "0.1"
    )
    assert result.exit_code == EXIT_WAIT_TIMEOUT
    [action] = actions_of(server, machine_id(3))
    assert action["id"] in result.stdout  # where it stood, to follow up later
    assert "WaitTimeout" in result.stderr and "still Pending" in result.stderr


def offboard_and_wait(server: LiveServer, machine: str, *extra: str) -> tuple[int, dict]:
    """`bulwark offboard MACHINE --wait --json`: the exit code and the action as it ended."""
    result = server.run_cli(
        "offboard", machine, "-c", "wait", "--wait", "--json", "--timeout", "20", "--poll-interval", "0.1", *extra
    )
    return result.exit_code, json.loads(result.stdout)


def test_wait_ends_succeeded_when_the_device_offboards(sensor_server: LiveServer, devices: Devices) -> None:
    exit_code, action = offboard_and_wait(sensor_server, devices.complying[0])
    assert (exit_code, action["status"]) == (EXIT_OK, "Succeeded")
    assert action["machineId"] == devices.complying[0] and action["computerDnsName"] == "complies-00000.fleet.example"


def test_wait_ends_failed_when_the_device_fails_the_offboard(sensor_server: LiveServer, devices: Devices) -> None:
    exit_code, action = offboard_and_wait(sensor_server, devices.refusing[0])
    assert (exit_code, action["status"], action["errorHResult"]) == (EXIT_NOT_SUCCEEDED, "Failed", E_FAIL)
    # The device is still onboarded and running: the playbook's retry reaches it, and fails again.
    exit_code, retried = offboard_and_wait(sensor_server, devices.refusing[0])
    assert (exit_code, retried["status"]) == (EXIT_NOT_SUCCEEDED, "Failed") and retried["id"] != action["id"]


def test_wait_ends_timeout_when_no_device_picks_the_action_up(sweeping_server: LiveServer) -> None:
    exit_code, action = offboard_and_wait(sweeping_server, UNSERVED.id)
    assert (exit_code, action["status"]) == (EXIT_NOT_SUCCEEDED, "TimeOut")


def test_wait_ends_cancelled_when_someone_cancels_meanwhile(sensor_server: LiveServer) -> None:
    def cancel_once_requested() -> MachineAction:
        # Another operator, with the SDK, cancels the action the waiting command created.
        with sdk(sensor_server) as client:
            requested: list[MachineAction] = []

            def created() -> bool:
                requested.extend(client.list_actions(filter=f"machineId eq '{UNSERVED.id}'"))
                return bool(requested)

            wait_until(created)
            return client.cancel_action(requested[0].id, "raised in error")

    with ThreadPoolExecutor(max_workers=1) as operator:
        cancelled = operator.submit(cancel_once_requested)
        exit_code, action = offboard_and_wait(sensor_server, UNSERVED.id)
    assert (exit_code, action["status"]) == (EXIT_NOT_SUCCEEDED, "Cancelled")
    assert action["id"] == cancelled.result(timeout=10).id
    assert action["cancellationComment"] == "raised in error" and action["cancellationRequestor"]


def test_wait_shows_status_changes_and_the_outcome(sensor_server: LiveServer, devices: Devices) -> None:
    result = sensor_server.run_cli("offboard", devices.refusing[1], "-c", "wait", "--wait", "--poll-interval", "0.1")
    assert result.exit_code == EXIT_NOT_SUCCEEDED
    assert "Pending -> InProgress" in result.stderr and "InProgress -> Failed" in result.stderr
    assert "ended Failed" in result.stderr and "Failed" in result.stdout


# bulk offboard ------------------------------------------------------------------------------


def test_bulk_from_file_reports_each_machine_and_fails_if_one_failed(server: LiveServer, tmp_path: Path) -> None:
    listing = tmp_path / "retire.txt"
    listing.write_text(
        f"# retired in March\n{machine_id(10)}\n\n{dns_name(11)}   # by name\n{MAC.id}\nghost.contoso.com\n{machine_id(10)}\n"
    )
    result = server.run_cli("offboard", "--from-file", str(listing), "-c", "bulk", "--yes", "--json")
    assert result.exit_code == EXIT_NOT_SUCCEEDED
    rows = {row["target"]: row for row in json.loads(result.stdout)}
    assert list(rows) == [machine_id(10), dns_name(11), MAC.id, "ghost.contoso.com"]  # duplicates once, in order
    assert rows[machine_id(10)]["ok"] and rows[machine_id(10)]["status"] == "Pending"
    assert rows[dns_name(11)]["ok"] and rows[dns_name(11)]["machineId"] == machine_id(11)
    assert rows[MAC.id]["error"]["code"] == "OsPlatformNotSupported" and rows[MAC.id]["error"]["requestId"]
    assert rows["ghost.contoso.com"]["error"]["code"] == "ResourceNotFound"
    assert [a["id"] for a in actions_of(server, machine_id(11))] == [rows[dns_name(11)]["action"]["id"]]


def test_bulk_table_lists_every_machine(server: LiveServer, tmp_path: Path) -> None:
    listing = tmp_path / "retire.txt"
    listing.write_text(f"{machine_id(12)}\n{OLD_WINDOWS.computer_dns_name}\n")
    result = server.run_cli("offboard", "--from-file", str(listing), "-c", "bulk", "--yes")
    assert result.exit_code == EXIT_NOT_SUCCEEDED
    [action] = actions_of(server, machine_id(12))
    assert action["id"] in result.stdout
    assert "ClientVersionNotSupported" in result.stdout and OLD_WINDOWS.id in result.stdout
    # Accepted is not done: the summary tells requested from completed.
    assert "1 of 2 offboards requested (1 Pending); 0 completed so far" in result.stderr


def test_bulk_asks_first_and_does_nothing_when_refused(server: LiveServer, tmp_path: Path) -> None:
    listing = tmp_path / "retire.txt"
    listing.write_text(f"{machine_id(13)}\n{machine_id(14)}\n")
    result = server.run_cli("offboard", "--from-file", str(listing), "-c", "bulk", input="n\n")
    assert result.exit_code == EXIT_NOT_SUCCEEDED
    assert "Offboard 2 machines" in result.stderr and "Nothing was offboarded" in result.stderr
    assert actions_of(server, machine_id(13)) == [] and actions_of(server, machine_id(14)) == []

    accepted = server.run_cli("offboard", "--from-file", str(listing), "-c", "bulk", input="y\n")
    assert accepted.exit_code == EXIT_OK, accepted.stderr
    assert len(actions_of(server, machine_id(13))) == 1 and len(actions_of(server, machine_id(14))) == 1


def test_bulk_by_filter_offboards_every_match(server: LiveServer) -> None:
    result = server.run_cli("offboard", "--filter", "osPlatform eq 'WindowsServer2022'", "-c", "servers", "--yes", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(row["machineId"] for row in rows) == sorted(m.id for m in SERVERS)
    assert all(row["ok"] and row["status"] == "Pending" for row in rows)


def test_bulk_wait_needs_every_action_to_succeed(sensor_server: LiveServer, devices: Devices) -> None:
    complying, refusing = devices.complying[1], devices.refusing[2]
    result = sensor_server.run_cli(
        "offboard", complying, refusing, "-c", "bulk", "--yes", "--wait", "--json", "--poll-interval", "0.1", "--timeout", "20"
    )
    assert result.exit_code == EXIT_NOT_SUCCEEDED
    statuses = {row["machineId"]: (row["ok"], row["status"]) for row in json.loads(result.stdout)}
    assert statuses == {complying: (True, "Succeeded"), refusing: (False, "Failed")}


# machines and actions -----------------------------------------------------------------------


def test_machines_list_with_filter_as_table_and_json(server: LiveServer) -> None:
    as_json = server.run_cli("machines", "list", "--filter", "osPlatform eq 'macOS'", "--json")
    assert as_json.exit_code == EXIT_OK, as_json.stderr
    assert [m["id"] for m in json.loads(as_json.stdout)] == [MAC.id]

    table = server.run_cli("machines", "list", "--filter", "osPlatform eq 'WindowsServer2022'")
    assert table.exit_code == EXIT_OK
    assert all(m.id in table.stdout for m in SERVERS) and MAC.id not in table.stdout
    assert "3 machines" in table.stderr


def test_machines_list_top(server: LiveServer) -> None:
    result = server.run_cli("machines", "list", "--top", "5", "--json")
    assert len(json.loads(result.stdout)) == 5


def test_machines_show_by_id_or_name(server: LiveServer) -> None:
    by_name = server.run_cli("machines", "show", MAC.computer_dns_name, "--json")
    assert json.loads(by_name.stdout)["id"] == MAC.id
    by_id = server.run_cli("machines", "show", MAC.id)
    assert by_id.exit_code == EXIT_OK and "macOS" in by_id.stdout and MAC.computer_dns_name in by_id.stdout


def test_actions_list_and_show(server: LiveServer) -> None:
    created = json.loads(server.run_cli("offboard", machine_id(17), "-c", "list me", "--json").stdout)
    listed = server.run_cli("actions", "list", "--machine", dns_name(17), "--json")
    assert [a["id"] for a in json.loads(listed.stdout)] == [created["id"]]
    filtered = server.run_cli("actions", "list", "--filter", f"machineId eq '{machine_id(17)}' and status eq 'Pending'")
    assert created["id"] in filtered.stdout and "1 actions" in filtered.stderr
    shown = server.run_cli("actions", "show", created["id"], "--json")
    assert json.loads(shown.stdout) == created


def test_actions_show_wait_returns_at_once_for_a_final_action(sensor_server: LiveServer, devices: Devices) -> None:
    exit_code, created = offboard_and_wait(sensor_server, devices.complying[2])
    assert exit_code == EXIT_OK
    result = sensor_server.run_cli("actions", "show", created["id"], "--wait", "--timeout", "1")
    assert result.exit_code == EXIT_OK and "Succeeded" in result.stdout


def test_actions_cancel(server: LiveServer) -> None:
    paths = httpx.get(f"{server.base_url}/openapi.json").json()["paths"]
    if not any(path.endswith("/cancel") for path in paths):
        pytest.skip("this server build has no POST /api/machineactions/{id}/cancel yet")
    created = json.loads(server.run_cli("offboard", machine_id(19), "-c", "x", "--json").stdout)
    result = server.run_cli("actions", "cancel", created["id"], "-c", "raised in error", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["status"] == "Cancelled"
    again = server.run_cli("actions", "show", created["id"], "--wait")
    assert again.exit_code == EXIT_NOT_SUCCEEDED


def test_piped_tables_are_tab_separated_with_full_values(server: LiveServer) -> None:
    result = server.run_cli("machines", "list", "--filter", "osPlatform eq 'WindowsServer2022'")
    assert result.exit_code == EXIT_OK, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t")[:3] == ["Id", "Computer", "OS"]
    assert sorted(row.split("\t")[0] for row in rows) == sorted(m.id for m in SERVERS)
    assert "…" not in result.stdout


def test_details_show_fields_as_text_without_odata_links(server: LiveServer) -> None:
    shown = server.run_cli("machines", "show", dns_name(23))
    fields = dict(line.split("\t", 1) for line in shown.stdout.splitlines())
    assert "@odata.context" not in fields and fields["ipAddresses"] == "10.1.2.3 (operationalStatus=Up)"
    created = json.loads(server.run_cli("offboard", machine_id(26), "-c", "x", "--json").stdout)
    action = server.run_cli("actions", "show", created["id"])
    assert "@odata.context" not in action.stdout and created["id"] in action.stdout


def test_a_machine_is_found_by_its_short_host_name(server: LiveServer) -> None:
    short = dns_name(24).split(".")[0]
    result = server.run_cli("offboard", short, "-c", "by short name", "--json")
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["machineId"] == machine_id(24)
    shown = server.run_cli("machines", "show", short, "--json")
    assert json.loads(shown.stdout)["id"] == machine_id(24)


def test_sensor_fleet_names_the_dns_names_it_uses(sensor_server: LiveServer, devices: Devices) -> None:
    log = (sensor_server.data_dir / "sensor-complies.log").read_text()
    assert "complies-00000.fleet.example .. complies-00002.fleet.example" in log


def test_flags_take_no_value_in_help(server: LiveServer) -> None:
    result = server.run_cli("offboard", "--help")
    assert "--yes" in result.stdout and "<bool>" not in result.stdout


# errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("machines", "show", "f" * 40), "ResourceNotFound"),
        (("machines", "list", "--filter", "colour eq 'blue'"), "ODataError"),
        (("actions", "show", "not-a-guid"), "InvalidInput"),
        (("offboard", MAC.id, "-c", "x"), "OsPlatformNotSupported"),
        (("offboard", OLD_WINDOWS.id, "-c", "x"), "ClientVersionNotSupported"),
        (("offboard", make_machine(20).id, "-c", "x" * 5000), "InvalidInput"),
    ],
)
def test_api_errors_print_code_message_and_request_id_and_exit_3(server: LiveServer, args: tuple, code: str) -> None:
    result = server.run_cli(*args)
    assert result.exit_code == EXIT_API_ERROR, result.stdout + result.stderr
    assert f"Error: {code} (HTTP " in result.stderr and "Request id: " in result.stderr
    assert result.stdout == ""

    as_json = server.run_cli(*args, "--json")
    error = json.loads(as_json.stderr)["error"]
    assert as_json.exit_code == EXIT_API_ERROR and error["code"] == code and error["requestId"]


def test_a_second_offboard_is_refused_while_the_first_is_active(server: LiveServer) -> None:
    assert server.run_cli("offboard", machine_id(21), "-c", "first").exit_code == EXIT_OK
    second = server.run_cli("offboard", machine_id(21), "-c", "second", "--json")
    assert second.exit_code == EXIT_API_ERROR
    assert json.loads(second.stderr)["error"]["code"] == "ActiveRequestAlreadyExists"


def test_usage_errors_exit_2(server: LiveServer) -> None:
    no_comment = server.run_cli("offboard", machine_id(22))
    assert no_comment.exit_code == EXIT_USAGE and "--comment is required" in no_comment.stderr
    # Nothing named: that is what is missing first, not the comment.
    nothing = server.run_cli("offboard")
    assert nothing.exit_code == EXIT_USAGE and "give the machines" in nothing.stderr
    # An empty comment is refused before anything is sent.
    empty = server.run_cli("offboard", machine_id(20), "-c", "  ")
    assert empty.exit_code == EXIT_USAGE and "--comment must not be empty" in empty.stderr
    assert actions_of(server, machine_id(20)) == [] and actions_of(server, machine_id(22)) == []
    both = server.run_cli("offboard", machine_id(22), "--filter", "osPlatform eq 'macOS'", "-c", "x")
    assert both.exit_code == EXIT_USAGE and "exactly one" in both.stderr
    unsigned = server.run_cli("machines", "list", BULWARK_TOKEN="", BULWARK_CLIENT_SECRET="")
    assert unsigned.exit_code == EXIT_USAGE and "No credentials" in unsigned.stderr
    assert server.run_cli("machines", "list", "--profile", "nope").exit_code == EXIT_USAGE


def test_refused_token_request_exits_4(server: LiveServer, tmp_path: Path) -> None:
    credentials = tmp_path / "demo-credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "tenantId": "00000000-0000-0000-0000-000000000000",
                "authority": server.base_url,
                "clients": [{"clientId": "not-registered", "clientSecret": "wrong"}],
            }
        )
    )
    result = server.run_cli(
        "machines",
        "list",
        "--credentials-file",
        str(credentials),
        BULWARK_TOKEN="",
        BULWARK_TENANT_ID="",
        BULWARK_CLIENT_ID="",
        BULWARK_CLIENT_SECRET="",
    )
    assert result.exit_code == EXIT_AUTH_ERROR
    assert "Token request failed" in result.stderr


def test_unreachable_server_exits_6(server: LiveServer) -> None:
    result = server.run_cli("machines", "show", "x", "--api-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == EXIT_UNREACHABLE and "ConnectError" in result.stderr


# profiles and the real executable ---------------------------------------------------------------


def test_profile_set_show_list_and_use(server: LiveServer, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    env = {"BULWARK_CONFIG": str(config), "BULWARK_API_URL": "", "BULWARK_TOKEN": ""}
    token = server.token()
    saved = server.run_cli("profile", "set", "lab", "--api-url", server.base_url, "--token", token, "--default", **env)
    assert saved.exit_code == EXIT_OK, saved.stderr
    assert config.stat().st_mode & 0o077 == 0  # it holds a secret

    shown = json.loads(server.run_cli("profile", "show", "--json", **env).stdout)
    assert shown == {"name": "lab", "api_url": server.base_url, "token": "********"}
    listed = json.loads(server.run_cli("profile", "list", "--json", **env).stdout)
    assert [(p["name"], p["default"]) for p in listed] == [("lab", True)]

    # The default profile connects when neither flags nor environment say where to.
    used = server.run_cli("machines", "show", MAC.id, "--json", **env)
    assert used.exit_code == EXIT_OK, used.stderr
    assert json.loads(used.stdout)["id"] == MAC.id
    # A flag still wins over the profile.
    elsewhere = server.run_cli("machines", "show", MAC.id, "--api-url", f"http://127.0.0.1:{free_port()}", **env)
    assert elsewhere.exit_code == EXIT_UNREACHABLE


def test_the_installed_executable(server: LiveServer) -> None:
    listed = server.run_executable("machines", "list", "--top", "3", "--json")
    assert listed.returncode == EXIT_OK, listed.stderr
    assert len(json.loads(listed.stdout)) == 3
    offboarded = server.run_executable("offboard", machine_id(23), "--comment", "from a script", "--json")
    assert offboarded.returncode == EXIT_OK, offboarded.stderr
    assert json.loads(offboarded.stdout)["machineId"] == machine_id(23)
    refused = server.run_executable("offboard", machine_id(23), "--comment", "again")
    assert refused.returncode == EXIT_API_ERROR and "ActiveRequestAlreadyExists" in refused.stderr


# the token cache and the SDK's settings ------------------------------------------------------


def tokens_issued(server: LiveServer) -> float:
    """Client-credential tokens the server's token endpoint has issued so far, from its /metrics."""
    exposition = httpx.get(f"{server.base_url}/metrics").text
    prefix = 'bulwark_tokens_issued_total{grant_type="client_credentials"} '
    return sum(float(line.removeprefix(prefix)) for line in exposition.splitlines() if line.startswith(prefix))


def cache_entries(path: Path) -> list[str]:
    """The access tokens a token cache file holds."""
    return [entry["access_token"] for entry in json.loads(path.read_text())["tokens"].values()]


def test_consecutive_commands_make_one_token_request(server: LiveServer, tmp_path: Path) -> None:
    config = tmp_path / "settings" / "config.json"
    before = tokens_issued(server)

    for _ in range(2):
        run = server.run_executable("machines", "show", MAC.id, "--json", BULWARK_CONFIG=str(config))
        assert run.returncode == EXIT_OK, run.stderr

    assert tokens_issued(server) - before == 1
    cache = config.parent / "token-cache.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert server.connection_env()["BULWARK_CLIENT_SECRET"] not in cache.read_text()


def test_the_token_cache_can_be_turned_off(server: LiveServer, tmp_path: Path) -> None:
    config = str(tmp_path / "config.json")
    before = tokens_issued(server)

    flagged = server.run_cli("machines", "show", MAC.id, "--no-token-cache", BULWARK_CONFIG=config)
    variable = server.run_cli("machines", "show", MAC.id, BULWARK_CONFIG=config, BULWARK_TOKEN_CACHE="off")

    assert flagged.exit_code == variable.exit_code == EXIT_OK
    assert tokens_issued(server) - before == 2
    assert not (tmp_path / "token-cache.json").exists()


def plant(server: LiveServer, cache: Path, access_token: str, *, expires_in: float) -> None:
    """Put a token in the cache file as an earlier command with the tests' credentials would have."""
    env = server.connection_env()
    key = CacheKey(env["BULWARK_AUTHORITY"], env["BULWARK_TENANT_ID"], env["BULWARK_CLIENT_ID"], DEFAULT_SCOPE)
    TokenCache(cache).store(key, env["BULWARK_CLIENT_SECRET"], access_token, expires_in=expires_in)


def test_an_expired_cached_token_is_not_used(server: LiveServer, tmp_path: Path) -> None:
    # A token the server would still accept, but whose cache entry says it is about to expire.
    still_valid = server.token()
    plant(server, tmp_path / "token-cache.json", still_valid, expires_in=1)
    time.sleep(1.1)
    before = tokens_issued(server)

    run = server.run_cli("machines", "show", MAC.id, BULWARK_CONFIG=str(tmp_path / "config.json"))

    assert run.exit_code == EXIT_OK, run.stderr
    assert tokens_issued(server) - before == 1
    assert still_valid not in cache_entries(tmp_path / "token-cache.json")


def test_a_cached_token_the_server_refuses_is_replaced(server: LiveServer, tmp_path: Path) -> None:
    plant(server, tmp_path / "token-cache.json", "a-token-this-server-never-issued", expires_in=3600)
    before = tokens_issued(server)

    run = server.run_cli("machines", "show", MAC.id, "--json", BULWARK_CONFIG=str(tmp_path / "config.json"))

    assert run.exit_code == EXIT_OK, run.stderr
    assert json.loads(run.stdout)["id"] == MAC.id
    assert tokens_issued(server) - before == 1
    [replacement] = cache_entries(tmp_path / "token-cache.json")
    assert replacement != "a-token-this-server-never-issued"


def test_the_sdk_finds_the_server_and_credentials_the_command_line_finds(server: LiveServer, tmp_path: Path) -> None:
    # Only where the API is, and the credentials file that `serve --demo` wrote: no authority, no tenant.
    env = {
        "BULWARK_CONFIG": str(tmp_path / "config.json"),
        "BULWARK_API_URL": server.base_url,
        "BULWARK_CREDENTIALS_FILE": str(server.data_dir / "demo-credentials.json"),
    }
    cleared = {name: "" for name in ("BULWARK_AUTHORITY", "BULWARK_TENANT_ID", "BULWARK_CLIENT_ID", "BULWARK_CLIENT_SECRET")}

    command = server.run_cli("machines", "show", MAC.id, "--json", **cleared, **env)
    with BulwarkClient.from_env(env) as client:
        machine = client.get_machine(MAC.id)
        assert isinstance(client.credential, ClientCredentials)
        token_url = client.credential.token_url

    assert command.exit_code == EXIT_OK, command.stderr
    assert json.loads(command.stdout)["id"] == machine.id == MAC.id
    assert token_url.startswith(f"{server.base_url}/")


# rate limits --------------------------------------------------------------------------------


def test_bulk_offboard_waits_out_rate_limits(limited_server: LiveServer) -> None:
    ids = [machine_id(i) for i in range(300, 306)]
    result = limited_server.run_cli("offboard", *ids, "-c", "throttled", "--yes", "--json", "--concurrency", "6")
    assert result.exit_code == EXIT_OK, result.stderr
    assert all(row["ok"] for row in json.loads(result.stdout))
    assert "Rate limited (429 TooManyRequests)" in result.stderr


def test_rate_limit_beyond_the_allowed_wait_exits_3(limited_server: LiveServer) -> None:
    outcomes = [
        limited_server.run_cli("machines", "show", machine_id(306), "--json", "--max-rate-limit-wait", "0") for _ in range(4)
    ]
    refused = [r for r in outcomes if r.exit_code != EXIT_OK]
    assert refused, "four calls in a row should exceed two a second"
    error = json.loads(refused[0].stderr.splitlines()[-1])["error"]
    assert refused[0].exit_code == EXIT_API_ERROR and error["code"] == "TooManyRequests" and error["status"] == 429


def test_sdk_raises_or_waits_on_429(limited_server: LiveServer) -> None:
    with sdk(limited_server, retry=NO_RETRIES) as client, pytest.raises(TooManyRequests) as raised:
        for _ in range(4):
            list(client.list_actions(top=1))
    assert raised.value.retry_after is not None and raised.value.retry_after > 0 and raised.value.request_id

    seen: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda response: seen.append(response.status_code)]})
    with http, sdk(limited_server, http_client=http) as client:
        machines = [client.get_machine(machine_id(i)).id for i in range(300, 306)]
    assert machines == [machine_id(i) for i in range(300, 306)]
    assert 429 in seen and seen[-1] == 200
