"""One page of a list query's result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items, whether more follow, and the total when $count asked for it."""

    items: list[T]
    has_more: bool
    total: int | None = None
    # Where the next page starts ($skiptoken), when the list is in its default order.
    next_token: str | None = None
