"""``bulwark sensor run | offboard | fleet``: the device program, run on the devices themselves.

It talks to the server's sensor gateway over HTTP(S) only and imports nothing of the server
(``bulwark.service``, ``bulwark.store``); issuing packages is an administrator's command (``cli/admin.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# The sensor (httpx, cryptography) loads when a device command runs, not when `bulwark --help` does.

sensor_app = typer.Typer(help="The device sensor: onboarding, running, offboarding, simulated fleets.", no_args_is_help=True)
console = Console(stderr=True)

# Exit codes of `bulwark sensor run`, for service managers and scripts.
EXIT_OFFBOARDED = 0
EXIT_ERROR = 2
EXIT_STOPPED = 3

FAIL_OFFBOARD_HELP = (
    "Simulate a failing device: report every offboard Failed (E_FAIL) and keep running, to rehearse failure handling."
)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None


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
    host_profile: Annotated[
        bool,
        typer.Option(
            "--host-profile", help="Report this host's own name, platform and build instead of a simulated Windows 11 device."
        ),
    ] = False,
    dns_name: Annotated[
        str | None, typer.Option(help="Report this DNS name (default: sim-<identity>.contoso.com, kept in the state).")
    ] = None,
    os_platform: Annotated[str | None, typer.Option(help="Report this OS platform (default: Windows11).")] = None,
    os_version: Annotated[str | None, typer.Option(help="Report this OS version (default: 23H2).")] = None,
    os_build: Annotated[int | None, typer.Option(help="Report this OS build (default: 22631).")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Report these IP addresses (repeatable).")] = None,
    check_in_interval: Annotated[float, typer.Option(help="Seconds between check-ins.")] = 60.0,
    poll_wait: Annotated[float, typer.Option(help="Longest wait for an action per request, in seconds.")] = 25.0,
    action_delay: Annotated[float, typer.Option(help="Simulated seconds of work per action.")] = 0.0,
    fail_offboard: Annotated[bool, typer.Option("--fail-offboard", help=FAIL_OFFBOARD_HELP)] = False,
) -> None:
    """Run the sensor: enrol, check in, and carry out actions until the device is offboarded."""
    import asyncio

    from bulwark.domain.sensors import InvalidPackage
    from bulwark.logs import configure_logging
    from bulwark.sensor.agent import (
        Outcome,
        Sensor,
        SensorError,
        SensorOptions,
        detect_profile,
        profile_from_wire,
        simulated_profile,
    )
    from bulwark.sensor.state import FileState, new_state

    configure_logging("INFO")
    store = FileState(state)
    if not store.exists():
        store.save(new_state(device_identity))
        console.print(f"New device state in {state}.")
    else:
        current = store.load()
        if device_identity and current["deviceIdentity"] != device_identity:
            raise typer.BadParameter("the state file belongs to another device identity")
        enrolment = current.get("enrolment") or {}
        console.print(
            f"Starting from the existing state in {state}: device {current['deviceIdentity']}, "
            + (f"machine {enrolment['machineId']}, " if enrolment.get("machineId") else "not enrolled yet, ")
            + f"service {current.get('service')}."
        )
    current = store.load()
    # The profile is kept in the state, so a restart reports the same device unless flags change it.
    if host_profile:
        profile = detect_profile()
    elif current.get("profile"):
        profile = profile_from_wire(current["profile"])
    else:
        profile = simulated_profile(current["deviceIdentity"])
    for name, value in (
        ("computer_dns_name", dns_name),
        ("os_platform", os_platform),
        ("version", os_version),
        ("os_build", os_build),
        ("ip_addresses", ip),
    ):
        if value is not None:
            setattr(profile, name, value)
    store.save({**store.load(), "profile": profile.to_wire()})
    console.print(
        f"{'This host' if host_profile else 'Simulating'}: {profile.computer_dns_name}, {profile.os_platform} "
        f"{profile.version or ''} (build {profile.os_build}); --dns-name, --os-platform, --os-version, --os-build "
        "change it" + ("." if host_profile else ", --host-profile reports this host instead."),
        soft_wrap=True,
    )
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
    from bulwark.domain.sensors import InvalidPackage
    from bulwark.sensor.agent import apply_offboarding_package
    from bulwark.sensor.state import FileState

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
    prefix: Annotated[
        str,
        typer.Option(help="Devices are named PREFIX-NNNNN.fleet.example (their identities are PREFIX-NNNNN)."),
    ] = "fleet",
    check_in_interval: Annotated[float, typer.Option(help="Seconds between check-ins.")] = 300.0,
    poll_wait: Annotated[float, typer.Option(help="Longest wait for an action per request, in seconds.")] = 25.0,
    action_delay: Annotated[float, typer.Option(help="Simulated seconds of work per action.")] = 0.0,
    fail_offboard: Annotated[bool, typer.Option("--fail-offboard", help=FAIL_OFFBOARD_HELP)] = False,
) -> None:
    """Run COUNT lightweight simulated sensors in this process until each is offboarded (Ctrl-C stops)."""
    import asyncio

    from bulwark.logs import configure_logging
    from bulwark.sensor.agent import SensorOptions
    from bulwark.sensor.fleet import FLEET_DOMAIN, run_fleet

    configure_logging("WARNING")
    options = SensorOptions(
        check_in_interval=check_in_interval, poll_wait=poll_wait, action_delay=action_delay, fail_offboard=fail_offboard
    )
    names = [f"{prefix}-{i:05d}" for i in range(count)]
    console.print(
        f"Running {count} simulated sensors: {names[0]}.{FLEET_DOMAIN} .. {names[-1]}.{FLEET_DOMAIN} "
        f"('bulwark offboard {names[-1]}' finds one by its short name).",
        soft_wrap=True,
    )
    try:
        report = asyncio.run(run_fleet(_read_json(onboarding_package), count, names=names, options=options))
    except KeyboardInterrupt:
        return
    console.print(f"Fleet finished: {dict(report.outcomes)}; {report.actions_received} actions received.")
