"""The web console: sign-in, devices, a device's page, the action center and the audit trail.

Every page resolves the signed-in user's principal from their access token exactly as the API
does, and reads and acts through the same use cases, so the rules, the device-group visibility
and the audit trail are the API's. Lists are filtered through the API's OData parser.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from bulwark import odata
from bulwark.api.authorize import read_form
from bulwark.api.console.templating import render
from bulwark.api.errors import request_id_of
from bulwark.api.request_state import request_state
from bulwark.auth.tokens import DEFENDER_AUDIENCE
from bulwark.bootstrap import Runtime
from bulwark.domain.access import Permission, Principal
from bulwark.domain.actions import ActionStatus, ActionType, MachineAction, RequestSource
from bulwark.domain.errors import Forbidden, InternalServerError, InvalidInput, MdeError, Unauthorized
from bulwark.domain.machines import (
    SUPPORTED_PLATFORMS,
    UNIFIED_AGENT_PLATFORMS,
    HealthStatus,
    Machine,
    OnboardingStatus,
    ensure_offboard_supported,
)
from bulwark.service.actions import CANCEL_AUDIT_ACTION, CancelAction, cancel_action
from bulwark.service.audit_trail import RequestContext, audit_action_names, may_read_audit, record_refusal, search_audit_events
from bulwark.service.identity import TokenRequestError
from bulwark.service.inventory import get_machine, list_actions, list_machines, visible_device_groups, visible_tags
from bulwark.service.offboarding import OFFBOARD_AUDIT_ACTION, RequestOffboard, get_action, request_offboard
from bulwark.service.signin import (
    CONSOLE_CALLBACK_PATH,
    ConsoleSession,
    console_client_id,
    end_console_session,
    load_console_session,
    redeem_authorization_code,
    s256_challenge,
    start_console_session,
)

log = logging.getLogger("bulwark.console")

SESSION_COOKIE = "bulwark_session"
SIGNIN_COOKIE = "bulwark_signin"
PAGE_SIZE = 25
MAX_TEXT = 200
POLL_SECONDS = 2
PLATFORMS = sorted(SUPPORTED_PLATFORMS | UNIFIED_AGENT_PLATFORMS | {"macOS", "Linux"})
DEVICE_SORTS = {
    "name": ("Name (A-Z)", "computerDnsName asc"),
    "name_desc": ("Name (Z-A)", "computerDnsName desc"),
    "last_seen": ("Last seen (newest)", "lastSeen desc"),
    "platform": ("Platform", "osPlatform asc"),
    "health": ("Health", "healthStatus asc"),
}


class SignInRequired(Exception):
    """No live session: the browser is sent to sign in."""


class CsrfRefused(MdeError):
    """A form posted without the session's CSRF token (or from another site)."""

    code = "CsrfTokenInvalid"
    status = 403
    default_message = "This form's security token is missing or wrong, so nothing was done. Reload the page and try again."


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in user of one request: their session and the principal their token resolves to."""

    session: ConsoleSession
    principal: Principal

    @property
    def may_offboard(self) -> bool:
        return Permission.MACHINE_OFFBOARD.value in self.principal.permissions and self.principal.can_manage

    @property
    def may_read_audit(self) -> bool:
        return may_read_audit(self.principal)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _context(request: Request) -> RequestContext:
    return RequestContext(request_id=request_id_of(request), client_ip=request.client.host if request.client else None)


def _secure(request: Request) -> bool:
    """Cookies are Secure when the request came over TLS, or the public address is https (TLS ends at a proxy)."""
    return request.url.scheme == "https" or _runtime(request).settings.issuer_base_url().startswith("https://")


def _error_page(request: Request, error: MdeError, user: ConsoleUser | None = None) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 429: "Slow down", 500: "Something went wrong"}
    return render(
        "error.html",
        error.status,
        title=titles.get(error.status, "Request refused"),
        code=error.code,
        message=error.message,
        request_id=request_id_of(request),
        user=user,
        csrf_token=user.session.csrf_token if user else "",
        nav="",
    )


class ConsoleRoute(APIRoute):
    """Console routes answer HTML whatever happens: a sign-in redirect, or an error page with the request id."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                if request.headers.get("hx-request"):
                    return Response(status_code=401, headers={"HX-Redirect": "/console/signin"})
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/signin?{urlencode({'next': target})}", status_code=303)
            except MdeError as error:
                return _error_page(request, error, _known_user(request))
            except Exception:
                log.exception("console page failed", extra={"request_id": request_id_of(request), "path": request.url.path})
                return _error_page(request, InternalServerError(), _known_user(request))

        return console_handler


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


