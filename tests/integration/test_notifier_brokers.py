"""Wake-ups across processes: a waiter on one notifier is woken by a publish on another."""

from __future__ import annotations

import asyncio

import pytest
import redis

from bulwark.notifier import PostgresNotifier, RedisNotifier
from tests.conftest import REDIS_URL, unavailable


async def _woken_across(listener, publisher) -> bool:
    await listener.start()
    await publisher.start()
    try:
        async with listener.subscribe("machine-x") as subscription, listener.subscribe("machine-y") as other:
            await asyncio.to_thread(publisher.publish, "machine-x")
            woken = await subscription.wait(5)
            assert await other.wait(0.1) is False
            return woken
    finally:
        await publisher.stop()
        await listener.stop()


@pytest.mark.postgres
async def test_postgres_listen_notify_wakes_another_process(postgres_database: str) -> None:
    assert await _woken_across(PostgresNotifier(postgres_database), PostgresNotifier(postgres_database))


@pytest.mark.redis
async def test_redis_pubsub_wakes_another_process() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} unreachable: {exc.__class__.__name__}")
    assert await _woken_across(RedisNotifier(REDIS_URL), RedisNotifier(REDIS_URL))
