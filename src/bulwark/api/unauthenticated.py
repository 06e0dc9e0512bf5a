"""What an unauthenticated caller may cost: a budget of refusals per source address.

Each refused unauthenticated request (no token, a bad token, a bad sensor credential or
onboarding key) is counted against its source address under the operation
``UNAUTHENTICATED_OPERATION`` (``unauthenticated_rate_limit``, 60 a minute and 1,000 an hour by
default). Within the budget the caller gets its 401 (and audited operations record it, without any
text the caller chose); beyond it the answer is 429 and nothing is written anywhere, so a flood
costs neither audit rows nor more than a counter increment per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from bulwark.api.request_state import request_state
from bulwark.domain.errors import MdeError, ServiceUnavailable, TooManyRequests
from bulwark.ratelimit import UNAUTHENTICATED_OPERATION


def source_key(request: Request) -> str:
    """The budget owner of an unauthenticated call: its source address."""
    host = request.client.host if request.client else "unknown"
    return f"source:{host}"


async def refuse_unauthenticated(request: Request, runtime: Any, error: MdeError) -> MdeError:
    """The error to answer an unauthenticated refusal with: ``error``, or 429 past the source's budget."""
    limiter = runtime.limiter
    if runtime.settings.redis_url and runtime.settings.rate_limit_enabled:
        decision = await run_in_threadpool(limiter.check, source_key(request), UNAUTHENTICATED_OPERATION)
    else:
        decision = limiter.check(source_key(request), UNAUTHENTICATED_OPERATION)
    if decision.allowed:
        return error
    request_state(request).audit_skipped = True
    if decision.storage_failed:
        return ServiceUnavailable("Rate-limit storage is unavailable and the service is configured to refuse calls.")
    return TooManyRequests(
        f"Too many unauthenticated requests from this address. Try again in {decision.retry_after} seconds.",
        headers=decision.headers,
    )
