"""Commands for the operator on the server host: ``serve``, ``db upgrade | downgrade`` and ``sweep``."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from bulwark.cli.database import command_settings, with_database_options

if TYPE_CHECKING:
    from bulwark.bootstrap import Store
    from bulwark.sensor.demo import DemoSensors
    from bulwark.settings import Settings

db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
console = Console()


# At shutdown, requests still running get this long to finish (sensors' long polls end at once).
GRACEFUL_SHUTDOWN_SECONDS = 5
WORKER_HEALTHCHECK_SECONDS = 60


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with command-line values on top."""
    from bulwark.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _export(settings: Settings) -> None:
    """Hand the effective settings to worker processes, which read them from the environment."""
    os.environ["BULWARK_DATA_DIR"] = str(settings.data_dir)
    os.environ["BULWARK_HOST"] = settings.host
    os.environ["BULWARK_PORT"] = str(settings.port)
    os.environ["BULWARK_WORKERS"] = str(settings.workers)
    os.environ["BULWARK_TLS"] = "true" if settings.tls else "false"
    if settings.database_url:
        os.environ["BULWARK_DATABASE_URL"] = settings.database_url
    os.environ["BULWARK_CONTROL_API"] = "true" if settings.control_api_enabled else "false"


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the SQLite database and keys live.")] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Seed a demo fleet if the database is empty, and serve the control API (unless BULWARK_CONTROL_API=false).",
        ),
    ] = False,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls", help="Serve HTTPS with a certificate from a local CA.")] = None,
) -> None:
    """Migrate the database and serve the API."""
    import gc

    import uvicorn

    from bulwark.bootstrap import open_store, settle_issuer
    from bulwark.logs import configure_logging
    from bulwark.service.demo import seed_demo_fleet
    from bulwark.service.identity import ensure_signing_key
    from bulwark.store.db import refresh_statistics

    if demo:
        from bulwark.sensor.demo import DEMO_POLL_SECONDS

        # The simulated sensors' long polls wait on the notifier for minutes, not seconds.
        os.environ.setdefault("BULWARK_SENSOR_POLL_MAX_SECONDS", str(DEMO_POLL_SECONDS))
    settings = _settings(host=host, port=port, workers=workers, data_dir=data_dir, tls=tls)
    if demo and settings.control_api is None:
        # A demo server is a test server: it serves the control API unless told not to.
        settings = settings.model_copy(update={"control_api": True})
    demo_sensors: DemoSensors | None = None
    configure_logging(settings.log_level, settings.log_json)
    problem = settings.multi_process_problem()
    if problem:
        console.print(f"[bold red]Refusing to start:[/] {problem}", soft_wrap=True)
        raise typer.Exit(code=2)
    with open_store(settings, migrate=True) as store:
        base = settings.issuer_base_url()
        ssl_options: dict[str, Any] = {}
        ca_hint = ""
        if settings.tls:
            ssl_options, ca_hint = _prepare_tls(settings)
        if settings.signing_key_file is None:
            ensure_signing_key(store.uow(), store.clock)
        issuer_base = settle_issuer(settings, store.uow)
        if issuer_base != base:
            console.print(
                f"Token issuer: {issuer_base}/<tenant>/v2.0, as recorded with the data (set BULWARK_PUBLIC_BASE_URL "
                "to change it; tokens issued for the old issuer then stop working).",
                soft_wrap=True,
            )
        if demo:
            fleet = seed_demo_fleet(store.uow(), store.clock, settings.default_tenant_id, count=settings.demo_machine_count)
            refresh_statistics(store.engine, force=fleet.created)
            verb = "Seeded" if fleet.created else "Serving the existing"
            console.print(f"[bold green]{verb} demo fleet:[/] {fleet.machine_count} machines in tenant {fleet.tenant_id}")
            _print_demo_credentials(store, base, fleet.example_machine_id, ca_hint)
            if settings.demo_sensors:
                demo_sensors = _start_demo_sensors(store, base, ca_file=ca_hint.removeprefix("--cacert ").strip() or None)
                started = demo_sensors.count if demo_sensors else 0
                console.print(f"Simulated sensors for {started} active demo machines carry out offboards.")
    if not settings.auth_enabled:
        console.print(
            "[bold red]WARNING: AUTHENTICATION IS DISABLED (BULWARK_AUTH_ENABLED=false).[/] Every caller acts as "
            f"{settings.default_requestor} with every permission. Never expose this server.",
            soft_wrap=True,
        )
    if settings.control_api_enabled:
        console.print(
            "[bold red]WARNING: THE CONTROL API IS ON (/_bulwark).[/] Any application holding the role "
            "Bulwark.Control can reset the whole fleet, make devices fail, inject faults and move the clock. "
            "Test servers only: never expose this server (BULWARK_CONTROL_API=false turns it off).",
            soft_wrap=True,
        )
    console.print(
        f"Bulwark listening on {base}  (interactive API docs: {base}/docs, OpenAPI: {base}/openapi.json)", soft_wrap=True
    )
    hint = "  (sign in as one of the demo users above)" if demo else ""
    console.print(f"Console: {base}/console/{hint}", soft_wrap=True)
    _export(settings)
    if settings.workers > 1:
        # Each worker writes its metrics to files here; a scrape of any worker adds them all up.
        from bulwark.metrics import prepare_multiprocess_directory

        prepare_multiprocess_directory(settings.data_dir / "metrics")
        # A starting worker imports the whole command before it answers the supervisor's health
        # check; on a busy host that takes longer than uvicorn's 5 s, and the supervisor would kill
        # and restart it for ever. Give it time (uvicorn >= 0.33 has the setting).
        patience: dict[str, Any] = {}
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            patience["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_SECONDS
        uvicorn.run(
            "bulwark.api.app:create_app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            access_log=False,  # Bulwark writes its own access log: one line per request
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            **patience,
            **ssl_options,
        )
        if demo_sensors is not None:
            demo_sensors.stop()
    else:
        from bulwark.api.app import create_app, freeze_startup_heap

        app = create_app(settings)
        freeze_startup_heap()
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            **ssl_options,
        )
        server = _QuickStopServer(config, demo_sensors)
        server.run()
        if not server.started:
            # uvicorn logged why (the app's start-up failed, the port is taken, ...).
            raise typer.Exit(code=3)
    if demo_sensors is not None:
        demo_sensors.join(timeout=1.0)
    # Served and stopped: all that is left is the interpreter's exit, whose last collections walk
    # every object the app made (about a second on a busy host) and find nothing that needs them.
    gc.freeze()


