"""``bulwark sensor ...``: packages, the device sensor, offboarding packages and a simulated fleet."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bulwark.domain.sensors import InvalidPackage
from bulwark.sensor.agent import Outcome, Sensor, SensorError, SensorOptions, apply_offboarding_package, detect_profile
from bulwark.sensor.state import FileState

sensor_app = typer.Typer(help="The device sensor: onboarding, running, offboarding, simulated fleets.", no_args_is_help=True)
package_app = typer.Typer(
    help="Onboarding and offboarding packages (run on the server, with database access).", no_args_is_help=True
)
sensor_app.add_typer(package_app, name="package")
console = Console(stderr=True)

# Exit codes of `bulwark sensor run`, for service managers and scripts.
EXIT_OFFBOARDED = 0
EXIT_ERROR = 2
EXIT_STOPPED = 3

FAIL_OFFBOARD_HELP = (
    "Simulate a failing device: report every offboard Failed (E_FAIL) and keep running, to rehearse failure handling."
)


def _write(package: dict, out: Path | None) -> None:
    text = json.dumps(package, indent=2)
    if out is None:
        typer.echo(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.chmod(0o600)
    console.print(f"Wrote {out}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None


@package_app.command("onboarding")
def onboarding_package(
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
    server_url: Annotated[str | None, typer.Option(help="URL devices reach the server on.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the package here (default: stdout).")] = None,
    valid_days: Annotated[float | None, typer.Option(help="Days devices may enrol with it (default: the setting, 30).")] = None,
    replace_sensors: Annotated[
        bool,
        typer.Option(
            "--replace-sensors",
            help="Let devices enrol over a sensor that is still active without its proof (e.g. a simulated fleet "
            "that keeps no state). Anyone holding this package can then take over a machine's identity.",
        ),
    ] = False,
) -> None:
    """Issue an onboarding package: devices use it to enrol until it expires or is revoked."""
    from bulwark.clock import SystemClock
    from bulwark.service.sensors import issue_onboarding_package
    from bulwark.settings import Settings
    from bulwark.store.db import create_db_engine
    from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

    settings = Settings()
    url = server_url or settings.public_base_url or f"http://{settings.host}:{settings.port}"
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    try:
        package = issue_onboarding_package(
            tenant or settings.default_tenant_id,
            url,
            None,
            UnitOfWorkFactory(engine)(),
            SystemClock(),
            valid_for=timedelta(days=valid_days or settings.onboarding_package_valid_days),
            replaces_sensors=replace_sensors,
        )
    finally:
        engine.dispose()
    _write(package, out)


@package_app.command("revoke")
def revoke_package(
    package_id: Annotated[str, typer.Argument(help="The packageId written in the onboarding package.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
) -> None:
    """Revoke an onboarding package: no device can enrol with it any more (enrolled devices keep running)."""
    from bulwark.clock import SystemClock
    from bulwark.domain.errors import BulwarkError
    from bulwark.service.sensors import revoke_onboarding_package
    from bulwark.settings import Settings
    from bulwark.store.db import create_db_engine
    from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

    settings = Settings()
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    try:
        revoke_onboarding_package(tenant or settings.default_tenant_id, package_id, UnitOfWorkFactory(engine)(), SystemClock())
    except BulwarkError as error:
        console.print(f"[bold red]Error:[/] {error.message}")
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
    console.print(f"Revoked onboarding package {package_id}")


@package_app.command("offboarding")
def offboarding_package(
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the configured default tenant).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the package here (default: stdout).")] = None,
) -> None:
    """Issue an offboarding package (valid for BULWARK_OFFBOARDING_PACKAGE_VALID_DAYS, seven by default)."""
    from bulwark.clock import SystemClock
    from bulwark.service.sensors import issue_offboarding_package
    from bulwark.settings import Settings
    from bulwark.store.db import create_db_engine
    from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

    settings = Settings()
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    try:
        package = issue_offboarding_package(
            tenant or settings.default_tenant_id,
            timedelta(days=settings.offboarding_package_valid_days),
            None,
            UnitOfWorkFactory(engine)(),
            SystemClock(),
        )
    finally:
        engine.dispose()
    _write(package, out)


@sensor_app.command("run")
def run(
    state: Annotated[Path, typer.Option(help="The sensor's state file (its registry).")],
    onboarding_package: Annotated[Path | None, typer.Option(help="Onboard with this package first.")] = None,
    reonboard: Annotated[
        bool, typer.Option("--reonboard", help="Start a stopped (offboarded) sensor again and re-enrol.")
    ] = False,
    device_identity: Annotated[
        str | None, typer.Option(help="The device's identity (default: generated once, kept in the state).")
    ] = None,
    dns_name: Annotated[str | None, typer.Option(help="Report this DNS name instead of the host's.")] = None,
    os_platform: Annotated[str | None, typer.Option(help="Report this OS platform (e.g. Windows11).")] = None,
    os_version: Annotated[str | None, typer.Option(help="Report this OS version (e.g. 23H2).")] = None,
    os_build: Annotated[int | None, typer.Option(help="Report this OS build (e.g. 22631).")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Report these IP addresses (repeatable).")] = None,
    check_in_interval: Annotated[float, typer.Option(help="Seconds between check-ins.")] = 60.0,
    poll_wait: Annotated[float, typer.Option(help="Longest wait for an action per request, in seconds.")] = 25.0,
    action_delay: Annotated[float, typer.Option(help="Simulated seconds of work per action.")] = 0.0,
    fail_offboard: Annotated[bool, typer.Option("--fail-offboard", help=FAIL_OFFBOARD_HELP)] = False,
) -> None:
    """Run the sensor: enrol, check in, and carry out actions until the device is offboarded."""
    from bulwark.logs import configure_logging
    from bulwark.sensor.state import new_state

    configure_logging("INFO")
    store = FileState(state)
    if not store.exists():
        store.save(new_state(device_identity))
    elif device_identity and store.load()["deviceIdentity"] != device_identity:
        raise typer.BadParameter("the state file belongs to another device identity")
    profile = detect_profile()
    for name, value in (
        ("computer_dns_name", dns_name),
        ("os_platform", os_platform),
        ("version", os_version),
        ("os_build", os_build),
        ("ip_addresses", ip),
    ):
        if value is not None:
            setattr(profile, name, value)
    options = SensorOptions(
        check_in_interval=check_in_interval, poll_wait=poll_wait, action_delay=action_delay, fail_offboard=fail_offboard
    )
    sensor = Sensor(store, profile, options=options)
    try:
        if onboarding_package is not None:
            sensor.onboard(_read_json(onboarding_package))
        outcome = asyncio.run(sensor.run(reonboard=reonboard, watch_state=True))
    except (SensorError, InvalidPackage) as exc:
        console.print(f"[red]sensor error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    if outcome is Outcome.STOPPED:
        console.print("The sensor service is stopped (the device was offboarded). Run with --reonboard to onboard it again.")
        raise typer.Exit(EXIT_STOPPED)
    console.print(
        f"Sensor stopped: {outcome.value}. The onboarding information is kept in {state}."
        if outcome is Outcome.OFFBOARDED
        else f"Sensor stopped: {outcome.value}."
    )


@sensor_app.command("offboard")
def offboard(
    state: Annotated[Path, typer.Option(help="The sensor's state file.")],
    package: Annotated[Path, typer.Option(help="The offboarding package.")],
) -> None:
    """Apply an offboarding package: remove the onboarding information completely (refused when expired)."""
    store = FileState(state)
    if not store.exists():
        raise typer.BadParameter(f"no sensor state at {state}")
    try:
        apply_offboarding_package(store, _read_json(package))
    except InvalidPackage as exc:
        console.print(f"[red]offboarding package refused:[/] {exc.message}")
        raise typer.Exit(EXIT_ERROR) from None
    console.print("Onboarding information removed; the sensor is offboarded.")


@sensor_app.command("fleet")
def fleet(
    count: Annotated[int, typer.Option(help="How many simulated sensors.", min=1)],
    onboarding_package: Annotated[Path, typer.Option(help="The tenant's onboarding package.")],
    prefix: Annotated[str, typer.Option(help="Device names are PREFIX-NNNNN (and so are their identities).")] = "fleet",
    check_in_interval: Annotated[float, typer.Option(help="Seconds between check-ins.")] = 300.0,
    poll_wait: Annotated[float, typer.Option(help="Longest wait for an action per request, in seconds.")] = 25.0,
    action_delay: Annotated[float, typer.Option(help="Simulated seconds of work per action.")] = 0.0,
    fail_offboard: Annotated[bool, typer.Option("--fail-offboard", help=FAIL_OFFBOARD_HELP)] = False,
) -> None:
    """Run COUNT lightweight simulated sensors in this process until each is offboarded (Ctrl-C stops)."""
    from bulwark.logs import configure_logging
    from bulwark.sensor.fleet import run_fleet

    configure_logging("WARNING")
    options = SensorOptions(
        check_in_interval=check_in_interval, poll_wait=poll_wait, action_delay=action_delay, fail_offboard=fail_offboard
    )
    names = [f"{prefix}-{i:05d}" for i in range(count)]
    console.print(f"Running {count} simulated sensors ({names[0]} .. {names[-1]}).")
    try:
        report = asyncio.run(run_fleet(_read_json(onboarding_package), count, names=names, options=options))
    except KeyboardInterrupt:
        return
    console.print(f"Fleet finished: {dict(report.outcomes)}; {report.actions_received} actions received.")


def sweep_command() -> None:
    """Time out overdue actions and turn long-offboarded machines Inactive, once."""
    from bulwark.api.background import sweep_policy
    from bulwark.clock import SystemClock
    from bulwark.service.actions import sweep
    from bulwark.settings import Settings
    from bulwark.store.db import create_db_engine
    from bulwark.store.uow import SqlUnitOfWorkFactory as UnitOfWorkFactory

    settings = Settings()
    engine = create_db_engine(settings.resolved_database_url(), pool_size=1)
    try:
        result = sweep(sweep_policy(settings), UnitOfWorkFactory(engine)(), SystemClock())
    finally:
        engine.dispose()
    typer.echo(
        f"{result.pending_timed_out} pending and {result.in_progress_timed_out} in-progress actions timed out; "
        f"{result.machines_inactive} machines turned Inactive."
    )
