"""The ``bulwark`` commands that talk to an API server: offboard, machines, actions and profiles."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time,
# including those this module adds to every command's signature.

import asyncio
import functools
import inspect
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bulwark.client._protocol import USER_AGENT, RetryPolicy, WaitSchedule
from bulwark.client.auth import ClientCredentials, StaticToken, TokenProvider
from bulwark.client.client import DEFAULT_TIMEOUT, AsyncBulwarkClient, BulwarkClient
from bulwark.client.config import (
    ConnectionSettings,
    ResolvedConnection,
    default_config_path,
    load_profile,
    read_config,
    redacted,
    resolve_connection,
    save_profile,
)
from bulwark.client.errors import (
    ActionWaitTimeout,
    ApiError,
    AuthenticationError,
    BulwarkError,
    ConfigurationError,
    Forbidden,
    ResponseFormatError,
    TransportError,
    Unauthorized,
)
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
DEFAULT_RATE_LIMIT_WAIT = 120.0
DEFAULT_CONCURRENCY = 4
MACHINE_ID = re.compile(r"[0-9a-fA-F]{40}")
CONNECTION_PANEL = "Connection"

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only, to stdout.")]


# Connection options, added to every command that calls the API --------------------------------


@dataclass
class ConnectionOptions:
    """What the connection flags (or their environment variables) gave, before profiles and defaults."""

    api_url: str | None = None
    authority: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token: str | None = None
    scope: str | None = None
    profile: str | None = None
    credentials_file: Path | None = None
    insecure: bool | None = None
    ca_file: Path | None = None
    config: Path | None = None
    max_rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT

    def settings(self) -> ConnectionSettings:
        """The flag values as a settings layer."""
        return ConnectionSettings(
            api_url=self.api_url,
            authority=self.authority,
            tenant_id=self.tenant,
            client_id=self.client_id,
            client_secret=self.client_secret,
            token=self.token,
            scope=self.scope,
            credentials_file=str(self.credentials_file) if self.credentials_file else None,
            insecure=self.insecure,
            ca_file=str(self.ca_file) if self.ca_file else None,
        )

    def resolve(self) -> ResolvedConnection:
        """The settings in force, after the credentials file, the profile and the defaults."""
        return resolve_connection(self.settings(), profile_name=self.profile, config_path=config_path(self.config))

    def retry_policy(self) -> RetryPolicy:
        """Retries as the SDK does them, with the rate-limit patience the user asked for."""
        return RetryPolicy(rate_limit_max_retries=1000, rate_limit_max_wait=self.max_rate_limit_wait)


_CONNECTION_PARAMETERS: list[tuple[str, Any]] = [
    (
        "api_url",
        Annotated[
            str | None,
            typer.Option(
                "--api-url",
                envvar="BULWARK_API_URL",
                metavar="URL",
                rich_help_panel=CONNECTION_PANEL,
                help="API base URL (default http://127.0.0.1:8000).",
            ),
        ],
    ),
    (
        "authority",
        Annotated[
            str | None,
            typer.Option(
                "--authority",
                envvar="BULWARK_AUTHORITY",
                metavar="URL",
                rich_help_panel=CONNECTION_PANEL,
                help="Token authority; tokens come from AUTHORITY/TENANT/oauth2/v2.0/token (default: the API URL).",
            ),
        ],
    ),
    (
        "tenant",
        Annotated[
            str | None,
            typer.Option(
                "--tenant",
                envvar=["BULWARK_TENANT_ID", "BULWARK_TENANT"],
                rich_help_panel=CONNECTION_PANEL,
                help="Tenant (directory) id.",
            ),
        ],
    ),
    (
        "client_id",
        Annotated[
            str | None,
            typer.Option(
                "--client-id", envvar="BULWARK_CLIENT_ID", rich_help_panel=CONNECTION_PANEL, help="Application (client) id."
            ),
        ],
    ),
    (
        "client_secret",
        Annotated[
            str | None,
            typer.Option(
                "--client-secret", envvar="BULWARK_CLIENT_SECRET", rich_help_panel=CONNECTION_PANEL, help="Application secret."
            ),
        ],
    ),
    (
        "token",
        Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="BULWARK_TOKEN",
                rich_help_panel=CONNECTION_PANEL,
                help="A ready bearer token, instead of client credentials.",
            ),
        ],
    ),
    (
        "scope",
        Annotated[
            str | None,
            typer.Option(
                "--scope",
                envvar="BULWARK_SCOPE",
                rich_help_panel=CONNECTION_PANEL,
                hidden=True,
                help="Scope asked of the authority.",
            ),
        ],
    ),
    (
        "profile",
        Annotated[
            str | None,
            typer.Option(
                "--profile",
                envvar="BULWARK_PROFILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Named profile from the config file (see 'bulwark profile').",
            ),
        ],
    ),
    (
        "credentials_file",
        Annotated[
            Path | None,
            typer.Option(
                "--credentials-file",
                envvar="BULWARK_CREDENTIALS_FILE",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="demo-credentials.json written by 'bulwark serve --demo'.",
            ),
        ],
    ),
    (
        "insecure",
        Annotated[
            bool | None,
            typer.Option(
                "--insecure",
                envvar="BULWARK_INSECURE",
                rich_help_panel=CONNECTION_PANEL,
                help="Do not verify the server's TLS certificate.",
            ),
        ],
    ),
    (
        "ca_file",
        Annotated[
            Path | None,
            typer.Option(
                "--ca-file",
                envvar="BULWARK_CA_FILE",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Trust this CA certificate (PEM) for TLS.",
            ),
        ],
    ),
    (
        "config",
        Annotated[
            Path | None,
            typer.Option(
                "--config",
                envvar="BULWARK_CONFIG",
                metavar="FILE",
                rich_help_panel=CONNECTION_PANEL,
                help="Config file holding the profiles.",
            ),
        ],
    ),
    (
        "max_rate_limit_wait",
        Annotated[
            float,
            typer.Option(
                "--max-rate-limit-wait",
                envvar="BULWARK_MAX_RATE_LIMIT_WAIT",
                metavar="SECONDS",
                min=0,
                rich_help_panel=CONNECTION_PANEL,
                help="Longest total wait for rate limits (429) per call before giving up.",
            ),
        ],
    ),
]
_CONNECTION_DEFAULTS = {"max_rate_limit_wait": DEFAULT_RATE_LIMIT_WAIT}


def config_path(given: Path | None) -> Path:
    """The config file: the one given (flag or BULWARK_CONFIG), else the user's config directory."""
    return given if given is not None else default_config_path(typer.get_app_dir("bulwark"))


