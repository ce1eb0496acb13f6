"""REST routes for named API tokens (``/api/v1/tokens``), all admin-only.

A token is shown once, in the answer that creates it; the hub keeps its
SHA-256 only (``hub/core/api_tokens.py``). Creating and revoking are audited
in the same transaction as the change; a revoked token is refused from the
next request on (the gate looks every token up, ``auth/principal.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from sqlalchemy.orm import Session

from tether.hub.api import answers as A
from tether.hub.auth.deps import AdminAuth, HubDep
from tether.hub.auth.gate import who
from tether.hub.core import api_tokens
from tether.hub.errors import responses as E
from tether.hub.state import in_read, in_session
from tether.hub.wire import StrictJSONRoute

router = APIRouter(prefix="/api/v1", tags=["tokens"], route_class=StrictJSONRoute)

#: Checked by :func:`api_tokens.validate_name` in the route, for its reason; a
#: ``:path`` parameter, so a name with ``/`` gets that reason too, not a 404.
TokenName = Annotated[str, Path(max_length=1000)]


class ApiTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(max_length=1000)
    role: StrictStr = Field(max_length=100)
    #: How long it lives (``12h``, ``30d``, ``1y``); None: it never expires.
    expires: StrictStr | None = Field(default=None, max_length=100)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return api_tokens.validate_name(value)

    @field_validator("role")
    @classmethod
    def _valid_role(cls, value: str) -> str:
        return api_tokens.parse_role(value).value

    @field_validator("expires")
    @classmethod
    def _valid_expiry(cls, value: str | None) -> str | None:
        if value is not None:
            api_tokens.parse_lifetime(value)
        return value


@router.post(
    "/tokens",
    dependencies=[AdminAuth],
    status_code=status.HTTP_201_CREATED,
    response_model=A.ApiToken,
    responses=E(409),
)
async def create_api_token(body: ApiTokenIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """A new named token with a role. The answer holds the token; nothing else ever will."""
    by = who(request)
    role = api_tokens.Role(body.role)
    lifetime = api_tokens.parse_lifetime(body.expires) if body.expires is not None else None

    def create(s: Session) -> dict[str, Any]:
        token, listed = api_tokens.create(s, body.name, role, lifetime, by)
        return {**listed, "token": token}

    return await in_session(hub, create)


@router.get("/tokens", dependencies=[AdminAuth], response_model=A.ApiTokenList)
async def list_api_tokens(hub: HubDep) -> dict[str, Any]:
    """The built-in admin token and every named one, with their state; no secrets."""
    return {"tokens": await in_read(hub, api_tokens.list_tokens)}


@router.post(
    "/tokens/{name:path}/revoke",
    dependencies=[AdminAuth],
    response_model=A.ApiTokenRow,
    responses=E(404),
)
async def revoke_api_token(name: TokenName, request: Request, hub: HubDep) -> dict[str, Any]:
    """Revoke a named token: the next request with it gets 401 "token revoked"."""
    api_tokens.validate_name(name)
    by = who(request)
    return await in_session(hub, lambda s: api_tokens.revoke(s, name, by))
