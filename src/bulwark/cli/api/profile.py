"""`bulwark profile`: named connection profiles, kept in the config file."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time,
# including those this module adds to every command's signature.

from pathlib import Path
from typing import Annotated

import typer

from bulwark.cli.api.connection import config_path
from bulwark.cli.api.output import (
    JsonOption,
    details_table,
    print_json,
    reporting_errors,
    stderr,
    stdout,
)
from bulwark.cli.tables import emit
from bulwark.client.config import (
    ConnectionSettings,
    load_profile,
    read_config,
    redacted,
    save_profile,
)
from bulwark.client.errors import (
    ConfigurationError,
)

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
        emit(details_table(shown), stdout)


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
    from rich import box
    from rich.table import Table

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
    emit(table, stdout)
    stderr.print(f"Profiles in {path}")
