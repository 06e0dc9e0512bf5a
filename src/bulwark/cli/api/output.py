"""What the API commands share: exit codes, error reports, tables and JSON, following an action."""

# The option types below are real objects (typer reads them at run time); this module's own
# functions are no commands, so their annotations may stay strings.
from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from bulwark.cli.tables import emit
from bulwark.client.errors import (
    ActionWaitTimeout,
    ApiError,
    AuthenticationError,
    BulwarkError,
    ConfigurationError,
    Forbidden,
    ResourceNotFound,
    ResponseFormatError,
    TransportError,
    Unauthorized,
)

# The SDK's client and models (httpx, pydantic) and rich's tables load when a command runs.
if TYPE_CHECKING:
    from datetime import datetime

    from pydantic import BaseModel
    from rich.table import Table

    from bulwark.client.client import BulwarkClient
    from bulwark.client.models import ActionStatus, Machine, MachineAction

# Exit codes, one per class of outcome, so that scripts can tell them apart.
EXIT_OK = 0
EXIT_NOT_SUCCEEDED = 1  # an action ended Failed, TimeOut or Cancelled; a bulk item failed; declined
EXIT_USAGE = 2  # bad flags or settings (click uses 2 for its own usage errors too)
EXIT_API_ERROR = 3  # the API answered with an error (400, 404, 429 after waiting, 500, ...)
EXIT_AUTH_ERROR = 4  # no token could be obtained, or the API answered 401 or 403
EXIT_WAIT_TIMEOUT = 5  # --wait gave up before the action reached a final state
EXIT_UNREACHABLE = 6  # the server could not be reached
EXIT_INTERRUPTED = 130  # Ctrl-C

DEFAULT_WAIT_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 2.0
MAX_POLL_INTERVAL = 30.0
MACHINE_ID = re.compile(r"[0-9a-fA-F]{40}")

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only, to stdout.")]

FilterOption = Annotated[str | None, typer.Option("--filter", metavar="ODATA", help="OData $filter.")]
TopOption = Annotated[int | None, typer.Option("--top", min=0, help="Return at most this many.")]
SkipOption = Annotated[int | None, typer.Option("--skip", min=0, help="Skip this many first.")]
OrderByOption = Annotated[str | None, typer.Option("--orderby", metavar="ODATA", help="OData $orderby.")]

# Errors -------------------------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error (see the EXIT_* constants)."""
    if isinstance(error, TransportError):  # a token endpoint out of reach included
        return EXIT_UNREACHABLE
    if isinstance(error, (AuthenticationError, Unauthorized, Forbidden)):
        return EXIT_AUTH_ERROR
    if isinstance(error, ActionWaitTimeout):
        return EXIT_WAIT_TIMEOUT
    if isinstance(error, TransportError):
        return EXIT_UNREACHABLE
    if isinstance(error, ConfigurationError):
        return EXIT_USAGE
    return EXIT_API_ERROR


def error_document(error: BaseException) -> dict[str, Any]:
    """An error as `{"code", "message", "status", "requestId"}`, the API's envelope plus the status."""
    if isinstance(error, ApiError):
        return {"code": error.code, "message": error.message, "status": error.status, "requestId": error.request_id}
    if isinstance(error, AuthenticationError):
        return {
            "code": error.error or type(error).__name__,
            "message": str(error),
            "status": error.status,
            "requestId": error.request_id,
        }
    if isinstance(error, ActionWaitTimeout):
        return {"code": "WaitTimeout", "message": str(error), "status": None, "requestId": None}
    if isinstance(error, ResponseFormatError):
        return {"code": "ResponseFormatError", "message": str(error), "status": error.status, "requestId": error.request_id}
    return {"code": type(error).__name__, "message": str(error), "status": None, "requestId": None}


