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


def test_key_rotation_from_the_cli(run) -> None:
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
