"""What runs beside the routes in each server process: the wake-up listener, the sweeper, and the
end of long polls at a shutdown signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from bulwark.bootstrap import Runtime, stop_long_polls, sweep_policy
from bulwark.service.actions import sweep
from bulwark.service.control import clock_state
from bulwark.store.db import refresh_statistics

log = logging.getLogger("bulwark.sweeper")
actions_log = logging.getLogger("bulwark.actions")


async def _sweep_forever(runtime: Runtime) -> None:
    """Sweep every interval; guarded transitions make it safe in every process at once."""
    policy = sweep_policy(runtime.settings)
    while True:
        try:
            if runtime.control is not None:
                # Another process may have moved the clock since this one last looked.
                offset, _ = await run_in_threadpool(clock_state, runtime.uow(write=False))
                runtime.control.apply_offset(offset)
            result = await run_in_threadpool(sweep, policy, runtime.uow(), runtime.clock)
            runtime.metrics.sweeper_runs.labels("ok").inc()
            for ended in result.timed_out:
                runtime.metrics.actions_finished.labels(ended.type, "TimeOut").inc()
                actions_log.info(
                    "action finished: %s %s TimeOut (was %s)",
                    ended.type,
                    ended.action_id,
                    ended.previous_status.value,
                    extra={"action_id": ended.action_id, "status": "TimeOut"},
                )
            if result.pending_timed_out or result.in_progress_timed_out or result.machines_inactive:
                log.info(
                    "sweep: %d pending and %d in-progress actions timed out, %d machines inactive",
                    result.pending_timed_out,
                    result.in_progress_timed_out,
                    result.machines_inactive,
                )
        except Exception:
            runtime.metrics.sweeper_runs.labels("failed").inc()
            log.exception("sweep failed")
        await asyncio.sleep(runtime.settings.sweep_interval_seconds)


async def _refresh_statistics_forever(runtime: Runtime) -> None:
    """Keep the query planner's statistics current as the data grows (store/db.py)."""
    while True:
        await asyncio.sleep(runtime.settings.statistics_interval_seconds)
        try:
            if await run_in_threadpool(refresh_statistics, runtime.engine):
                log.info("query planner statistics refreshed")
        except Exception:
            log.exception("refreshing query planner statistics failed")


SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_shutdown_signal(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``callback`` first, then the handler they had (the server's).

    The server learns of the signal at once, but the app's lifespan shutdown only comes once
    every open request has ended: a sensor's long poll would hold it for the whole graceful
    period and then be cancelled mid-request. Chaining the server's own handler gives the app
    the same moment, in one process or in each worker of ``--workers N``. Only the main thread
    may set handlers (a test client runs the lifespan in another: nothing is chained then), and
    a signal without a Python handler (ignored, or the default) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    chained: dict[signal.Signals, tuple[Any, Any]] = {}
    for number in SHUTDOWN_SIGNALS:
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Callable[[int, FrameType | None], Any] = previous) -> None:
            callback()
            previous(signum, frame)

        signal.signal(number, handler)
        chained[number] = (handler, previous)
    try:
        yield
    finally:
        for number, (ours, theirs) in chained.items():
            # Put the server's handler back unless someone replaced ours meanwhile.
            if signal.getsignal(number) is ours:
                signal.signal(number, theirs)


@contextlib.asynccontextmanager
async def background(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan: start the notifier and the sweeper; end long polls at a shutdown signal; stop both at shutdown."""
    runtime: Runtime = app.state.runtime
    await runtime.notifier.start()
    tasks = [asyncio.create_task(_sweep_forever(runtime)), asyncio.create_task(_refresh_statistics_forever(runtime))]
    loop = asyncio.get_running_loop()

    def at_signal() -> None:
        # A signal handler may interrupt the loop anywhere: it only schedules the work on the loop.
        loop.call_soon_threadsafe(stop_long_polls, runtime)

    try:
        with on_shutdown_signal(at_signal):
            yield
    finally:
        runtime.stopping.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runtime.notifier.stop()
