"""What an operator and a published client see of a real ``bulwark serve --workers 2`` over HTTP.

Routes in any case and with a trailing slash, ``$metadata``, ``/docs`` offline, ``/readyz``,
``/metrics`` added up across worker processes, and exactly one JSON access-log line per request.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulwark.store.uow import SqlUnitOfWorkFactory
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import app_token, bearer, register_app
from tests.support import server_process

pytestmark = pytest.mark.slow
REQUESTS = 40


def _listed(metrics_text: str, operation: str, status: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "bulwark_http_requests_total" and sample.labels == {"operation": operation, "status": status}:
                return sample.value
    return 0.0


def test_two_workers_over_http(database_url: str, uow_factory: SqlUnitOfWorkFactory, redis_url: str, tmp_path: Path) -> None:
    seed(uow_factory, [make_machine(0x77, computer_dns_name="Reception-PC.contoso.com")])
    machine = f"{0x77:040x}"
    stale = tmp_path / "metrics" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 64)  # left by an earlier run: must not be added in
    env = {
        "BULWARK_DATABASE_URL": database_url,
        "BULWARK_DATA_DIR": str(tmp_path),
        "BULWARK_DEFAULT_TENANT_ID": TENANT,
        "BULWARK_REDIS_URL": redis_url,
        "BULWARK_RATE_LIMIT_KEY_PREFIX": f"bulwark-test:{uuid.uuid4().hex}",
        "BULWARK_LOG_JSON": "true",
    }
    log = tmp_path / "server.log"
    with server_process("--workers", "2", env=env, log=log, timeout=120) as base:
        assert not stale.exists()
        with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
            headers = bearer(app_token(client, register_app(uow_factory)))
            request_ids = []
            for i in range(REQUESTS):
                # A published client's spelling, and a trailing slash with a query: served directly, never redirected.
                path = f"/api/machines/{machine}/machineActions" if i % 2 else "/api/machineactions/?$filter=status eq 'Pending'"
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (path, response.status_code, response.text)
                request_ids.append(response.headers["request-id"])
            assert client.get("/API/Machines/reception-pc.CONTOSO.com/", headers=headers).json()["id"] == machine

            metadata = client.get("/api/$metadata")
            assert metadata.status_code == 200 and b'EntitySet Name="MachineActions"' in metadata.content

            page = client.get("/docs").text
            assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
            assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200

            assert client.get("/readyz").json() == {"status": "ready"}

            # Whichever worker answers the scrape, it reports every worker's requests.
            for _ in range(6):
                scraped = client.get("/metrics").text
                assert _listed(scraped, "listMachineActionsOfMachine", "200") == REQUESTS // 2
                assert _listed(scraped, "listMachineActions", "200") == REQUESTS // 2
        workers = {p.name.split("_")[-1] for p in (tmp_path / "metrics").glob("counter_*.db")}
        assert len(workers) == 2, "both workers served requests"

    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "bulwark.access"]
    for request_id in request_ids:
        lines = [r for r in access if r["request_id"] == request_id]
        assert len(lines) == 1, lines
        assert lines[0]["status"] == 200 and lines[0]["caller"].startswith("application:") and lines[0]["duration_ms"] > 0
    # uvicorn's own access log is off: no second line per request.
    assert not [line for line in log.read_text().splitlines() if '"GET /api/' in line and "HTTP/1.1" in line]
