"""What runs beside the routes in each server process: the wake-up listener and the sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from bulwark.bootstrap import Runtime, sweep_policy
from bulwark.service.actions import sweep

log = logging.getLogger("bulwark.sweeper")
actions_log = logging.getLogger("bulwark.actions")


async def _sweep_forever(runtime: Runtime) -> None:
    """Sweep every interval; guarded transitions make it safe in every process at once."""
    policy = sweep_policy(runtime.settings)
    while True:
        try:
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


@contextlib.asynccontextmanager
async def background(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan: start the notifier and the sweeper; at shutdown end long polls and stop both."""
    runtime: Runtime = app.state.runtime
    await runtime.notifier.start()
    sweeper = asyncio.create_task(_sweep_forever(runtime))
    try:
        yield
    finally:
        runtime.stopping.set()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await runtime.notifier.stop()
