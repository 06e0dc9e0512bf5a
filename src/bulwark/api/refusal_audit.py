"""Auditing refused requests: every refusal of an audited operation, wherever it happened.

The one place that decides which refusals are audited and with what: the error handler calls
``audit_refusal`` for every ``MdeError``; the caller and the Comment come from the request's
``RequestState``; ``service.audit_trail.record_refusal`` writes the event.
"""

from __future__ import annotations

import json
import logging

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from bulwark.api.request_state import request_state
from bulwark.domain.errors import MdeError
from bulwark.service.actions import CANCEL_AUDIT_ACTION
from bulwark.service.audit_trail import RequestContext, record_refusal
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION

log = logging.getLogger("bulwark.audit")
actions_log = logging.getLogger("bulwark.actions")

# Operation id -> audit action name. Successful requests are audited by their use case, in the
# same transaction as their effect; refusals are audited here, whichever layer refused them
# (authentication, rate limit, validation, or the use case itself).
AUDITED_OPERATIONS = {"offboardMachine": OFFBOARD_AUDIT_ACTION, "cancelMachineAction": CANCEL_AUDIT_ACTION}


async def _unread_comment(request: Request, settings: object) -> str | None:
    """The Comment of a body nobody parsed yet (refused before the route ran), best effort."""
    limit = getattr(settings, "max_body_bytes", 65536)
    try:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        comment = json.loads(b"".join(chunks) or b"null").get("Comment")
    except Exception:
        return None
    return comment[: getattr(settings, "max_comment_length", 4000)] if isinstance(comment, str) else None


async def audit_refusal(request: Request, error: MdeError) -> None:
    """Record ``error`` if it refused an audited operation; never let auditing mask the answer."""
    route = request.scope.get("route")
    action = AUDITED_OPERATIONS.get(getattr(route, "operation_id", None) or "")
    if action is None:
        return
    runtime = request.app.state.runtime
    state = request_state(request)
    context = RequestContext(request_id=state.request_id, client_ip=request.client.host if request.client else None)
    machine_id = str(request.path_params.get("id", ""))[:64] or None
    comment = state.comment if state.comment_parsed else await _unread_comment(request, runtime.settings)
    principal = state.principal
    caller = principal.name if principal else "-"
    actions_log.info(
        "%s refused: %s %s for %s by %s",
        action,
        error.status,
        error.code,
        machine_id or request.path_params.get("id", "-"),
        caller,
        extra={
            "machine_id": machine_id,
            "status": error.status,
            "code": error.code,
            "caller": caller,
            "request_id": context.request_id,
        },
    )
    try:
        await run_in_threadpool(
            record_refusal,
            runtime.uow(),
            runtime.clock,
            action=action,
            principal=principal,
            context=context,
            outcome_status=error.status,
            outcome_code=error.code,
            machine_id=machine_id,
            comment=comment,
        )
    except Exception:
        log.exception("could not record a refused request", extra={"request_id": context.request_id})
