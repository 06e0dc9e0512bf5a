"""One page of a list query's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items, whether more follow, and the total when $count asked for it."""

    items: list[T]
    has_more: bool
    total: int | None = None
    # Where the next page starts ($skiptoken), when the list is in its default order.
    next_token: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMachines:
    """One page of machines as the database stores them: for rendering without building each machine.

    ``rows`` hold the columns ``keys`` (the machine's fields but its tags, and ``rbac_group_name``)
    as the driver returns them; ``processors`` turn each column's value into the machine field's
    (None where it already is), and ``tags`` holds each machine's tags by id, in tag order.
    """

    keys: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    processors: tuple[Callable[[Any], Any] | None, ...]
    tags: dict[str, list[str]]
    has_more: bool
    total: int | None = None
    next_token: str | None = None
