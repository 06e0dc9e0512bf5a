"""Tables for people at a terminal, and tab-separated values for pipes and files."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(str(cell)).plain if isinstance(cell, str) else str(cell)


def emit(table: Table, console: Console) -> None:
    """Draw ``table`` on a terminal; elsewhere write it as tab-separated lines with full values.

    Piped or captured output has no width to fit, so rich would squeeze columns to 80 characters
    and cut ids with an ellipsis; ``cut -f``, ``awk -F'\\t'`` and spreadsheets want every value whole.
    """
    if console.is_terminal:
        console.print(table)
        return
    columns = table.columns
    lines = []
    if table.show_header:
        lines.append("\t".join(_plain(column.header) for column in columns))
    for index in range(table.row_count):
        lines.append("\t".join(_plain(column._cells[index]).replace("\t", " ").replace("\n", " ") for column in columns))
    out = console.file if console.file is not None else sys.stdout
    out.write("".join(line + "\n" for line in lines))
    out.flush()
