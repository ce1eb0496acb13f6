"""FastAPI dependencies that check bearer tokens."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status

from tether.hub.state import Hub, get_hub
from tether.protocol import WORKER_NAME_HEADER

_WORKER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,249}")


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


def require_worker(
    hub: Annotated[Hub, Depends(get_hub)],
    authorization: Annotated[str | None, Header()] = None,
    worker_name: Annotated[str | None, Header(alias=WORKER_NAME_HEADER)] = None,
) -> str:
    """The calling worker's name, once its token checks out."""
    if not hub.tokens.is_worker(_bearer(authorization)):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    if not worker_name or not _WORKER_NAME_RE.fullmatch(worker_name):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"header {WORKER_NAME_HEADER} must name the worker (1 to 250 letters, digits, "
            "'.', '_', '-', ':', '@')",
        )
    return worker_name


AdminAuth = Depends(require_admin)
WorkerName = Annotated[str, Depends(require_worker)]
HubDep = Annotated[Hub, Depends(get_hub)]
