"""Rate limits across real server processes: one budget shared through Redis, and Redis failures."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import free_port, server_process

pytestmark = pytest.mark.slow

MACHINE = make_machine(41)


def _env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "BULWARK_DATABASE_URL": database_url,
        "BULWARK_DATA_DIR": str(data_dir),
        "BULWARK_DEFAULT_TENANT_ID": TENANT,
        "BULWARK_RATE_LIMIT_KEY_PREFIX": f"bulwark-test:{uuid.uuid4().hex}",
        **extra,
    }


async def _many_reads(base: str, token: str, count: int) -> list[int]:
    # One fresh connection per call, so the kernel spreads them over both workers.
    async def one() -> int:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return (await client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token))).status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


def test_two_worker_processes_share_one_budget_through_redis(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, redis_url: str, tmp_path: Path
) -> None:
    seed(uow_factory, [MACHINE])
    client_id = register_app(uow_factory)
    env = _env(database_url, tmp_path, BULWARK_REDIS_URL=redis_url, BULWARK_RATE_LIMIT="6/minute;100/hour")
    with server_process("--workers", "2", env=env, log=tmp_path / "server.log") as base:
        with httpx.Client(base_url=base) as client:
            token = app_token(client, client_id)
        statuses = asyncio.run(_many_reads(base, token, 30))
        # Each worker counting alone would let up to 12 through.
        assert statuses.count(200) == 6
        assert statuses.count(429) == 24


def test_another_caller_keeps_its_own_budget(database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path) -> None:
    seed(uow_factory, [MACHINE])
    noisy, quiet = register_app(uow_factory, name="noisy"), register_app(uow_factory, name="quiet")
    with server_process(env=_env(database_url, tmp_path, BULWARK_RATE_LIMIT="3/minute")) as base:
        with httpx.Client(base_url=base) as client:
            noisy_token, quiet_token = app_token(client, noisy), app_token(client, quiet)
            read = lambda token: client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)).status_code  # noqa: E731
            assert [read(noisy_token) for _ in range(5)] == [200, 200, 200, 429, 429]
            assert [read(quiet_token) for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(("mode", "expected"), [("open", 200), ("closed", 503)])
def test_unreachable_redis_fails_as_configured(
    database_url: str, uow_factory: SqlUnitOfWorkFactory, tmp_path: Path, mode: str, expected: int
) -> None:
    seed(uow_factory, [MACHINE])
    client_id = register_app(uow_factory)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = _env(database_url, tmp_path, BULWARK_REDIS_URL=dead_redis, BULWARK_RATE_LIMIT_FAIL_MODE=mode, BULWARK_NOTIFIER="memory")
    log = tmp_path / "server.log"
    with server_process(env=env, log=log) as base, httpx.Client(base_url=base) as client:
        token = app_token(client, client_id)
        responses = [client.get(f"/api/machines/{MACHINE.id}", headers=bearer(token)) for _ in range(3)]
    assert [r.status_code for r in responses] == [expected] * 3
    if mode == "closed":
        assert responses[0].json()["error"]["code"] == "ServiceUnavailable"
    assert "until it answers" in log.read_text()  # the storage failure was logged as a warning
