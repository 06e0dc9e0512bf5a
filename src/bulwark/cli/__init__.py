"""The ``bulwark`` command, its sub-commands arranged by who runs them.

- ``server``: the operator on the server host (``serve``, ``db``, ``sweep``).
- ``admin``: an operator with database access (tenants, apps, users, roles, groups, keys, ``token``,
  ``audit``, and ``sensor package`` to issue device packages).
- ``api``: a user of the API, from anywhere (``offboard``, ``machines``, ``actions``, ``profile``).
- ``device``: the device program (``sensor run | offboard | fleet``).

Importing this package stays cheap: each command imports what it needs when it runs.
"""

from typing import Annotated, Any

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


class _CoercionOnceThereIsAValue:
    """Typer's coercion of a parameter, built only when the parameter has a value to coerce.

    Typer builds a pydantic validator for every parameter it processes, even one without a value
    (for which it then returns None): `bulwark machines --help` would load pydantic, a tenth of a
    second, only to learn that --install-completion was not given.
    """

    def __init__(self, parameter: Any) -> None:
        self._parameter = parameter

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # what typer's own coercion answers for a missing value
            return () if param.multiple or param.nargs == -1 else None
        assert _typer_build_runtime_param is not None  # installed only when typer has it
        built = self._parameter._runtime_param = _typer_build_runtime_param(self._parameter.type_descriptor)
        return built.coerce(value, param=param, ctx=ctx)


def _coercion_once_there_is_a_value(parameter: Any) -> Any:
    return parameter._runtime_param or _CoercionOnceThereIsAValue(parameter)


_typer_parameter = getattr(typer.core, "_TyperParameter", None)
_typer_build_runtime_param = getattr(typer.core, "build_runtime_param", None)
if _typer_build_runtime_param is not None and hasattr(_typer_parameter, "get_runtime_param"):
    _typer_parameter.get_runtime_param = _coercion_once_there_is_a_value  # type: ignore[union-attr]

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
