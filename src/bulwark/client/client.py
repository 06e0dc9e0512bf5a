"""Synchronous and asynchronous clients for the machine and machine-action API."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from bulwark.client._protocol import (
    USER_AGENT,
    ApiCall,
    ApiCalls,
    Pager,
    RetryPolicy,
    RetryState,
    WaitSchedule,
    action_id_of,
    build_request,
    odata_query,
    read_entity,
)
from bulwark.client.auth import DEFAULT_SCOPE, ClientCredentials, StaticToken, TokenProvider
from bulwark.client.config import (
    ConnectionSettings,
    config_file_from_environment,
    default_authority,
    resolve_from_environment,
    token_cache_path,
    token_cache_wanted,
)
from bulwark.client.errors import ConfigurationError
from bulwark.client.models import Machine, MachineAction
from bulwark.client.token_cache import TokenCache

DEFAULT_API_URL = "https://api.securitycenter.microsoft.com"
DEFAULT_TIMEOUT = 30.0
DEFAULT_WAIT_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 2.0
DEFAULT_MAX_POLL_INTERVAL = 30.0


# Keyword arguments of from_env() that are connection settings: they win over the environment,
# as flags do on the command line. Constructor argument name -> setting name.
_SETTING_ARGUMENTS = {
    "base_url": "api_url",
    "authority": "authority",
    "tenant_id": "tenant_id",
    "client_id": "client_id",
    "client_secret": "client_secret",
    "token": "token",
    "scope": "scope",
    "credentials_file": "credentials_file",
    "ca_file": "ca_file",
    "insecure": "insecure",
}


def settings_from_env(environ: Mapping[str, str] | None = None, *, profile: str | None = None, **explicit: Any) -> dict[str, Any]:
    """Client constructor arguments, resolved exactly as the `bulwark` command resolves its settings.

    From, in order: `explicit` settings (as flags on the command line: `base_url`, `authority`,
    `tenant_id`, `client_id`, `client_secret`, `token`, `scope`, `credentials_file`, `ca_file`,
    `insecure`), the BULWARK_* environment variables, the credentials file
    (BULWARK_CREDENTIALS_FILE, e.g. the demo-credentials.json of `bulwark serve --demo`), the
    profile (`profile`, else BULWARK_PROFILE, else the default one of the config file,
    BULWARK_CONFIG or the user's), and the defaults: the API at http://127.0.0.1:8000, and as
    token authority the API's own server, Entra ID (https://login.microsoftonline.com) only for
    Microsoft's API. Includes `verify` (from BULWARK_INSECURE or BULWARK_CA_FILE).
    """
    unknown = sorted(set(explicit) - set(_SETTING_ARGUMENTS))
    if unknown:
        raise TypeError(f"settings_from_env() got unexpected settings: {', '.join(unknown)}")
    given: dict[str, Any] = {
        _SETTING_ARGUMENTS[name]: str(value) if name in ("credentials_file", "ca_file") else value
        for name, value in explicit.items()
        if value is not None
    }
    resolved = resolve_from_environment(environ, ConnectionSettings(**given), profile_name=profile)
    return {**resolved.client_arguments(), "verify": resolved.verify}


def _token_cache_for(wanted: TokenCache | bool | None, environ: Mapping[str, str]) -> TokenCache | None:
    """The token cache from_env() uses: the one given, the command line's when True or BULWARK_TOKEN_CACHE=on."""
    if isinstance(wanted, TokenCache):
        return wanted
    if wanted is None:
        wanted = token_cache_wanted(environ, default=False)
    return TokenCache(token_cache_path(config_file_from_environment(environ))) if wanted else None


def _credential_from(
    credential: TokenProvider | None,
    token: str | None,
    tenant_id: str | None,
    client_id: str | None,
    client_secret: str | None,
    authority: str,
    scope: str,
    clock: Callable[[], float],
    token_cache: TokenCache | None,
) -> TokenProvider:
    client_credentials_given = any((tenant_id, client_id, client_secret))
    ways = [credential is not None, token is not None, client_credentials_given]
    if sum(ways) != 1:
        raise ConfigurationError("Give exactly one of: credential=, token=, or tenant_id= with client_id= and client_secret=")
    if token_cache is not None and not client_credentials_given:
        raise ConfigurationError("token_cache= keeps client-credential tokens: give tenant_id=, client_id= and client_secret=")
    if credential is not None:
        return credential
    if token is not None:
        return StaticToken(token)
    if not (tenant_id and client_id and client_secret):
        raise ConfigurationError("Client credentials need all of tenant_id, client_id and client_secret")
    return ClientCredentials(
        tenant_id, client_id, client_secret, authority=authority, scope=scope, clock=clock, cache=token_cache
    )


class _ClientBase:
    """What both clients share: settings, and the calls they turn into requests."""

    def __init__(
        self,
        base_url: str,
        *,
        credential: TokenProvider | None,
        token: str | None,
        tenant_id: str | None,
        client_id: str | None,
        client_secret: str | None,
        authority: str | None,
        scope: str,
        token_cache: TokenCache | None,
        retry: RetryPolicy | None,
        clock: Callable[[], float],
        random_fraction: Callable[[], float],
    ) -> None:
        self._calls = ApiCalls(base_url)
        self.credential = _credential_from(
            credential,
            token,
            tenant_id,
            client_id,
            client_secret,
            authority or default_authority(base_url),
            scope,
            clock,
            token_cache,
        )
        self.retry_policy = retry or RetryPolicy()
        self._clock = clock
        self._random_fraction = random_fraction

    @property
    def base_url(self) -> str:
        """The API base URL requests are sent to."""
        return str(self._calls.base_url).rstrip("/")

    def _retry_state(self, call: ApiCall) -> RetryState:
        return RetryState(
            self.retry_policy,
            idempotent=call.idempotent,
            renew_token=self.credential.invalidate,
            random_fraction=self._random_fraction,
        )

    def _wait_schedule(
        self, action: MachineAction | str, timeout: float | None, poll_interval: float, max_poll_interval: float
    ) -> WaitSchedule:
        return WaitSchedule(
            action_id_of(action),
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            clock=self._clock,
        )

    def _actions_pager(self, filter: str | None, top: int | None, skip: int | None, orderby: str | None) -> Pager[MachineAction]:
        first = self._calls.list_actions(odata_query(filter=filter, top=top, skip=skip, orderby=orderby))
        return Pager(self._calls, first, MachineAction, limit=top)

    def _machines_pager(self, filter: str | None, top: int | None, skip: int | None, orderby: str | None) -> Pager[Machine]:
        first = self._calls.list_machines(odata_query(filter=filter, top=top, skip=skip, orderby=orderby))
        return Pager(self._calls, first, Machine, limit=top)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, credential={self.credential!r})"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        profile: str | None = None,
        token_cache: TokenCache | bool | None = None,
        **overrides: Any,
    ) -> Self:
        """A client configured as the `bulwark` command would be, from the same variables, files and profiles.

        See `settings_from_env`. Keyword arguments that are settings (`base_url`, `tenant_id`, ...)
        win over the environment; the others (`timeout`, `retry`, `transport`, ...) go to the
        constructor. `token_cache=True` keeps tokens in the command line's token cache (as does
        BULWARK_TOKEN_CACHE=on), so that scripts and commands run one after the other share a
        token; a TokenCache uses that file instead.
        """
        env = os.environ if environ is None else environ
        explicit = {name: overrides.pop(name) for name in list(overrides) if name in _SETTING_ARGUMENTS}
        arguments = settings_from_env(env, profile=profile, **explicit)
        if "http_client" in overrides:
            arguments.pop("verify")  # the caller's own client verifies as it was made to
        cache = _token_cache_for(token_cache, env)
        if cache is not None and "client_secret" in arguments and "credential" not in overrides:
            arguments["token_cache"] = cache
        return cls(**{**arguments, **overrides})


