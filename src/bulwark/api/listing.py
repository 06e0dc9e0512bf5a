"""OData list responses: parsing query options, projecting $select, and @odata.nextLink paging."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import Response

from bulwark import odata
from bulwark.api.deps import odata_base
from bulwark.api.wire import json_response
from bulwark.bootstrap import Runtime
from bulwark.domain.errors import InvalidODataQuery
from bulwark.odata import Page

# Characters left as they are in next links, so they read like the live service's ($skip, quotes).
_LINK_SAFE = "$,()':"


def parse_odata(request: Request, spec: odata.EntitySpec) -> odata.ODataQuery:
    """The request's OData options, validated against ``spec``; invalid ones are 400 with code ODataError."""
    try:
        return odata.parse_query(request.query_params, spec)
    except odata.ODataParseError as exc:
        raise InvalidODataQuery(f"Invalid OData URI query: {exc.message}") from None


def next_link(request: Request, query: odata.ODataQuery, token: str | None = None) -> str:
    """The URL of the page after this one: the same query from ``token`` (the position after this
    page, for lists in their default order), or with $skip moved past this page."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k.lower() not in ("$skip", "$skiptoken")]
    if token is not None:
        params.append(("$skiptoken", token))
    else:
        params.append(("$skip", str(query.skip + query.page_size)))
    path = str(request.url).split("?", 1)[0]
    return f"{path}?{urlencode(params, safe=_LINK_SAFE)}"


def list_response(
    request: Request, runtime: Runtime, spec: odata.EntitySpec, entity_set: str, fetch: Callable, render: Callable
) -> Response:
    """One page of an OData list: parse the options, ``fetch(query)`` the page, render the envelope."""
    query = parse_odata(request, spec)
    page = fetch(query)
    context = f"{odata_base(request, runtime)}#{entity_set}"
    return json_response(collection_body(request, context, page, query, render))


def collection_body(request: Request, context: str, page: Page[Any], query: odata.ODataQuery, render) -> dict[str, Any]:
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
        body["@odata.nextLink"] = next_link(request, query, page.next_token)
    return body
