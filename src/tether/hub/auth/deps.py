"""FastAPI dependencies that check bearer tokens and worker credentials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status

from tether.hub.auth import credentials
from tether.hub.state import Hub, get_hub
from tether.protocol import SESSION_HEADER


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return authorization[7:].strip()


def require_admin(
    hub: Annotated[Hub, Depends(get_hub)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    if not hub.tokens.is_admin(_bearer(authorization)):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
        )


@dataclass(frozen=True)
class WorkerIdentity:
    """The worker a credential belongs to, as of this request."""

    name: str
    credential_hash: str
    allowed_queues: tuple[str, ...]
    #: The session the request claims to be part of (X-Tether-Session).
    presented_session: str | None


def require_worker(
    hub: Annotated[Hub, Depends(get_hub)],
    authorization: Annotated[str | None, Header()] = None,
    session_id: Annotated[str | None, Header(alias=SESSION_HEADER)] = None,
) -> WorkerIdentity:
    """The worker whose credential the request carries (a sync dependency: runs in a thread)."""
    presented = _bearer(authorization)
    try:
        with hub.store.session() as s:
            worker = credentials.authenticate(s, presented)
            assert worker.credential_hash is not None
            return WorkerIdentity(
                worker.name,
                worker.credential_hash,
                tuple(worker.allowed_queues),
                session_id,
            )
    except credentials.InvalidCredential as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None


AdminAuth = Depends(require_admin)
WorkerAuth = Annotated[WorkerIdentity, Depends(require_worker)]
HubDep = Annotated[Hub, Depends(get_hub)]
