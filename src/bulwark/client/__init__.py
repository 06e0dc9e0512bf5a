"""Python SDK for the Bulwark (Defender for Endpoint compatible) machine-action API.

Names are imported on first use, so that ``import bulwark.client.config`` (which the command line
does before it knows what will run) does not load httpx and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulwark.client._protocol import NO_RETRIES, USER_AGENT, RetryPolicy
    from bulwark.client.auth import DEFAULT_AUTHORITY, DEFAULT_SCOPE, ClientCredentials, StaticToken, TokenProvider
    from bulwark.client.client import DEFAULT_API_URL, AsyncBulwarkClient, BulwarkClient, settings_from_env
    from bulwark.client.errors import (
        ActionWaitTimeout,
        ActiveRequestAlreadyExists,
        ApiError,
        AuthenticationError,
        BadRequest,
        BulwarkError,
        ClientVersionNotSupported,
        ConfigurationError,
        DisallowedOperation,
        Forbidden,
        InternalServerError,
        InvalidInput,
        InvalidRequestBody,
        MissingRequiredParameter,
        NotFound,
        ODataError,
        OsPlatformNotSupported,
        ResourceNotFound,
        ResponseFormatError,
        TooManyRequests,
        TransportError,
        Unauthorized,
    )
    from bulwark.client.models import ActionStatus, Machine, MachineAction
    from bulwark.client.token_cache import TokenCache

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_AUTHORITY",
    "DEFAULT_SCOPE",
    "NO_RETRIES",
    "USER_AGENT",
    "ActionStatus",
    "ActionWaitTimeout",
    "ActiveRequestAlreadyExists",
    "ApiError",
    "AsyncBulwarkClient",
    "AuthenticationError",
    "BadRequest",
    "BulwarkClient",
    "BulwarkError",
    "ClientCredentials",
    "ClientVersionNotSupported",
    "ConfigurationError",
    "DisallowedOperation",
    "Forbidden",
    "InternalServerError",
    "InvalidInput",
    "InvalidRequestBody",
    "Machine",
    "MachineAction",
    "MissingRequiredParameter",
    "NotFound",
    "ODataError",
    "OsPlatformNotSupported",
    "ResourceNotFound",
    "ResponseFormatError",
    "RetryPolicy",
    "StaticToken",
    "TokenCache",
    "TokenProvider",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "settings_from_env",
]

# Where each public name lives.
_HOMES = {
    "ActionStatus": "bulwark.client.models",
    "ActionWaitTimeout": "bulwark.client.errors",
    "ActiveRequestAlreadyExists": "bulwark.client.errors",
    "ApiError": "bulwark.client.errors",
    "AsyncBulwarkClient": "bulwark.client.client",
    "AuthenticationError": "bulwark.client.errors",
    "BadRequest": "bulwark.client.errors",
    "BulwarkClient": "bulwark.client.client",
    "BulwarkError": "bulwark.client.errors",
    "ClientCredentials": "bulwark.client.auth",
    "ClientVersionNotSupported": "bulwark.client.errors",
    "ConfigurationError": "bulwark.client.errors",
    "DEFAULT_API_URL": "bulwark.client.client",
    "DEFAULT_AUTHORITY": "bulwark.client.auth",
    "DEFAULT_SCOPE": "bulwark.client.auth",
    "DisallowedOperation": "bulwark.client.errors",
    "Forbidden": "bulwark.client.errors",
    "InternalServerError": "bulwark.client.errors",
    "InvalidInput": "bulwark.client.errors",
    "InvalidRequestBody": "bulwark.client.errors",
    "Machine": "bulwark.client.models",
    "MachineAction": "bulwark.client.models",
    "MissingRequiredParameter": "bulwark.client.errors",
    "NO_RETRIES": "bulwark.client._protocol",
    "NotFound": "bulwark.client.errors",
    "ODataError": "bulwark.client.errors",
    "OsPlatformNotSupported": "bulwark.client.errors",
    "ResourceNotFound": "bulwark.client.errors",
    "ResponseFormatError": "bulwark.client.errors",
    "RetryPolicy": "bulwark.client._protocol",
    "StaticToken": "bulwark.client.auth",
    "TokenCache": "bulwark.client.token_cache",
    "TokenProvider": "bulwark.client.auth",
    "TooManyRequests": "bulwark.client.errors",
    "TransportError": "bulwark.client.errors",
    "USER_AGENT": "bulwark.client._protocol",
    "Unauthorized": "bulwark.client.errors",
    "settings_from_env": "bulwark.client.client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
