"""Server-rendered pages: one Jinja2 environment (autoescaped), and the headers every page carries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"

_env = Environment(
    loader=FileSystemLoader(PACKAGE_DIR / "templates"),
    # Every value is escaped, whatever the template: user input, device names, comments.
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


_env.filters["when"] = _when


def security_headers(form_targets: Iterable[str] = ()) -> dict[str, str]:
    """Headers for every HTML page: no framing, no inline script, no caching of what a user saw."""
    form_action = " ".join(["'self'", *form_targets])
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action {form_action}"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def render(
    template: str,
    status_code: int = 200,
    *,
    form_targets: Iterable[str] = (),
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with ``context`` into a response with the security headers."""
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code, headers={**security_headers(form_targets), **(headers or {})})
