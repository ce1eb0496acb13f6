"""FastAPI dependencies that hand routes the principal the gate found.

Credentials are checked once, before the body is read, by
:class:`tether.hub.auth.gate.AuthGate`; these dependencies only take its
result from the request scope (and refuse, should a route ever be reached
without the gate).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from tether.hub.auth.gate import ADMIN, PRINCIPAL, WorkerIdentity
from tether.hub.state import Hub, get_hub
from tether.protocol import SESSION_HEADER

__all__ = ["AdminAuth", "HubDep", "WorkerAuth", "WorkerIdentity"]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_admin(request: Request) -> None:
    if request.scope.get(PRINCIPAL) != ADMIN:
        raise _unauthorized("invalid token")


async def require_worker(request: Request) -> WorkerIdentity:
    """The worker whose credential the request carries, with the session it presents."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, WorkerIdentity):
        raise _unauthorized("invalid worker credential")
    return replace(principal, presented_session=request.headers.get(SESSION_HEADER))


AdminAuth = Depends(require_admin)
WorkerAuth = Annotated[WorkerIdentity, Depends(require_worker)]
HubDep = Annotated[Hub, Depends(get_hub)]
