"""The composition root's runtime, and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from bulwark.clock import Clock
from bulwark.domain.access import Permission, Principal, PrincipalKind
from bulwark.notifier import InProcessNotifier
from bulwark.service.audit import RequestContext
from bulwark.service.uow import UnitOfWorkFactory
from bulwark.settings import Settings


@dataclass
class Runtime:
    """Everything wired once in ``create_app``: settings, storage and the cross-cutting parts."""

    settings: Settings
    engine: Engine
    uow: UnitOfWorkFactory
    clock: Clock
    notifier: InProcessNotifier = field(default_factory=InProcessNotifier)
    # Set at shutdown so that long polls answer at once.
    stopping: threading.Event = field(default_factory=threading.Event)


def get_runtime(request: Request) -> Runtime:
    """The app's runtime."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_principal(runtime: RuntimeDep) -> Principal:
    """The caller: a configured default caller with every permission (no authentication yet)."""
    settings = runtime.settings
    return Principal(
        tenant_id=settings.default_tenant_id,
        kind=PrincipalKind.USER,
        id="default",
        name=settings.default_requestor,
        permissions=frozenset(p.value for p in Permission),
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_request_context(request: Request) -> RequestContext:
    """The request id and client address, for the audit trail."""
    return RequestContext(
        request_id=request.scope.get("state", {}).get("request_id", ""),
        client_ip=request.client.host if request.client else None,
    )


RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]


def odata_base(request: Request, runtime: Runtime) -> str:
    """The base of ``@odata.context`` URLs: the public base URL, or the one the request came in on."""
    base = runtime.settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}/api/$metadata"