def _quick_stop_server_class() -> type:
    import contextlib
    from collections.abc import Iterator

    import uvicorn

    class QuickStopServer(uvicorn.Server):
        """uvicorn's server, stopping the demo's sensors the moment it is asked to stop, and ending
        the process normally (exit code 0) once it has stopped as asked.

        The app itself ends its long polls at the signal (``api.background``), telling sensors to
        poll again a second later; by then the demo's sensors, told to stop here, are gone.
        """

        def __init__(self, config: uvicorn.Config, demo_sensors: DemoSensors | None) -> None:
            super().__init__(config)
            self._demo_sensors = demo_sensors

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._demo_sensors is not None:
                self._demo_sensors.stop()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # uvicorn raises the signal again once it has stopped, which would end the process
                # as killed by it (or with a KeyboardInterrupt). A stop that was asked for and
                # went through is a normal exit.
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    return QuickStopServer


def _QuickStopServer(config: Any, demo_sensors: DemoSensors | None) -> Any:
    return _quick_stop_server_class()(config, demo_sensors)


def _prepare_tls(settings: Settings) -> tuple[dict[str, Any], str]:
    """Create or reuse the local CA and server certificate; say how to trust the CA."""
    from urllib.parse import urlsplit

    from bulwark.auth.tls import ensure_local_tls

    names = [settings.host] if settings.host not in ("0.0.0.0", "::", "") else []
    if settings.public_base_url:
        names.append(urlsplit(settings.public_base_url).hostname or "")
    files = ensure_local_tls(settings.data_dir / "tls", [n for n in names if n])
    console.print(f"[bold]HTTPS[/] with a certificate from Bulwark's local CA: {files.ca_cert.resolve()}", soft_wrap=True)
    console.print(
        "  Trust it for one command:  curl --cacert <ca.pem> ...,  SSL_CERT_FILE=<ca.pem> / REQUESTS_CA_BUNDLE=<ca.pem> "
        "for Python, NODE_EXTRA_CA_CERTS=<ca.pem> for Node.\n"
        "  Trust it system-wide (Debian/Ubuntu):  sudo cp <ca.pem> /usr/local/share/ca-certificates/bulwark.crt && "
        "sudo update-ca-certificates;  macOS:  sudo security add-trusted-cert -d -r trustRoot "
        "-k /Library/Keychains/System.keychain <ca.pem>",
        soft_wrap=True,
    )
    return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}, f"--cacert {files.ca_cert.resolve()} "


DEMO_CREDENTIALS_FILE = "demo-credentials.json"