def with_connection(command: Callable[..., None]) -> Callable[..., None]:
    """Add the connection flags to a command, handing them to it as `connection`, and report errors."""
    signature = inspect.signature(command)
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "connection"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=_CONNECTION_DEFAULTS.get(name))
        for name, annotation in _CONNECTION_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        connection = ConnectionOptions(**{name: kwargs.pop(name) for name, _ in _CONNECTION_PARAMETERS})
        with reporting_errors(json_output=bool(kwargs.get("json_output"))):
            command(connection=connection, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return wrapper


def _credential(resolved: ResolvedConnection) -> TokenProvider:
    if resolved.token:
        return StaticToken(resolved.token)
    assert resolved.tenant_id and resolved.client_id and resolved.client_secret
    return ClientCredentials(
        resolved.tenant_id,
        resolved.client_id,
        resolved.client_secret,
        authority=resolved.authority,
        scope=resolved.scope,
    )


def _note_rate_limit(response: httpx.Response) -> None:
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", "?")
        stderr.print(f"[yellow]Rate limited[/] (429 TooManyRequests) on {response.request.url.path}; Retry-After {wait} s")


async def _note_rate_limit_async(response: httpx.Response) -> None:
    _note_rate_limit(response)


@contextmanager
def open_client(connection: ConnectionOptions) -> Iterator[BulwarkClient]:
    """A blocking client for the resolved connection, announcing rate limits on stderr."""
    resolved = connection.resolve()
    http = httpx.Client(
        timeout=DEFAULT_TIMEOUT,
        verify=resolved.verify,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"response": [_note_rate_limit]},
    )
    try:
        yield BulwarkClient(resolved.api_url, credential=_credential(resolved), retry=connection.retry_policy(), http_client=http)
    finally:
        http.close()


