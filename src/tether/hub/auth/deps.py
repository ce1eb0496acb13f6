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

from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant

from tether.hub.auth.gate import PRINCIPAL, WorkerIdentity
from tether.hub.auth.principal import Principal
from tether.hub.core.api_tokens import Role
from tether.hub.state import Hub, get_hub
from tether.protocol import SESSION_HEADER

__all__ = [
    "AdminAuth",
    "HubDep",
    "OperatorAuth",
    "RoleCheck",
    "ViewerAuth",
    "WorkerAuth",
    "WorkerIdentity",
    "principal_of",
    "role_needed",
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


@dataclass(frozen=True)
class RoleCheck:
    """A dependency that passes a principal whose role includes ``needed``.

    A class rather than a closure so that the OpenAPI documents can read the
    role a route needs off the route itself (:func:`role_needed`), and state
    it there: the documents cannot then say other than what is enforced.
    """

    needed: Role

    async def __call__(self, request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.may(self.needed):
            raise forbidden(principal, self.needed)
        return principal


def role_needed(dependant: Dependant) -> Role | None:
    """The role the route of ``dependant`` checks (None: it checks none), at any depth."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RoleCheck):
            return dependency.call.needed
        if (found := role_needed(dependency)) is not None:
            return found
    return None


async def require_worker(request: Request) -> WorkerIdentity:
    """The worker whose credential the request carries, with the session it presents."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, WorkerIdentity):
        raise _unauthorized("invalid worker credential")
    return replace(principal, presented_session=request.headers.get(SESSION_HEADER))


#: The names of the credentials the gate checks, as the OpenAPI documents'
#: security schemes call them (``hub/openapi.py``).
API_TOKEN = "apiToken"
WORKER_CREDENTIAL = "workerCredential"
WORKER_SESSION = "workerSession"
ATTEMPT_TOKEN = "attemptToken"
#: What a route bound to the calling process's session declares (heartbeat, poll).
SESSION_BOUND: dict[str, Any] = {"security": [{WORKER_CREDENTIAL: [], WORKER_SESSION: []}]}

#: Reads: every GET but a secret's value.
ViewerAuth = Depends(RoleCheck(Role.VIEWER))
#: Running things: trigger, backfill, clear, mark, pause, asset events, maintenance.
OperatorAuth = Depends(RoleCheck(Role.OPERATOR))
#: Everything else that changes the hub.
AdminAuth = Depends(RoleCheck(Role.ADMIN))
WorkerAuth = Annotated[WorkerIdentity, Depends(require_worker)]
HubDep = Annotated[Hub, Depends(get_hub)]
