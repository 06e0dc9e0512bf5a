"""Connection settings of the command line and the SDK: the credentials-file reader, profiles, precedence, the environment."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bulwark.cli.api.connection import ConnectionOptions, with_connection
from bulwark.client import ConfigurationError
from bulwark.client.config import (
    ConnectionSettings,
    ResolvedConnection,
    default_config_path,
    read_credentials_file,
    resolve_connection,
    resolve_from_environment,
    save_profile,
    user_config_dir,
)
from tests.e2e.cli_support import CONNECTION_VARIABLES

TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    "document",
    [
        {  # snake_case, a list of clients, the reader listed first
            "tenant_id": TENANT,
            "authority": "http://127.0.0.1:8000",
            "api_url": "http://127.0.0.1:8000",
            "clients": [
                {"name": "reader", "client_id": "app-r", "client_secret": "s-r", "roles": ["Machine.Read.All"]},
                {"name": "automation", "client_id": "app-1", "client_secret": "s-1", "roles": ["Machine.Offboard"]},
            ],
            "users": [{"username": "admin@contoso.com", "password": "pw"}],
        },
        {  # camelCase, clients keyed by name, the authority given as a token URL with the tenant
            "tenantId": TENANT,
            "tokenUrl": f"http://127.0.0.1:8000/{TENANT}/oauth2/v2.0/token",
            "apiUrl": "http://127.0.0.1:8000",
            "applications": {"automation": {"appId": "app-1", "secret": "s-1", "permissions": "Machine.Offboard"}},
        },
        {  # everything at the top level, the tenant only inside the authority URL
            "authority": f"http://127.0.0.1:8000/{TENANT}/",
            "baseUrl": "http://127.0.0.1:8000",
            "ClientId": "app-1",
            "ClientSecret": "s-1",
        },
    ],
)
def test_credentials_file_spellings(tmp_path: Path, document: dict) -> None:
    settings = read_credentials_file(write(tmp_path / "demo-credentials.json", document))
    assert settings == ConnectionSettings(
        api_url="http://127.0.0.1:8000",
        authority="http://127.0.0.1:8000",
        tenant_id=TENANT,
        client_id="app-1",
        client_secret="s-1",
    )


def test_credentials_file_client_chosen_by_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.json",
        {"tenant": TENANT, "clients": [{"clientId": "a", "clientSecret": "sa"}, {"clientId": "b", "clientSecret": "sb"}]},
    )
    assert read_credentials_file(path, client_id="b").client_secret == "sb"
    with pytest.raises(ConfigurationError, match="no client with id c"):
        read_credentials_file(path, client_id="c")


def test_unreadable_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read"):
        read_credentials_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigurationError, match="not JSON"):
        read_credentials_file(tmp_path / "bad.json")


def test_flags_win_over_the_credentials_file_which_wins_over_the_profile(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    credentials = write(
        tmp_path / "demo.json",
        {"tenantId": TENANT, "authority": "http://file:1", "clientId": "file-app", "clientSecret": "file-secret"},
    )
    save_profile(
        config,
        "lab",
        ConnectionSettings(api_url="http://profile:1", authority="http://profile:2", credentials_file=str(credentials)),
        make_default=True,
    )
    resolved = resolve_connection(ConnectionSettings(client_secret="typed"), profile_name=None, config_path=config)
    assert resolved.api_url == "http://profile:1"
    assert resolved.authority == "http://file:1"
    assert (resolved.tenant_id, resolved.client_id, resolved.client_secret) == (TENANT, "file-app", "typed")


def test_defaults_and_token(tmp_path: Path) -> None:
    resolved = resolve_connection(ConnectionSettings(token="t"), profile_name=None, config_path=tmp_path / "none.json")
    assert (resolved.api_url, resolved.authority, resolved.verify) == ("http://127.0.0.1:8000", "http://127.0.0.1:8000", True)
    assert resolved.client_arguments() == {"base_url": "http://127.0.0.1:8000", "token": "t"}
    live = resolve_connection(
        ConnectionSettings(token="t", api_url="https://api.securitycenter.microsoft.com/", insecure=True),
        profile_name=None,
        config_path=tmp_path / "none.json",
    )
    assert live.authority == "https://login.microsoftonline.com" and live.verify is False


def test_missing_credentials_and_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="missing: --client-secret"):
        resolve_connection(
            ConnectionSettings(tenant_id=TENANT, client_id="a"), profile_name=None, config_path=tmp_path / "none.json"
        )
    with pytest.raises(ConfigurationError, match="No profile named 'x'"):
        resolve_connection(ConnectionSettings(token="t"), profile_name="x", config_path=tmp_path / "none.json")


def test_save_profile_merges_and_keeps_the_first_as_default(tmp_path: Path) -> None:
    config = tmp_path / "sub" / "config.json"
    save_profile(config, "a", ConnectionSettings(api_url="http://a"), make_default=False)
    save_profile(config, "b", ConnectionSettings(api_url="http://b"), make_default=False)
    save_profile(config, "a", ConnectionSettings(token="t"), make_default=False)
    stored = json.loads(config.read_text())
    assert stored == {
        "default_profile": "a",
        "profiles": {"a": {"api_url": "http://a", "token": "t"}, "b": {"api_url": "http://b"}},
    }


# The SDK's from_env() and the command line read the environment alike --------------------------

DEMO_FILE = {
    "tenant_id": TENANT,
    "authority": f"http://10.0.0.5:8000/{TENANT}",
    "api_base_url": "http://10.0.0.5:8000",
    "applications": [{"name": "automation", "client_id": "app-1", "client_secret": "s-1", "roles": ["Machine.Offboard"]}],
}


def cli_resolution(environ: dict[str, str]) -> ResolvedConnection | str:
    """What an API command of the `bulwark` program resolves in `environ`, flags aside (or its error)."""
    app = typer.Typer()
    seen: dict[str, ResolvedConnection] = {}

    @app.command()
    @with_connection
    def probe(*, connection: ConnectionOptions) -> None:
        seen["resolved"] = connection.resolve()

    cleared: dict[str, str | None] = {name: None for name in CONNECTION_VARIABLES}
    result = CliRunner().invoke(app, [], env={**cleared, **environ})
    return seen.get("resolved") or result.stderr.strip().removeprefix("Error: ConfigurationError: ")


def sdk_resolution(environ: dict[str, str]) -> ResolvedConnection | str:
    try:
        return resolve_from_environment(environ)
    except ConfigurationError as error:
        return str(error)


def comparable(resolved: ResolvedConnection | str) -> object:
    return resolved if isinstance(resolved, str) else (resolved, repr(resolved.client_secret))


@pytest.mark.parametrize(
    "environ",
    [
        {
            "BULWARK_API_URL": "http://bulwark.lab:8000",
            "BULWARK_TENANT_ID": TENANT,
            "BULWARK_CLIENT_ID": "a",
            "BULWARK_CLIENT_SECRET": "s",
        },
        {
            "BULWARK_API_URL": "https://api.securitycenter.microsoft.com/",
            "BULWARK_TENANT": TENANT,
            "BULWARK_CLIENT_ID": "a",
            "BULWARK_CLIENT_SECRET": "s",
        },
        {"BULWARK_CREDENTIALS_FILE": "{demo}"},
        {"BULWARK_CREDENTIALS_FILE": "{demo}", "BULWARK_API_URL": "http://typed:1", "BULWARK_CLIENT_SECRET": "typed"},
        {"BULWARK_PROFILE": "lab"},
        {"BULWARK_PROFILE": "lab", "BULWARK_TOKEN": "ready", "BULWARK_INSECURE": "false"},
        {"BULWARK_CONFIG": "{default-config}"},
        {"BULWARK_API_URL": "", "BULWARK_TOKEN": "t", "BULWARK_INSECURE": "1"},
        {"BULWARK_TENANT_ID": TENANT, "BULWARK_CLIENT_ID": "a"},
        {"BULWARK_PROFILE": "missing"},
    ],
    ids=[
        "own-server",
        "live-api",
        "credentials-file",
        "variables-win-over-the-file",
        "named-profile",
        "token-over-profile",
        "default-profile",
        "empty-variable-ignored",
        "missing-secret",
        "unknown-profile",
    ],
)
def test_from_env_resolves_as_the_command_line_does(tmp_path: Path, environ: dict[str, str]) -> None:
    demo = write(tmp_path / "demo-credentials.json", DEMO_FILE)
    # A named profile that is not the default one.
    config = write(
        tmp_path / "config.json", {"profiles": {"lab": {"credentials_file": str(demo), "scope": "api://lab/.default"}}}
    )
    default_config = tmp_path / "default" / "config.json"
    save_profile(default_config, "usual", ConnectionSettings(api_url="http://usual:1", token="usual-token"), make_default=True)
    placeholders = {"{demo}": str(demo), "{default-config}": str(default_config)}
    environ = {"BULWARK_CONFIG": str(config)} | {name: placeholders.get(value, value) for name, value in environ.items()}

    from_cli, from_sdk = cli_resolution(environ), sdk_resolution(environ)

    assert comparable(from_sdk) == comparable(from_cli)


def test_the_secret_goes_to_entra_only_for_microsofts_api(tmp_path: Path) -> None:
    config = {"BULWARK_CONFIG": str(tmp_path / "config.json")}
    secret = {"BULWARK_TENANT_ID": TENANT, "BULWARK_CLIENT_ID": "a", "BULWARK_CLIENT_SECRET": "s"}
    authorities = {
        url: resolve_from_environment({**config, **secret, "BULWARK_API_URL": url}).authority
        for url in (
            "https://bulwark.example.com",
            "https://api.securitycenter.microsoft.com",
            "https://api.security.microsoft.com/",
            "https://api.securitycenter.microsoft.com.attacker.example",
        )
    }
    assert authorities == {
        "https://bulwark.example.com": "https://bulwark.example.com",
        "https://api.securitycenter.microsoft.com": "https://login.microsoftonline.com",
        "https://api.security.microsoft.com/": "https://login.microsoftonline.com",
        "https://api.securitycenter.microsoft.com.attacker.example": "https://api.securitycenter.microsoft.com.attacker.example",
    }
    assert resolve_from_environment({**config, **secret}).authority == "http://127.0.0.1:8000"


def test_a_yes_no_variable_must_say_yes_or_no(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="BULWARK_INSECURE='maybe'"):
        resolve_from_environment({"BULWARK_CONFIG": str(tmp_path / "c.json"), "BULWARK_TOKEN": "t", "BULWARK_INSECURE": "maybe"})


@pytest.mark.parametrize("xdg", [None, "/srv/xdg"])
def test_the_config_directory_is_where_the_command_line_always_kept_it(monkeypatch: pytest.MonkeyPatch, xdg: str | None) -> None:
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    assert user_config_dir() == Path(typer.get_app_dir("bulwark"))
    assert default_config_path() == Path(typer.get_app_dir("bulwark")) / "config.json"


def test_the_config_file_is_written_owner_only_without_following_a_planted_link(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.json"
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    config.parent.mkdir()
    # A link where the old code wrote its temporary file.
    (config.parent / "config.json.tmp").symlink_to(target)

    save_profile(config, "a", ConnectionSettings(token="t"), make_default=True)

    assert target.read_text() == "keep me"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["profiles"] == {"a": {"token": "t"}}
