"""Rate limits on every public operation: 429 with an honest Retry-After, and RateLimit headers."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from bulwark.api.deps import CurrentPrincipal, RuntimeDep
from bulwark.api.request_state import request_state
from bulwark.domain.access import PrincipalKind
from bulwark.domain.errors import ServiceUnavailable, TooManyRequests
from bulwark.ratelimit import caller_key_for


async def enforce_rate_limit(request: Request, runtime: RuntimeDep, principal: CurrentPrincipal) -> None:
    """Count this call against the caller's budget for this operation, or refuse it.

    The budget is per tenant and application or user, and per operation (the route's operation
    id), so that one noisy caller never spends another's. In-memory checks take microseconds and
    run inline; Redis round trips run in the threadpool so they never block the event loop.
    """
    route = request.scope.get("route")
    operation = getattr(route, "operation_id", None) or request.url.path
    if principal.kind is PrincipalKind.APPLICATION:
        caller = caller_key_for(principal.tenant_id, application_id=principal.id)
    else:
        caller = caller_key_for(principal.tenant_id, user_id=principal.id)
    if runtime.settings.redis_url and runtime.settings.rate_limit_enabled:
        decision = await run_in_threadpool(runtime.limiter.check, caller, operation)
    else:
        decision = runtime.limiter.check(caller, operation)
    request_state(request).add_response_headers(decision.headers)
    if decision.allowed:
        return
    if decision.storage_failed:
        raise ServiceUnavailable("Rate-limit storage is unavailable and the service is configured to refuse calls.")
    runtime.metrics.rate_limit_refusals.labels(getattr(route, "operation_id", None) or "other").inc()
    raise TooManyRequests(f"Rate limit is exceeded. Try again in {decision.retry_after} seconds.", headers=decision.headers)
