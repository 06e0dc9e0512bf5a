"""The API's wire protocol without I/O: requests to send, responses to read, when to retry."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from bulwark import __version__
from bulwark.client.errors import (
    ActionWaitTimeout,
    ApiError,
    ResponseFormatError,
    TooManyRequests,
    TransportError,
    default_code_for,
    error_class_for,
    untrusted_certificate_hint,
)
from bulwark.client.models import MachineAction

USER_AGENT = f"bulwark-sdk/{__version__}"
REQUEST_ID_HEADER = "request-id"

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class ApiCall:
    """One logical API call: what to send, before a token is attached."""

    method: str
    url: httpx.URL
    params: Mapping[str, str] | None = None
    json: Any = None

    @property
    def idempotent(self) -> bool:
        """Whether sending the call twice has the same effect as sending it once."""
        return self.method in ("GET", "HEAD", "OPTIONS")


class ApiCalls:
    """Builds the calls of the machine and machine-action API relative to a base URL."""

    def __init__(self, base_url: str | httpx.URL) -> None:
        url = httpx.URL(str(base_url))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"API base URL must be an absolute http(s) URL, not {str(base_url)!r}")
        # A trailing slash makes relative joins keep any path prefix (https://host/prefix/).
        self.base_url = url if url.path.endswith("/") else url.copy_with(path=url.path + "/")

    def url(self, *segments: str) -> httpx.URL:
        """The absolute URL of `api/<segments...>`, each segment percent-encoded."""
        return self.base_url.join("/".join(["api", *(_path_segment(segment) for segment in segments)]))

    def offboard(
        self,
        machine_id: str,
        comment: str,
        external_id: str | None,
        title: str | None,
        request_source: str | None,
    ) -> ApiCall:
        """`POST /api/machines/{id}/offboard`; optional parameters go out as explicit nulls."""
        body = {"Comment": comment, "ExternalId": external_id, "Title": title, "RequestSource": request_source}
        return ApiCall("POST", self.url("machines", machine_id, "offboard"), json=body)

    def get_action(self, action_id: str) -> ApiCall:
        """`GET /api/machineactions/{id}`."""
        return ApiCall("GET", self.url("machineactions", action_id))

    def cancel_action(self, action_id: str, comment: str) -> ApiCall:
        """`POST /api/machineactions/{id}/cancel`."""
        return ApiCall("POST", self.url("machineactions", action_id, "cancel"), json={"Comment": comment})

    def list_actions(self, query: Mapping[str, str]) -> ApiCall:
        """`GET /api/machineactions` with OData query options."""
        return ApiCall("GET", self.url("machineactions"), params=query or None)

    def get_machine(self, id_or_dns_name: str) -> ApiCall:
        """`GET /api/machines/{id or computer DNS name}`."""
        return ApiCall("GET", self.url("machines", id_or_dns_name))

    def list_machines(self, query: Mapping[str, str]) -> ApiCall:
        """`GET /api/machines` with OData query options."""
        return ApiCall("GET", self.url("machines"), params=query or None)

    def same_origin(self, url: httpx.URL) -> httpx.URL:
        """`url` moved onto the base URL's scheme, host and port.

        Paging links come from the server; following them only on the configured origin keeps
        the bearer token from being sent anywhere else (and copes with a server behind a proxy
        that writes links with its internal address).
        """
        return url.copy_with(scheme=self.base_url.scheme, host=self.base_url.host, port=self.base_url.port)


def _path_segment(value: str) -> str:
    # "." and ".." would be resolved away as dot segments and reach another resource.
    return quote(value, safe="").replace(".", "%2E") if value in (".", "..") else quote(value, safe="")


def odata_query(
    filter: str | None = None,
    top: int | None = None,
    skip: int | None = None,
    orderby: str | None = None,
) -> dict[str, str]:
    """OData system query options, leaving out those not given."""
    query: dict[str, str] = {}
    if filter is not None:
        query["$filter"] = filter
    if top is not None:
        if top < 0:
            raise ValueError("top must not be negative")
        query["$top"] = str(top)
    if skip is not None:
        if skip < 0:
            raise ValueError("skip must not be negative")
        query["$skip"] = str(skip)
    if orderby is not None:
        query["$orderby"] = orderby
    return query


def build_request(http: httpx.Client | httpx.AsyncClient, call: ApiCall, token: str) -> httpx.Request:
    """An httpx request for `call`, carrying the bearer token (and the client's timeouts)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    return http.build_request(call.method, call.url, params=call.params, json=call.json, headers=headers)


def parse_retry_after(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay in seconds, or an HTTP date)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now()).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def error_from_response(response: httpx.Response) -> ApiError:
    """The ApiError (subclass chosen by error code, else by HTTP status) a response stands for."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    envelope = envelope if isinstance(envelope, dict) else {}
    code = envelope.get("code") if isinstance(envelope.get("code"), str) else None
    message = envelope.get("message")
    if isinstance(message, dict):  # OData v3 style: {"lang": ..., "value": ...}
        message = message.get("value")
    if not isinstance(message, str) or not message:
        text = response.text.strip() if body is None else ""
        message = text[:500] if text else _reason(status)
    target = envelope.get("target")
    request_id = target if isinstance(target, str) and target else response.headers.get(REQUEST_ID_HEADER)
    cls = error_class_for(status, code)
    args = (status, code or default_code_for(status), message, request_id)
    if issubclass(cls, TooManyRequests):
        return cls(*args, body=body, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return cls(*args, body=body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def read_json(response: httpx.Response) -> Any:
    """The JSON body of a successful response; raises the matching ApiError otherwise."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        return response.json()
    except ValueError as exc:
        raise ResponseFormatError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            request_id=response.headers.get(REQUEST_ID_HEADER),
        ) from exc