# Errors -------------------------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error (see the EXIT_* constants)."""
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
            "code": error.error or "AuthenticationError",
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


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


_STATUS_STYLE = {
    ActionStatus.PENDING: "yellow",
    ActionStatus.IN_PROGRESS: "cyan",
    ActionStatus.SUCCEEDED: "green",
    ActionStatus.FAILED: "red",
    ActionStatus.TIME_OUT: "red",
    ActionStatus.CANCELLED: "magenta",
}


def _status(status: ActionStatus) -> str:
    return f"[{_STATUS_STYLE[status]}]{status.value}[/]"


def _details_table(values: dict[str, Any]) -> Table:
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value)
        table.add_row(key, "" if value is None else str(value))
    return table


def print_action(action: MachineAction) -> None:
    """One action as a two-column table."""
    values = wire(action)
    stdout.print(_details_table(values))


def print_actions(actions: Iterable[MachineAction]) -> int:
    """Actions as a table; returns how many."""
    table = Table(box=box.SIMPLE_HEAVY)
    for column in ("Id", "Type", "Status", "Computer", "Requestor", "Created (UTC)", "Updated (UTC)"):
        table.add_column(column, no_wrap=column in ("Id", "Status"))
    count = 0
    for action in actions:
        count += 1
        table.add_row(
            action.id,
            action.type,
            _status(action.status),
            action.computer_dns_name or action.machine_id or "",
            action.requestor or "",
            _when(action.creation_date_time_utc),
            _when(action.last_update_date_time_utc),
        )
    stdout.print(table)
    return count


def print_machines(machines: Iterable[Machine]) -> int:
    """Machines as a table; returns how many."""
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
            _when(machine.last_seen),
        )
    stdout.print(table)
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
            f"{_status(current.status)}  ({time.monotonic() - started:.0f} s)"
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
                stderr.print(f"{current.id}: {previous.value} -> {_status(current.status)}")
            spinner.update(describe())
    return current


def finish_with_action(action: MachineAction, *, json_output: bool, waited: bool) -> None:
    """Print the action and exit: 0, or 1 when a waited-for action did not succeed."""
    if json_output:
        print_json(wire(action))
    else:
        print_action(action)
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


# offboard -----------------------------------------------------------------------------------


@dataclass
class OffboardResult:
    """What happened to one machine of a bulk offboarding."""

    target: str
    machine_id: str | None = None
    computer_dns_name: str | None = None
    action: MachineAction | None = None
    error: BulwarkError | None = None
    waited: bool = False

    @property
    def ok(self) -> bool:
        """Whether the offboarding was accepted (and, when waited for, succeeded)."""
        if self.error is not None or self.action is None:
            return False
        return not self.waited or self.action.status is ActionStatus.SUCCEEDED

    def document(self) -> dict[str, Any]:
        """The result as JSON."""
        return {
            "target": self.target,
            "machineId": self.machine_id,
            "computerDnsName": self.computer_dns_name,
            "ok": self.ok,
            "status": self.action.status.value if self.action else None,
            "action": wire(self.action) if self.action else None,
            "error": error_document(self.error) if self.error else None,
        }


