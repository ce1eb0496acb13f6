"""FastAPI dependencies that hand routes the principal the gate found.

Credentials are checked once, before the body is read, by
:class:`tether.hub.auth.gate.AuthGate`; these dependencies only take its
result from the request scope (and refuse, should a route ever be reached
without the gate).

Every REST route but ``/health`` declares the role it needs with exactly one
of :data:`ViewerAuth`, :data:`OperatorAuth` and :data:`AdminAuth`: the one
place roles are enforced. A principal without the role gets 403 naming the
role needed. The table of which route needs which role is in docs/api.md,
"Roles", and ``tests/integration/test_roles.py`` walks every route against it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from tether.hub.auth.gate import PRINCIPAL, WorkerIdentity
from tether.hub.auth.principal import Principal
from tether.hub.core.api_tokens import Role
from tether.hub.state import Hub, get_hub
from tether.protocol import SESSION_HEADER

__all__ = [
    "AdminAuth",
    "HubDep",
    "OperatorAuth",
    "ViewerAuth",
    "WorkerAuth",
    "WorkerIdentity",
    "principal_of",
]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"}
    )


def principal_of(request: Request) -> Principal:
    """The REST principal the gate found for ``request`` (401 if there is none)."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise _unauthorized("invalid token")
    return principal


def forbidden(principal: Principal, needed: Role, what: str = "this") -> HTTPException:
    """The 403 for ``principal``, which lacks ``needed``: it names the role needed."""
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"{what} needs the {needed} role; the token {principal.name!r} has the "
        f"{principal.role} role",
    )


def requires(needed: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that passes a principal whose role includes ``needed``."""

    async def check(request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.may(needed):
            raise forbidden(principal, needed)
        return principal

    check.__name__ = f"require_{needed}"
    return check


async def require_worker(request: Request) -> WorkerIdentity:
    """The worker whose credential the request carries, with the session it presents."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, WorkerIdentity):
        raise _unauthorized("invalid worker credential")
    return replace(principal, presented_session=request.headers.get(SESSION_HEADER))


#: Reads: every GET but a secret's value.
ViewerAuth = Depends(requires(Role.VIEWER))
#: Running things: trigger, backfill, clear, mark, pause, asset events, maintenance.
OperatorAuth = Depends(requires(Role.OPERATOR))
#: Everything else that changes the hub.
AdminAuth = Depends(requires(Role.ADMIN))
WorkerAuth = Annotated[WorkerIdentity, Depends(require_worker)]
HubDep = Annotated[Hub, Depends(get_hub)]