class BulwarkClient(_ClientBase):
    """Blocking client for the Bulwark (Defender for Endpoint compatible) machine-action API.

    Give the API base URL and one way to authenticate: `tenant_id`, `client_id` and
    `client_secret` (client-credentials flow against `authority`, by default the API's own
    server, or Entra ID for Microsoft's API), a ready `token`, or any `credential` implementing
    TokenProvider. `token_cache` keeps client-credential tokens in a file for later processes.
    `sleep` and `clock` exist so that tests can run retries and waits without real time passing.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        credential: TokenProvider | None = None,
        token: str | None = None,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        authority: str | None = None,
        scope: str = DEFAULT_SCOPE,
        token_cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | ssl.SSLContext = True,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            base_url,
            credential=credential,
            token=token,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            authority=authority,
            scope=scope,
            token_cache=token_cache,
            retry=retry,
            clock=clock,
            random_fraction=random_fraction,
        )
        self._owns_http = http_client is None
        self._http = (
            httpx.Client(timeout=timeout, verify=verify, transport=transport, headers={"User-Agent": USER_AGENT})
            if http_client is None
            else http_client
        )
        self._sleep = sleep

    def offboard(
        self,
        machine_id: str,
        comment: str,
        *,
        external_id: str | None = None,
        title: str | None = None,
        request_source: str | None = None,
    ) -> MachineAction:
        """Ask for the machine to be offboarded; returns the new (usually Pending) action."""
        call = self._calls.offboard(machine_id, comment, external_id, title, request_source)
        return read_entity(self._send(call), MachineAction)

    def get_action(self, action_id: str) -> MachineAction:
        """The machine action with this id."""
        return read_entity(self._send(self._calls.get_action(action_id)), MachineAction)

    def cancel_action(self, action_id: str, comment: str) -> MachineAction:
        """Cancel an action that has not finished; returns it with status Cancelled."""
        return read_entity(self._send(self._calls.cancel_action(action_id, comment)), MachineAction)

    def list_actions(
        self,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        *,
        skip: int | None = None,
    ) -> Iterator[MachineAction]:
        """Machine actions matching an OData `$filter`, newest first, fetched page by page.

        `top` caps how many are returned. Requests are made lazily, as the iterator is consumed.
        """
        return self._iterate(self._actions_pager(filter, top, skip, orderby))

    def get_machine(self, id_or_dns_name: str) -> Machine:
        """The machine with this id or computer DNS name."""
        return read_entity(self._send(self._calls.get_machine(id_or_dns_name)), Machine)

    def list_machines(
        self,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        *,
        skip: int | None = None,
    ) -> Iterator[Machine]:
        """Machines matching an OData `$filter`, fetched page by page as the iterator is consumed."""
        return self._iterate(self._machines_pager(filter, top, skip, orderby))

    def wait(
        self,
        action: MachineAction | str,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    ) -> MachineAction:
        """Poll the action until it is final (Succeeded, Failed, TimeOut or Cancelled) and return it.

        Polls start `poll_interval` seconds apart and grow by half each time, up to
        `max_poll_interval`. Raises ActionWaitTimeout after `timeout` seconds (None: no limit).
        """
        schedule = self._wait_schedule(action, timeout, poll_interval, max_poll_interval)
        current = action if isinstance(action, MachineAction) else self.get_action(action)
        while not current.status.is_final:
            self._sleep(schedule.next_delay(current))
            current = self.get_action(schedule.action_id)
        return current

    def close(self) -> None:
        """Release connections (unless the HTTP client was passed in by the caller)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _send(self, call: ApiCall) -> httpx.Response:
        retry = self._retry_state(call)
        while True:
            request = build_request(self._http, call, self.credential.get_token(self._http))
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                delay = retry.after_transport_error(exc)
            else:
                answer_delay = retry.after_response(response)
                if answer_delay is None:
                    return response
                delay = answer_delay
            if delay > 0:
                self._sleep(delay)

    def _iterate(self, pager: Pager[Any]) -> Iterator[Any]:
        while pager.next_call is not None:
            yield from pager.accept(self._send(pager.next_call))


