"""The token cache file: tokens shared between processes, owner-only, keyed without the secret, dropped when stale."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from bulwark.client import DEFAULT_SCOPE, BulwarkClient, ClientCredentials, TokenCache
from bulwark.client.token_cache import CacheKey

AUTHORITY = "https://bulwark.test"
TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"
SECRET = "first-secret-value"
LIFETIME = 3600.0


class Clock:
    """Wall-clock time (for the file) that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Authority:
    """A token endpoint that hands out token-1, token-2, ... and an API that accepts only the tokens it issued."""

    def __init__(self) -> None:
        self.token_requests: list[httpx.Request] = []
        self.issued: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/v2.0/token"):
            self.token_requests.append(request)
            token = f"token-{len(self.issued) + 1}"
            self.issued.append(token)
            return httpx.Response(200, json={"token_type": "Bearer", "expires_in": LIFETIME, "access_token": token})
        if request.headers.get("Authorization") not in {f"Bearer {token}" for token in self.issued}:
            return httpx.Response(401, json={"error": {"code": "Unauthorized", "message": "invalid token", "target": "r"}})
        return httpx.Response(200, json={"id": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07", "computerDnsName": "h.contoso.com"})


@pytest.fixture
def authority() -> Authority:
    return Authority()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "token-cache.json"


def process(cache_path: Path, clock: Clock, *, secret: str = SECRET, scope: str | None = None) -> ClientCredentials:
    """What one command run holds: a fresh ClientCredentials on the shared cache file."""
    extra = {"scope": scope} if scope else {}
    return ClientCredentials(TENANT, "app-1", secret, authority=AUTHORITY, cache=TokenCache(cache_path, clock=clock), **extra)


def token_from(credentials: ClientCredentials, authority: Authority) -> str:
    with httpx.Client(transport=httpx.MockTransport(authority.handle)) as http:
        return credentials.get_token(http)


def test_consecutive_processes_make_one_token_request(authority: Authority, clock: Clock, cache_path: Path) -> None:
    first = token_from(process(cache_path, clock), authority)
    clock.now += 600
    second = token_from(process(cache_path, clock), authority)

    assert first == second == "token-1"
    assert len(authority.token_requests) == 1


async def test_the_async_path_reads_and_writes_the_same_file(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)

    async with httpx.AsyncClient(transport=httpx.MockTransport(authority.handle)) as http:
        reused = await process(cache_path, clock).get_token_async(http)

    assert reused == "token-1"
    assert len(authority.token_requests) == 1


def test_the_file_is_owner_only_and_holds_no_secret(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)

    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_path.parent.stat().st_mode) == 0o700
    text = cache_path.read_text()
    assert SECRET not in text
    assert "token-1" in text
    # No temporary file is left beside it.
    assert [p.name for p in cache_path.parent.iterdir()] == ["token-cache.json"]


def test_a_changed_secret_does_not_reuse_the_old_secrets_token(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)

    renewed = token_from(process(cache_path, clock, secret="rotated-secret"), authority)

    assert renewed == "token-2"
    assert [parse_qs(r.content.decode())["client_secret"] for r in authority.token_requests] == [[SECRET], ["rotated-secret"]]
    # The old secret's token is gone with it: going back to it asks again.
    assert token_from(process(cache_path, clock), authority) == "token-3"


def test_another_scope_gets_a_token_of_its_own(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)

    other = token_from(process(cache_path, clock, scope="api://other/.default"), authority)

    assert other == "token-2"
    assert token_from(process(cache_path, clock), authority) == "token-1"  # both kept


def test_an_expired_entry_is_not_used(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)
    clock.now += LIFETIME + 1

    assert token_from(process(cache_path, clock), authority) == "token-2"
    assert len(authority.token_requests) == 2


def test_a_token_is_renewed_a_margin_before_it_expires(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)
    clock.now += LIFETIME - 301  # more than the five-minute margin left: still used
    assert token_from(process(cache_path, clock), authority) == "token-1"

    clock.now += 2  # less than five minutes left: renewed, though the server would still take it
    assert token_from(process(cache_path, clock), authority) == "token-2"


def test_a_token_the_api_refuses_is_dropped_and_replaced(authority: Authority, clock: Clock, cache_path: Path) -> None:
    # An entry the server no longer honours (its signing key was rotated, say), still far from expiry.
    key = CacheKey(AUTHORITY, TENANT, "app-1", DEFAULT_SCOPE)
    TokenCache(cache_path, clock=clock).store(key, SECRET, "revoked-token", expires_in=LIFETIME)

    with BulwarkClient(
        AUTHORITY,
        tenant_id=TENANT,
        client_id="app-1",
        client_secret=SECRET,
        token_cache=TokenCache(cache_path, clock=clock),
        transport=httpx.MockTransport(authority.handle),
    ) as client:
        machine = client.get_machine("h.contoso.com")

    assert machine.computer_dns_name == "h.contoso.com"
    assert len(authority.token_requests) == 1
    stored = json.loads(cache_path.read_text())["tokens"]
    assert [entry["access_token"] for entry in stored.values()] == ["token-1"]


def test_a_file_others_may_read_is_ignored(authority: Authority, clock: Clock, cache_path: Path) -> None:
    token_from(process(cache_path, clock), authority)
    cache_path.chmod(0o644)

    assert token_from(process(cache_path, clock), authority) == "token-2"
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600  # rewritten owner-only


def test_a_symlinked_cache_file_is_not_followed(authority: Authority, clock: Clock, cache_path: Path, tmp_path: Path) -> None:
    token_from(process(cache_path, clock), authority)
    elsewhere = tmp_path / "elsewhere.json"
    cache_path.rename(elsewhere)
    cache_path.symlink_to(elsewhere)

    assert token_from(process(cache_path, clock), authority) == "token-2"
    assert not cache_path.is_symlink()  # replaced by a file of its own
    assert "token-1" in elsewhere.read_text()  # and the link's target left alone


def test_a_damaged_file_is_replaced(authority: Authority, clock: Clock, cache_path: Path) -> None:
    cache_path.parent.mkdir(mode=0o700)
    descriptor = os.open(cache_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(descriptor, b"{not json")
    os.close(descriptor)

    assert token_from(process(cache_path, clock), authority) == "token-1"
    assert token_from(process(cache_path, clock), authority) == "token-1"


def test_an_unwritable_place_costs_only_the_reuse(authority: Authority, clock: Clock, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    path = blocked / "token-cache.json"  # its directory is a file: nothing can be written there

    assert token_from(process(path, clock), authority) == "token-1"
    assert token_from(process(path, clock), authority) == "token-2"


def test_from_env_uses_the_cache_when_asked(authority: Authority, tmp_path: Path) -> None:
    environ = {
        "BULWARK_CONFIG": str(tmp_path / "config.json"),
        "BULWARK_API_URL": AUTHORITY,
        "BULWARK_TENANT_ID": TENANT,
        "BULWARK_CLIENT_ID": "app-1",
        "BULWARK_CLIENT_SECRET": SECRET,
    }
    transport = httpx.MockTransport(authority.handle)

    for _ in range(2):
        with BulwarkClient.from_env(environ, transport=transport) as client:
            client.get_machine("h.contoso.com")
    assert len(authority.token_requests) == 2  # not asked for: every client fetches its own
    assert not (tmp_path / "token-cache.json").exists()

    for asked in ({"token_cache": True}, {}):
        env = environ if asked else {**environ, "BULWARK_TOKEN_CACHE": "on"}
        with BulwarkClient.from_env(env, transport=transport, **asked) as client:
            client.get_machine("h.contoso.com")
    assert len(authority.token_requests) == 3  # one more, then reused from token-cache.json beside the config file
    assert (tmp_path / "token-cache.json").exists()
