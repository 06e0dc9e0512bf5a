"""``--data-dir`` and ``--database-url`` for the commands that work straight on the server's database."""

# No `from __future__ import annotations`: typer reads the parameter annotations at run time.

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Settings (pydantic-settings) load when a command runs, not when `bulwark --help` does.
if TYPE_CHECKING:
    from bulwark.settings import Settings

DATABASE_PANEL = "Database"

_PARAMETERS: list[tuple[str, Any]] = [
    (
        "data_dir",
        Annotated[
            Path | None,
            typer.Option(
                "--data-dir",
                metavar="DIR",
                rich_help_panel=DATABASE_PANEL,
                help="The server's data directory (default: BULWARK_DATA_DIR, else .bulwark).",
            ),
        ],
    ),
    (
        "database_url",
        Annotated[
            str | None,
            typer.Option(
                "--database-url",
                metavar="URL",
                rich_help_panel=DATABASE_PANEL,
                help="The server's database (default: BULWARK_DATABASE_URL, else SQLite in the data directory).",
            ),
        ],
    ),
]

# What the running command was given; read by `command_settings`.
_given: dict[str, Any] = {}


def command_settings() -> "Settings":
    """Settings from the environment, with this command's --data-dir and --database-url on top."""
    from bulwark.settings import Settings

    return Settings(**{name: value for name, value in _given.items() if value is not None})


def with_database_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add --data-dir and --database-url to a command; ``command_settings()`` honours them."""
    # Resolve annotations written as strings (modules with `from __future__ import annotations`) in
    # the command's own module, since typer reads them from the wrapper.
    hints = typing.get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    signature = signature.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    )
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)
        for name, annotation in _PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        _given.clear()
        _given.update({name: kwargs.pop(name) for name, _ in _PARAMETERS})
        command(**kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**hints, **dict(_PARAMETERS)}
    return wrapper
