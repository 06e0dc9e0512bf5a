"""Auditing refused requests: every refusal of an audited operation, wherever it happened.

The one place that decides which refusals are audited and with what: the error handler calls
``audit_refusal`` for every ``MdeError``; the caller and the Comment come from the request's
``RequestState``; ``service.audit_trail.record_refusal`` writes the event.

A refusal of an unauthenticated caller keeps no text the caller chose: no comment, and ids only
when they are well-formed ids. Past the source's budget for unauthenticated requests
(``api.unauthenticated``) nothing is written at all.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from bulwark.api.request_state import request_state
from bulwark.domain.actions import normalize_action_id
from bulwark.domain.errors import MdeError
from bulwark.domain.machines import normalize_machine_id
from bulwark.service.actions import CANCEL_AUDIT_ACTION
from bulwark.service.audit_trail import RequestContext, record_refusal
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION
from bulwark.service.sensors import OFFBOARDING_PACKAGE_AUDIT_ACTION, ONBOARDING_PACKAGE_AUDIT_ACTION

log = logging.getLogger("bulwark.audit")
actions_log = logging.getLogger("bulwark.actions")

# Operation id -> (audit action name, what the path's {id} names). Successful requests are audited
# by their use case, in the same transaction as their effect; refusals are audited here, whichever
# layer refused them (authentication, rate limit, validation, or the use case itself).
AUDITED_OPERATIONS: dict[str, tuple[str, str | None]] = {
    "offboardMachine": (OFFBOARD_AUDIT_ACTION, "machine"),
    "cancelMachineAction": (CANCEL_AUDIT_ACTION, "action"),
    "getOnboardingPackage": (ONBOARDING_PACKAGE_AUDIT_ACTION, None),
    "getOffboardingPackage": (OFFBOARDING_PACKAGE_AUDIT_ACTION, None),
}


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
    if not isinstance(comment, str):
        return None
    return comment[: getattr(settings, "max_comment_length", 4000)].replace("\x00", "")


def _subject(kind: str | None, raw: str, error: MdeError) -> dict[str, Any]:
    """The machine and action a refusal concerned: ids only when well formed, never the raw text."""
    subject: dict[str, Any] = {"machine_id": error.machine_id, "machine_action_id": None}
    if not raw or kind is None:
        return subject
    try:
        if kind == "machine":
            subject["machine_id"] = subject["machine_id"] or normalize_machine_id(raw)
        else:
            subject["machine_action_id"] = normalize_action_id(raw)
    except MdeError:
        pass
    return subject


async def audit_refusal(request: Request, error: MdeError) -> None:
    """Record ``error`` if it refused an audited operation; never let auditing mask the answer."""
    route = request.scope.get("route")
    audited = AUDITED_OPERATIONS.get(getattr(route, "operation_id", None) or "")
    state = request_state(request)
    if audited is None or state.audit_skipped:
        return
    action, subject_kind = audited
    runtime = request.app.state.runtime
    context = RequestContext(request_id=state.request_id, client_ip=request.client.host if request.client else None)
    comment = None
    if state.principal is not None and not state.body_refused:
        comment = state.comment if state.comment_parsed else await _unread_comment(request, runtime.settings)
    subject = _subject(subject_kind, str(request.path_params.get("id", "")), error)
    principal = state.principal
    caller = principal.name if principal else "-"
    machine_id = subject["machine_id"]
    actions_log.info(
        "%s refused: %s %s for %s by %s",
        action,
        error.status,
        error.code,
        machine_id or subject["machine_action_id"] or "-",
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
            comment=comment,
            **subject,
        )
    except Exception:
        log.exception("could not record a refused request", extra={"request_id": context.request_id})