def _start_demo_sensors(store: Store, base: str, *, ca_file: str | None) -> DemoSensors | None:
    """Issue an onboarding package and start a simulated sensor for each active demo machine."""
    from bulwark.bootstrap import reset_epoch_reader
    from bulwark.sensor.demo import start_demo_sensors
    from bulwark.service.demo import demo_sensor_names
    from bulwark.service.sensors import issue_onboarding_package

    tenant = store.settings.default_tenant_id
    names = demo_sensor_names(store.uow(write=False), tenant)
    if not names:
        return None
    # The simulated fleet keeps no state across restarts: as the operator starting the demo, this
    # server lets its package replace the demo machines' earlier (simulated) sensors.
    package = issue_onboarding_package(tenant, base, None, store.uow(), store.clock, replaces_sensors=True)
    settings = store.settings
    # On a test server the sensors follow the control API's behaviours and come back after a reset,
    # which they learn of from the reset epoch in the database.
    reset_epoch = reset_epoch_reader(settings) if settings.control_api_enabled else None
    return start_demo_sensors(
        package, names, base, ca_file=ca_file, action_seconds=settings.demo_action_seconds, reset_epoch=reset_epoch
    )


def _print_demo_credentials(store: Store, base: str, machine_id: str, ca_hint: str) -> None:
    """Create the demo callers, write them to demo-credentials.json and show how to use them."""
    import json

    from bulwark.auth.tokens import DEFENDER_AUDIENCE
    from bulwark.service.identity import seed_demo_identities

    settings = store.settings
    path = settings.data_dir / DEMO_CREDENTIALS_FILE
    try:
        known = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        known = None
    creds = seed_demo_identities(store.uow, store.clock, settings.default_tenant_id, known)
    authority = f"{base}/{settings.default_tenant_id}"
    document = {
        "tenant_id": settings.default_tenant_id,
        "authority": authority,
        "token_endpoint": f"{authority}/oauth2/v2.0/token",
        "scope": f"{DEFENDER_AUDIENCE}/.default",
        "api_base_url": base,
        "ca_certificate": ca_hint.removeprefix("--cacert ").strip() or None,
        "applications": creds["applications"],
        "users": creds["users"],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.chmod(0o600)
    console.print(f"Demo credentials (also in {path.resolve()}):", soft_wrap=True)
    for app in creds["applications"]:
        console.print(
            f"  application {app['name']!r}: client_id={app['client_id']} client_secret={app['client_secret']}", soft_wrap=True
        )
    for user in creds["users"]:
        console.print(f"  user {user['username']} / {user['password']}  ({user['access']})", soft_wrap=True)
    full = creds["applications"][0]
    console.print("Get a token and offboard a demo machine:")
    console.print(
        f"  TOKEN=$(curl -s {ca_hint}{document['token_endpoint']} -d grant_type=client_credentials "
        f"-d client_id={full['client_id']} -d client_secret={full['client_secret']} "
        f"-d scope={document['scope']} | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        soft_wrap=True,
    )
    console.print(
        f'  curl -s {ca_hint}-X POST {base}/api/machines/{machine_id}/offboard -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' -d '{\"Comment\": \"Offboard machine by automation\"}'",
        soft_wrap=True,
    )
    console.print(
        f'Read the action back:  curl -s {ca_hint}-H "Authorization: Bearer $TOKEN" {base}/api/machineactions/<id>',
        soft_wrap=True,
    )


@db_app.command("upgrade")
@with_database_options
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from bulwark.bootstrap import migrate_database

    migrate_database(command_settings(), revision)
    console.print(f"Database at revision {revision}.")


@db_app.command("downgrade")
@with_database_options
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    from bulwark.store.db import downgrade_database

    downgrade_database(command_settings().resolved_database_url(), revision)
    console.print(f"Database at revision {revision}.")


@with_database_options
def sweep() -> None:
    """Time out overdue actions and turn long-offboarded machines Inactive, once."""
    from bulwark.bootstrap import DatabaseNotReady, open_store, sweep_policy
    from bulwark.service.actions import sweep as sweep_once

    try:
        with open_store(command_settings(), migrate=False) as store:
            result = sweep_once(sweep_policy(store.settings), store.uow(), store.clock)
    except DatabaseNotReady as error:
        Console(stderr=True).print(f"[bold red]Error:[/] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    typer.echo(
        f"{result.pending_timed_out} pending and {result.in_progress_timed_out} in-progress actions timed out; "
        f"{result.machines_inactive} machines turned Inactive."
    )
