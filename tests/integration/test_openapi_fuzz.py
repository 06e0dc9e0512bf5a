"""A bounded schemathesis run against the app with a real token: no 5xx, no undocumented status.

Every operation of the OpenAPI document is called with generated input (OData options included,
since list routes declare them), as an application holding every permission. Bounded so that the
run takes well under two minutes; ``BULWARK_FUZZ_EXAMPLES`` raises it for a deeper local run.
"""

from __future__ import annotations

import os

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from bulwark.api.app import create_app
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory
from tests.conftest import make_machine, seed
from tests.identity_support import ALL_APP_ROLES, app_token, register_app

EXAMPLES = int(os.environ.get("BULWARK_FUZZ_EXAMPLES", "12"))
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance]


def test_every_operation_answers_only_documented_statuses_and_never_5xx(
    settings: Settings, uow_factory: UnitOfWorkFactory, clock: FrozenClock
) -> None:
    seed(uow_factory, [make_machine(i) for i in range(1, 4)])
    app = create_app(settings.model_copy(update={"rate_limit_enabled": False}), clock=clock)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {app_token(client, register_app(uow_factory, ALL_APP_ROLES))}"}
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        failures: dict[str, str] = {}
        for operation in operations:

            @given(case=operation.as_strategy())
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
            def run(case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                run()
            except Exception as failure:  # one operation's failure must not hide the others'
                failures[operation.label] = str(failure)[:2000]
    assert failures == {}


def test_the_document_declares_odata_options_security_and_real_statuses(settings: Settings) -> None:
    document = TestClient(create_app(settings)).get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["sensorCredential"]["scheme"] == "bearer"
    paths = document["paths"]
    for path in ("/api/machines", "/api/machineactions", "/api/machines/{id}/machineactions"):
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert {"$filter", "$top", "$skip", "$orderby", "$select", "$count"} <= names, path
    offboard = paths["/api/machines/{id}/offboard"]["post"]
    assert {"400", "401", "403", "404", "413", "415", "429"} <= set(offboard["responses"])
    assert offboard["security"]
    assert paths["/sensor/v1/checkin"]["post"]["security"] == [{"sensorCredential": []}]
    assert {"400", "401", "413"} <= set(paths["/sensor/v1/enrol"]["post"]["responses"])
    assert {"400", "401", "413"} <= set(paths["/sensor/v1/checkin"]["post"]["responses"])
    token = next(iter(p for p in paths if p.endswith("/oauth2/v2.0/token")))
    assert {"400", "401", "413"} <= set(paths[token]["post"]["responses"])
    assert all("422" not in op["responses"] for ops in paths.values() for op in ops.values())
    envelope = offboard["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
    assert envelope == "#/components/schemas/ErrorEnvelope"
