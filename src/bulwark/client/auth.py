"""Access-token providers: client credentials from an Entra-ID-style authority, or a fixed token."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx

from bulwark.client.config import DEFAULT_AUTHORITY, DEFAULT_SCOPE
from bulwark.client.errors import AuthenticationError, TokenEndpointUnreachable, untrusted_certificate_hint
from bulwark.client.token_cache import CacheKey

if TYPE_CHECKING:
    from bulwark.client.token_cache import TokenCache


@runtime_checkable
class TokenProvider(Protocol):
    """Something that hands out bearer tokens for the API."""

    def get_token(self, http: httpx.Client | None = None) -> str:
        """Return a valid access token, fetching one with `http` if needed."""
        ...

    async def get_token_async(self, http: httpx.AsyncClient | None = None) -> str:
        """Return a valid access token, fetching one with `http` if needed."""
        ...

    def invalidate(self) -> bool:
        """Forget any cached token; return whether asking again can yield a different one."""
        ...


class StaticToken:
    """A token obtained elsewhere (e.g. `az account get-access-token`), used as is."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._token = token

    def get_token(self, http: httpx.Client | None = None) -> str:
        """Return the token given at construction."""
        return self._token

    async def get_token_async(self, http: httpx.AsyncClient | None = None) -> str:
        """Return the token given at construction."""
        return self._token

    def invalidate(self) -> bool:
        """A fixed token cannot be renewed, so there is nothing to forget."""
        return False

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


@dataclass(frozen=True)
class _CachedToken:
    value: str
    refresh_at: float  # clock reading after which the token is renewed before use


class ClientCredentials:
    """OAuth 2.0 client-credentials grant against `{authority}/{tenant}/oauth2/v2.0/token`.

    The token is cached and reused until `refresh_margin` seconds before it expires (or half
    its lifetime, for short-lived tokens). Concurrent callers share one fetch: a lock guards it
    for threads, and a per-event-loop asyncio lock for tasks. With a `cache` (a TokenCache file)
    the token is also kept on disk, so that later processes with the same authority, tenant,
    client, scope and secret reuse it instead of asking for another.
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        authority: str = DEFAULT_AUTHORITY,
        scope: str = DEFAULT_SCOPE,
        refresh_margin: float = 300.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        cache: TokenCache | None = None,
    ) -> None:
        missing = [
            name
            for name, value in (("tenant_id", tenant_id), ("client_id", client_id), ("client_secret", client_secret))
            if not value
        ]
        if missing:
            raise ValueError(f"ClientCredentials needs {', '.join(missing)}")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.authority = authority.rstrip("/")
        self.scope = scope
        self._client_secret = client_secret
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        self._cached: _CachedToken | None = None
        self._cache = cache
        self._cache_key = CacheKey(self.authority, tenant_id, client_id, scope)
        self._thread_lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    @property
    def token_url(self) -> str:
        """Where tokens are requested."""
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    def get_token(self, http: httpx.Client | None = None) -> str:
        """Return a cached token, or fetch a new one (with `http`, or a short-lived client)."""
        token = self._fresh_cached()
        if token is not None:
            return token
        with self._thread_lock:
            token = self._fresh_cached() or self._from_cache_file()
            if token is not None:
                return token
            if http is None:
                with httpx.Client(timeout=self._timeout) as own_http:
                    response = self._post(own_http)
            else:
                response = self._post(http)
            return self._accept(response)

    async def get_token_async(self, http: httpx.AsyncClient | None = None) -> str:
        """Return a cached token, or fetch a new one (with `http`, or a short-lived client)."""
        token = self._fresh_cached()
        if token is not None:
            return token
        async with self._loop_lock():
            token = self._fresh_cached() or self._from_cache_file()
            if token is not None:
                return token
            if http is None:
                async with httpx.AsyncClient(timeout=self._timeout) as own_http:
                    response = await self._post_async(own_http)
            else:
                response = await self._post_async(http)
            return self._accept(response)

    def invalidate(self) -> bool:
        """Drop the cached token (in memory and in the cache file) so that the next call fetches a new one."""
        refused, self._cached = self._cached, None
        if refused is not None and self._cache is not None:
            self._cache.forget(self._cache_key, refused.value)
        return True

    def __repr__(self) -> str:
        return (
            f"ClientCredentials(tenant_id={self.tenant_id!r}, client_id={self.client_id!r}, "
            f"authority={self.authority!r}, scope={self.scope!r})"
        )

    def _fresh_cached(self) -> str | None:
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        return None

    def _from_cache_file(self) -> str | None:
        if self._cache is None:
            return None
        entry = self._cache.lookup(self._cache_key, self._client_secret)
        if entry is None:
            return None
        # The file keeps wall-clock times (other processes read it); this object keeps its own clock.
        remaining = entry.refresh_on(self._refresh_margin) - self._cache.clock()
        if remaining <= 0:
            return None
        self._cached = _CachedToken(value=entry.access_token, refresh_at=self._clock() + remaining)
        return entry.access_token

    def _loop_lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; a provider may outlive a loop (tests,
        # asyncio.run called repeatedly), so each loop gets its own.
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.get(loop)
        if lock is None:
            lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    def _form(self) -> dict[str, str]:
        return {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "scope": self.scope,
            "grant_type": "client_credentials",
        }

    def _post(self, http: httpx.Client) -> httpx.Response:
        try:
            return http.post(self.token_url, data=self._form(), headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _unreachable(self.token_url, exc) from exc

    async def _post_async(self, http: httpx.AsyncClient) -> httpx.Response:
        try:
            return await http.post(self.token_url, data=self._form(), headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _unreachable(self.token_url, exc) from exc

    def _accept(self, response: httpx.Response) -> str:
        issued_at = self._clock()
        access_token, expires_in = parse_token_response(response)
        lifetime = max(expires_in, 0.0)
        self._cached = _CachedToken(
            value=access_token,
            refresh_at=issued_at + lifetime - min(self._refresh_margin, lifetime / 2),
        )
        if self._cache is not None:
            self._cache.store(self._cache_key, self._client_secret, access_token, expires_in=lifetime)
        return access_token


def parse_token_response(response: httpx.Response) -> tuple[str, float]:
    """Read `(access_token, expires_in)` from a token response, or raise AuthenticationError."""
    request_id = response.headers.get("request-id") or response.headers.get("x-ms-request-id")
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AuthenticationError(
            f"Token endpoint answered {response.status_code} without a JSON body",
            status=response.status_code,
            request_id=request_id,
        )
    if response.status_code != 200 or "access_token" not in body:
        error = body.get("error") if isinstance(body.get("error"), str) else None
        description = body.get("error_description") or error or "no access_token in the response"
        raise AuthenticationError(
            f"Token request failed ({response.status_code} {error or 'error'}): {description}",
            status=response.status_code,
            error=error,
            request_id=body.get("trace_id") or request_id,
        )
    try:
        # Entra ID v1 endpoints sent expires_in as a string; v2 sends a number.
        expires_in = float(body.get("expires_in", 3600))
    except (TypeError, ValueError):
        expires_in = 3600.0
    return str(body["access_token"]), expires_in


def _unreachable(token_url: str, exc: httpx.HTTPError) -> TokenEndpointUnreachable:
    hint = untrusted_certificate_hint(exc)
    return TokenEndpointUnreachable(f"Could not reach the token endpoint {token_url}: {type(exc).__name__}: {exc}{hint}")
