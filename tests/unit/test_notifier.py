"""The in-process notifier: a published key wakes its waiters, and only them."""

from __future__ import annotations

import asyncio
import threading

from bulwark.notifier import InProcessNotifier, PostgresNotifier, RedisNotifier, create_notifier


async def test_publish_wakes_only_waiters_on_that_key() -> None:
    notifier = InProcessNotifier()
    await notifier.start()
    async with notifier.subscribe("machine-a") as a, notifier.subscribe("machine-b") as b:
        notifier.publish("machine-a")
        assert await a.wait(2) is True
        assert await b.wait(0.05) is False
        assert notifier.waiting == 2
    assert notifier.waiting == 0


async def test_a_wake_up_before_waiting_is_not_lost() -> None:
    notifier = InProcessNotifier()
    await notifier.start()
    async with notifier.subscribe("m") as subscription:
        # Published between "looked for work" and "started waiting": the wait returns at once.
        notifier.publish("m")
        await asyncio.sleep(0)
        assert await subscription.wait(2) is True
        assert await subscription.wait(0.05) is False


async def test_publish_from_another_thread_and_stop_wakes_everyone() -> None:
    notifier = InProcessNotifier()
    await notifier.start()
    async with notifier.subscribe("m") as one, notifier.subscribe("n") as two:
        threading.Thread(target=notifier.publish, args=("m",)).start()
        assert await one.wait(2) is True
        await notifier.stop()
        assert await two.wait(2) is True


def test_auto_picks_redis_then_postgres_then_memory() -> None:
    assert isinstance(create_notifier("auto", "postgresql+psycopg://u@h/db", "redis://localhost:6379/0"), RedisNotifier)
    assert isinstance(create_notifier("auto", "postgresql+psycopg://u@h/db", None), PostgresNotifier)
    assert type(create_notifier("auto", "sqlite:///x.db", None)) is InProcessNotifier


async def test_a_wait_tells_a_wake_up_for_its_key_from_one_sent_to_everyone() -> None:
    notifier = InProcessNotifier()
    await notifier.start()
    async with notifier.subscribe("m") as subscription:
        assert subscription.woken_for_key is False
        notifier.publish("m")
        await asyncio.sleep(0)
        assert await subscription.wait(2) is True
        assert subscription.woken_for_key is True
        # A timeout is no wake-up for the key.
        assert await subscription.wait(0.01) is False
        assert subscription.woken_for_key is False
        # Sent to everyone (a listener reconnecting, the server stopping): not for the key.
        notifier.wake_local_waiters()
        assert await subscription.wait(2) is True
        assert subscription.woken_for_key is False
        # Both before one wait: the key's wake-up is not hidden by the other.
        notifier.publish("m")
        await asyncio.sleep(0)
        notifier.wake_local_waiters()
        assert await subscription.wait(2) is True
        assert subscription.woken_for_key is True
