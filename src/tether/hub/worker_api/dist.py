"""The worker's wheel for download: ``/api/worker/v1/dist/`` and a PEP 503 index.

So a machine with pip and the hub's address, and no registry that carries
Tether, installs the worker of the hub's own version::

    pip install https://HUB/api/worker/v1/dist/tether-VERSION-py3-none-any.whl
    pip install --index-url https://HUB/simple tether

The index lists that one file, with its ``#sha256=`` and Requires-Python;
the worker's dependencies (httpx, jinja2) come from wherever the machine's
pip gets packages. The wheel itself is made by :mod:`tether.hub.dist`.

These routes are public unless ``TETHER_PUBLIC_DIST=0``: the gate
(``auth/gate.py: DIST_PATHS``) lets exactly these paths through, GET and
HEAD only, and answers 404 for any other path below them, so a route added
here later is not public by accident. Each route checks its name again.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status

from tether.hub.auth.deps import HubDep
from tether.hub.dist import DistUnavailable, WorkerWheel
from tether.hub.errors import ErrorAnswer
from tether.hub.errors import responses as E
from tether.hub.state import Hub
from tether.protocol import DIST_PREFIX, SIMPLE_INDEX, SIMPLE_PROJECT, DistFile, DistListing

router = APIRouter(tags=["dist"])

#: What pip accepts for a simple index page (PEP 503; PEP 691 names it so).
SIMPLE_HTML = "text/html; charset=utf-8"
#: A wheel is a zip, and nothing a browser should open.
WHEEL_TYPE = "application/octet-stream"
#: Clients may keep a copy but ask again: a source checkout's wheel changes
#: without a new version, and the ETag (its sha256) says when it did.
CACHE_CONTROL = "no-cache"


async def _wheel(hub: Hub) -> WorkerWheel:
    try:
        return await hub.dist.wheel()
    except DistUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the hub has no worker wheel to serve: {exc}",
            headers={"Retry-After": "60"},
        ) from None


def _answer(request: Request, body: bytes, media_type: str, etag: str) -> Response:
    """``body`` with its length and ETag; for HEAD the headers only; 304 when
    the client's copy (If-None-Match) is this one."""
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    matches = request.headers.get("if-none-match", "")
    if etag in (tag.strip() for tag in matches.split(",")) or matches.strip() == "*":
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Content-Length"] = str(len(body))
    content = b"" if request.method == "HEAD" else body
    return Response(content, media_type=media_type, headers=headers)


def _etag(wheel: WorkerWheel, what: str) -> str:
    return f'"{what}-{wheel.sha256}"'


#: A client's copy that is still the hub's (``If-None-Match``): no body.
NOT_MODIFIED: dict[str, Any] = {"description": "the client's copy (`If-None-Match`) is current"}
NO_WHEEL: dict[str, Any] = {
    "model": ErrorAnswer,
    "description": "the hub has no worker wheel to serve (the reason says why; `Retry-After`)",
}


@router.get(
    DIST_PREFIX,
    summary="The worker's wheel, listed",
    response_class=Response,
    responses={
        200: {"model": DistListing, "description": "the hub's version and its one wheel"},
        304: NOT_MODIFIED,
        503: NO_WHEEL,
    },
)
@router.head(DIST_PREFIX, include_in_schema=False)
async def listing(request: Request, hub: HubDep) -> Response:
    """JSON: the hub's version and its one wheel, with URL, size and sha256."""
    wheel = await _wheel(hub)
    body = DistListing(
        version=wheel.version,
        files=[
            DistFile(
                filename=wheel.filename,
                url=f"{DIST_PREFIX}{wheel.filename}",
                size=len(wheel.data),
                sha256=wheel.sha256,
                requires_python=wheel.requires_python,
            )
        ],
    )
    data = json.dumps(body.to_wire(), indent=2).encode() + b"\n"
    return _answer(request, data, "application/json", _etag(wheel, "listing"))


@router.get(
    DIST_PREFIX + "{filename}",
    summary="The worker's wheel",
    response_class=Response,
    responses={
        200: {
            "description": "the wheel, for pip",
            "content": {WHEEL_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        304: NOT_MODIFIED,
        **E(404),
        503: NO_WHEEL,
    },
)
@router.head(DIST_PREFIX + "{filename}", include_in_schema=False)
async def wheel_file(filename: str, request: Request, hub: HubDep) -> Response:
    """The wheel of the hub's own version; any other name is 404."""
    if filename != hub.dist.filename:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    wheel = await _wheel(hub)
    return _answer(request, wheel.data, WHEEL_TYPE, f'"{wheel.sha256}"')


@router.api_route(SIMPLE_INDEX, methods=["GET", "HEAD"], include_in_schema=False)
async def simple_root(request: Request, hub: HubDep) -> Response:
    """The PEP 503 root: one project."""
    page = _page("Simple index", '<a href="tether/">tether</a>')
    return _answer(request, page, SIMPLE_HTML, f'"simple-{hub.dist.version}"')


@router.api_route(SIMPLE_PROJECT, methods=["GET", "HEAD"], include_in_schema=False)
async def simple_project(request: Request, hub: HubDep) -> Response:
    """The PEP 503 project page of ``tether``: the wheel, relative to this page
    (so a hub behind a proxy's path prefix still works), with its hash."""
    wheel = await _wheel(hub)
    href = f"../..{DIST_PREFIX}{wheel.filename}#sha256={wheel.sha256}"
    requires = (
        f' data-requires-python="{html.escape(wheel.requires_python)}"'
        if wheel.requires_python
        else ""
    )
    link = f'<a href="{html.escape(href)}"{requires}>{html.escape(wheel.filename)}</a>'
    return _answer(request, _page("Links for tether", link), SIMPLE_HTML, _etag(wheel, "simple"))


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.0">'
        f"<title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{body}\n</body></html>\n"
    ).encode()
