"""How console pages are drawn: Jinja2 templates with autoescape on, and the
headers every console answer carries.

Everything a page shows that came from outside (DAG and task ids, logs,
import errors, worker comments) goes through autoescape, and no template
marks such a value safe. The Content-Security-Policy allows only the hub's
own script and style files (``ui/static/``): no inline script or style runs,
so even text that escaped escaping could not execute.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.hub.ui.roles import can

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: Only the hub's own files: no inline script or style, no framing, forms post home.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: Over HTTPS: the browser is to use nothing else for this host, for a year.
HSTS = "max-age=31536000"


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _segment(value: Any) -> str:
    """A value as one URL path segment (``/`` included in the escape)."""
    return quote(str(value), safe="")


def _schedule(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and "assets" in value:
        return "assets: " + ", ".join(value["assets"])
    if isinstance(value, int | float):
        return f"every {_duration(float(value))}"
    return str(value)


ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(
    iso=_iso,
    duration=_duration,
    size=_size,
    pretty_json=_json,
    segment=_segment,
    schedule=_schedule,
)
#: ``can(user, action)``: whether a page shows an action's button (``ui/roles.py``).
ENV.globals["can"] = can
#: The version a worker's Update moves it to: the hub's own (its wheel).
ENV.globals["hub_version"] = __version__


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The template ``name`` drawn with ``context``, as an answer."""
    html = ENV.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


class ConsoleHeaders:
    """ASGI middleware: the console's security headers on every answer under /ui
    (pages, redirects, the log stream, static files), and HSTS on those served
    over HTTPS (the hub's own TLS, or a proxy it trusts that says so): the
    browser then never sends the session cookie in the clear to this host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith("/ui/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if scope.get("scheme") == "https":
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, with_headers)
