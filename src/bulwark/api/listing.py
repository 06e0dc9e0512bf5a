"""OData list responses: parsing query options, projecting $select, and @odata.nextLink paging."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from bulwark import odata
from bulwark.api.deps import public_base
from bulwark.api.wire import json_response
from bulwark.bootstrap import Runtime
from bulwark.domain.errors import InvalidODataQuery
from bulwark.odata import Page

# Characters left as they are in next links, so they read like the live service's ($skip, quotes).
_LINK_SAFE = "$,()':"


# Clients repeat the same queries (a dashboard polling a filter, a script paging): each query
# string is parsed once. Longer ones than this are parsed every time, so the cache stays small.
_CACHED_QUERY_BYTES = 2048


@lru_cache(maxsize=256)
def _parse_cached(query_string: bytes, spec: odata.EntitySpec) -> odata.ODataQuery:
    # The same parameters Starlette gives ``request.query_params`` (parse errors are not cached).
    return odata.parse_query(QueryParams(query_string), spec)


def parse_odata(request: Request, spec: odata.EntitySpec) -> odata.ODataQuery:
    """The request's OData options, validated against ``spec``; invalid ones are 400 with code ODataError."""
    query_string: bytes = request.scope.get("query_string", b"")
    try:
        if len(query_string) <= _CACHED_QUERY_BYTES:
            return _parse_cached(query_string, spec)
        return odata.parse_query(request.query_params, spec)
    except odata.ODataParseError as exc:
        raise InvalidODataQuery(f"Invalid OData URI query: {exc.message}") from None


def next_link(request: Request, base: str, query: odata.ODataQuery, token: str | None = None) -> str:
    """The URL of the page after this one: the same query from ``token`` (the position after this
    page, for lists in their default order), or with $skip moved past this page."""
    query_string: bytes = request.scope.get("query_string", b"")
    skip = None if token is not None else query.skip + query.page_size
    if len(query_string) <= _CACHED_QUERY_BYTES:
        return _next_link_cached(base, request.url.path, query_string, token, skip)
    return _next_link(base, request.url.path, request.query_params, token, skip)


def _next_link(base: str, path: str, params: QueryParams, token: str | None, skip: int | None) -> str:
    kept = [(k, v) for k, v in params.multi_items() if k.lower() not in ("$skip", "$skiptoken")]
    kept.append(("$skiptoken", token) if token is not None else ("$skip", str(skip)))
    return f"{base}{path}?{urlencode(kept, safe=_LINK_SAFE)}"


@lru_cache(maxsize=256)
def _next_link_cached(base: str, path: str, query_string: bytes, token: str | None, skip: int | None) -> str:
    # Clients that repeat a query get the same next link: it is built once.
    return _next_link(base, path, QueryParams(query_string), token, skip)


def list_response(
    request: Request, runtime: Runtime, spec: odata.EntitySpec, entity_set: str, fetch: Callable, render: Callable
) -> Response:
    """One page of an OData list: parse the options, ``fetch(query)`` the page, render the envelope."""
    query = parse_odata(request, spec)
    page = fetch(query)
    base = public_base(request, runtime)
    context = f"{base}/api/$metadata#{entity_set}"
    return json_response(collection_body(request, base, context, page, query, render))


def collection_body(
    request: Request, base: str, context: str, page: Page[Any], query: odata.ODataQuery, render
) -> dict[str, Any]:
    """``{"@odata.context", ["@odata.count"], "value", ["@odata.nextLink"]}`` for one page."""
    items = [render(item) for item in page.items]
    if query.select is not None:
        chosen = query.select
        items = [{name: item[name] for name in chosen} for item in items]
    body: dict[str, Any] = {"@odata.context": context}
    if page.total is not None:
        body["@odata.count"] = page.total
    body["value"] = items
    if page.has_more:
        body["@odata.nextLink"] = next_link(request, base, query, page.next_token)
    return body
