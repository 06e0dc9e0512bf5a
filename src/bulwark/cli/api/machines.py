"""`bulwark machines`: read the machine inventory."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time,
# including those this module adds to every command's signature.

from typing import Annotated

import typer

from bulwark.cli.api.connection import ConnectionOptions, open_client, with_connection
from bulwark.cli.api.output import (
    FilterOption,
    JsonOption,
    OrderByOption,
    SkipOption,
    TopOption,
    details_table,
    print_json,
    print_machines,
    resolve_machine,
    stderr,
    stdout,
    wire,
)
from bulwark.cli.tables import emit

machines_app = typer.Typer(help="Read the machine inventory.", no_args_is_help=True)


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
        found = resolve_machine(client, machine)
    if json_output:
        print_json(wire(found))
    else:
        emit(details_table(wire(found)), stdout)
