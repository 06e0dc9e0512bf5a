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
from bulwark.client.auth import DEFAULT_AUTHORITY, DEFAULT_SCOPE, ClientCredentials, StaticToken, TokenProvider
from bulwark.client.errors import ConfigurationError
from bulwark.client.models import Machine, MachineAction

DEFAULT_API_URL = "https://api.securitycenter.microsoft.com"
DEFAULT_TIMEOUT = 30.0
DEFAULT_WAIT_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 2.0
DEFAULT_MAX_POLL_INTERVAL = 30.0


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Client constructor arguments from BULWARK_* environment variables.

    BULWARK_API_URL (default: the live API), and either BULWARK_TOKEN (a ready bearer token)
    or BULWARK_TENANT_ID, BULWARK_CLIENT_ID and BULWARK_CLIENT_SECRET, with BULWARK_AUTHORITY
    (default: https://login.microsoftonline.com) and optionally BULWARK_SCOPE.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {"base_url": env.get("BULWARK_API_URL") or DEFAULT_API_URL}
    if env.get("BULWARK_TOKEN"):
        settings["token"] = env["BULWARK_TOKEN"]
        return settings
    required = ("BULWARK_TENANT_ID", "BULWARK_CLIENT_ID", "BULWARK_CLIENT_SECRET")
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise ConfigurationError(f"Set {', '.join(missing)} (or BULWARK_TOKEN) to authenticate to the Bulwark API")
    settings.update(
        tenant_id=env["BULWARK_TENANT_ID"],
        client_id=env["BULWARK_CLIENT_ID"],
        client_secret=env["BULWARK_CLIENT_SECRET"],
        authority=env.get("BULWARK_AUTHORITY") or DEFAULT_AUTHORITY,
    )
    if env.get("BULWARK_SCOPE"):
        settings["scope"] = env["BULWARK_SCOPE"]
    return settings


def _credential_from(
    credential: TokenProvider | None,
    token: str | None,
    tenant_id: str | None,
    client_id: str | None,
    client_secret: str | None,
    authority: str,
    scope: str,
    clock: Callable[[], float],
) -> TokenProvider:
    client_credentials_given = any((tenant_id, client_id, client_secret))
    ways = [credential is not None, token is not None, client_credentials_given]
    if sum(ways) != 1:
        raise ConfigurationError("Give exactly one of: credential=, token=, or tenant_id= with client_id= and client_secret=")
    if credential is not None:
        return credential
    if token is not None:
        return StaticToken(token)
    if not (tenant_id and client_id and client_secret):
        raise ConfigurationError("Client credentials need all of tenant_id, client_id and client_secret")
    return ClientCredentials(tenant_id, client_id, client_secret, authority=authority, scope=scope, clock=clock)


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
        authority: str,
        scope: str,
        retry: RetryPolicy | None,
        clock: Callable[[], float],
        random_fraction: Callable[[], float],
    ) -> None:
        self._calls = ApiCalls(base_url)
        self.credential = _credential_from(credential, token, tenant_id, client_id, client_secret, authority, scope, clock)
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
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """A client configured from BULWARK_* environment variables (see `settings_from_env`)."""
        return cls(**{**settings_from_env(environ), **overrides})


class BulwarkClient(_ClientBase):
    """Blocking client for the Bulwark (Defender for Endpoint compatible) machine-action API.

    Give the API base URL and one way to authenticate: `tenant_id`, `client_id` and
    `client_secret` (client-credentials flow against `authority`), a ready `token`, or any
    `credential` implementing TokenProvider. `sleep` and `clock` exist so that tests can run
    retries and waits without real time passing.
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
        authority: str = DEFAULT_AUTHORITY,
        scope: str = DEFAULT_SCOPE,
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
        authority: str = DEFAULT_AUTHORITY,
        scope: str = DEFAULT_SCOPE,
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