def read_entity(response: httpx.Response, model: type[Model]) -> Model:
    """A single entity from a successful response, validated as `model`."""
    return _validate(model, read_json(response), response)


def _validate(model: type[Model], data: Any, response: httpx.Response) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ResponseFormatError(
            f"{response.request.method} {response.request.url.path} returned a {model.__name__} the SDK cannot read: {exc}",
            status=response.status_code,
            request_id=response.headers.get(REQUEST_ID_HEADER),
        ) from exc


class Pager(Generic[Model]):
    """Walks an OData collection page by page, following `@odata.nextLink`.

    `limit` caps the number of items produced, so a `$top` is honoured even by a server whose
    next links forget it.
    """

    def __init__(self, calls: ApiCalls, first: ApiCall, model: type[Model], limit: int | None = None) -> None:
        self._calls = calls
        self._model = model
        self._remaining = limit
        self.next_call: ApiCall | None = first if limit != 0 else None

    def accept(self, response: httpx.Response) -> list[Model]:
        """The items of one page; sets `next_call` to the following page, or None at the end."""
        payload = read_json(response)
        values = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(values, list):
            raise ResponseFormatError(
                f"{response.request.url.path} did not return an OData collection",
                status=response.status_code,
                request_id=response.headers.get(REQUEST_ID_HEADER),
            )
        items = [_validate(self._model, value, response) for value in values]
        if self._remaining is not None:
            items = items[: self._remaining]
            self._remaining -= len(items)
        next_link = payload.get("@odata.nextLink")
        if not next_link or not items or self._remaining == 0:
            self.next_call = None
            return items
        next_url = self._calls.same_origin(response.request.url.join(str(next_link)))
        if next_url == response.request.url:
            raise ResponseFormatError(
                f"{response.request.url.path} returned a next link to the same page",
                status=response.status_code,
                request_id=response.headers.get(REQUEST_ID_HEADER),
            )
        self.next_call = ApiCall("GET", next_url)
        return items


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before giving up on a call.

    - Rate limits (429): wait `Retry-After` seconds and send again, for any method (the service
      did nothing), at most `rate_limit_max_retries` times and `rate_limit_max_wait` seconds in
      total per call; a longer wait raises TooManyRequests at once, with `retry_after` set.
    - Transient failures (connection errors, timeouts, 500/502/503/504): GET calls are retried
      with exponential backoff and jitter, up to `max_attempts` attempts in all. POST calls are
      retried only when the connection was never made (connect errors and timeouts), because
      otherwise the service may have acted on them.
    """

    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 20.0
    rate_limit_max_retries: int = 5
    rate_limit_max_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first attempt, so it must be at least 1")
        if self.rate_limit_max_retries < 0 or self.rate_limit_max_wait < 0:
            raise ValueError("rate-limit retries and wait must not be negative")

    def backoff(self, failures: int, random_fraction: float) -> float:
        """The delay after the `failures`-th consecutive failure: exponential, half jittered."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
        return ceiling / 2 + ceiling / 2 * random_fraction


