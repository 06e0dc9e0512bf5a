"""The ``bulwark`` command: serve the API, manage the database, and more."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from bulwark.sensor.cli import sensor_app, sweep_command
from bulwark.settings import Settings

app = typer.Typer(help="Bulwark: a self-hosted Defender for Endpoint machine-action API.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sensor_app, name="sensor")
app.command("sweep")(sweep_command)
console = Console()
# Sensors hold long polls open; at shutdown they are cut after this and simply reconnect.
GRACEFUL_SHUTDOWN_SECONDS = 5


def _settings(**overrides: object) -> Settings:
    """Settings from the environment, with command-line values on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _export(settings: Settings) -> None:
    """Hand the effective settings to worker processes, which read them from the environment."""
    os.environ["BULWARK_DATA_DIR"] = str(settings.data_dir)
    os.environ["BULWARK_HOST"] = settings.host
    os.environ["BULWARK_PORT"] = str(settings.port)
    os.environ["BULWARK_WORKERS"] = str(settings.workers)
    if settings.database_url:
        os.environ["BULWARK_DATABASE_URL"] = settings.database_url


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the SQLite database and keys live.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Seed a demo fleet if the database is empty.")] = False,
) -> None:
    """Migrate the database and serve the API."""
    import uvicorn

    from bulwark.clock import SystemClock
    from bulwark.logs import configure_logging
    from bulwark.service.demo import seed_demo_fleet
    from bulwark.service.uow import UnitOfWorkFactory
    from bulwark.store.db import create_db_engine, upgrade_database

    settings = _settings(host=host, port=port, workers=workers, data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade_database(url)
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    if demo:
        engine = create_db_engine(url, pool_size=1)
        fleet = seed_demo_fleet(UnitOfWorkFactory(engine)(), SystemClock(), settings.default_tenant_id)
        engine.dispose()
        verb = "Seeded" if fleet.created else "Serving the existing"
        console.print(f"[bold green]{verb} demo fleet:[/] {fleet.machine_count} machines in tenant {fleet.tenant_id}")
        console.print("Offboard a demo machine:")
        console.print(
            f"  curl -s -X POST {base}/api/machines/{fleet.example_machine_id}/offboard "
            "-H 'Content-Type: application/json' -d '{\"Comment\": \"Offboard machine by automation\"}'",
            soft_wrap=True,
        )
        console.print(f"Read the action back:  curl -s {base}/api/machineactions/<id from the answer>", soft_wrap=True)
        if settings.demo_sensors:
            from bulwark.sensor.demo import start_demo_sensors

            started = start_demo_sensors(settings, base)
            console.print(f"Simulated sensors for {started} active demo machines carry out offboards.")
    console.print(f"Bulwark listening on {base}  (OpenAPI: {base}/docs)", soft_wrap=True)
    _export(settings)
    if settings.workers > 1:
        uvicorn.run(
            "bulwark.api.app:create_app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    else:
        from bulwark.api.app import create_app

        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from bulwark.store.db import upgrade_database

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.resolved_database_url(), revision)
    console.print(f"Database at revision {revision}.")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    from bulwark.store.db import downgrade_database

    downgrade_database(_settings().resolved_database_url(), revision)
    console.print(f"Database at revision {revision}.")


if __name__ == "__main__":
    app()
