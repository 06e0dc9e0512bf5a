"""`bulwark offboard`: one machine, or many at once, optionally waiting for the outcome."""

# Annotations stay strings: `with_connection` resolves the command's own in this module, where
# its option types are real objects; the SDK's types are imported when the command runs.
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bulwark.cli.api.connection import ConnectionOptions, credential_for, note_rate_limit_async, open_client, with_connection
from bulwark.cli.api.output import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    EXIT_NOT_SUCCEEDED,
    MAX_POLL_INTERVAL,
    JsonOption,
    error_document,
    finish_with_action,
    is_machine_id,
    print_json,
    resolve_machine,
    resolve_machine_async,
    status_text,
    stderr,
    stdout,
    usage_error,
    wait_and_finish,
    wire,
)
from bulwark.cli.tables import emit
from bulwark.client.errors import (
    ActionWaitTimeout,
    ApiError,
    BulwarkError,
    ConfigurationError,
    ResponseFormatError,
    TransportError,
)

if TYPE_CHECKING:
    from bulwark.client.client import AsyncBulwarkClient
    from bulwark.client.models import Machine, MachineAction

DEFAULT_CONCURRENCY = 4


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
        from bulwark.client.models import ActionStatus

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
        if not isinstance(target, str):
            machine_id, result.computer_dns_name = target.id, target.computer_dns_name
        elif is_machine_id(target):
            machine_id = target
        else:
            machine = await resolve_machine_async(client, target)
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
    except (ActionWaitTimeout, ApiError, TransportError, ResponseFormatError, ConfigurationError) as error:
        if isinstance(error, ActionWaitTimeout) and error.last_seen is not None:
            result.action = error.last_seen
        result.error = error
    return result


async def offboard_many(
    connection: ConnectionOptions,
    targets: Sequence[str | Machine],
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
    import asyncio

    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from bulwark.client._protocol import USER_AGENT
    from bulwark.client.client import DEFAULT_TIMEOUT, AsyncBulwarkClient

    resolved = connection.resolve()
    results: list[OffboardResult | None] = [None] * len(targets)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        timeout=DEFAULT_TIMEOUT,
        verify=resolved.verify,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"response": [note_rate_limit_async]},
    ) as http:
        client = AsyncBulwarkClient(
            resolved.api_url,
            credential=credential_for(resolved, connection.cache()),
            retry=connection.retry_policy(),
            http_client=http,
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


def bulk_summary(results: list[OffboardResult], *, waited: bool) -> str:
    """Requested versus completed: an accepted offboard is only Pending until the device carries it out."""
    from bulwark.client.models import ActionStatus

    accepted = [r.action for r in results if r.action is not None and r.error is None]
    completed = sum(action.status is ActionStatus.SUCCEEDED for action in accepted)
    if waited:
        return f"{completed} of {len(results)} machines offboarded (Succeeded)"
    counts: dict[str, int] = {}
    for action in accepted:
        counts[action.status.value] = counts.get(action.status.value, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items())
    return (
        f"{len(accepted)} of {len(results)} offboards requested"
        + (f" ({states})" if states else "")
        + f"; {completed} completed so far (--wait waits for the devices)"
    )


def print_offboard_results(results: list[OffboardResult]) -> None:
    """The per-machine result table."""
    from rich import box
    from rich.table import Table

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
            status_text(result.action.status) if result.action else "",
            outcome,
        )
    emit(table, stdout)


@with_connection
def offboard(
    comment: Annotated[
        str | None, typer.Option("--comment", "-c", help="Why the machines are offboarded (required, not empty).")
    ] = None,
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
    if comment is None:
        usage_error("--comment is required: say why the machines are offboarded (it is kept with the action)")
    if not comment.strip():
        usage_error("--comment must not be empty: say why the machines are offboarded")
    if len(machines) == 1:
        with open_client(connection) as client:
            target = machines[0]
            machine_id = target if is_machine_id(target) else resolve_machine(client, target).id
            action = client.offboard(machine_id, comment, external_id=external_id, title=title)
            if not json_output:
                stderr.print(f"Offboarding requested: action {action.id} is {status_text(action.status)}")
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
    import asyncio

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
        summary = bulk_summary(results, waited=wait)
        stderr.print(summary if not failed else f"[bold red]{summary}; {failed} failed.[/]")
    if failed:
        raise typer.Exit(EXIT_NOT_SUCCEEDED)
