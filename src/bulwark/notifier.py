"""Wake-ups for sensors waiting on a long poll: in-process, PostgreSQL LISTEN/NOTIFY, or Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger("bulwark.notifier")

CHANNEL = "bulwark_wakeup"
# Sent to every waiter when a listener reconnects: wake-ups may have been missed meanwhile.
EVERYONE = "*"


class Subscription:
    """One waiter's interest in a key; ``wait`` returns when the key is published (or on timeout)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._for_key = False
        # Whether the last wake-up was for this waiter's own key (not one sent to everyone).
        self.woken_for_key = False

    def fire(self, *, for_key: bool = False) -> None:
        """Wake the waiter (or let its next wait return at once); ``for_key``: published for its own key."""
        self._for_key = self._for_key or for_key
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake-up; return whether one came, and re-arm."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()
            self.woken_for_key, self._for_key = self._for_key, False


class Notifier(Protocol):
    """Publish "something changed for KEY" from any thread; await it in the event loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, key: str) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    def publish(self, key: str) -> None: ...


class _Fanout:
    """This process's waiters by key; every method runs in the event loop's thread."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[Subscription]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str) -> AsyncIterator[Subscription]:
        self.loop = self.loop or asyncio.get_running_loop()
        subscription = Subscription()
        self.waiters.setdefault(key, set()).add(subscription)
        try:
            yield subscription
        finally:
            group = self.waiters.get(key)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self.waiters[key]

    def dispatch(self, key: str) -> None:
        targets = [s for group in self.waiters.values() for s in group] if key == EVERYONE else self.waiters.get(key, ())
        for_key = key != EVERYONE
        for subscription in list(targets):
            subscription.fire(for_key=for_key)

    def dispatch_threadsafe(self, key: str) -> None:
        if key != EVERYONE and key not in self.waiters:
            # Nobody waits on it: skip waking the loop. Safe without a lock: a waiter subscribes
            # before it looks for work, and publishers publish after the work is committed, so a
            # waiter that subscribes after this check finds the work when it looks.
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.dispatch, key)

    @property
    def waiting(self) -> int:
        """How many waiters there are (for metrics and tests)."""
        return sum(len(group) for group in self.waiters.values())


class InProcessNotifier:
    """Wake-ups within one server process (the default with SQLite)."""

    def __init__(self) -> None:
        self._fanout = _Fanout()

    async def start(self) -> None:
        """Bind to the running event loop."""
        self._fanout.loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Wake every waiter so that long polls end promptly at shutdown."""
        self._fanout.dispatch(EVERYONE)

    def wake_local_waiters(self) -> None:
        """Wake every waiter of this process, and of no other (call it in the event loop's thread)."""
        self._fanout.dispatch(EVERYONE)

    def subscribe(self, key: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Register interest in ``key`` before checking for work, so no wake-up is lost in between."""
        return self._fanout.subscribe(key)

    def publish(self, key: str) -> None:
        """Wake this process's waiters on ``key``; callable from any thread."""
        self._fanout.dispatch_threadsafe(key)

    @property
    def waiting(self) -> int:
        """How many long polls are waiting in this process."""
        return self._fanout.waiting


class _ListeningNotifier(InProcessNotifier):
    """A notifier whose wake-ups travel through a shared broker, received by one listener task."""

    def __init__(self) -> None:
        super().__init__()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once the first subscription to the broker is in place."""
        await super().start()
        self._task = asyncio.create_task(self._listen_forever())
        try:
            await asyncio.wait_for(self._ready.wait(), 10)
        except TimeoutError:
            log.warning("wake-up listener not connected yet; sensors fall back to their poll timeout")

    async def stop(self) -> None:
        """Stop listening and wake every local waiter."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await super().stop()

    async def _listen_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wake-up listener lost its connection (%s); reconnecting", exc.__class__.__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    def _connected(self) -> None:
        if self._ready.is_set():
            # A reconnect: anything published while disconnected was missed, so everyone re-checks.
            self._fanout.dispatch(EVERYONE)
        self._ready.set()

    async def _listen(self) -> None:
        raise NotImplementedError


class PostgresNotifier(_ListeningNotifier):
    """Wake-ups across processes and hosts through PostgreSQL LISTEN/NOTIFY (one connection a process)."""

    def __init__(self, database_url: str, engine: Engine | None = None) -> None:
        super().__init__()
        from sqlalchemy.engine import make_url

        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        # Publishing borrows a pooled connection when the app's engine is at hand.
        self._engine = engine

    async def _listen(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._connected()
            async for notification in conn.notifies():
                self._fanout.dispatch(notification.payload)

    def publish(self, key: str) -> None:
        """NOTIFY every process listening on the database; callable from any thread."""
        if self._engine is not None:
            from sqlalchemy import text

            with self._engine.connect() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :key)"), {"channel": CHANNEL, "key": key})
                conn.commit()
            return
        import psycopg

        with psycopg.connect(self._dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, key))

    def publish_within(self, conn: Connection, keys: Sequence[str]) -> None:
        """NOTIFY each of ``keys`` inside ``conn``'s open transaction, in one statement.

        PostgreSQL delivers the notifications when that transaction commits, and drops them if it
        rolls back: a wake-up is never sent for work that is not committed, nor lost for work that is.
        Sent on psycopg itself: it is one fixed statement, on the group-commit writer's busiest path.
        """
        from sqlalchemy.exc import DBAPIError

        driver = conn.connection.driver_connection
        assert driver is not None
        error_type = conn.dialect.loaded_dbapi.Error
        try:
            driver.execute(_NOTIFY_EACH, (CHANNEL, list(keys))).close()
        except error_type as error:
            # Raised as SQLAlchemy raises a driver's error, saying whether the connection was lost.
            lost = conn.dialect.is_disconnect(error, driver, None)
            raise DBAPIError.instance(_NOTIFY_EACH, None, error, error_type, connection_invalidated=lost) from error


_NOTIFY_EACH = "SELECT pg_notify(%s, key) FROM unnest(%s::text[]) AS key"


class RedisNotifier(_ListeningNotifier):
    """Wake-ups across processes and hosts through Redis pub/sub."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        import redis

        self._url = redis_url
        self._publisher = redis.Redis.from_url(redis_url)

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self._url)
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(CHANNEL)
            self._connected()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message["data"]
                    self._fanout.dispatch(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await client.aclose()

    def publish(self, key: str) -> None:
        """PUBLISH to every subscribed process; callable from any thread."""
        self._publisher.publish(CHANNEL, key)


def create_notifier(kind: str, database_url: str, redis_url: str | None, engine: Engine | None = None) -> InProcessNotifier:
    """The notifier the settings ask for; ``auto`` picks Redis, then PostgreSQL, then in-process."""
    if kind == "auto":
        kind = "redis" if redis_url else ("postgres" if database_url.startswith("postgresql") else "memory")
    if kind == "redis":
        if not redis_url:
            raise ValueError("notifier 'redis' needs BULWARK_REDIS_URL")
        return RedisNotifier(redis_url)
    if kind == "postgres":
        return PostgresNotifier(database_url, engine)
    return InProcessNotifier()