def read_targets(path: Path) -> list[str]:
    """Machine ids or DNS names from a file: one a line; blank lines and # comments are skipped."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        usage_error(f"cannot read {path}: {exc.strerror or exc}")
    targets: list[str] = []
    for line in text.splitlines():
        target = line.split("#", 1)[0].strip()
        if target and target not in targets:
            targets.append(target)
    return targets


def is_machine_id(value: str) -> bool:
    """Whether `value` is a machine id rather than a computer DNS name."""
    return MACHINE_ID.fullmatch(value) is not None


async def _offboard_one(
    client: AsyncBulwarkClient,
    target: str | Machine,
    *,
    comment: str,
    external_id: str | None,
    title: str | None,
    wait: bool,
    timeout: float,
    poll_interval: float,
) -> OffboardResult:
    name = target if isinstance(target, str) else (target.computer_dns_name or target.id)
    result = OffboardResult(target=name, waited=wait)
    try:
        if isinstance(target, Machine):
            machine_id, result.computer_dns_name = target.id, target.computer_dns_name
        elif is_machine_id(target):
            machine_id = target
        else:
            machine = await client.get_machine(target)
            machine_id, result.computer_dns_name = machine.id, machine.computer_dns_name
        result.machine_id = machine_id
        result.action = await client.offboard(machine_id, comment, external_id=external_id, title=title)
        result.computer_dns_name = result.computer_dns_name or result.action.computer_dns_name
        if wait:
            result.action = await client.wait(
                result.action,
                timeout=timeout or None,
                poll_interval=poll_interval,
                max_poll_interval=max(MAX_POLL_INTERVAL, poll_interval),
            )
    except (ActionWaitTimeout, ApiError, TransportError, ResponseFormatError) as error:
        if isinstance(error, ActionWaitTimeout) and error.last_seen is not None:
            result.action = error.last_seen
        result.error = error
    return result


async def offboard_many(
    connection: ConnectionOptions,
    targets: list[str] | list[Machine],
    *,
    comment: str,
    external_id: str | None,
    title: str | None,
    wait: bool,
    timeout: float,
    poll_interval: float,
    concurrency: int,
    show_progress: bool,
) -> list[OffboardResult]:
    """Offboard every target, `concurrency` at a time, and return one result per target, in order.

    A failure for one machine is recorded and the others go on; rate limits (429) are waited
    out as the server's Retry-After says. Failing to get a token stops everything, since no
    machine could then be offboarded.
    """
    resolved = connection.resolve()
    results: list[OffboardResult | None] = [None] * len(targets)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        timeout=DEFAULT_TIMEOUT,
        verify=resolved.verify,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"response": [_note_rate_limit_async]},
    ) as http:
        client = AsyncBulwarkClient(
            resolved.api_url, credential=_credential(resolved), retry=connection.retry_policy(), http_client=http
        )
        await client.credential.get_token_async(http)
        columns = (
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=stderr, disable=not show_progress) as progress:
            task = progress.add_task("Offboarding", total=len(targets))
            tally = {"ok": 0, "failed": 0}

            async def run(index: int, target: str | Machine) -> None:
                async with gate:
                    result = await _offboard_one(
                        client,
                        target,
                        comment=comment,
                        external_id=external_id,
                        title=title,
                        wait=wait,
                        timeout=timeout,
                        poll_interval=poll_interval,
                    )
                results[index] = result
                tally["ok" if result.ok else "failed"] += 1
                progress.update(
                    task,
                    advance=1,
                    description=f"Offboarding  [green]{tally['ok']} ok[/]  [red]{tally['failed']} failed[/]",
                )

            await asyncio.gather(*(run(index, target) for index, target in enumerate(targets)))
    return [result for result in results if result is not None]


def print_offboard_results(results: list[OffboardResult]) -> None:
    """The per-machine result table."""
    table = Table(box=box.SIMPLE_HEAVY)
    for column in ("Machine", "Computer", "Action", "Status", "Result"):
        table.add_column(column, no_wrap=column in ("Action", "Status"), overflow="fold")
    for result in results:
        if result.error is not None:
            document = error_document(result.error)
            outcome = f"[red]{document['code']}[/]: {document['message']}"
            if document["requestId"]:
                outcome += f" (request {document['requestId']})"
        else:
            outcome = "[green]ok[/]" if result.ok else "[red]not succeeded[/]"
        table.add_row(
            result.machine_id or result.target,
            result.computer_dns_name or "",
            result.action.id if result.action else "",
            _status(result.action.status) if result.action else "",
            outcome,
        )
    stdout.print(table)


@with_connection
def offboard(
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why the machines are offboarded.")],
    machines: Annotated[
        list[str] | None,
        typer.Argument(metavar="MACHINE...", help="Machine id or computer DNS name (several for a bulk offboarding)."),
    ] = None,
    external_id: Annotated[str | None, typer.Option(help="Your reference, e.g. a change ticket.")] = None,
    title: Annotated[str | None, typer.Option(help="A title for the action.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            metavar="FILE",
            help="Offboard the machines listed in FILE (one id or DNS name a line; # comments; - for stdin).",
        ),
    ] = None,
    odata_filter: Annotated[
        str | None, typer.Option("--filter", metavar="ODATA", help="Offboard every machine matching this OData $filter.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before offboarding several machines.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the action is final; exit 1 unless it Succeeded.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help="How long --wait waits (0: no limit).")
    ] = DEFAULT_WAIT_TIMEOUT,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, metavar="SECONDS", help="First interval between polls.")
    ] = DEFAULT_POLL_INTERVAL,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Machines offboarded at the same time.")] = DEFAULT_CONCURRENCY,
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """Offboard a machine, or many at once (--from-file, --filter), optionally waiting for the outcome."""
    machines = machines or []
    sources = sum(bool(source) for source in (machines, from_file, odata_filter))
    if sources != 1:
        usage_error("give the machines as arguments, with --from-file, or with --filter (exactly one of them)")
    if len(machines) == 1:
        with open_client(connection) as client:
            target = machines[0]
            machine_id = target if is_machine_id(target) else client.get_machine(target).id
            action = client.offboard(machine_id, comment, external_id=external_id, title=title)
            if not json_output:
                stderr.print(f"Offboarding requested: action {action.id} is {_status(action.status)}")
            if wait:
                wait_and_finish(client, action, timeout=timeout, poll_interval=poll_interval, json_output=json_output)
            else:
                finish_with_action(action, json_output=json_output, waited=False)
        return

    targets: list[str] | list[Machine]
    if from_file is not None:
        targets = read_targets(from_file)
        if not targets:
            usage_error(f"{from_file} lists no machine")
    elif odata_filter is not None:
        with open_client(connection) as client:
            targets = list(client.list_machines(filter=odata_filter))
    else:
        targets = list(dict.fromkeys(machines))
    if not targets:
        if json_output:
            print_json([])
        else:
            stderr.print("No machine matches; nothing to offboard.")
        return
    if not yes:
        names = [t if isinstance(t, str) else (t.computer_dns_name or t.id) for t in targets]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if not typer.confirm(f"Offboard {len(targets)} machines ({shown})?", default=False, err=True):
            stderr.print("Nothing was offboarded.")
            raise typer.Exit(EXIT_NOT_SUCCEEDED)
    results = asyncio.run(
        offboard_many(
            connection,
            targets,
            comment=comment,
            external_id=external_id,
            title=title,
            wait=wait,
            timeout=timeout,
            poll_interval=poll_interval,
            concurrency=concurrency,
            show_progress=not json_output,
        )
    )
    failed = sum(not result.ok for result in results)
    if json_output:
        print_json([result.document() for result in results])
    else:
        print_offboard_results(results)
        summary = f"{len(results) - failed} of {len(results)} machines offboarded" + (" (final: Succeeded)" if wait else "")
        stderr.print(summary if not failed else f"[bold red]{summary}; {failed} failed.[/]")
    if failed:
        raise typer.Exit(EXIT_NOT_SUCCEEDED)


# machines -----------------------------------------------------------------------------------

machines_app = typer.Typer(help="Read the machine inventory.", no_args_is_help=True)

FilterOption = Annotated[str | None, typer.Option("--filter", metavar="ODATA", help="OData $filter.")]
TopOption = Annotated[int | None, typer.Option("--top", min=0, help="Return at most this many.")]
SkipOption = Annotated[int | None, typer.Option("--skip", min=0, help="Skip this many first.")]
OrderByOption = Annotated[str | None, typer.Option("--orderby", metavar="ODATA", help="OData $orderby.")]


@machines_app.command("list")
@with_connection
def machines_list(
    odata_filter: FilterOption = None,
    top: TopOption = None,
    skip: SkipOption = None,
    orderby: OrderByOption = None,
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """List machines, optionally filtered (e.g. --filter "healthStatus eq 'Active'")."""
    with open_client(connection) as client:
        found = client.list_machines(filter=odata_filter, top=top, orderby=orderby, skip=skip)
        if json_output:
            print_json([wire(machine) for machine in found])
        else:
            count = print_machines(found)
            stderr.print(f"{count} machines")


@machines_app.command("show")
@with_connection
def machines_show(
    machine: Annotated[str, typer.Argument(metavar="MACHINE", help="Machine id or computer DNS name.")],
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """Show one machine."""
    with open_client(connection) as client:
        found = client.get_machine(machine)
    if json_output:
        print_json(wire(found))
    else:
        stdout.print(_details_table(wire(found)))


# actions ------------------------------------------------------------------------------------

actions_app = typer.Typer(help="Follow and cancel machine actions.", no_args_is_help=True)


@actions_app.command("list")
@with_connection
def actions_list(
    odata_filter: FilterOption = None,
    machine: Annotated[
        str | None, typer.Option("--machine", metavar="MACHINE", help="Only this machine's actions (id or computer DNS name).")
    ] = None,
    top: TopOption = None,
    skip: SkipOption = None,
    orderby: OrderByOption = None,
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """List machine actions, newest first (e.g. --filter "status eq 'Pending'")."""
    with open_client(connection) as client:
        if machine is not None:
            machine_id = machine if is_machine_id(machine) else client.get_machine(machine).id
            clause = f"machineId eq '{machine_id}'"
            odata_filter = f"({odata_filter}) and {clause}" if odata_filter else clause
        found = client.list_actions(filter=odata_filter, top=top, orderby=orderby, skip=skip)
        if json_output:
            print_json([wire(action) for action in found])
        else:
            count = print_actions(found)
            stderr.print(f"{count} actions")


@actions_app.command("show")
@with_connection
def actions_show(
    action_id: Annotated[str, typer.Argument(metavar="ACTION_ID")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the action is final; exit 1 unless it Succeeded.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0, metavar="SECONDS", help="How long --wait waits (0: no limit).")
    ] = DEFAULT_WAIT_TIMEOUT,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, metavar="SECONDS", help="First interval between polls.")
    ] = DEFAULT_POLL_INTERVAL,
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """Show one machine action, or follow it to its end with --wait."""
    with open_client(connection) as client:
        action = client.get_action(action_id)
        if wait:
            wait_and_finish(client, action, timeout=timeout, poll_interval=poll_interval, json_output=json_output)
        else:
            finish_with_action(action, json_output=json_output, waited=False)


@actions_app.command("cancel")
@with_connection
def actions_cancel(
    action_id: Annotated[str, typer.Argument(metavar="ACTION_ID")],
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why the action is cancelled.")],
    json_output: JsonOption = False,
    *,
    connection: ConnectionOptions,
) -> None:
    """Cancel an action that has not finished."""
    with open_client(connection) as client:
        action = client.cancel_action(action_id, comment)
    finish_with_action(action, json_output=json_output, waited=False)


# profile ------------------------------------------------------------------------------------

profile_app = typer.Typer(help="Named connection profiles, kept in the config file.", no_args_is_help=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", envvar="BULWARK_CONFIG", metavar="FILE", help="Config file holding the profiles.")
]


@profile_app.command("set")
def profile_set(
    name: Annotated[str, typer.Argument(help="Profile name.")],
    api_url: Annotated[str | None, typer.Option("--api-url", metavar="URL")] = None,
    authority: Annotated[str | None, typer.Option("--authority", metavar="URL")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id")] = None,
    client_secret: Annotated[str | None, typer.Option("--client-secret")] = None,
    token: Annotated[str | None, typer.Option("--token")] = None,
    credentials_file: Annotated[Path | None, typer.Option("--credentials-file", metavar="FILE")] = None,
    insecure: Annotated[bool | None, typer.Option("--insecure/--verify-tls")] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", metavar="FILE")] = None,
    default: Annotated[bool, typer.Option("--default", help="Use this profile when none is named.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create a profile or change some of its settings (the others are kept)."""
    settings = ConnectionSettings(
        api_url=api_url,
        authority=authority,
        tenant_id=tenant,
        client_id=client_id,
        client_secret=client_secret,
        token=token,
        credentials_file=str(credentials_file.resolve()) if credentials_file else None,
        insecure=insecure,
        ca_file=str(ca_file.resolve()) if ca_file else None,
    )
    path = config_path(config)
    with reporting_errors(json_output=False):
        save_profile(path, name, settings, make_default=default)
    stderr.print(f"Profile {name!r} saved in {path}")


