"""The connection flags every API command takes, and the client they open."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time,
# including those this module adds to every command's signature.

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from bulwark.cli.api.output import reporting_errors, stderr
from bulwark.client._protocol import USER_AGENT, RetryPolicy
from bulwark.client.auth import ClientCredentials, StaticToken, TokenProvider
from bulwark.client.client import DEFAULT_TIMEOUT, BulwarkClient
from bulwark.client.config import (
    ConnectionSettings,
    ResolvedConnection,
    default_config_path,
    resolve_connection,
)

DEFAULT_RATE_LIMIT_WAIT = 120.0
CONNECTION_PANEL = "Connection"


# Connection options, added to every command that calls the API --------------------------------


@dataclass
class ConnectionOptions:
    """What the connection flags (or their environment variables) gave, before profiles and defaults."""

    api_url: str | None = None
    authority: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None
    scope: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None
    insecure: bool | None = None
    ca_file: Path | None = None
    config: Path | None = None
    max_rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT

    def settings(self) -> ConnectionSettings:
        """The flag values as a settings layer."""
        return ConnectionSettings(
            api_url=self.api_url,
            authority=self.authority,
            tenant_id=self.tenant,
            client_id=self.client_id,
            client_secret=self.client_secret,
            token=self.token,
            scope=self.scope,
            credentials_file=str(self.credentials_file) if self.credentials_file else None,
            insecure=self.insecure,
            ca_file=str(self.ca_file) if self.ca_file else None,
        )

    def resolve(self) -> ResolvedConnection:
        """The settings in force, after the credentials file, the profile and the defaults."""
        return resolve_connection(self.settings(), profile_name=self.profile, config_path=config_path(self.config))

    def retry_policy(self) -> RetryPolicy:
        """Retries as the SDK does them, with the rate-limit patience the user asked for."""
        return RetryPolicy(rate_limit_max_retries=1000, rate_limit_max_wait=self.max_rate_limit_wait)


_CONNECTION_PARAMETERS: list[tuple[str, Any]] = [
    (
        "api_url",
        Annotated[
            str | None,
            typer.Option(
                "--api-url",
                envvar="BULWARK_API_URL",
                metavar="URL",
                rich_help_panel=CONNECTION_PANEL,
                help="API base URL (default http://127.0.0.1:8000).",
            ),
        ],
    ),
    (
        "authority",
        Annotated[
            str | None,
            typer.Option(
                "--authority",
                envvar="BULWARK_AUTHORITY",
                metavar="URL",
                rich_help_panel=CONNECTION_PANEL,
                help="Token authority; tokens come from AUTHORITY/TENANT/oauth2/v2.0/token (default: the API URL).",
            ),
        ],
    ),
    (
        "tenant",
        Annotated[
            str | None,
            typer.Option(
                "--tenant",
                envvar=["BULWARK_TENANT_ID", "BULWARK_TENANT"],
                rich_help_panel=CONNECTION_PANEL,
                help="Tenant (directory) id.",
            ),
        ],
    ),
    (
        "client_id",
        Annotated[
            str | None,
            typer.Option(
                "--client-id", envvar="BULWARK_CLIENT_ID", rich_help_panel=CONNECTION_PANEL, help="Application (client) id."
            ),
        ],
    ),
    (
        "client_secret",
        Annotated[
            str | None,
            typer.Option(
                "--client-secret", envvar="BULWARK_CLIENT_SECRET", rich_help_panel=CONNECTION_PANEL, help="Application secret."
            ),
        ],
    ),
    (
        "token",
        Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="BULWARK_TOKEN",
                rich_help_panel=CONNECTION_PANEL,
                help="A ready bearer token, instead of client credentials.",
            ),
        ],
    ),
    (
        "scope",
        Annotated[
            str | None,
            typer.Option(
                "--scope",
                envvar="BULWARK_SCOPE",
                rich_help_panel=CONNECTION_PANEL,
                hidden=True,
                help="Scope asked of the authority.",
            ),
        ],
    ),
    (
        "profile",
        Annotated[
            str | None,
            typer.Option(
                "--profile",
                envvar="BULWARK_PROFILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Named profile from the config file (see 'bulwark profile').",
            ),
        ],
    ),
    (
        "credentials_file",
        Annotated[
            Path | None,
            typer.Option(
                "--credentials-file",
                envvar="BULWARK_CREDENTIALS_FILE",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="demo-credentials.json written by 'bulwark serve --demo'.",
            ),
        ],
    ),
    (
        "insecure",
        Annotated[
            bool | None,
            typer.Option(
                "--insecure",
                envvar="BULWARK_INSECURE",
                rich_help_panel=CONNECTION_PANEL,
                help="Do not verify the server's TLS certificate.",
            ),
        ],
    ),
    (
        "ca_file",
        Annotated[
            Path | None,
            typer.Option(
                "--ca-file",
                envvar="BULWARK_CA_FILE",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Trust this CA certificate (PEM) for TLS.",
            ),
        ],
    ),
    (
        "config",
        Annotated[
            Path | None,
            typer.Option(
                "--config",
                envvar="BULWARK_CONFIG",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Config file holding the profiles.",
            ),
        ],
    ),
    (
        "max_rate_limit_wait",
        Annotated[
            float,
            typer.Option(
                "--max-rate-limit-wait",
                envvar="BULWARK_MAX_RATE_LIMIT_WAIT",
                metavar="SECONDS",
                min=0,
                rich_help_panel=CONNECTION_PANEL,
                help="Longest total wait for rate limits (429) per call before giving up.",
            ),
        ],
    ),
]
_CONNECTION_DEFAULTS = {"max_rate_limit_wait": DEFAULT_RATE_LIMIT_WAIT}


def config_path(given: Path | None) -> Path:
    """The config file: the one given (flag or BULWARK_CONFIG), else the user's config directory."""
    return given if given is not None else default_config_path(typer.get_app_dir("bulwark"))


def with_connection(command: Callable[..., None]) -> Callable[..., None]:
    """Add the connection flags to a command, handing them to it as `connection`, and report errors."""
    signature = inspect.signature(command)
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "connection"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=_CONNECTION_DEFAULTS.get(name))
        for name, annotation in _CONNECTION_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        connection = ConnectionOptions(**{name: kwargs.pop(name) for name, _ in _CONNECTION_PARAMETERS})
        with reporting_errors(json_output=bool(kwargs.get("json_output"))):
            command(connection=connection, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return wrapper


def credential_for(resolved: ResolvedConnection) -> TokenProvider:
    if resolved.token:
        return StaticToken(resolved.token)
    assert resolved.tenant_id and resolved.client_id and resolved.client_secret
    return ClientCredentials(
        resolved.tenant_id,
        resolved.client_id,
        resolved.client_secret,
        authority=resolved.authority,
        scope=resolved.scope,
    )


def note_rate_limit(response: httpx.Response) -> None:
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", "?")
        stderr.print(f"[yellow]Rate limited[/] (429 TooManyRequests) on {response.request.url.path}; Retry-After {wait} s")


async def note_rate_limit_async(response: httpx.Response) -> None:
    note_rate_limit(response)


@contextmanager
def open_client(connection: ConnectionOptions) -> Iterator[BulwarkClient]:
    """A blocking client for the resolved connection, announcing rate limits on stderr."""
    resolved = connection.resolve()
    http = httpx.Client(
        timeout=DEFAULT_TIMEOUT,
        verify=resolved.verify,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"response": [note_rate_limit]},
    )
    try:
        yield BulwarkClient(
            resolved.api_url, credential=credential_for(resolved), retry=connection.retry_policy(), http_client=http
        )
    finally:
        http.close()
