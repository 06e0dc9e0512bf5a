"""The ``bulwark`` command, its sub-commands arranged by who runs them.

- ``server``: the operator on the server host (``serve``, ``db``, ``sweep``).
- ``admin``: an operator with database access (tenants, apps, users, roles, groups, keys, ``token``,
  ``audit``, and ``sensor package`` to issue device packages).
- ``api``: a user of the API, from anywhere (``offboard``, ``machines``, ``actions``, ``profile``).
- ``device``: the device program (``sensor run | offboard | fleet``).

Importing this package stays cheap: each command imports what it needs when it runs.
"""

from typing import Annotated

import typer
import typer.core

from bulwark.cli import admin, api, device, server


def _flags_without_a_type(option: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    # Typer's help shows a type for every option, so flags (--json, --yes, --help) read "<bool>" as if
    # they took a value; a flag takes none, so its type column stays empty.
    return None if option.is_flag or _typer_display_type_rich is None else _typer_display_type_rich(option, ctx)


_typer_display_type_rich = getattr(typer.core.TyperOption, "display_type_rich", None)
if _typer_display_type_rich is not None:
    typer.core.TyperOption.display_type_rich = _flags_without_a_type  # type: ignore[method-assign,assignment]

app = typer.Typer(help="Bulwark: a self-hosted Defender for Endpoint machine-action API.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from bulwark import __version__

        typer.echo(f"bulwark {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Bulwark: a self-hosted Defender for Endpoint machine-action API."""


# Registration order is the order `bulwark --help` lists them in (commands first, then groups).
app.add_typer(server.db_app, name="db")
api.register(app)  # offboard; machines, actions, profile
admin.register(app, device.sensor_app)  # token; tenants ... audit; sensor package
app.add_typer(device.sensor_app, name="sensor")
app.command("sweep")(server.sweep)
app.command("serve")(server.serve)

__all__ = ["app"]
