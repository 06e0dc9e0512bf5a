"""The SDK against a scripted stand-in for the remote API and token endpoint (httpx.MockTransport).

Every scenario in the parametrised `connect` fixture runs on both BulwarkClient and
AsyncBulwarkClient, so the two stay at parity. Time is a fake clock that the injected sleep
advances: no test waits for real.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bulwark.client import (
    NO_RETRIES,
    USER_AGENT,
    ActionStatus,
    ActionWaitTimeout,
    ActiveRequestAlreadyExists,
    ApiError,
    AsyncBulwarkClient,
    AuthenticationError,
    BadRequest,
    BulwarkClient,
    BulwarkError,
    ClientCredentials,
    ClientVersionNotSupported,
    ConfigurationError,
    DisallowedOperation,
    Forbidden,
    InternalServerError,
    InvalidInput,
    InvalidRequestBody,
    MachineAction,
    MissingRequiredParameter,
    NotFound,
    ODataError,
    OsPlatformNotSupported,
    ResourceNotFound,
    RetryPolicy,
    StaticToken,
    TooManyRequests,
    TransportError,
    Unauthorized,
)

API = "https://bulwark.test"
AUTHORITY = "https://login.test"
TENANT = "6f1c4d1e-2b43-4c7a-9d55-0b6a3c1e8f10"
SCOPE = "https://api.securitycenter.microsoft.com/.default"
MACHINE_ID = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def mde_error(status: int, code: str, message: str, target: str | None = "req-0001", **headers: str) -> httpx.Response:
    """An error response in the API's envelope, with the request id also in the header."""
    error: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
        headers.setdefault("request-id", target)
    return httpx.Response(status, json={"error": error}, headers=headers)


def machine_json(number: int) -> dict[str, Any]:
    """A Machine with every field the API sends, in its order (api/wire.py's machine_to_wire)."""
    return {
        "id": f"{number:040x}",
        "computerDnsName": f"host{number}.contoso.com",
        "firstSeen": "2024-04-01T08:00:00.1234567Z",
        "lastSeen": "2024-05-01T08:00:00.1234567Z",
        "osPlatform": "Windows11",
        "osProcessor": "x64",
        "version": "22H2",
        "osBuild": 22621,
        "lastIpAddress": "10.0.0.4",
        "lastExternalIpAddress": None,
        "agentVersion": "10.8750.22621.1000",
        "healthStatus": "Active",
        "deviceValue": "Normal",
        "rbacGroupId": None,
        "rbacGroupName": None,
        "riskScore": "None",
        "exposureLevel": "None",
        "isAadJoined": False,
        "aadDeviceId": None,
        "machineTags": [],
        "onboardingStatus": "Onboarded",
        "osArchitecture": "64-bit",
        "ipAddresses": [],
        "managedBy": "MicrosoftDefenderForEndpoint",
        "managedByStatus": "Success",
        "isPotentialDuplication": False,
        "isExcluded": False,
    }


def entity(entity_set: str, body: dict[str, Any]) -> dict[str, Any]:
    """A single entity as the API answers it: ``@odata.context`` first, then the fields."""
    return {"@odata.context": f"{API}/api/$metadata#{entity_set}/$entity", **body}


