"""Keyset (seek) paging: ``@odata.nextLink`` carries the last row's position, not a row count.

``$skip=90000`` makes the database read and throw away 90,000 rows; a position lets it seek
straight to the next row through the index that serves the order, so every page costs what the
first one does. The position is an opaque ``$skiptoken``: base64url of a JSON list naming the
list it belongs to and the last row's sort-key values. It is decoded strictly (shape, length and
type of every value) and its values only ever reach SQL as bound parameters; anything else is a
400 ODataError, never a query.

Positions are used for lists in their default order (the common case: a client following next
links). A client's own ``$orderby`` pages with ``$skip`` as before.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from bulwark.domain.errors import InvalidODataQuery

# A token longer than this is refused before it is decoded.
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class SeekKey:
    """One key of a list's default order: its column, its direction, and how its values travel."""

    column: ColumnElement[Any]
    descending: bool
    kind: type  # str or datetime


@dataclass(frozen=True)
class SeekOrder:
    """A list's default order as seek keys; ``name`` ties a token to the list that issued it."""

    name: str
    keys: tuple[SeekKey, ...]

    def position_of(self, row: Mapping[Any, Any]) -> str:
        """The token for the position just after ``row`` (a result row mapping, keyed by column name)."""
        values: list[Any] = [self.name]
        for key in self.keys:
            value = row[key.column.key]
            values.append(_as_utc(value).isoformat() if key.kind is datetime else value)
        raw = json.dumps(values, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def after(self, token: str) -> ColumnElement[bool]:
        """The SQL condition for rows after the position in ``token``; ODataError if it is not one of ours."""
        values = self._decode(token)
        # (k1, k2, ...) after (v1, v2, ...) in the order's directions, spelled out so that it works
        # with mixed directions and lets the database seek on the index's leading key.
        alternatives = []
        for i, key in enumerate(self.keys):
            equal_before = [self.keys[j].column == values[j] for j in range(i)]
            beyond = key.column < values[i] if key.descending else key.column > values[i]
            alternatives.append(and_(*equal_before, beyond))
        first = self.keys[0]
        # The same condition, plus a bound on the leading key alone, which the planner can seek
        # with (it does not see a range through the OR).
        bound = first.column <= values[0] if first.descending else first.column >= values[0]
        return and_(bound, or_(*alternatives))

    def _decode(self, token: str) -> list[Any]:
        invalid = InvalidODataQuery("Invalid value for $skiptoken: use the @odata.nextLink of a previous page as it is.")
        if len(token) > MAX_TOKEN_LENGTH:
            raise invalid
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise invalid from None
        if not isinstance(data, list) or len(data) != len(self.keys) + 1 or data[0] != self.name:
            raise invalid
        values: list[Any] = []
        for key, value in zip(self.keys, data[1:], strict=True):
            if not isinstance(value, str) or len(value) > 200:
                raise invalid
            if key.kind is datetime:
                try:
                    parsed = datetime.fromisoformat(value)
                except ValueError:
                    raise invalid from None
                if parsed.tzinfo is None:
                    raise invalid
                values.append(parsed.astimezone(UTC))
            else:
                values.append(value)
        return values


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def seek_order(name: str, keys: Sequence[tuple[ColumnElement[Any], bool, type]]) -> SeekOrder:
    """A SeekOrder from (column, descending, kind) triples."""
    return SeekOrder(name, tuple(SeekKey(column, descending, kind) for column, descending, kind in keys))