async def _current_user(request: Request) -> ConsoleUser:
    """The signed-in user, or SignInRequired; the principal is resolved like the API's (cached, then verified)."""
    runtime = _runtime(request)
    session = await run_in_threadpool(
        load_console_session, runtime.uow(write=False), runtime.clock, request.cookies.get(SESSION_COOKIE)
    )
    if session is None:
        raise SignInRequired
    authorization = f"Bearer {session.access_token}"
    principal = runtime.auth.authenticate_cached(authorization)
    if principal is None:
        try:
            principal = await run_in_threadpool(runtime.auth.authenticate, authorization)
        except Unauthorized:
            # The user was disabled, or the token's key retired: sign in again.
            raise SignInRequired from None
    user = ConsoleUser(session, principal)
    request_state(request).console_user = user
    return user


def _known_user(request: Request) -> ConsoleUser | None:
    """The user this request was signed in as, if it got that far (for the navigation of error pages)."""
    user = request_state(request).console_user
    return user if isinstance(user, ConsoleUser) else None


async def _checked_form(request: Request, user: ConsoleUser) -> dict[str, str]:
    """The posted form, if it carries this session's CSRF token and comes from this site; CsrfRefused otherwise."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRefused("This form was posted from another site, so nothing was done.")
    fields = await read_form(request, _runtime(request).settings.max_body_bytes)
    if fields is None:
        raise InvalidInput("The form must be posted url-encoded and small.")
    token = fields.get("csrf_token", "")
    if not token or not secrets.compare_digest(token.encode(), user.session.csrf_token.encode()):
        raise CsrfRefused()
    return fields


def _page(request: Request, template: str, user: ConsoleUser, nav: str, status: int = 200, **context: Any) -> Response:
    return render(
        template,
        status,
        user=user,
        csrf_token=user.session.csrf_token,
        nav=nav,
        request_id=request_id_of(request),
        poll_seconds=POLL_SECONDS,
        **context,
    )


def _text(value: str | None) -> str:
    return (value or "").strip()[:MAX_TEXT]


def _quote(value: str) -> str:
    """An OData string literal."""
    return "'" + value.replace("'", "''") + "'"


def _page_number(value: str | None) -> int:
    return int(value) if value and value.isdigit() and 0 < int(value) < 100_000 else 1


def _odata(spec: odata.EntitySpec, clauses: list[str], orderby: str | None, page: int) -> odata.ODataQuery:
    options = {"$top": str(PAGE_SIZE), "$skip": str((page - 1) * PAGE_SIZE), "$count": "true"}
    if clauses:
        options["$filter"] = " and ".join(clauses)
    if orderby:
        options["$orderby"] = orderby
    try:
        return odata.parse_query(options, spec)
    except odata.ODataParseError as error:
        raise InvalidInput(f"Invalid filter: {error.message}") from None


# --- Sign-in and sign-out ---


def _redirect_uri(runtime: Runtime) -> str:
    return runtime.settings.issuer_base_url() + CONSOLE_CALLBACK_PATH


def _safe_next(value: str | None) -> str:
    """Only a path inside the console: never another site (no scheme, no //host, no backslashes)."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value and len(value) < 2000:
        return value
    return "/console/devices"


@router.get("/")
async def console_home() -> Response:
    return RedirectResponse("/console/devices", status_code=303)


@router.get("/signin")
async def signin(request: Request) -> Response:
    """Start the authorization code flow with PKCE at Bulwark's own authority."""
    runtime = _runtime(request)
    base = runtime.settings.issuer_base_url()
    if str(request.base_url).rstrip("/") != base:
        # The sign-in must start on the address the redirect URI names, or its cookie is not sent back.
        return RedirectResponse(f"{base}/console/signin?{urlencode({'next': _safe_next(request.query_params.get('next'))})}", 303)
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(24)
    tenant = runtime.settings.default_tenant_id
    query = urlencode(
        {
            "client_id": console_client_id(tenant),
            "response_type": "code",
            "redirect_uri": _redirect_uri(runtime),
            "scope": f"{DEFENDER_AUDIENCE}/.default",
            "state": state,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"/{tenant}/oauth2/v2.0/authorize?{query}", status_code=303)
    transaction = urlencode({"s": state, "v": verifier, "n": _safe_next(request.query_params.get("next"))})
    response.set_cookie(
        SIGNIN_COOKIE,
        transaction,
        max_age=600,
        path=CONSOLE_CALLBACK_PATH,
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    return response


@router.get("/callback")
async def callback(request: Request) -> Response:
    """The redirect URI: check the state, trade the code for a token server-side, start a new session."""
    runtime = _runtime(request)
    transaction = {k: v[0] for k, v in parse_qs(request.cookies.get(SIGNIN_COOKIE, "")).items()}
    state = request.query_params.get("state", "")
    if not transaction.get("s") or not secrets.compare_digest(transaction["s"].encode(), state.encode()):
        return _sign_in_problem(request, "invalid_state", "This sign-in did not start here or took too long. Sign in again.")
    if "error" in request.query_params:
        return _sign_in_problem(
            request, _text(request.query_params.get("error")), _text(request.query_params.get("error_description"))
        )
    tenant = runtime.settings.default_tenant_id
    fields = {
        "code": request.query_params.get("code", ""),
        "code_verifier": transaction.get("v", ""),
        "redirect_uri": _redirect_uri(runtime),
    }
    try:
        redeemed = await run_in_threadpool(
            redeem_authorization_code,
            runtime.uow,
            runtime.auth.issuer,
            runtime.clock,
            tenant,
            fields,
            console_client_id(tenant),
            None,
        )
    except TokenRequestError as error:
        return _sign_in_problem(request, error.error, error.description)
    # A new session id at every sign-in, and the one the browser held before (if any) is ended:
    # a session id planted before sign-in never becomes a signed-in one.
    await run_in_threadpool(end_console_session, runtime.uow(), request.cookies.get(SESSION_COOKIE))
    session_id, _ = await run_in_threadpool(start_console_session, runtime.uow(), runtime.clock, tenant, redeemed)
    response = RedirectResponse(_safe_next(transaction.get("n")), status_code=303, headers={"Referrer-Policy": "no-referrer"})
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=redeemed.token.expires_in,
        path="/console",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    response.delete_cookie(SIGNIN_COOKIE, path=CONSOLE_CALLBACK_PATH)
    return response


def _sign_in_problem(request: Request, code: str, message: str) -> Response:
    response = render(
        "error.html",
        400,
        title="Sign-in did not complete",
        code=code,
        message=message,
        request_id=request_id_of(request),
        user=None,
        signin_again=True,
        headers={"Referrer-Policy": "no-referrer"},
    )
    response.delete_cookie(SIGNIN_COOKIE, path=CONSOLE_CALLBACK_PATH)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session here and in the browser."""
    user = await _current_user(request)
    await _checked_form(request, user)
    runtime = _runtime(request)
    await run_in_threadpool(end_console_session, runtime.uow(), request.cookies.get(SESSION_COOKIE))
    response = render("signed_out.html", user=None, request_id=request_id_of(request))
    response.delete_cookie(SESSION_COOKIE, path="/console", httponly=True, secure=_secure(request), samesite="lax")
    return response


# --- Devices ---


@router.get("/devices")
async def devices(request: Request) -> Response:
    """The inventory the user may see: search, quick filters, sort and pages, through the API's OData."""
    user = await _current_user(request)
    runtime = _runtime(request)
    params = request.query_params
    filters = {name: _text(params.get(name)) for name in ("q", "platform", "health", "onboarding", "group", "tag", "sort")}
    clauses = []
    if filters["q"]:
        clauses.append(f"contains(computerDnsName,{_quote(filters['q'])})")
    if filters["platform"] in PLATFORMS:
        clauses.append(f"osPlatform eq {_quote(filters['platform'])}")
    if filters["health"] in {h.value for h in HealthStatus}:
        clauses.append(f"healthStatus eq {_quote(filters['health'])}")
    if filters["onboarding"] in {o.value for o in OnboardingStatus}:
        clauses.append(f"onboardingStatus eq {_quote(filters['onboarding'])}")
    if filters["group"] == "none":
        clauses.append("rbacGroupId eq null")
    elif filters["group"].isdigit():
        clauses.append(f"rbacGroupId eq {int(filters['group'])}")
    if filters["tag"]:
        clauses.append(f"machineTags/any(t: t eq {_quote(filters['tag'])})")
    sort = filters["sort"] if filters["sort"] in DEVICE_SORTS else "name"
    page = _page_number(params.get("page"))
    query = _odata(odata.MACHINE_SPEC, clauses, DEVICE_SORTS[sort][1], page)
    result = await run_in_threadpool(list_machines, query, user.principal, runtime.uow(write=False))
    groups = await run_in_threadpool(visible_device_groups, user.principal, runtime.uow(write=False))
    tags = await run_in_threadpool(visible_tags, user.principal, runtime.uow(write=False))
    kept = {k: v for k, v in filters.items() if v}
    return _page(
        request,
        "devices.html",
        user,
        "devices",
        machines=result.items,
        total=result.total or 0,
        page=page,
        first=(page - 1) * PAGE_SIZE + 1,
        has_more=result.has_more,
        filters=filters,
        sort=sort,
        sorts=DEVICE_SORTS,
        platforms=PLATFORMS,
        healths=[h.value for h in HealthStatus],
        onboardings=[o.value for o in OnboardingStatus],
        groups=groups,
        tags=tags,
        prev_link="?" + urlencode({**kept, "page": page - 1}) if page > 1 else None,
        next_link="?" + urlencode({**kept, "page": page + 1}) if result.has_more else None,
    )


def _offboard_blockers(machine: Machine, active: list[MachineAction]) -> list[str]:
    """Why an offboard of ``machine`` cannot run, in words, before anyone tries (the role is checked apart)."""
    reasons = []
    try:
        ensure_offboard_supported(machine)
    except MdeError as error:
        reasons.append(f"{error.message} ({error.code})")
    if active:
        first = active[0]
        reasons.append(f"An offboard of this device is already in progress (action {first.id}, {first.status.value} on loading).")
    return reasons


async def _machine_actions(request: Request, user: ConsoleUser, machine_id: str) -> list[MachineAction]:
    runtime = _runtime(request)
    query = _odata(odata.MACHINE_ACTION_SPEC, [], "creationDateTimeUtc desc", 1)
    page = await run_in_threadpool(list_actions, query, user.principal, runtime.uow(write=False), machine_id_or_name=machine_id)
    return page.items


async def _device_page(
    request: Request, user: ConsoleUser, machine_id: str, *, error: MdeError | None = None, comment: str = ""
) -> Response:
    runtime = _runtime(request)
    machine = await run_in_threadpool(get_machine, machine_id, user.principal, runtime.uow(write=False))
    actions = await _machine_actions(request, user, machine.id)
    active = [a for a in actions if a.type is ActionType.OFFBOARD and not a.status.is_final]
    requested = request.query_params.get("requested")
    return _page(
        request,
        "device.html",
        user,
        "devices",
        status=error.status if error else 200,
        machine=machine,
        actions=actions,
        blockers=_offboard_blockers(machine, active),
        requested=next((a for a in actions if a.id == requested), None),
        error=error,
        comment=comment,
        max_comment=runtime.settings.max_comment_length,
    )


@router.get("/devices/{machine_id}")
async def device(machine_id: str, request: Request) -> Response:
    """One device: properties, action history, and the offboard dialog (or why it cannot run)."""
    user = await _current_user(request)
    return await _device_page(request, user, machine_id)


@router.get("/devices/{machine_id}/actions")
async def device_action_rows(machine_id: str, request: Request) -> Response:
    """The device's action rows, polled by the page for live status."""
    user = await _current_user(request)
    runtime = _runtime(request)
    machine = await run_in_threadpool(get_machine, machine_id, user.principal, runtime.uow(write=False))
    actions = await _machine_actions(request, user, machine.id)
    return _page(request, "_device_actions.html", user, "devices", machine=machine, actions=actions)


@router.post("/devices/{machine_id}/offboard")
async def offboard(machine_id: str, request: Request) -> Response:
    """Offboard through the API's use case: the same rules, the same audit, then wake the device's sensor."""
    user = await _current_user(request)
    fields = await _checked_form(request, user)
    runtime = _runtime(request)
    comment = (fields.get("comment") or "").strip()
    context = _context(request)
    try:
        if not comment:
            raise InvalidInput("Write a comment: why is this device offboarded?")
        if len(comment) > runtime.settings.max_comment_length:
            raise InvalidInput(f"The comment is longer than {runtime.settings.max_comment_length} characters.")
        command = RequestOffboard(machine_id=machine_id, comment=comment, request_source=RequestSource.PORTAL.value)
        action = await run_in_threadpool(request_offboard, command, user.principal, runtime.uow(), runtime.clock, context)
    except MdeError as error:
        await _record_refusal(request, user, OFFBOARD_AUDIT_ACTION, error, machine_id, comment)
        return await _device_page(request, user, machine_id, error=error, comment=comment)
    await run_in_threadpool(runtime.notifier.publish, action.machine_id)
    return RedirectResponse(f"/console/devices/{action.machine_id}?{urlencode({'requested': action.id})}", status_code=303)


async def _record_refusal(
    request: Request, user: ConsoleUser, audit_action: str, error: MdeError, machine_id: str | None, comment: str
) -> None:
    runtime = _runtime(request)
    try:
        await run_in_threadpool(
            record_refusal,
            runtime.uow(),
            runtime.clock,
            action=audit_action,
            principal=user.principal,
            context=_context(request),
            outcome_status=error.status,
            outcome_code=error.code,
            machine_id=(machine_id or "")[:64] or None,
            comment=comment[: runtime.settings.max_comment_length],
        )
    except Exception:
        log.exception("could not record a refused request", extra={"request_id": request_id_of(request)})


# --- Action center ---


def _action_filters(request: Request) -> tuple[dict[str, str], list[str]]:
    params = request.query_params
    filters = {name: _text(params.get(name)) for name in ("status", "type", "machine", "since", "until")}
    clauses = []
    if filters["status"] in {s.value for s in ActionStatus}:
        clauses.append(f"status eq {_quote(filters['status'])}")
    if filters["type"] in {t.value for t in ActionType}:
        clauses.append(f"type eq {_quote(filters['type'])}")
    for name, operator in (("since", "ge"), ("until", "le")):
        if filters[name]:
            try:
                moment = datetime.fromisoformat(filters[name]).replace(tzinfo=UTC)
            except ValueError:
                raise InvalidInput(f"'{filters[name]}' is not a date and time.") from None
            clauses.append(f"creationDateTimeUtc {operator} {moment:%Y-%m-%dT%H:%M:%SZ}")
    return filters, clauses


async def _action_list(request: Request, user: ConsoleUser) -> dict[str, Any]:
    runtime = _runtime(request)
    filters, clauses = _action_filters(request)
    page = _page_number(request.query_params.get("page"))
    query = _odata(odata.MACHINE_ACTION_SPEC, clauses, "creationDateTimeUtc desc", page)
    result = await run_in_threadpool(
        list_actions, query, user.principal, runtime.uow(write=False), machine_id_or_name=filters["machine"] or None
    )
    kept = {k: v for k, v in filters.items() if v}
    return {
        "actions": result.items,
        "total": result.total or 0,
        "page": page,
        "filters": filters,
        "query_string": urlencode({**kept, "page": page}),
        "prev_link": "?" + urlencode({**kept, "page": page - 1}) if page > 1 else None,
        "next_link": "?" + urlencode({**kept, "page": page + 1}) if result.has_more else None,
    }


@router.get("/actions")
async def actions(request: Request) -> Response:
    """Every action the user may see, filtered, with live status."""
    user = await _current_user(request)
    listing = await _action_list(request, user)
    return _page(
        request,
        "actions.html",
        user,
        "actions",
        statuses=[s.value for s in ActionStatus],
        types=[t.value for t in ActionType],
        **listing,
    )


@router.get("/actions/rows")
async def action_rows(request: Request) -> Response:
    """The action center's rows, polled for live status."""
    user = await _current_user(request)
    return _page(request, "_action_rows.html", user, "actions", **(await _action_list(request, user)))


async def _action_page(
    request: Request, user: ConsoleUser, action_id: str, *, error: MdeError | None = None, comment: str = ""
) -> Response:
    runtime = _runtime(request)
    action = await run_in_threadpool(get_action, action_id, user.principal, runtime.uow(write=False))
    return _page(
        request,
        "action.html",
        user,
        "actions",
        status=error.status if error else 200,
        action=action,
        error=error,
        comment=comment,
        max_comment=runtime.settings.max_comment_length,
    )


@router.get("/actions/{action_id}")
async def action_detail(action_id: str, request: Request) -> Response:
    """One action, its live status, and cancel for a Pending one."""
    user = await _current_user(request)
    return await _action_page(request, user, action_id)


@router.get("/actions/{action_id}/status")
async def action_status(action_id: str, request: Request) -> Response:
    """The action's status panel, polled while it is not final."""
    user = await _current_user(request)
    runtime = _runtime(request)
    action = await run_in_threadpool(get_action, action_id, user.principal, runtime.uow(write=False))
    return _page(request, "_action_status.html", user, "actions", action=action)


@router.post("/actions/{action_id}/cancel")
async def cancel(action_id: str, request: Request) -> Response:
    """Cancel a Pending action through the API's use case, with the user's comment."""
    user = await _current_user(request)
    fields = await _checked_form(request, user)
    runtime = _runtime(request)
    comment = (fields.get("comment") or "").strip()
    try:
        if not comment:
            raise InvalidInput("Write a comment: why is this action cancelled?")
        if len(comment) > runtime.settings.max_comment_length:
            raise InvalidInput(f"The comment is longer than {runtime.settings.max_comment_length} characters.")
        action = await run_in_threadpool(
            cancel_action,
            CancelAction(action_id=action_id, comment=comment),
            user.principal,
            runtime.uow(),
            runtime.clock,
            _context(request),
        )
    except MdeError as error:
        await _record_refusal(request, user, CANCEL_AUDIT_ACTION, error, None, comment)
        return await _action_page(request, user, action_id, error=error, comment=comment)
    return RedirectResponse(f"/console/actions/{action.id}", status_code=303)


# --- Audit ---


@router.get("/audit")
async def audit(request: Request) -> Response:
    """The audit trail, for roles that manage security settings (see ``may_read_audit``)."""
    user = await _current_user(request)
    if not user.may_read_audit:
        raise Forbidden("The audit trail is shown to roles that manage security settings; yours is view-only.")
    runtime = _runtime(request)
    params = request.query_params
    filters = {name: _text(params.get(name)) for name in ("event", "actor", "machine", "outcome", "since", "until")}
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            moments[name] = datetime.fromisoformat(filters[name]).replace(tzinfo=UTC) if filters[name] else None
        except ValueError:
            raise InvalidInput(f"'{filters[name]}' is not a date and time.") from None
    page = _page_number(params.get("page"))
    events = await run_in_threadpool(
        search_audit_events,
        user.principal,
        runtime.uow(write=False),
        action=filters["event"] or None,
        actor=filters["actor"] or None,
        machine_id=filters["machine"].lower() or None,
        outcome=filters["outcome"] or None,
        since=moments["since"],
        until=moments["until"],
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    names = await run_in_threadpool(audit_action_names, user.principal, runtime.uow(write=False))
    kept = {k: v for k, v in filters.items() if v}
    return _page(
        request,
        "audit.html",
        user,
        "audit",
        events=events[:PAGE_SIZE],
        filters=filters,
        event_names=names,
        page=page,
        prev_link="?" + urlencode({**kept, "page": page - 1}) if page > 1 else None,
        next_link="?" + urlencode({**kept, "page": page + 1}) if len(events) > PAGE_SIZE else None,
    )
