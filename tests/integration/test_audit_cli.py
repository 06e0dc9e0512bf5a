"""``bulwark --version`` and ``bulwark audit list`` filters, ISO 8601 timestamps and JSON-lines export."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bulwark import __version__
from bulwark.api.app import create_app
from bulwark.cli import app as cli
from bulwark.cli.admin import parse_since
from bulwark.clock import FrozenClock
from bulwark.settings import Settings
from tests.conftest import TENANT, make_machine, seed
from tests.identity_support import auth_headers

WIN = make_machine(1)
OTHER = make_machine(2)
MAC = make_machine(3, os_platform="macOS", agent_version="101.1.1")
ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"


@pytest.fixture
def cli_run(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("BULWARK_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("BULWARK_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("BULWARK_DEFAULT_TENANT_ID", TENANT)
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()

    def invoke(*args: str, exit_code: int = 0) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == exit_code, result.output
        return result.output

    return invoke


@pytest.fixture
def events(settings: Settings, uow_factory, clock: FrozenClock) -> dict[str, str]:
    """Four audited requests by two callers over two hours: 09:30 and 10:30 by SOAR, 10:30 refused, 11:30 by Helpdesk."""
    seed(uow_factory, [WIN, OTHER, MAC])
    with TestClient(create_app(settings, clock=clock)) as client:
        soar = auth_headers(client, uow_factory, name="SOAR playbook")
        first = client.post(f"/api/machines/{WIN.id}/offboard", json={"Comment": "leaver"}, headers=soar).json()
        clock.advance(3600)
        client.post(f"/api/machineactions/{first['id']}/cancel", json={"Comment": "wrong one"}, headers=soar)
        assert client.post(f"/api/machines/{MAC.id}/offboard", json={"Comment": "mac"}, headers=soar).status_code == 400
        clock.advance(3600)
        # Tokens last an hour: Helpdesk gets its own when it calls, as any client would.
        helpdesk = auth_headers(client, uow_factory, name="Helpdesk")
        client.post(f"/api/machines/{OTHER.id}/offboard", json={"Comment": "helpdesk"}, headers=helpdesk)
    return {"first_action": first["id"]}


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_version(cli_run) -> None:
    assert cli_run("--version").strip() == f"bulwark {__version__}"


def test_jsonl_export_has_one_event_a_line_with_iso_8601_times(cli_run, events) -> None:
    rows = jsonl(cli_run("audit", "list", "--jsonl"))
    assert [r["comment"] for r in rows] == ["helpdesk", "mac", "wrong one", "leaver"]  # newest first
    assert rows[-1]["occurred_at"] == "2026-03-01T09:30:00.123456Z"
    import re

    assert all(re.match(ISO_UTC, r["occurred_at"]) for r in rows)
    # The table and --json show the same ISO 8601 form.
    assert "2026-03-01T09:30:00.123456Z" in cli_run("audit", "list")
    assert json.loads(cli_run("audit", "list", "--json"))[-1]["occurred_at"] == "2026-03-01T09:30:00.123456Z"


def test_filters_combine(cli_run, events) -> None:
    by_caller = jsonl(cli_run("audit", "list", "--jsonl", "--caller", "soar PLAYBOOK"))
    assert [r["comment"] for r in by_caller] == ["mac", "wrong one", "leaver"]
    offboards = jsonl(cli_run("audit", "list", "--jsonl", "--action", "machine_action.offboard"))
    assert {r["action"] for r in offboards} == {"machine_action.offboard.requested"} and len(offboards) == 3
    cancels = jsonl(cli_run("audit", "list", "--jsonl", "--action", "machine_action.cancel.requested"))
    assert [r["machine_action_id"] for r in cancels] == [events["first_action"]]
    # A prefix matches whole dotted segments only, and LIKE wildcards are taken literally.
    assert jsonl(cli_run("audit", "list", "--jsonl", "--action", "machine_action.off")) == []
    assert jsonl(cli_run("audit", "list", "--jsonl", "--action", "machine%")) == []
    on_machine = jsonl(cli_run("audit", "list", "--jsonl", "--machine", WIN.id.upper()))
    assert [r["comment"] for r in on_machine] == ["wrong one", "leaver"]
    since = jsonl(cli_run("audit", "list", "--jsonl", "--since", "2026-03-01T10:00:00Z"))
    assert [r["comment"] for r in since] == ["helpdesk", "mac", "wrong one"]
    # An offset is honoured: 11:00+01:00 is 10:00 UTC.
    assert jsonl(cli_run("audit", "list", "--jsonl", "--since", "2026-03-01T11:00:00+01:00")) == since
    refused = jsonl(
        cli_run(
            "audit",
            "list",
            "--jsonl",
            "--since",
            "2026-03-01T10:00",
            "--caller",
            "SOAR playbook",
            "--action",
            "machine_action.offboard",
        )
    )
    assert [(r["outcome_status"], r["outcome_code"]) for r in refused] == [(400, "OsPlatformNotSupported")]
    assert len(jsonl(cli_run("audit", "list", "--jsonl", "--limit", "2"))) == 2
    assert len(jsonl(cli_run("audit", "list", "--jsonl", "--limit", "0"))) == 4


def test_bad_since_is_a_usage_error(cli_run, events) -> None:
    output = cli_run("audit", "list", "--since", "last tuesday", exit_code=2)
    assert "ISO 8601" in output


def test_since_accepts_an_age_or_a_date() -> None:
    now = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 3, 8, 10, 30, tzinfo=UTC)
    assert parse_since("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
