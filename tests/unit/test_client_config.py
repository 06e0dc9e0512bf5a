"""Connection settings for the command line: the credentials-file reader, profiles, precedence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulwark.client import ConfigurationError
from bulwark.client.config import (
    ConnectionSettings,
    read_credentials_file,
    resolve_connection,
    save_profile,
)

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
