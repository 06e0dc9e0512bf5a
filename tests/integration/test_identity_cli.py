"""Administration through the CLI on the same database the server uses: apps, users, groups, tokens, audit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bulwark.api.app import create_app
from bulwark.cli import app as cli
from bulwark.settings import Settings
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import SCOPE, bearer, token_endpoint

MACHINE = make_machine(1)


@pytest.fixture
def run(settings: Settings, uow_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("BULWARK_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("BULWARK_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("BULWARK_DEFAULT_TENANT_ID", TENANT)
    monkeypatch.setenv("COLUMNS", "300")
    seed(uow_factory, [MACHINE], groups=["Finance"])
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def test_an_application_made_with_the_cli_gets_a_token_and_offboards(run, settings: Settings) -> None:
    output = run("apps", "create", "Playbook", "--role", "Machine.Offboard", "--role", "Machine.Read.All")
    client_id = re.search(r"client_id:\s+(\S+)", output).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", output).group(1)
    assert "Playbook" in run("apps", "list") and secret not in run("apps", "list")
    with TestClient(create_app(settings)) as client:
        token = client.post(
            token_endpoint(),
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE},
        ).json()["access_token"]
        offboard = client.post(f"/api/machines/{MACHINE.id}/offboard", json={"Comment": "cli"}, headers=bearer(token))
        assert offboard.status_code == 200 and offboard.json()["requestor"] == "Playbook"
        # `bulwark token` prints a token the server accepts.
        printed = run("token", "--app", "Playbook").strip()
        assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(printed)).status_code == 200
        run("apps", "disable", "Playbook")
        refused = client.post(
            token_endpoint(),
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": SCOPE},
        )
        assert refused.status_code == 400
    events = run("audit", "list", "--json")
    assert '"comment": "cli"' in events and '"actor_name": "Playbook"' in events


def test_users_roles_and_groups_from_the_cli(run, settings: Settings) -> None:
    # A console tool cannot keep a secret: registered as a public client, users sign in through it without one.
    run("apps", "create", "Console", "--delegated", "Machine.Offboard", "--delegated", "Machine.Read", "--public-client")
    assert next(a for a in _apps(run) if a["display_name"] == "Console")["public_client"] is True
    output = run("users", "create", "pat@contoso.com", "--name", "Pat")
    password = re.search(r"password:\s+(\S+)", output).group(1)
    run("roles", "create", "Responder", "--capability", "ViewData", "--capability", "ManageSecuritySettings")
    run("groups", "create", "Responders", "--member", "pat@contoso.com", "--role", "Responder", "--device-group", "Finance")
    listed = run("groups", "list", "--json")
    assert '"members": [' in listed and "pat@contoso.com" in listed and "Finance" in listed
    with TestClient(create_app(settings)) as client:
        token = run("token", "--app", "Console", "--user", "pat@contoso.com").strip()
        offboard = client.post(f"/api/machines/{MACHINE.id}/offboard", json={"Comment": "by Pat"}, headers=bearer(token))
        assert offboard.status_code == 200 and offboard.json()["requestor"] == "pat@contoso.com"
        client_id = next(a["client_id"] for a in _apps(run) if a["display_name"] == "Console")
        signed_in = client.post(
            token_endpoint(),
            data={
                "grant_type": "password",
                "client_id": client_id,
                "username": "PAT@contoso.com",
                "password": password,
                "scope": SCOPE,
            },
        )
        assert signed_in.status_code == 200
        wrong = client.post(
            token_endpoint(),
            data={
                "grant_type": "password",
                "client_id": client_id,
                "username": "pat@contoso.com",
                "password": "nope",
                "scope": SCOPE,
            },
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_key_rotation_from_the_cli(run, settings: Settings) -> None:
    with TestClient(create_app(settings)):  # the server records the issuer and the first key
        pass
    run("token", "--app", _first_app(run))
    before = run("keys", "list", "--json")
    run("keys", "rotate")
    after = run("keys", "list", "--json")
    assert after.count('"kid"') == before.count('"kid"') + 1


def _apps(run) -> list[dict]:
    import json

    return json.loads(run("apps", "list", "--json"))


def _first_app(run) -> str:
    run("apps", "create", "Any", "--role", "Machine.Read.All")
    return "Any"


def test_linking_an_external_account_from_the_cli(run) -> None:
    import json

    run("users", "create", "ext@contoso.com")
    issuer = "https://login.microsoftonline.com/0f0e0d0c-0b0a-4909-8807-060504030201/v2.0"
    run("users", "link", "ext@contoso.com", "--issuer", issuer, "--object-id", "7d1c2b3a-0000-4000-8000-000000000001")
    user = next(u for u in json.loads(run("users", "list", "--json")) if u["upn"] == "ext@contoso.com")
    assert (user["external_issuer"], user["external_object_id"]) == (issuer, "7d1c2b3a-0000-4000-8000-000000000001")
    run("users", "link", "ext@contoso.com", "--unlink")
    user = next(u for u in json.loads(run("users", "list", "--json")) if u["upn"] == "ext@contoso.com")
    assert user["external_issuer"] is None and user["external_object_id"] is None


def test_the_issuer_is_recorded_with_the_data_so_every_process_and_command_agrees(run, settings: Settings) -> None:
    run("apps", "create", "Playbook", "--role", "Machine.Read.All")
    first = settings.model_copy(update={"port": 8123})
    with TestClient(create_app(first)) as client:
        # The command was started with none of the server's flags (port 8000 by default).
        token = run("token", "--app", "Playbook").strip()
        assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code == 200
        discovery = client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration").json()
        assert discovery["issuer"] == f"http://127.0.0.1:8123/{TENANT}/v2.0"
    # Another process on another port keeps the recorded issuer, so the token stays valid.
    with TestClient(create_app(settings.model_copy(update={"port": 9001}))) as client:
        assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code == 200
    # BULWARK_PUBLIC_BASE_URL names it explicitly, and is recorded for the commands too.
    public = settings.model_copy(update={"public_base_url": "https://bulwark.contoso.com"})
    with TestClient(create_app(public)) as client:
        assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code == 401
        renewed = run("token", "--app", "Playbook").strip()
        assert client.get(f"/api/machines/{MACHINE.id}", headers=bearer(renewed)).status_code == 200


def test_token_needs_a_recorded_issuer(run) -> None:
    run("apps", "create", "Playbook", "--role", "Machine.Read.All")
    result = CliRunner().invoke(cli, ["token", "--app", "Playbook"])
    assert result.exit_code == 1 and "no token issuer is recorded" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["apps", "create", "Twice", "--role", "Machine.Read.All"],
        ["roles", "create", "Twice", "--capability", "ViewData"],
        ["groups", "create", "Twice"],
        ["users", "create", "twice@contoso.com"],
    ],
)
def test_an_existing_name_ends_in_a_one_line_error(run, command: list[str]) -> None:
    run(*command)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "already exists" in result.output, result.output
    assert "Traceback" not in result.output and "argon2" not in result.output


def test_a_user_token_for_an_app_without_delegated_permissions_is_refused(run, settings: Settings) -> None:
    run("apps", "create", "Daemon", "--role", "Machine.Read.All")
    run("users", "create", "pat@contoso.com")
    with TestClient(create_app(settings)):
        pass
    result = CliRunner().invoke(cli, ["token", "--app", "Daemon", "--user", "pat@contoso.com"])
    assert result.exit_code == 1 and "has no delegated permissions" in result.output and "eyJ" not in result.output


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["sensor", "package", "onboarding", "--tenant", "00000000-0000-0000-0000-00000000dead"], "tenant"),
        (["sensor", "package", "offboarding", "--tenant", "00000000-0000-0000-0000-00000000dead"], "tenant"),
        (["sensor", "package", "revoke", "no-such-package"], "package"),
    ],
)
def test_a_refused_package_command_ends_in_a_one_line_error(run, command: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and says in result.output.lower(), result.output
    assert "Traceback" not in result.output
