"""The console's pages: Jinja2 templates shipped in the package, autoescaped, and the
headers every answer of the console carries.

The Content-Security-Policy allows scripts, styles and images from the gateway itself
only (inline styles too: a previewed email is styled inline), so a page, and an email
previewed in it, cannot load anything from another host; no page may be framed. A
page is never cached: it holds personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # its own form posts, and the origin check could not tell them from forged ones.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def secure(response: Response) -> Response:
    """The console's headers on an answer that is not a page (a redirect, a download)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def when(value: Any) -> str:
    """A moment as operators read it: UTC, to the second."""
    if value in (None, ""):
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def money(value: Mapping[str, Any] | None) -> str:
    if not value:
        return "—"
    try:
        amount = Decimal(str(value["amount"]))
    except (InvalidOperation, KeyError):
        return "—"
    return f"{amount:,.2f} {value.get('currency', '')}".strip()


def number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def p_value(value: float | None) -> str:
    """A p-value as a test reports it: three decimals, and below a thousandth as such
    (a rounded 0.000 reads as certainty)."""
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("resolvers.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        when=when, money=money, number=number, percent=percent, p_value=p_value
    )
    return environment


class Pages:
    """The template environment, built once per process (the app's state)."""

    def __init__(self) -> None:
        self.templates = Jinja2Templates(env=_environment())

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        response = self.templates.TemplateResponse(
            request, name, dict(context), status_code=status_code, headers=dict(headers or {})
        )
        return secure(response)