def is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class FakeService:
    """Plays the authority and the API, recording what the client sent."""

    def __init__(self) -> None:
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []
        self.issued_tokens: list[str] = []
        self.valid_tokens: set[str] = set()
        self.token_lifetime = 3599
        self.token_failure: httpx.Response | None = None
        self.scripted: dict[tuple[str, str], list[Any]] = {}
        self.machines = [machine_json(n) for n in range(5)]
        self.actions: dict[str, dict[str, Any]] = {}
        self.upcoming_statuses: dict[str, list[str]] = {}
        self.page_size = 2
        self.link_origin = API
        self.offboard_status = 200

    def script(self, method: str, path: str, *outcomes: Any) -> None:
        """Answer the next calls to `method path` with these responses or exception classes."""
        self.scripted.setdefault((method, path), []).extend(outcomes)

    def add_action(self, status: str = "Pending", then: list[str] | None = None) -> dict[str, Any]:
        """Store an action; each later GET moves it to the next status in `then`."""
        action = self._new_action(MACHINE_ID, "seeded", None, None, None) | {"status": status}
        self.actions[action["id"]] = action
        self.upcoming_statuses[action["id"]] = list(then or [])
        return action

    def requests_to(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.api_requests if r.method == method and r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        # The authority is login.test, or the API's own server (its default) at the token path.
        if request.url.host == "login.test" or request.url.path.endswith("/oauth2/v2.0/token"):
            return self._token(request)
        self.api_requests.append(request)
        scripted = self.scripted.get((request.method, request.url.path))
        if scripted:
            outcome = scripted.pop(0)
            if isinstance(outcome, type) and issubclass(outcome, Exception):
                raise outcome("scripted failure", request=request)
            return outcome
        if request.headers.get("Authorization") not in {f"Bearer {t}" for t in self.valid_tokens}:
            return mde_error(
                401,
                "Unauthorized",
                "Unauthorized (invalid or expired authorization header).",
                **{"WWW-Authenticate": 'Bearer realm="bulwark", error="invalid_token"'},
            )
        return self._route(request)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if self.token_failure is not None:
            return self.token_failure
        token = f"token-{len(self.issued_tokens) + 1}"
        self.issued_tokens.append(token)
        self.valid_tokens.add(token)
        return httpx.Response(200, json={"token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": token})

    def _route(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        match request.method, parts:
            case "POST", ["api", "machines", machine_id, "offboard"]:
                body = self._comment_body(request)
                if isinstance(body, httpx.Response):
                    return body
                action = self._new_action(
                    machine_id, body["Comment"], body.get("ExternalId"), body.get("Title"), body.get("RequestSource")
                )
                self.actions[action["id"]] = action
                return httpx.Response(self.offboard_status, json=entity("MachineActions", action))
            case "GET", ["api", "machineactions", action_id]:
                missing = self._unknown_action(action_id)
                if missing is not None:
                    return missing
                upcoming = self.upcoming_statuses.get(action_id)
                if upcoming:
                    self.actions[action_id]["status"] = upcoming.pop(0)
                return httpx.Response(200, json=entity("MachineActions", self.actions[action_id]))
            case "POST", ["api", "machineactions", action_id, "cancel"]:
                missing = self._unknown_action(action_id)
                if missing is not None:
                    return missing
                body = self._comment_body(request)
                if isinstance(body, httpx.Response):
                    return body
                action = self.actions[action_id]
                if action["status"] != "Pending":
                    return mde_error(400, "BadRequest", f"Action {action_id} is already in final state {action['status']}.")
                action.update(
                    status="Cancelled",
                    cancellationRequestor="Automation App",
                    cancellationComment=body["Comment"],
                    cancellationDateTimeUtc="2024-05-01T09:00:00.5Z",
                )
                return httpx.Response(200, json=entity("MachineActions", action))
            case "GET", ["api", "machineactions"]:
                return self._page(request, list(self.actions.values()), "MachineActions")
            case "GET", ["api", "machines"]:
                return self._page(request, self.machines, "Machines")
            case "GET", ["api", "machines", key]:
                for machine in self.machines:
                    if key in (machine["id"], machine["computerDnsName"]):
                        return httpx.Response(200, json=entity("Machines", machine))
                return mde_error(404, "ResourceNotFound", f"Machine {key} was not found")
        return mde_error(404, "NotFound", "General Not Found error message.")

    def _comment_body(self, request: httpx.Request) -> dict[str, Any] | httpx.Response:
        """The body of an offboard or cancel, or the error the API answers for it (api/schemas.py)."""
        if not request.content.strip():
            return mde_error(
                400, "InvalidRequestBody", "Invalid request body: the body is empty; expected a JSON object with Comment."
            )
        body = json.loads(request.content)
        if not isinstance(body, dict):
            return mde_error(400, "InvalidRequestBody", "Invalid request body: expected a JSON object.")
        comment = body.get("Comment")
        if comment is None or not comment.strip():
            return mde_error(400, "MissingRequiredParameter", "Parameter Comment is missing.")
        return body

    def _unknown_action(self, action_id: str) -> httpx.Response | None:
        """The API's answer to an action id that is not a GUID, or names no action."""
        if not is_guid(action_id):
            return mde_error(400, "InvalidInput", f"Invalid input {action_id!r}: machine action id must be a GUID.")
        if action_id not in self.actions:
            return mde_error(404, "ResourceNotFound", f"MachineAction {action_id} was not found")
        return None

    def _page(self, request: httpx.Request, items: list[dict[str, Any]], entity_set: str) -> httpx.Response:
        """One page the way api/listing.py writes it: $top is the page size; the next link moves $skip only."""
        params = request.url.params
        skip = int(params.get("$skip", 0))
        size = int(params["$top"]) if "$top" in params else self.page_size
        page = items[skip : skip + size]
        body: dict[str, Any] = {"@odata.context": f"{API}/api/$metadata#{entity_set}", "value": page}
        if skip + len(page) < len(items):
            query = [(k, v) for k, v in params.multi_items() if k.lower() != "$skip"]
            query.append(("$skip", str(skip + size)))
            body["@odata.nextLink"] = str(httpx.URL(f"{self.link_origin}{request.url.path}", params=query))
        return httpx.Response(200, json=body)

    @staticmethod
    def _new_action(
        machine_id: str, comment: str, external_id: str | None, title: str | None, request_source: str | None
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "type": "Offboard",
            "title": title,
            "requestor": "Automation App",
            "requestorComment": comment,
            "status": "Pending",
            "machineId": machine_id,
            "computerDnsName": "mymachine1.contoso.com",
            "creationDateTimeUtc": "2024-05-01T08:30:00.7220239Z",
            "lastUpdateDateTimeUtc": "2024-05-01T08:30:00.7220239Z",
            "cancellationRequestor": None,
            "cancellationComment": None,
            "cancellationDateTimeUtc": None,
            "errorHResult": 0,
            "scope": None,
            "externalId": external_id,
            "requestSource": request_source or "PublicApi",
            "relatedFileInfo": None,
            "commands": [],
            "troubleshootInfo": None,
        }


class AsyncDriver:
    """Runs an AsyncBulwarkClient's methods to completion so synchronous tests can call them."""

    def __init__(self, client: AsyncBulwarkClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, AsyncIterator):
                return iter(self._loop.run_until_complete(_collect(result)))
            return self._loop.run_until_complete(result)

        return run

    def close(self) -> None:
        self._loop.run_until_complete(self.client.aclose())


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


Connect = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, fake: FakeService, clock: FakeClock) -> Iterator[Connect]:
    """Make a client of the parametrised kind, talking to `fake`, sleeping on `clock`."""
    opened: list[Any] = []
    loop = asyncio.new_event_loop()

    def make(**overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "tenant_id": TENANT,
            "client_id": "app-1",
            "client_secret": "s3cret",
            "authority": AUTHORITY,
            "transport": httpx.MockTransport(fake.handle),
            "clock": clock,
            "random_fraction": lambda: 0.5,
        } | overrides
        if "token" in overrides or "credential" in overrides:
            for key in ("tenant_id", "client_id", "client_secret"):
                settings.pop(key)
        if request.param == "sync":
            client: Any = BulwarkClient(API, sleep=clock.sleep, **settings)
        else:
            client = AsyncDriver(AsyncBulwarkClient(API, sleep=clock.async_sleep, **settings), loop)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()
    loop.close()


# --- requests on the wire ---------------------------------------------------------------------


def test_offboard_sends_the_documented_request_and_returns_the_action(connect: Connect, fake: FakeService) -> None:
    client = connect()

    action = client.offboard(MACHINE_ID, "Offboard machine by automation", external_id="ticket-42")

    (sent,) = fake.requests_to("POST", f"/api/machines/{MACHINE_ID}/offboard")
    assert json.loads(sent.content) == {
        "Comment": "Offboard machine by automation",
        "ExternalId": "ticket-42",
        "Title": None,
        "RequestSource": None,
    }
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("bulwark-sdk/")
    assert isinstance(action, MachineAction)
    assert action.status is ActionStatus.PENDING
    assert action.machine_id == MACHINE_ID
    assert action.external_id == "ticket-42"
    assert action.creation_date_time_utc == datetime(2024, 5, 1, 8, 30, 0, 722023, tzinfo=UTC)


def test_offboard_accepts_201_created(connect: Connect, fake: FakeService) -> None:
    fake.offboard_status = 201

    action = connect().offboard(MACHINE_ID, "retire laptop", title="Retire", request_source="Automation")

    assert action.title == "Retire"
    assert action.request_source == "Automation"


def test_cancel_sends_the_comment_and_returns_the_cancelled_action(connect: Connect, fake: FakeService) -> None:
    pending = fake.add_action()

    action = connect().cancel_action(pending["id"], "raised in error")

    (sent,) = fake.requests_to("POST", f"/api/machineactions/{pending['id']}/cancel")
    assert json.loads(sent.content) == {"Comment": "raised in error"}
    assert action.id == pending["id"]
    assert action.status is ActionStatus.CANCELLED
    assert action.cancellation_comment == "raised in error"
    assert action.cancellation_date_time_utc == datetime(2024, 5, 1, 9, 0, 0, 500000, tzinfo=UTC)


def test_get_machine_by_id_or_dns_name(connect: Connect, fake: FakeService) -> None:
    client = connect()

    by_id = client.get_machine(fake.machines[3]["id"])
    by_name = client.get_machine("host3.contoso.com")

    assert by_id == by_name
    assert by_name.computer_dns_name == "host3.contoso.com"
    assert fake.api_requests[-1].url.path == "/api/machines/host3.contoso.com"


def test_path_segments_are_percent_encoded(connect: Connect, fake: FakeService) -> None:
    with pytest.raises(NotFound):
        connect().get_machine("../machineactions/x?y")

    assert fake.api_requests[-1].url.raw_path == b"/api/machines/..%2Fmachineactions%2Fx%3Fy"


def test_base_url_path_prefix_is_kept(fake: FakeService) -> None:
    with (
        BulwarkClient(f"{API}/tenant-a", token="t", transport=httpx.MockTransport(fake.handle)) as client,
        pytest.raises(Unauthorized),
    ):
        client.get_machine("abc")

    assert fake.api_requests[-1].url.path == "/tenant-a/api/machines/abc"


# --- tokens -----------------------------------------------------------------------------------


def test_token_is_requested_once_with_client_credentials(connect: Connect, fake: FakeService) -> None:
    client = connect()

    client.get_machine(fake.machines[0]["id"])
    client.get_machine(fake.machines[1]["id"])
    list(client.list_machines())

    (token_request,) = fake.token_requests
    assert token_request.method == "POST"
    assert str(token_request.url) == f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_request.content.decode()) == {
        "client_id": ["app-1"],
        "client_secret": ["s3cret"],
        "scope": [SCOPE],
        "grant_type": ["client_credentials"],
    }
    assert {r.headers["Authorization"] for r in fake.api_requests} == {"Bearer token-1"}