NO_RETRIES = RetryPolicy(max_attempts=1, rate_limit_max_retries=0, rate_limit_max_wait=0.0)

_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
_TRANSIENT_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
# Raised before any byte of the request left: safe to resend even a POST.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class RetryState:
    """Retry decisions for one call; the sync and async clients run the same state machine."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        idempotent: bool,
        renew_token: Callable[[], bool],
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._idempotent = idempotent
        self._renew_token = renew_token
        self._random_fraction = random_fraction
        self._failures = 0
        self._rate_limited = 0
        self._rate_limit_waited = 0.0
        self._token_renewed = False

    def after_transport_error(self, exc: httpx.TransportError) -> float:
        """The delay before trying again after `exc`; raises TransportError when giving up."""
        retryable = isinstance(exc, _NOT_SENT_ERRORS) or (self._idempotent and isinstance(exc, _TRANSIENT_ERRORS))
        if retryable and self._failures + 1 < self._policy.max_attempts:
            self._failures += 1
            return self._policy.backoff(self._failures, self._random_fraction())
        request = exc.request if _has_request(exc) else None
        where = f" ({request.method} {request.url})" if request is not None else ""
        # A cached token can mean the token endpoint was never asked: the API call is the first to
        # meet an untrusted certificate, and says what to do about it just the same.
        raise TransportError(f"{type(exc).__name__}{where}: {exc}{untrusted_certificate_hint(exc)}") from exc

    def after_response(self, response: httpx.Response) -> float | None:
        """The delay before sending again, or None when `response` is the answer to return."""
        status = response.status_code
        if status == 401 and not self._token_renewed:
            # A cached token can be revoked or outlived by a server restart; one fresh token
            # tells that apart from a caller who lacks access.
            self._token_renewed = True
            return 0.0 if self._renew_token() else None
        if status == 429:
            return self._after_rate_limit(response)
        if status in _TRANSIENT_STATUSES and self._idempotent and self._failures + 1 < self._policy.max_attempts:
            self._failures += 1
            delay = self._policy.backoff(self._failures, self._random_fraction())
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return min(retry_after, self._policy.backoff_max) if retry_after is not None else delay
        return None

    def _after_rate_limit(self, response: httpx.Response) -> float | None:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        delay = retry_after if retry_after is not None else self._policy.backoff(self._rate_limited + 1, self._random_fraction())
        if (
            self._rate_limited >= self._policy.rate_limit_max_retries
            or self._rate_limit_waited + delay > self._policy.rate_limit_max_wait
        ):
            return None
        self._rate_limited += 1
        self._rate_limit_waited += delay
        return delay


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - the property raises when no request is attached
    except RuntimeError:
        return False
    return True


class WaitSchedule:
    """When to poll an action next while waiting for it to finish, and when to give up."""

    def __init__(
        self,
        action_id: str,
        *,
        timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
        clock: Callable[[], float],
        growth: float = 1.5,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.action_id = action_id
        self._timeout = timeout
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._interval = poll_interval
        self._max_interval = max(max_poll_interval, poll_interval)
        self._growth = growth

    def next_delay(self, last_seen: MachineAction | None) -> float:
        """Seconds to sleep before the next poll; raises ActionWaitTimeout when time is up."""
        delay = self._interval
        if self._deadline is not None:
            remaining = self._deadline - self._clock()
            if remaining <= 0:
                raise ActionWaitTimeout(self.action_id, self._timeout or 0.0, last_seen)
            delay = min(delay, remaining)
        self._interval = min(self._interval * self._growth, self._max_interval)
        return delay


def action_id_of(action: MachineAction | str) -> str:
    """The id of an action given either as a MachineAction or as its id."""
    return action.id if isinstance(action, MachineAction) else action