def print_error(error: BaseException, *, json_output: bool) -> None:
    """Write the error's code, message and request id to stderr (as JSON with --json)."""
    document = error_document(error)
    if json_output:
        sys.stderr.write(json.dumps({"error": document}) + "\n")
        return
    status = f" (HTTP {document['status']})" if document["status"] else ""
    stderr.print(f"[bold red]Error:[/] {document['code']}{status}: {document['message']}", soft_wrap=True)
    if document["requestId"]:
        stderr.print(f"Request id: {document['requestId']}", soft_wrap=True)


@contextmanager
def reporting_errors(*, json_output: bool) -> Iterator[None]:
    """Turn SDK errors into a message on stderr and their exit code."""
    try:
        yield
    except BulwarkError as error:
        print_error(error, json_output=json_output)
        raise typer.Exit(exit_code_for(error)) from None
    except KeyboardInterrupt:
        stderr.print("Interrupted.")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def usage_error(message: str) -> NoReturn:
    """Stop with a usage message and exit code 2."""
    stderr.print(f"[bold red]Usage error:[/] {message}", soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


# Output -------------------------------------------------------------------------------------


def wire(model: BaseModel) -> dict[str, Any]:
    """An entity in the API's JSON shape."""
    return model.model_dump(mode="json", by_alias=True)


def print_json(document: Any) -> None:
    """Write a JSON document to stdout, and nothing else."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


# By ActionStatus value.
_STATUS_STYLE = {
    "Pending": "yellow",
    "InProgress": "cyan",
    "Succeeded": "green",
    "Failed": "red",
    "TimeOut": "red",
    "Cancelled": "magenta",
}


def status_text(status: ActionStatus) -> str:
    return f"[{_STATUS_STYLE[status.value]}]{status.value}[/]"


def _cell(value: Any) -> str:
    """A field's value as text: lists joined, objects (an IP address entry) as their non-empty parts."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, dict):
        address = value.get("ipAddress")
        rest = [f"{k}={v}" for k, v in value.items() if k != "ipAddress" and v not in (None, "")]
        if address is not None:
            return f"{address} ({', '.join(rest)})" if rest else str(address)
        return " ".join(rest)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def details_table(values: dict[str, Any]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        if key.startswith("@odata."):
            continue  # a link for OData clients, not a field of the entity
        table.add_row(key, _cell(value))
    return table


def print_action(action: MachineAction) -> None:
    """One action as a two-column table."""
    values = wire(action)
    emit(details_table(values), stdout)


def print_actions(actions: Iterable[MachineAction]) -> int:
    """Actions as a table; returns how many."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAVY)
    for column in ("Id", "Type", "Status", "Computer", "Requestor", "Created (UTC)", "Updated (UTC)"):
        table.add_column(column, no_wrap=column in ("Id", "Status"))
    count = 0
    for action in actions:
        count += 1
        table.add_row(
            action.id,
            action.type,
            status_text(action.status),
            action.computer_dns_name or action.machine_id or "",
            action.requestor or "",
            format_time(action.creation_date_time_utc),
            format_time(action.last_update_date_time_utc),
        )
    emit(table, stdout)
    return count


def print_machines(machines: Iterable[Machine]) -> int:
    """Machines as a table; returns how many."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAVY)
    for column in ("Id", "Computer", "OS", "Version", "Health", "Onboarding", "Group", "Last seen (UTC)"):
        table.add_column(column, no_wrap=column == "Id")
    count = 0
    for machine in machines:
        count += 1
        table.add_row(
            machine.id,
            machine.computer_dns_name or "",
            machine.os_platform or "",
            machine.version or "",
            machine.health_status or "",
            machine.onboarding_status or "",
            machine.rbac_group_name or "",
            format_time(machine.last_seen),
        )
    emit(table, stdout)
    return count


# Waiting for an action ----------------------------------------------------------------------


def wait_for_action(
    client: BulwarkClient,
    action: MachineAction,
    *,
    timeout: float | None,
    poll_interval: float,
    show_status: bool,
) -> MachineAction:
    """Poll until the action is final, showing its status live; raises ActionWaitTimeout."""
    from bulwark.client._protocol import WaitSchedule

    schedule = WaitSchedule(
        action.id,
        timeout=timeout,
        poll_interval=poll_interval,
        max_poll_interval=max(MAX_POLL_INTERVAL, poll_interval),
        clock=time.monotonic,
    )
    started = time.monotonic()
    current = action

    def describe() -> str:
        return (
            f"Waiting for {current.type} {current.id} on {current.computer_dns_name or current.machine_id}: "
            f"{status_text(current.status)}  ({time.monotonic() - started:.0f} s)"
        )

    if not show_status:
        while not current.status.is_final:
            time.sleep(schedule.next_delay(current))
            current = client.get_action(action.id)
        return current
    with stderr.status(describe()) as spinner:
        while not current.status.is_final:
            delay = schedule.next_delay(current)
            # Sleep in slices so that the elapsed time on the spinner keeps moving.
            wake_at = time.monotonic() + delay
            while (left := wake_at - time.monotonic()) > 0:
                time.sleep(min(left, 0.25))
                spinner.update(describe())
            previous = current.status
            current = client.get_action(action.id)
            if current.status is not previous:
                stderr.print(f"{current.id}: {previous.value} -> {status_text(current.status)}")
            spinner.update(describe())
    return current


def finish_with_action(action: MachineAction, *, json_output: bool, waited: bool) -> None:
    """Print the action and exit: 0, or 1 when a waited-for action did not succeed."""
    if json_output:
        print_json(wire(action))
    else:
        print_action(action)
    from bulwark.client.models import ActionStatus

    if waited and action.status is not ActionStatus.SUCCEEDED:
        if not json_output:
            stderr.print(f"[bold red]Action {action.id} ended {action.status.value}.[/]")
        raise typer.Exit(EXIT_NOT_SUCCEEDED)


def wait_and_finish(
    client: BulwarkClient, action: MachineAction, *, timeout: float, poll_interval: float, json_output: bool
) -> None:
    """Wait for the action, print the outcome and exit with its code (5 on a wait timeout)."""
    try:
        final = wait_for_action(client, action, timeout=timeout or None, poll_interval=poll_interval, show_status=not json_output)
    except ActionWaitTimeout as error:
        # The action goes on without us; show where it stood so that it can be followed up.
        if error.last_seen is not None:
            if json_output:
                print_json(wire(error.last_seen))
            else:
                print_action(error.last_seen)
        print_error(error, json_output=json_output)
        raise typer.Exit(EXIT_WAIT_TIMEOUT) from None
    finish_with_action(final, json_output=json_output, waited=True)


def _short_name_filter(name: str) -> str:
    escaped = name.replace("'", "''")
    return f"startswith(computerDnsName, '{escaped}.')"


def _one_short_name_match(name: str, found: list[Machine], error: ResourceNotFound) -> Machine:
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(m.computer_dns_name or m.id for m in found[:5])
        raise ConfigurationError(f"{name} is ambiguous: it names {names}; give the full DNS name or the machine id")
    raise error


def resolve_machine(client: BulwarkClient, target: str) -> Machine:
    """The machine a user named: its id, its computer DNS name, or a host name without the domain when unique."""
    try:
        return client.get_machine(target)
    except ResourceNotFound as error:
        if "." in target or is_machine_id(target):
            raise
        return _one_short_name_match(target, list(client.list_machines(filter=_short_name_filter(target), top=5)), error)


async def resolve_machine_async(client: Any, target: str) -> Machine:
    """``resolve_machine`` for the asynchronous client."""
    try:
        return await client.get_machine(target)
    except ResourceNotFound as error:
        if "." in target or is_machine_id(target):
            raise
        found = [m async for m in client.list_machines(filter=_short_name_filter(target), top=5)]
        return _one_short_name_match(target, found, error)


def is_machine_id(value: str) -> bool:
    """Whether `value` is a machine id rather than a computer DNS name."""
    return MACHINE_ID.fullmatch(value) is not None
