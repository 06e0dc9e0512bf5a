"""The connection flags every API command takes, and the client they open."""

# The parameters this module adds to every command's signature are real objects (typer reads
# them at run time); its own functions are no commands, so their annotations may stay strings.
from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bulwark.cli.api.output import reporting_errors, stderr
from bulwark.client.config import (
    CONFIG_VARIABLE,
    ENVIRONMENT_VARIABLES,
    PROFILE_VARIABLE,
    TOKEN_CACHE_FILE_NAME,
    TOKEN_CACHE_VARIABLE,
    ConnectionSettings,
    ResolvedConnection,
    config_file,
    resolve_connection,
    token_cache_path,
    token_cache_wanted,
)

# The SDK (httpx, pydantic) is loaded when a command calls the API, not when `bulwark --help` runs.
if TYPE_CHECKING:
    import httpx

    from bulwark.client._protocol import RetryPolicy
    from bulwark.client.auth import TokenProvider
    from bulwark.client.client import BulwarkClient
    from bulwark.client.token_cache import TokenCache

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
    no_token_cache: bool = False

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
        from bulwark.client._protocol import RetryPolicy

        return RetryPolicy(rate_limit_max_retries=1000, rate_limit_max_wait=self.max_rate_limit_wait)

    def cache(self) -> TokenCache | None:
        """The token cache beside the config file, unless --no-token-cache or BULWARK_TOKEN_CACHE=off."""
        if self.no_token_cache or not token_cache_wanted(os.environ, default=True):
            return None
        from bulwark.client.token_cache import TokenCache

        return TokenCache(token_cache_path(config_path(self.config)))


def _variables(setting: str) -> list[str]:
    # The variables the SDK reads too (bulwark.client.config), so that both find the same settings.
    return list(ENVIRONMENT_VARIABLES[setting])


_CONNECTION_PARAMETERS: list[tuple[str, Any]] = [
    (
        "api_url",
        Annotated[
            str | None,
            typer.Option(
                "--api-url",
                envvar=_variables("api_url"),
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
                envvar=_variables("authority"),
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
                envvar=_variables("tenant_id"),
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
                "--client-id", envvar=_variables("client_id"), rich_help_panel=CONNECTION_PANEL, help="Application (client) id."
            ),
        ],
    ),
    (
        "client_secret",
        Annotated[
            str | None,
            typer.Option(
                "--client-secret",
                envvar=_variables("client_secret"),
                rich_help_panel=CONNECTION_PANEL,
                help="Application secret.",
            ),
        ],
    ),
    (
        "token",
        Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar=_variables("token"),
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
                envvar=_variables("scope"),
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
                envvar=PROFILE_VARIABLE,
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
                envvar=_variables("credentials_file"),
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
                envvar=_variables("insecure"),
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
                envvar=_variables("ca_file"),
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
                envvar=CONFIG_VARIABLE,
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
    (
        "no_token_cache",
        Annotated[
            bool,
            typer.Option(
                "--no-token-cache",
                rich_help_panel=CONNECTION_PANEL,
                help=f"Fetch a new token rather than reuse one that earlier commands kept in {TOKEN_CACHE_FILE_NAME} "
                f"beside the config file ({TOKEN_CACHE_VARIABLE}=off does the same).",
            ),
        ],
    ),
]
_CONNECTION_DEFAULTS = {"max_rate_limit_wait": DEFAULT_RATE_LIMIT_WAIT, "no_token_cache": False}


def config_path(given: Path | None) -> Path:
    """The config file: the one given (flag or BULWARK_CONFIG), else the user's config directory."""
    return config_file(given)


def with_connection(command: Callable[..., None]) -> Callable[..., None]:
    """Add the connection flags to a command, handing them to it as `connection`, and report errors."""
    # Annotations written as strings (`from __future__ import annotations`) are resolved in the
    # command's own module, since typer reads them from the wrapper.
    hints = typing.get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    own = [
        parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
        for parameter in signature.parameters.values()
        if parameter.name != "connection"
    ]
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
    wrapper.__annotations__ = {
        **{name: hint for name, hint in hints.items() if name != "connection"},
        **dict(_CONNECTION_PARAMETERS),
    }
    return wrapper


def credential_for(resolved: ResolvedConnection, cache: TokenCache | None = None) -> TokenProvider:
    """The token provider for the resolved settings: a ready token, or client credentials (cached in `cache`)."""
    from bulwark.client.auth import ClientCredentials, StaticToken

    if resolved.token:
        return StaticToken(resolved.token)
    assert resolved.tenant_id and resolved.client_id and resolved.client_secret
    return ClientCredentials(
        resolved.tenant_id,
        resolved.client_id,
        resolved.client_secret,
        authority=resolved.authority,
        scope=resolved.scope,
        cache=cache,
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
    import httpx

    from bulwark.client._protocol import USER_AGENT
    from bulwark.client.client import DEFAULT_TIMEOUT, BulwarkClient

    resolved = connection.resolve()
    http = httpx.Client(
        timeout=DEFAULT_TIMEOUT,
        verify=resolved.verify,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"response": [note_rate_limit]},
    )
    try:
        yield BulwarkClient(
            resolved.api_url,
            credential=credential_for(resolved, connection.cache()),
            retry=connection.retry_policy(),
            http_client=http,
        )
    finally:
        http.close()
