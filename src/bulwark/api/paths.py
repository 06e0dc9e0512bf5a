"""Route matching as the live service does it: literal path segments in any case, with or without a trailing slash.

Published clients send ``/api/machines/{id}/machineActions`` and ``/api/machineactions/?$filter=...``.
Rather than a redirect (which some clients follow without their Authorization header), the path is
rewritten to the route's own spelling before routing: literal segments take the template's case,
parameter segments (ids, DNS names) and the query string are left exactly as sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

_PARAM = re.compile(r"^\{[^{}]+\}$")

# A template as its segments: the literal's lower-case spelling and itself, or None for a parameter.
_Template = tuple[tuple[str, str] | None, ...]


def _template(path: str) -> _Template | None:
    """The segments of a route path, or None if a segment mixes literal text and parameters."""
    segments: list[tuple[str, str] | None] = []
    for segment in path.strip("/").split("/"):
        if _PARAM.match(segment):
            segments.append(None)
        elif "{" in segment or "}" in segment:
            return None
        else:
            segments.append((segment.lower(), segment))
    return tuple(segments)


def _route_paths(routes: Sequence[BaseRoute]) -> list[str]:
    """The full path of every route, included routers' prefixes applied; mounts (prefix matches) left out."""
    try:  # FastAPI >= 0.160 keeps included routers as branches and resolves them here
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI flattens included routes into the app's list
        return [
            path for route in routes if not isinstance(route, Mount) and isinstance(path := getattr(route, "path", None), str)
        ]
    return [
        context.path
        for context in iter_route_contexts(routes)
        if not isinstance(context.original_route, Mount) and isinstance(context.path, str)
    ]


class PathTable:
    """The known route templates, by segment count, most literal segments first."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        by_length: dict[int, list[_Template]] = {}
        exact: set[str] = set()
        for path in _route_paths(routes):
            template = _template(path)
            if template is None:
                continue
            if all(segment is not None for segment in template):
                exact.add(path)
            by_length.setdefault(len(template), []).append(template)
        for templates in by_length.values():
            # Prefer the most specific template, as Starlette's own ordering would for exact paths.
            templates.sort(key=lambda t: -sum(segment is not None for segment in t))
        self._by_length = by_length
        self._exact = exact

    def canonical(self, path: str) -> str | None:
        """The path spelled as its route's template spells it, or None when no route has its shape."""
        if path in self._exact:
            return None
        segments = path.strip("/").split("/")
        for template in self._by_length.get(len(segments), ()):
            rebuilt = []
            for sent, expected in zip(segments, template, strict=True):
                if expected is None:
                    if not sent:
                        break
                    rebuilt.append(sent)
                elif sent.lower() == expected[0]:
                    rebuilt.append(expected[1])
                else:
                    break
            else:
                canonical = "/" + "/".join(rebuilt)
                return canonical if canonical != path else None
        return None


class CaseInsensitivePathMiddleware:
    """Rewrite ``scope["path"]`` to the matching route's spelling; unknown paths pass unchanged (404)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = routes
        self._table: PathTable | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._table is None:  # every route is registered by the first request
                self._table = PathTable(self._routes)
            canonical = self._table.canonical(scope["path"])
            if canonical is not None:
                scope["path"] = canonical  # raw_path keeps what the client sent, for the access log
        await self.app(scope, receive, send)