class AsyncBulwarkClient(_ClientBase):
    """Asyncio client with the same methods as BulwarkClient, to be awaited.

    `list_actions` and `list_machines` return async iterators (`async for`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        credential: TokenProvider | None = None,
        token: str | None = None,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        authority: str | None = None,
        scope: str = DEFAULT_SCOPE,
        token_cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | ssl.SSLContext = True,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            base_url,
            credential=credential,
            token=token,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            authority=authority,
            scope=scope,
            token_cache=token_cache,
            retry=retry,
            clock=clock,
            random_fraction=random_fraction,
        )
        self._owns_http = http_client is None
        self._http = (
            httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport, headers={"User-Agent": USER_AGENT})
            if http_client is None
            else http_client
        )
        self._sleep = sleep

    async def offboard(
        self,
        machine_id: str,
        comment: str,
        *,
        external_id: str | None = None,
        title: str | None = None,
        request_source: str | None = None,
    ) -> MachineAction:
        """Ask for the machine to be offboarded; returns the new (usually Pending) action."""
        call = self._calls.offboard(machine_id, comment, external_id, title, request_source)
        return read_entity(await self._send(call), MachineAction)

    async def get_action(self, action_id: str) -> MachineAction:
        """The machine action with this id."""
        return read_entity(await self._send(self._calls.get_action(action_id)), MachineAction)

    async def cancel_action(self, action_id: str, comment: str) -> MachineAction:
        """Cancel an action that has not finished; returns it with status Cancelled."""
        return read_entity(await self._send(self._calls.cancel_action(action_id, comment)), MachineAction)

    def list_actions(
        self,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        *,
        skip: int | None = None,
    ) -> AsyncIterator[MachineAction]:
        """Machine actions matching an OData `$filter`, newest first, fetched page by page.

        `top` caps how many are returned. Requests are made lazily, as the iterator is consumed.
        """
        return self._iterate(self._actions_pager(filter, top, skip, orderby))

    async def get_machine(self, id_or_dns_name: str) -> Machine:
        """The machine with this id or computer DNS name."""
        return read_entity(await self._send(self._calls.get_machine(id_or_dns_name)), Machine)

    def list_machines(
        self,
        filter: str | None = None,
        top: int | None = None,
        orderby: str | None = None,
        *,
        skip: int | None = None,
    ) -> AsyncIterator[Machine]:
        """Machines matching an OData `$filter`, fetched page by page as the iterator is consumed."""
        return self._iterate(self._machines_pager(filter, top, skip, orderby))

    async def wait(
        self,
        action: MachineAction | str,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
    ) -> MachineAction:
        """Poll the action until it is final (Succeeded, Failed, TimeOut or Cancelled) and return it.

        Polls start `poll_interval` seconds apart and grow by half each time, up to
        `max_poll_interval`. Raises ActionWaitTimeout after `timeout` seconds (None: no limit).
        """
        schedule = self._wait_schedule(action, timeout, poll_interval, max_poll_interval)
        current = action if isinstance(action, MachineAction) else await self.get_action(action)
        while not current.status.is_final:
            await self._sleep(schedule.next_delay(current))
            current = await self.get_action(schedule.action_id)
        return current

    async def aclose(self) -> None:
        """Release connections (unless the HTTP client was passed in by the caller)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, call: ApiCall) -> httpx.Response:
        retry = self._retry_state(call)
        while True:
            request = build_request(self._http, call, await self.credential.get_token_async(self._http))
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                delay = retry.after_transport_error(exc)
            else:
                answer_delay = retry.after_response(response)
                if answer_delay is None:
                    return response
                delay = answer_delay
            if delay > 0:
                await self._sleep(delay)

    async def _iterate(self, pager: Pager[Any]) -> AsyncIterator[Any]:
        while pager.next_call is not None:
            for item in pager.accept(await self._send(pager.next_call)):
                yield item
