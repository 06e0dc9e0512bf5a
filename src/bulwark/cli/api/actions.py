"""`bulwark actions`: follow and cancel machine actions."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time,
# including those this module adds to every command's signature.

from typing import Annotated

import typer

from bulwark.cli.api.connection import ConnectionOptions, open_client, with_connection
from bulwark.cli.api.output import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    FilterOption,
    JsonOption,
    OrderByOption,
    SkipOption,
    TopOption,
    finish_with_action,
    is_machine_id,
    print_actions,
    print_json,
    resolve_machine,
    stderr,
    wait_and_finish,
    wire,
)

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
            machine_id = machine if is_machine_id(machine) else resolve_machine(client, machine).id
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
    """Cancel a Pending action (one a device has not picked up yet; InProgress ones are refused)."""
    with open_client(connection) as client:
        action = client.cancel_action(action_id, comment)
    finish_with_action(action, json_output=json_output, waited=False)