def test_token_is_renewed_shortly_before_it_expires(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    client = connect()
    client.get_machine("host0.contoso.com")

    clock.now += 3599 - 301  # still more than five minutes of life left
    client.get_machine("host0.contoso.com")
    clock.now += 2  # now inside the refresh margin
    client.get_machine("host0.contoso.com")

    assert fake.issued_tokens == ["token-1", "token-2"]
    assert [r.headers["Authorization"] for r in fake.api_requests] == [
        "Bearer token-1",
        "Bearer token-1",
        "Bearer token-2",
    ]


def test_short_lived_token_is_renewed_at_half_its_life(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    fake.token_lifetime = 120
    client = connect()
    client.get_machine("host0.contoso.com")

    clock.now += 59
    client.get_machine("host0.contoso.com")
    clock.now += 2
    client.get_machine("host0.contoso.com")

    assert len(fake.token_requests) == 2


def test_rejected_token_is_replaced_once(connect: Connect, fake: FakeService) -> None:
    client = connect()
    client.get_machine("host0.contoso.com")
    fake.valid_tokens.clear()  # e.g. the server's signing keys were rotated

    machine = client.get_machine("host1.contoso.com")

    assert machine.computer_dns_name == "host1.contoso.com"
    assert fake.issued_tokens == ["token-1", "token-2"]


def test_caller_without_access_gets_unauthorized_after_one_fresh_token(connect: Connect, fake: FakeService) -> None:
    refusals = [mde_error(401, "Unauthorized", "Unauthorized") for _ in range(3)]
    fake.script("GET", "/api/machines/host0.contoso.com", *refusals)

    with pytest.raises(Unauthorized) as raised:
        connect().get_machine("host0.contoso.com")

    assert raised.value.status == 401
    assert len(fake.api_requests) == 2
    assert len(fake.token_requests) == 2


def test_static_token_is_sent_as_is_and_never_renewed(connect: Connect, fake: FakeService) -> None:
    fake.valid_tokens.add("handed-over")
    client = connect(token="handed-over")

    client.get_machine("host0.contoso.com")
    fake.valid_tokens.clear()
    with pytest.raises(Unauthorized):
        client.get_machine("host0.contoso.com")

    assert fake.token_requests == []
    assert [r.headers["Authorization"] for r in fake.api_requests] == ["Bearer handed-over"] * 2


def test_token_endpoint_refusal_raises_authentication_error(connect: Connect, fake: FakeService) -> None:
    fake.token_failure = httpx.Response(
        401,
        json={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "trace_id": "trace-9",
        },
    )

    with pytest.raises(AuthenticationError) as raised:
        connect().offboard(MACHINE_ID, "x")

    assert raised.value.status == 401
    assert raised.value.error == "invalid_client"
    assert raised.value.request_id == "trace-9"
    assert "AADSTS7000215" in str(raised.value)
    assert fake.api_requests == []


def test_unreachable_token_endpoint_raises_authentication_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    credentials = ClientCredentials(TENANT, "app-1", "s3cret", authority=AUTHORITY)
    with httpx.Client(transport=httpx.MockTransport(refuse)) as http, pytest.raises(AuthenticationError):
        credentials.get_token(http)


def test_concurrent_threads_share_one_token_request(fake: FakeService) -> None:
    credentials = ClientCredentials(TENANT, "app-1", "s3cret", authority=AUTHORITY)

    def slow_authority(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # keep the first fetch open while the other threads arrive
        return fake.handle(request)

    with httpx.Client(transport=httpx.MockTransport(slow_authority)) as http:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            tokens = list(pool.map(lambda _: credentials.get_token(http), range(8)))

    assert tokens == ["token-1"] * 8
    assert len(fake.token_requests) == 1


async def test_concurrent_tasks_share_one_token_request(fake: FakeService) -> None:
    credentials = ClientCredentials(TENANT, "app-1", "s3cret", authority=AUTHORITY)

    async def yielding_authority(request: httpx.Request) -> httpx.Response:
        for _ in range(5):
            await asyncio.sleep(0)  # let the other tasks run into the lock
        return fake.handle(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(yielding_authority)) as http:
        tokens = await asyncio.gather(*(credentials.get_token_async(http) for _ in range(10)))

    assert tokens == ["token-1"] * 10
    assert len(fake.token_requests) == 1


# --- errors -----------------------------------------------------------------------------------

ERROR_TABLE = [
    ("BadRequest", 400, BadRequest, "General Bad Request error message."),
    ("ODataError", 400, ODataError, "Invalid OData URI query: unknown property 'colour'."),
    ("InvalidInput", 400, InvalidInput, "Invalid input machine id."),
    ("InvalidRequestBody", 400, InvalidRequestBody, "Invalid request body."),
    ("MissingRequiredParameter", 400, MissingRequiredParameter, "Parameter Comment is missing."),
    ("OsPlatformNotSupported", 400, OsPlatformNotSupported, "OS Platform Linux isn't supported for this action."),
    ("ClientVersionNotSupported", 400, ClientVersionNotSupported, "Offboard is supported on client version 1703."),
    ("ActiveRequestAlreadyExists", 400, ActiveRequestAlreadyExists, "Action is already in progress"),
    ("Unauthorized", 401, Unauthorized, "Unauthorized (invalid or expired authorization header)."),
    ("Forbidden", 403, Forbidden, "Missing application roles. API required roles: Machine.Offboard."),
    ("DisallowedOperation", 403, DisallowedOperation, "Offboarding is disallowed for this device group."),
    ("NotFound", 404, NotFound, "General Not Found error message."),
    ("ResourceNotFound", 404, ResourceNotFound, f"Machine {MACHINE_ID} was not found"),
    ("TooManyRequests", 429, TooManyRequests, "Rate limit is exceeded. Try again in 30 seconds."),
    ("InternalServerError", 500, InternalServerError, ""),
]


@pytest.mark.parametrize(("code", "status", "error_class", "message"), ERROR_TABLE, ids=[row[0] for row in ERROR_TABLE])
def test_each_error_code_raises_its_own_exception(
    connect: Connect, fake: FakeService, code: str, status: int, error_class: type[ApiError], message: str
) -> None:
    # Twice, because a 401 is answered once more with a fresh token before giving up.
    for _ in range(2):
        response = mde_error(status, code, message, target="5c6d7e8f-req", **{"Retry-After": "30"})
        fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", response)

    with pytest.raises(error_class) as raised:
        connect(retry=NO_RETRIES).offboard(MACHINE_ID, "x")

    error = raised.value
    assert type(error) is error_class
    assert isinstance(error, ApiError) and isinstance(error, BulwarkError)
    assert (error.status, error.code, error.request_id) == (status, code, "5c6d7e8f-req")
    assert error.message == (message or "Internal Server Error")
    assert "5c6d7e8f-req" in str(error)
    if error_class is TooManyRequests:
        assert error.retry_after == 30.0  # type: ignore[attr-defined]


def test_specific_codes_can_be_caught_by_their_family() -> None:
    assert issubclass(ActiveRequestAlreadyExists, BadRequest)
    assert issubclass(ODataError, BadRequest)
    assert issubclass(ResourceNotFound, NotFound)
    assert issubclass(DisallowedOperation, Forbidden)


@pytest.mark.parametrize(
    ("respond", "error_class", "code", "message"),
    [
        (lambda: mde_error(400, "InvalidMachineState", "Busy"), BadRequest, "InvalidMachineState", "Busy"),
        (lambda: mde_error(404, "Gone", "No such thing"), NotFound, "Gone", "No such thing"),
        (lambda: mde_error(409, "Conflict", "Edit conflict"), ApiError, "Conflict", "Edit conflict"),
        (lambda: httpx.Response(403, text=""), Forbidden, "Forbidden", "Forbidden"),
        (lambda: httpx.Response(418, text="short and stout"), ApiError, "ImATeapot", "short and stout"),
    ],
    ids=["unknown-400", "unknown-404", "unknown-409", "empty-403", "plain-text-418"],
)
def test_unknown_codes_fall_back_to_the_http_status(
    connect: Connect,
    fake: FakeService,
    respond: Callable[[], httpx.Response],
    error_class: type[ApiError],
    code: str,
    message: str,
) -> None:
    fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", respond())

    with pytest.raises(ApiError) as raised:
        connect().offboard(MACHINE_ID, "x")

    assert type(raised.value) is error_class
    assert (raised.value.code, raised.value.message) == (code, message)


def test_request_id_comes_from_the_header_when_the_body_has_no_target(connect: Connect, fake: FakeService) -> None:
    fake.script(
        "POST",
        f"/api/machines/{MACHINE_ID}/offboard",
        mde_error(400, "InvalidRequestBody", "Invalid request body.", target=None, **{"request-id": "hdr-77"}),
    )

    with pytest.raises(InvalidRequestBody) as raised:
        connect().offboard(MACHINE_ID, "x")

    assert raised.value.request_id == "hdr-77"


def test_missing_resource_is_reported_by_the_real_route(connect: Connect) -> None:
    unknown = "0b7e2f4c-6a1d-4e3b-9c8f-5d2a1b0c9e8f"
    with pytest.raises(ResourceNotFound) as raised:
        connect().get_action(unknown)

    assert raised.value.message == f"MachineAction {unknown} was not found"


def test_a_malformed_action_id_is_refused_as_invalid_input(connect: Connect) -> None:
    with pytest.raises(InvalidInput) as raised:
        connect().get_action("no-such-action")

    assert raised.value.message == "Invalid input 'no-such-action': machine action id must be a GUID."


# --- retries ----------------------------------------------------------------------------------


def test_rate_limited_post_waits_retry_after_then_succeeds(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    limited = mde_error(429, "TooManyRequests", "slow down", **{"Retry-After": "7"})
    fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", limited)

    action = connect().offboard(MACHINE_ID, "x")

    assert action.status is ActionStatus.PENDING
    assert clock.sleeps == [7.0]
    assert len(fake.requests_to("POST", f"/api/machines/{MACHINE_ID}/offboard")) == 2
    assert len(fake.actions) == 1


def test_rate_limit_retries_are_bounded(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    limited = [mde_error(429, "TooManyRequests", "slow down", **{"Retry-After": "2"}) for _ in range(10)]
    fake.script("GET", "/api/machines/host0.contoso.com", *limited)

    with pytest.raises(TooManyRequests) as raised:
        connect(retry=RetryPolicy(rate_limit_max_retries=3)).get_machine("host0.contoso.com")

    assert raised.value.retry_after == 2.0
    assert clock.sleeps == [2.0, 2.0, 2.0]
    assert len(fake.api_requests) == 4


def test_rate_limit_longer_than_the_wait_budget_raises_at_once(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    fake.script("GET", "/api/machines/host0.contoso.com", mde_error(429, "TooManyRequests", "hourly", **{"Retry-After": "1800"}))

    with pytest.raises(TooManyRequests) as raised:
        connect(retry=RetryPolicy(rate_limit_max_wait=60)).get_machine("host0.contoso.com")

    assert raised.value.retry_after == 1800.0
    assert clock.sleeps == []


def test_retry_after_as_http_date_is_honoured(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    # A date in the past means "now": retry without waiting.
    fake.script(
        "GET",
        "/api/machines/host0.contoso.com",
        mde_error(429, "TooManyRequests", "slow down", **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    )

    machine = connect().get_machine("host0.contoso.com")

    assert machine.computer_dns_name == "host0.contoso.com"
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_post_is_not_retried_on_server_errors(connect: Connect, fake: FakeService, clock: FakeClock, status: int) -> None:
    fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", mde_error(status, "InternalServerError", ""))

    with pytest.raises(ApiError) as raised:
        connect().offboard(MACHINE_ID, "x")

    assert raised.value.status == status
    assert len(fake.requests_to("POST", f"/api/machines/{MACHINE_ID}/offboard")) == 1
    assert clock.sleeps == []


def test_post_is_not_retried_when_the_response_never_came(connect: Connect, fake: FakeService) -> None:
    fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", httpx.ReadTimeout)

    with pytest.raises(TransportError) as raised:
        connect().offboard(MACHINE_ID, "x")

    assert isinstance(raised.value.__cause__, httpx.ReadTimeout)
    assert len(fake.requests_to("POST", f"/api/machines/{MACHINE_ID}/offboard")) == 1


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout])
def test_post_is_retried_when_the_connection_was_never_made(
    connect: Connect, fake: FakeService, clock: FakeClock, failure: type[Exception]
) -> None:
    fake.script("POST", f"/api/machines/{MACHINE_ID}/offboard", failure)

    action = connect().offboard(MACHINE_ID, "x")

    assert action.status is ActionStatus.PENDING
    assert len(fake.requests_to("POST", f"/api/machines/{MACHINE_ID}/offboard")) == 2
    assert clock.sleeps == [0.375]


def test_get_is_retried_on_503_with_growing_backoff(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    unavailable = [httpx.Response(503, text="upstream unavailable") for _ in range(2)]
    fake.script("GET", "/api/machines/host0.contoso.com", *unavailable)

    machine = connect().get_machine("host0.contoso.com")

    assert machine.computer_dns_name == "host0.contoso.com"
    assert clock.sleeps == [0.375, 0.75]  # 0.5 s then 1 s ceilings, jitter fraction 0.5
    assert len(fake.api_requests) == 3


def test_get_retries_on_connection_errors_and_read_timeouts(connect: Connect, fake: FakeService) -> None:
    failures = (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError)
    fake.script("GET", "/api/machines/host0.contoso.com", *failures)

    machine = connect().get_machine("host0.contoso.com")

    assert machine.computer_dns_name == "host0.contoso.com"


def test_get_gives_up_after_max_attempts(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    unavailable = [httpx.Response(503, headers={"request-id": "r-503"}) for _ in range(9)]
    fake.script("GET", "/api/machines/host0.contoso.com", *unavailable)

    with pytest.raises(ApiError) as raised:
        connect().get_machine("host0.contoso.com")

    assert (raised.value.status, raised.value.code, raised.value.request_id) == (503, "ServiceUnavailable", "r-503")
    assert len(fake.api_requests) == RetryPolicy().max_attempts
    assert len(clock.sleeps) == RetryPolicy().max_attempts - 1


def test_get_gives_up_on_a_dead_connection_with_transport_error(connect: Connect, fake: FakeService) -> None:
    fake.script("GET", "/api/machines/host0.contoso.com", *[httpx.ConnectError] * 9)

    with pytest.raises(TransportError):
        connect(retry=RetryPolicy(max_attempts=2)).get_machine("host0.contoso.com")

    assert len(fake.api_requests) == 2


def test_server_retry_after_on_503_replaces_the_backoff(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    fake.script("GET", "/api/machines/host0.contoso.com", httpx.Response(503, headers={"Retry-After": "4"}))

    connect().get_machine("host0.contoso.com")

    assert clock.sleeps == [4.0]


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, [0.25, 0.5, 1.0]), (1.0, [0.5, 1.0, 2.0])])
def test_backoff_jitter_stays_within_half_to_full_ceiling(
    fake: FakeService, clock: FakeClock, fraction: float, expected: list[float]
) -> None:
    fake.script("GET", "/api/machines/host0.contoso.com", *[httpx.Response(502) for _ in range(3)])
    client = BulwarkClient(
        API, token="t", transport=httpx.MockTransport(fake.handle), sleep=clock.sleep, random_fraction=lambda: fraction
    )
    fake.valid_tokens.add("t")

    client.get_machine("host0.contoso.com")

    assert clock.sleeps == expected


# --- paging -----------------------------------------------------------------------------------


def test_list_machines_follows_next_links_across_pages(connect: Connect, fake: FakeService) -> None:
    machines = list(connect().list_machines(filter="healthStatus eq 'Active'"))

    assert [m.computer_dns_name for m in machines] == [f"host{n}.contoso.com" for n in range(5)]
    pages = fake.requests_to("GET", "/api/machines")
    assert len(pages) == 3
    assert [p.url.params.get("$skip") for p in pages] == [None, "2", "4"]
    assert {p.url.params["$filter"] for p in pages} == {"healthStatus eq 'Active'"}
    assert b"%24filter=healthStatus" in pages[0].url.raw_path


def test_top_caps_the_number_of_items(connect: Connect, fake: FakeService) -> None:
    machines = list(connect().list_machines(top=3, skip=1))

    assert [m.computer_dns_name for m in machines] == ["host1.contoso.com", "host2.contoso.com", "host3.contoso.com"]
    assert fake.requests_to("GET", "/api/machines")[0].url.params["$top"] == "3"


def test_top_is_enforced_even_when_next_links_forget_it(connect: Connect, fake: FakeService) -> None:
    page = {"value": [machine_json(1), machine_json(2)], "@odata.nextLink": f"{API}/api/machines?$skip=2"}
    fake.script("GET", "/api/machines", *[httpx.Response(200, json=page) for _ in range(2)])

    machines = list(connect().list_machines(top=3))

    assert len(machines) == 3
    assert len(fake.requests_to("GET", "/api/machines")) == 2


def test_list_actions_passes_query_options_and_pages(connect: Connect, fake: FakeService) -> None:
    for _ in range(3):
        fake.add_action()

    actions = list(
        connect().list_actions(filter="type eq 'Offboard' and status eq 'Pending'", orderby="creationDateTimeUtc desc")
    )

    assert sorted(a.id for a in actions) == sorted(fake.actions)
    first = fake.requests_to("GET", "/api/machineactions")[0]
    assert first.url.params["$filter"] == "type eq 'Offboard' and status eq 'Pending'"
    assert first.url.params["$orderby"] == "creationDateTimeUtc desc"
    assert len(fake.requests_to("GET", "/api/machineactions")) == 2


def test_next_links_are_only_followed_on_the_configured_origin(connect: Connect, fake: FakeService) -> None:
    fake.link_origin = "http://10.0.0.5:8080"  # a server behind a proxy writing its own address

    machines = list(connect().list_machines())

    assert len(machines) == 5
    assert {(r.url.scheme, r.url.host, r.url.port) for r in fake.api_requests} == {("https", "bulwark.test", None)}


def test_empty_collection(connect: Connect, fake: FakeService) -> None:
    fake.machines = []

    assert list(connect().list_machines()) == []


def test_listing_is_lazy(fake: FakeService) -> None:
    client = BulwarkClient(API, token="t", transport=httpx.MockTransport(fake.handle))
    fake.valid_tokens.add("t")

    machines = client.list_machines()
    assert fake.api_requests == []
    next(machines)

    assert len(fake.api_requests) == 1


# --- waiting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("final", ["Succeeded", "Failed", "TimeOut", "Cancelled"])
def test_wait_polls_until_the_action_is_final(connect: Connect, fake: FakeService, clock: FakeClock, final: str) -> None:
    action = fake.add_action(then=["Pending", "InProgress", "InProgress", final])

    finished = connect().wait(action["id"], timeout=60, poll_interval=2)

    assert finished.status is ActionStatus(final)
    assert finished.id == action["id"]
    assert len(fake.requests_to("GET", f"/api/machineactions/{action['id']}")) == 4
    assert clock.sleeps == [2.0, 3.0, 4.5]


def test_wait_on_a_returned_action_sleeps_before_the_first_poll(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    client = connect()
    pending = client.offboard(MACHINE_ID, "x")
    fake.upcoming_statuses[pending.id] = ["Succeeded"]

    finished = client.wait(pending, poll_interval=1)

    assert finished.status is ActionStatus.SUCCEEDED
    assert clock.sleeps == [1.0]


def test_wait_on_a_final_action_returns_it_without_asking(connect: Connect, fake: FakeService) -> None:
    done = MachineAction(id="a1", type="Offboard", status=ActionStatus.FAILED)

    assert connect().wait(done) is done
    assert fake.api_requests == []


def test_polling_interval_stops_growing_at_the_maximum(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    action = fake.add_action(then=["Pending"] * 5 + ["Succeeded"])

    connect().wait(action["id"], timeout=None, poll_interval=4, max_poll_interval=6)

    assert clock.sleeps == [4.0, 6.0, 6.0, 6.0, 6.0]


def test_wait_times_out_with_the_last_seen_action(connect: Connect, fake: FakeService, clock: FakeClock) -> None:
    action = fake.add_action(then=["InProgress"] * 100)

    with pytest.raises(ActionWaitTimeout) as raised:
        connect().wait(action["id"], timeout=10, poll_interval=2)

    assert raised.value.action_id == action["id"]
    assert raised.value.timeout == 10
    assert raised.value.last_seen is not None
    assert raised.value.last_seen.status is ActionStatus.IN_PROGRESS
    assert sum(clock.sleeps) == pytest.approx(10)  # never sleeps past the deadline
    assert clock.sleeps == [2.0, 3.0, pytest.approx(4.5), pytest.approx(0.5)]


# --- settings and lifecycle ----------------------------------------------------------------------


@pytest.fixture
def no_profiles(tmp_path: Path) -> dict[str, str]:
    """Variables that keep from_env() away from the user's own profiles (an empty config file)."""
    return {"BULWARK_CONFIG": str(tmp_path / "config.json")}


def test_from_env_builds_client_credentials(fake: FakeService, no_profiles: dict[str, str]) -> None:
    environ = {
        **no_profiles,
        "BULWARK_API_URL": API,
        "BULWARK_AUTHORITY": AUTHORITY,
        "BULWARK_TENANT_ID": TENANT,
        "BULWARK_CLIENT_ID": "app-1",
        "BULWARK_CLIENT_SECRET": "s3cret",
    }

    with BulwarkClient.from_env(environ, transport=httpx.MockTransport(fake.handle)) as client:
        client.get_machine("host0.contoso.com")

    assert str(fake.token_requests[0].url) == f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"
    assert str(fake.api_requests[0].url) == f"{API}/api/machines/host0.contoso.com"


async def test_async_from_env_with_a_ready_token(fake: FakeService, no_profiles: dict[str, str]) -> None:
    fake.valid_tokens.add("ready")
    environ = {**no_profiles, "BULWARK_API_URL": API, "BULWARK_TOKEN": "ready"}

    async with AsyncBulwarkClient.from_env(environ, transport=httpx.MockTransport(fake.handle)) as client:
        machine = await client.get_machine("host0.contoso.com")

    assert machine.computer_dns_name == "host0.contoso.com"
    assert fake.token_requests == []


def test_from_env_names_the_missing_variables(no_profiles: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        BulwarkClient.from_env({**no_profiles, "BULWARK_TENANT_ID": TENANT})

    assert "BULWARK_CLIENT_ID" in str(raised.value)
    assert "BULWARK_CLIENT_SECRET" in str(raised.value)


def test_from_env_defaults_to_the_local_server_as_the_command_does(fake: FakeService, no_profiles: dict[str, str]) -> None:
    environ = {**no_profiles, "BULWARK_TENANT_ID": TENANT, "BULWARK_CLIENT_ID": "app-1", "BULWARK_CLIENT_SECRET": "s3cret"}

    with BulwarkClient.from_env(environ) as client:
        assert client.base_url == "http://127.0.0.1:8000"
        assert isinstance(client.credential, ClientCredentials)
        assert client.credential.token_url == f"http://127.0.0.1:8000/{TENANT}/oauth2/v2.0/token"


def test_from_env_sends_the_secret_to_the_api_server_itself_unless_the_api_is_microsofts(
    fake: FakeService, no_profiles: dict[str, str]
) -> None:
    credentials = {**no_profiles, "BULWARK_TENANT_ID": TENANT, "BULWARK_CLIENT_ID": "app-1", "BULWARK_CLIENT_SECRET": "s3cret"}

    with BulwarkClient.from_env({**credentials, "BULWARK_API_URL": API}, transport=httpx.MockTransport(fake.handle)) as client:
        client.get_machine("host0.contoso.com")
    with BulwarkClient.from_env({**credentials, "BULWARK_API_URL": "https://api.securitycenter.microsoft.com"}) as live:
        assert isinstance(live.credential, ClientCredentials)
        live_token_url = live.credential.token_url

    # The secret went to the server named by BULWARK_API_URL, and nowhere else.
    assert [str(request.url) for request in fake.token_requests] == [f"{API}/{TENANT}/oauth2/v2.0/token"]
    assert parse_qs(fake.token_requests[0].content.decode())["client_secret"] == ["s3cret"]
    assert live_token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"


def test_a_client_built_by_hand_gets_its_tokens_from_its_own_server(fake: FakeService) -> None:
    with BulwarkClient(
        API, tenant_id=TENANT, client_id="app-1", client_secret="s3cret", transport=httpx.MockTransport(fake.handle)
    ) as client:
        client.get_machine("host0.contoso.com")
    live = BulwarkClient(tenant_id=TENANT, client_id="app-1", client_secret="s3cret")

    assert [str(request.url) for request in fake.token_requests] == [f"{API}/{TENANT}/oauth2/v2.0/token"]
    assert isinstance(live.credential, ClientCredentials)
    assert live.credential.token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    live.close()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"token": "t", "tenant_id": TENANT, "client_id": "a", "client_secret": "s"},
        {"token": "t", "credential": StaticToken("u")},
        {"tenant_id": TENANT, "client_id": "a"},
    ],
    ids=["nothing", "token-and-secret", "token-and-credential", "incomplete-credentials"],
)
def test_ambiguous_or_missing_credentials_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        BulwarkClient(API, **settings)


def test_client_closes_only_the_http_client_it_created(fake: FakeService) -> None:
    with BulwarkClient(API, token="t", transport=httpx.MockTransport(fake.handle)) as owned:
        pass
    shared_http = httpx.Client(transport=httpx.MockTransport(fake.handle))
    with BulwarkClient(API, token="t", http_client=shared_http):
        pass

    assert owned._http.is_closed
    assert not shared_http.is_closed
    shared_http.close()


def test_secrets_stay_out_of_reprs() -> None:
    client = BulwarkClient(API, tenant_id=TENANT, client_id="app-1", client_secret="s3cret")
    static = BulwarkClient(API, token="very-secret-token")

    assert "s3cret" not in repr(client)
    assert "very-secret-token" not in repr(static)
    client.close()
    static.close()


# --- the async client used natively ----------------------------------------------------------------


async def test_async_client_end_to_end(fake: FakeService, clock: FakeClock) -> None:
    async with AsyncBulwarkClient(
        API,
        tenant_id=TENANT,
        client_id="app-1",
        client_secret="s3cret",
        authority=AUTHORITY,
        transport=httpx.MockTransport(fake.handle),
        sleep=clock.async_sleep,
        clock=clock,
    ) as client:
        names = [m.computer_dns_name async for m in client.list_machines()]
        action = await client.offboard(MACHINE_ID, "retire")
        fake.upcoming_statuses[action.id] = ["InProgress", "Succeeded"]
        finished = await client.wait(action, poll_interval=1)

    assert len(names) == 5
    assert finished.status is ActionStatus.SUCCEEDED
    assert len(fake.token_requests) == 1
