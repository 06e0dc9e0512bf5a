"""Onboarding and offboarding packages, downloaded by administrators."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from starlette.responses import Response

from bulwark.api.deps import CurrentPrincipal, RequestContextDep, RuntimeDep, public_base
from bulwark.api.schemas import ERROR_RESPONSES
from bulwark.api.wire import json_response
from bulwark.service.sensors import issue_offboarding_package, issue_onboarding_package

router = APIRouter(tags=["Device packages"])


def _download(package: dict, filename: str) -> Response:
    return json_response(package, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get(
    "/onboarding/package",
    operation_id="getOnboardingPackage",
    summary="Download an onboarding package for the caller's tenant",
    responses=ERROR_RESPONSES,
)
def onboarding_package(
    request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, context: RequestContextDep
) -> Response:
    """A new onboarding package: devices use it once to enrol (``bulwark sensor run --onboarding-package``)."""
    server_url = public_base(request, runtime)
    package = issue_onboarding_package(
        principal.tenant_id,
        server_url,
        principal,
        runtime.uow(),
        runtime.clock,
        context,
        valid_for=timedelta(days=runtime.settings.onboarding_package_valid_days),
    )
    return _download(package, "BulwarkOnboardingPackage.json")


@router.get(
    "/offboarding/package",
    operation_id="getOffboardingPackage",
    summary="Download an offboarding package (valid seven days by default)",
    responses=ERROR_RESPONSES,
)
def offboarding_package(runtime: RuntimeDep, principal: CurrentPrincipal, context: RequestContextDep) -> Response:
    """A signed package that removes the onboarding information from a device (``bulwark sensor offboard``)."""
    valid_for = timedelta(days=runtime.settings.offboarding_package_valid_days)
    package = issue_offboarding_package(principal.tenant_id, valid_for, principal, runtime.uow(), runtime.clock, context)
    return _download(package, f"BulwarkOffboardingPackage_valid_until_{package['expiresAt'][:10]}.json")