@profile_app.command("show")
def profile_show(
    name: Annotated[str | None, typer.Argument(help="Profile name (default: the default profile).")] = None,
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="Print secrets instead of ********.")] = False,
    json_output: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show a profile's settings."""
    path = config_path(config)
    with reporting_errors(json_output=json_output):
        stored = read_config(path)
        name = name or stored.get("default_profile")
        if not name:
            raise ConfigurationError(f"No default profile in {path}; name one")
        values = load_profile(path, name).as_mapping()
    shown = values if show_secrets else redacted(values)
    if json_output:
        print_json({"name": name, **shown})
    else:
        stdout.print(f"[bold]{name}[/]" + (" (default)" if stored.get("default_profile") == name else ""))
        stdout.print(_details_table(shown))


@profile_app.command("list")
def profile_list(json_output: JsonOption = False, config: ConfigOption = None) -> None:
    """List the profiles."""
    path = config_path(config)
    with reporting_errors(json_output=json_output):
        stored = read_config(path)
    default = stored.get("default_profile")
    if json_output:
        print_json(
            [
                {"name": name, "default": name == default, **redacted(values)}
                for name, values in sorted(stored["profiles"].items())
            ]
        )
        return
    table = Table(box=box.SIMPLE_HEAVY)
    for column in ("Name", "Default", "API URL", "Sign-in"):
        table.add_column(column)
    for name, values in sorted(stored["profiles"].items()):
        sign_in = (
            "token"
            if values.get("token")
            else f"client {values['client_id']}"
            if values.get("client_id")
            else "credentials file"
            if values.get("credentials_file")
            else ""
        )
        table.add_row(name, "*" if name == default else "", values.get("api_url", ""), sign_in)
    stdout.print(table)
    stderr.print(f"Profiles in {path}")


def register_commands(app: typer.Typer) -> None:
    """Add offboard, machines, actions and profile to the `bulwark` command."""
    app.command("offboard")(offboard)
    app.add_typer(machines_app, name="machines")
    app.add_typer(actions_app, name="actions")
    app.add_typer(profile_app, name="profile")
