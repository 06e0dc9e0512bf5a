"""The composition root: building writes nothing, and commands that only read neither create nor migrate a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bulwark.api.app import create_app
from bulwark.cli import app as cli
from bulwark.settings import Settings
from bulwark.store.db import upgrade_database
from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory


def _signing_keys(uow_factory: UnitOfWorkFactory) -> list:
    with uow_factory(write=False) as uow:
        return uow.signing_keys.list()


def test_building_the_app_writes_nothing_and_starting_it_stores_the_signing_key(
    settings: Settings, uow_factory: UnitOfWorkFactory
) -> None:
    app = create_app(settings)
    assert _signing_keys(uow_factory) == []
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        keys = _signing_keys(uow_factory)
        assert [key.active for key in keys] == [True]


@pytest.fixture
def fresh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory and no database URL: where a new server's database would go."""
    data_dir = tmp_path / "data"
    monkeypatch.delenv("BULWARK_DATABASE_URL", raising=False)
    monkeypatch.setenv("BULWARK_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "300")
    return data_dir


@pytest.mark.parametrize(
    "command",
    [
        ["tenants", "list"],
        ["apps", "list"],
        ["users", "list"],
        ["roles", "list"],
        ["groups", "list"],
        ["keys", "list"],
        ["audit", "list"],
        ["sweep"],
        ["sensor", "package", "offboarding"],
        ["tenants", "create", "Fabrikam"],
        ["apps", "create", "Playbook", "--role", "Machine.Read.All"],
        ["users", "create", "pat@contoso.com"],
        ["roles", "create", "Responder", "--capability", "ViewData"],
        ["groups", "create", "Responders"],
        ["keys", "rotate"],
        ["token", "--app", "Playbook"],
    ],
)
def test_commands_that_do_not_migrate_refuse_a_missing_database_and_create_none(fresh_env: Path, command: list[str]) -> None:
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1, result.output
    assert "no Bulwark database" in result.output and "bulwark db upgrade" in result.output
    assert not (fresh_env / "bulwark.db").exists()


def test_administration_works_once_the_database_is_made(fresh_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(cli, ["tenants", "create", "Fabrikam", "--id", "11111111-2222-3333-4444-555555555555"])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(cli, ["tenants", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "Fabrikam" in listed.output


def test_data_dir_and_database_url_options_name_the_database(fresh_env: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "--data-dir", str(elsewhere)]).exit_code == 0
    created = runner.invoke(cli, ["tenants", "create", "Fabrikam", "--data-dir", str(elsewhere)])
    assert created.exit_code == 0, created.output
    by_url = runner.invoke(cli, ["tenants", "list", "--json", "--database-url", f"sqlite:///{elsewhere / 'bulwark.db'}"])
    assert by_url.exit_code == 0 and "Fabrikam" in by_url.output
    # The default data directory was neither used nor created.
    refused = runner.invoke(cli, ["tenants", "list"])
    assert refused.exit_code == 1 and str(fresh_env / "bulwark.db") in refused.output
    assert not (fresh_env / "bulwark.db").exists()


def test_read_only_commands_refuse_an_outdated_schema_and_leave_it(fresh_env: Path) -> None:
    fresh_env.mkdir(parents=True)
    url = f"sqlite:///{fresh_env / 'bulwark.db'}"
    upgrade_database(url, "0002")
    result = CliRunner().invoke(cli, ["apps", "list"])
    assert result.exit_code == 1, result.output
    assert "schema revision 0002" in result.output and "bulwark db upgrade" in result.output
    # Still at 0002: the identity tables the newer revision adds are not there.
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    assert "applications" not in inspect(engine).get_table_names()
    engine.dispose()
