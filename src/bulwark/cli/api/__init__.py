"""The commands a user of the API runs from any machine: offboard, machines, actions, profile.

They talk to a Bulwark (or Defender for Endpoint) server over HTTPS through the SDK and never touch
a database.
"""

import typer

from bulwark.cli.api.actions import actions_app
from bulwark.cli.api.machines import machines_app
from bulwark.cli.api.offboard import offboard
from bulwark.cli.api.profile import profile_app


def register(app: typer.Typer) -> None:
    """Add offboard, machines, actions and profile to the `bulwark` command."""
    app.command("offboard")(offboard)
    app.add_typer(machines_app, name="machines")
    app.add_typer(actions_app, name="actions")
    app.add_typer(profile_app, name="profile")
