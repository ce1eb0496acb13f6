"""How a read-only console page is answered: one read in a read-only transaction,
then a template. Shared by the pages of ``pages.py``, ``dag_pages.py`` and ``catalog.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.responses import Response

from tether.hub.core import queries
from tether.hub.state import Hub, get_hub, in_read
from tether.hub.ui.access import SignedIn
from tether.hub.ui.render import page

HubDep = Annotated[Hub, Depends(get_hub)]


def refused(signed: SignedIn, status: int, title: str, message: str, **context: Any) -> Response:
    """The error page, with a reason, for a request the page cannot answer."""
    return page(
        "error.html",
        status,
        title=title,
        message=message,
        user=signed.principal,
        csrf=signed.session.csrf,
        **context,
    )


async def show(
    hub: Hub, signed: SignedIn, template: str, read: Callable[[Session], Any], **context: Any
) -> Response:
    """``read`` in a read-only transaction, drawn with ``template`` as ``data``; a
    missing object is a 404 page and a request that cannot be answered a 400
    page, each saying why."""
    try:
        data = await in_read(hub, read)
    except queries.NotFound as exc:
        return refused(signed, 404, "Not found", str(exc), **context)
    except queries.BadRequest as exc:
        return refused(signed, 400, "Cannot show this", str(exc), **context)
    return page(template, data=data, user=signed.principal, csrf=signed.session.csrf, **context)
