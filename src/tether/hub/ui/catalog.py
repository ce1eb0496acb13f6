"""The console's catalog pages: pools, assets, connections, variables and the
audit log.

Each is the page of a REST read that every role may make (``ViewerAuth`` in
``api/routes.py`` and ``api/secrets.py``), so every signed-in role sees them;
each read is ``core/console_catalog.py``'s, in a read-only transaction.
Connections and variables show names, types, scopes (queues) and
descriptions only: never a value, password or extra, not even to an admin
(``tether`` and the REST API reveal them, audited). The audit log pages by
entry id (``before_id``, as the API does) and filters by actor (exact) and
action (prefix); a filter that cannot be one is shown
beside the form, with 400.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from tether.hub.core import console_catalog
from tether.hub.ui.access import PageSession
from tether.hub.ui.render import page
from tether.hub.ui.view import HubDep, show

router = APIRouter(prefix="/ui", include_in_schema=False)

#: Audit ids are a 32-bit column: PostgreSQL refuses a larger number even in a
#: comparison, so the query refuses it first (as ``GET /api/v1/audit`` does).
MAX_AUDIT_ID = 2**31 - 1
#: A filter typed into the form: checked by the route, so an empty field is no filter.
AuditFilter = Annotated[str, Query(max_length=300)]


@router.get("/pools", response_model=None)
async def pools(hub: HubDep, signed: PageSession) -> Response:
    return await show(hub, signed, "pools.html", console_catalog.pools, section="pools")


@router.get("/assets", response_model=None)
async def assets(hub: HubDep, signed: PageSession) -> Response:
    return await show(hub, signed, "assets.html", console_catalog.assets, section="assets")


@router.get("/connections", response_model=None)
async def connections(hub: HubDep, signed: PageSession) -> Response:
    return await show(
        hub, signed, "connections.html", console_catalog.connections, section="connections"
    )


@router.get("/variables", response_model=None)
async def variables(hub: HubDep, signed: PageSession) -> Response:
    return await show(hub, signed, "variables.html", console_catalog.variables, section="variables")


@router.get("/audit", response_model=None)
async def audit_log(
    hub: HubDep,
    signed: PageSession,
    actor: AuditFilter = "",
    action: AuditFilter = "",
    before_id: Annotated[int | None, Query(ge=1, le=MAX_AUDIT_ID)] = None,
) -> Response:
    by, what = actor.strip() or None, action.strip() or None
    context = {"section": "audit", "actor": actor, "action": action, "before_id": before_id}
    problem = console_catalog.audit_filter_error(by, what)
    if problem is not None:
        return page(
            "audit.html",
            400,
            data={"entries": [], "next_before_id": None},
            problem=problem,
            user=signed.principal,
            csrf=signed.session.csrf,
            **context,
        )
    return await show(
        hub,
        signed,
        "audit.html",
        lambda s: console_catalog.audit_page(s, by, what, before_id),
        problem=None,
        **context,
    )
