"""``/metrics`` (Prometheus) and the access log: what an operator sees of each request, and who may see it."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.logs import JsonFormatter
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import SCOPE, TEST_SECRET, auth_headers, register_app, token_endpoint

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)


def samples(client: TestClient, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers={"Authorization": "", **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def app(settings: Settings, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory):
    seed(uow_factory, [make_machine(1), make_machine(2, os_platform="macOS", agent_version="101.1.1")])
    limited = settings.model_copy(update={"rate_limit_overrides": {"getMachine": "2/minute"}, "sweep_interval_seconds": 3600})
    return create_app(limited, clock=clock)


@pytest.fixture
def client(app, uow_factory: SqlUnitOfWorkFactory):
    with TestClient(app, client=LOOPBACK) as test_client:
        test_client.headers.update(auth_headers(test_client, uow_factory))
        yield test_client


def test_requests_are_counted_by_operation_and_status_with_latency(client: TestClient) -> None:
    machine = f"{1:040x}"
    for _ in range(3):
        assert client.get("/api/machines").status_code == 200
    assert client.get(f"/api/machines/{machine}").status_code == 200
    assert client.get("/api/machines/nobody.example").status_code == 404
    assert client.get("/api/no-such-route").status_code == 404
    found = samples(client)
    assert value(found, "bulwark_http_requests_total", operation="listMachines", status="200") == 3
    assert value(found, "bulwark_http_requests_total", operation="getMachine", status="200") == 1
    assert value(found, "bulwark_http_requests_total", operation="getMachine", status="404") == 1
    # An unknown path is counted under one label: callers cannot create series by inventing paths.
    assert value(found, "bulwark_http_requests_total", operation="unmatched", status="404") == 1
    assert value(found, "bulwark_http_request_duration_seconds_count", operation="listMachines") == 3
    assert value(found, "bulwark_http_request_duration_seconds_bucket", operation="listMachines", le="+Inf") == 3
    assert value(found, "bulwark_http_request_duration_seconds_sum", operation="listMachines") > 0
    # The token the fixture got is counted too.
    assert value(found, "bulwark_tokens_issued_total", grant_type="client_credentials") == 1


def test_actions_created_and_finished_rate_limits_and_token_failures(
    client: TestClient, uow_factory: SqlUnitOfWorkFactory
) -> None:
    created = client.post(f"/api/machines/{1:040x}/offboard", json={"Comment": "retire"}).json()
    client.post(f"/api/machineactions/{created['id']}/cancel", json={"Comment": "wrong one"})
    client.post(f"/api/machines/{1:040x}/offboard", json={"Comment": "retire again"})
    for _ in range(3):
        client.get(f"/api/machines/{1:040x}")
    wrong_secret = {
        "grant_type": "client_credentials",
        "client_id": register_app(uow_factory),
        "client_secret": "x",
        "scope": SCOPE,
    }
    assert client.post(token_endpoint(), data=wrong_secret).json()["error"] == "invalid_client"
    client.post(token_endpoint(), data={"grant_type": "made-up-grant-123"})
    found = samples(client)
    assert value(found, "bulwark_machine_actions_created_total", type="Offboard") == 2
    assert value(found, "bulwark_machine_actions_finished_total", type="Offboard", status="Cancelled") == 1
    assert value(found, "bulwark_rate_limit_refusals_total", operation="getMachine") == 1
    assert value(found, "bulwark_http_requests_total", operation="getMachine", status="429") == 1
    assert value(found, "bulwark_token_failures_total", grant_type="client_credentials", error="invalid_client") == 1
    # A grant type nobody knows is counted as "other", not as a new label value.
    assert value(found, "bulwark_token_failures_total", grant_type="other", error="unsupported_grant_type") == 1


def test_sweeper_runs_and_timeouts_are_counted(settings: Settings, clock: FrozenClock, uow_factory: SqlUnitOfWorkFactory) -> None:
    seed(uow_factory, [make_machine(3)])
    often = settings.model_copy(update={"sweep_interval_seconds": 0.1})
    with TestClient(create_app(often, clock=clock), client=LOOPBACK) as client:
        client.headers.update(auth_headers(client, uow_factory))
        client.post(f"/api/machines/{3:040x}/offboard", json={"Comment": "nobody picks this up"})
        clock.advance(4 * 24 * 3600)  # past the three-day pickup timeout
        deadline = time.monotonic() + 10
        while True:
            found = samples(client)
            if (
                value(found, "bulwark_machine_actions_finished_total", type="Offboard", status="TimeOut")
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.1)
    assert value(found, "bulwark_machine_actions_finished_total", type="Offboard", status="TimeOut") == 1
    assert value(found, "bulwark_sweeper_runs_total", outcome="ok") >= 2
    assert value(found, "bulwark_sweeper_runs_total", outcome="failed") == 0


def test_metrics_are_refused_to_other_hosts(app) -> None:
    with TestClient(app, client=REMOTE) as remote:
        response = remote.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"
    assert "bulwark_" not in response.text


def test_with_a_token_every_reader_needs_it(settings: Settings) -> None:
    guarded = Settings(**{**settings.model_dump(), "metrics_token": "s3cret-metrics-token-0123456789"})
    with TestClient(create_app(guarded), client=LOOPBACK) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert (
            "bulwark_http_requests_total"
            in client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token-0123456789"}).text
        )


def test_metrics_can_be_turned_off(settings: Settings) -> None:
    off = settings.model_copy(update={"metrics_enabled": False})
    with TestClient(create_app(off), client=LOOPBACK) as client:
        assert client.get("/metrics").status_code == 404


def test_one_access_log_line_per_request_with_operation_status_caller_and_request_id(
    client: TestClient, uow_factory: SqlUnitOfWorkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client_id = register_app(uow_factory, ["Machine.Read.All"], name="Log reader")
    token = client.post(
        token_endpoint(),
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": TEST_SECRET, "scope": SCOPE},
    ).json()["access_token"]
    with caplog.at_level(logging.INFO, logger="bulwark"):
        response = client.get(f"/API/Machines/{1:040x}/", headers={"Authorization": f"Bearer {token}"})
        client.get("/api/machines", headers={"Authorization": "Bearer not-a-token"})
    lines = [r for r in caplog.records if r.name == "bulwark.access"]
    assert len(lines) == 2
    ok, refused = lines
    assert (ok.operation, ok.status, ok.caller, ok.request_id) == (
        "getMachine",
        200,
        "application:Log reader",
        response.headers["request-id"],
    )
    assert ok.path == f"/API/Machines/{1:040x}/"  # as the client sent it
    assert ok.duration_ms > 0
    assert (refused.operation, refused.status, refused.caller) == ("listMachines", 401, "-")
    assert "not-a-token" not in refused.getMessage()
    text = ok.getMessage()
    assert (
        "getMachine" in text and " 200 " in text and "application:Log reader" in text and response.headers["request-id"] in text
    )
    # With BULWARK_LOG_JSON the same line is one JSON object with the fields by name.
    parsed = json.loads(JsonFormatter().format(ok))
    assert {k: parsed[k] for k in ("operation", "status", "caller", "request_id", "method")} == {
        "operation": "getMachine",
        "status": 200,
        "caller": "application:Log reader",
        "request_id": response.headers["request-id"],
        "method": "GET",
    }


def test_offboard_requests_and_refusals_are_logged_at_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bulwark.actions"):
        created = client.post(f"/api/machines/{1:040x}/offboard", json={"Comment": "retire"}).json()
        client.post(f"/api/machines/{2:040x}/offboard", json={"Comment": "mac"})
        client.post(f"/api/machineactions/{created['id']}/cancel", json={"Comment": "oops"})
    messages = [r.getMessage() for r in caplog.records if r.name == "bulwark.actions" and r.levelno == logging.INFO]
    assert any(created["id"] in m and "offboard requested" in m for m in messages), messages
    assert any("refused" in m and "OsPlatformNotSupported" in m and f"{2:040x}" in m for m in messages), messages
    assert any("cancelled" in m and created["id"] in m for m in messages), messages
