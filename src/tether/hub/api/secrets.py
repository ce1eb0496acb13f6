"""REST routes for connections, variables and the key that encrypts them
(``/api/v1/connections``, ``/api/v1/variables``, ``/api/v1/secrets``).

Thin as the others: a strict body, one store function (``hub/core/vault.py``)
and its audit entry in one transaction, the answer. A password, an extra or a
secret variable's value is never in a listing; a single one shows it only with
``?reveal=true``, which needs the admin role (a viewer may read the rest),
and leaves an audit entry. Without ``reveal`` a connection's extra is shown
with every value under a key that looks secret as ``***`` (the words the task
log masker uses): an extra often holds an API key, and a viewer reads it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tether.hub.api import answers as A
from tether.hub.auth.deps import AdminAuth, HubDep, ViewerAuth, forbidden, principal_of
from tether.hub.auth.gate import who
from tether.hub.core import audit
from tether.hub.core import vault as secrets
from tether.hub.core.api_tokens import Role
from tether.hub.errors import responses as E
from tether.hub.state import in_read, in_session
from tether.hub.wire import StrictJSONRoute
from tether.sdk.connection import Connection
from tether.sdk.secrets import SENSITIVE_WORDS

router = APIRouter(prefix="/api/v1", tags=["secrets"], route_class=StrictJSONRoute)

#: Largest body of these routes: a variable's value or a connection's extra at
#: their limits, with room for JSON escapes. More gets 413 before it is read.
MAX_BODY = 512 * 1024
#: Longest connection URI: every field at its limit, percent-encoded.
MAX_URI = 3 * (secrets.MAX_PASSWORD + secrets.MAX_EXTRA + 3 * secrets.MAX_FIELD) + 1000

Reveal = Annotated[bool, Query(description="show the secret itself (admin role; audited)")]


def _check_reveal(request: Request) -> None:
    """Only an admin may see a secret; a viewer may read everything else of it."""
    principal = principal_of(request)
    if not principal.may(Role.ADMIN):
        raise forbidden(principal, Role.ADMIN, "revealing a secret")


def _not_found(what: str, name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} {name!r}")


class ConnectionIn(BaseModel):
    """A connection: a URI in Airflow's format, or its fields one by one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    conn_id: StrictStr = Field(max_length=secrets.MAX_NAME)
    uri: StrictStr | None = Field(default=None, max_length=MAX_URI)
    conn_type: StrictStr | None = Field(default=None, max_length=secrets.MAX_CONN_TYPE)
    host: StrictStr | None = Field(default=None, max_length=secrets.MAX_FIELD)
    login: StrictStr | None = Field(default=None, max_length=secrets.MAX_FIELD)
    password: StrictStr | None = Field(default=None, max_length=secrets.MAX_PASSWORD)
    schema_: StrictStr | None = Field(default=None, alias="schema", max_length=secrets.MAX_FIELD)
    port: StrictInt | None = Field(default=None, ge=1, le=65535)
    #: A JSON object, or its text (as ``--extra`` gives it); with a URI, it replaces the URI's.
    extra: StrictStr | None = None
    queues: list[StrictStr] = Field(default_factory=list, max_length=secrets.MAX_QUEUES)
    description: StrictStr | None = Field(default=None, max_length=secrets.MAX_DESCRIPTION)
    replace: StrictBool = False

    @field_validator("conn_id")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return secrets.validate_name(value, "connection name")

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = json.dumps(value)
        if isinstance(value, str) and len(value) > secrets.MAX_EXTRA:
            raise ValueError(
                f"the extra is {len(value)} characters of JSON; the limit is {secrets.MAX_EXTRA}"
            )
        return value

    def connection(self) -> Connection:
        """The connection this body describes; ValueError with the reason if none."""
        fields = (self.conn_type, self.host, self.login, self.password, self.schema_, self.port)
        if self.uri is not None:
            if any(f is not None for f in fields):
                raise ValueError("give a uri or the connection's fields, not both")
            conn = Connection.from_uri(self.conn_id, self.uri)
            if self.extra is None:
                return conn
            return Connection(**{**conn.to_dict(), "extra": self.extra})
        if self.conn_type is None:
            raise ValueError("a connection needs a uri or a conn_type")
        return Connection(
            conn_id=self.conn_id,
            conn_type=self.conn_type,
            host=self.host,
            login=self.login,
            password=self.password,
            schema=self.schema_,
            port=self.port,
            extra=self.extra,
        )


#: What a value under a key that looks secret reads as, without ``reveal``.
MASK = "***"


def masked_extra(value: Any, sensitive: bool = False) -> Any:
    """An extra as it is shown without ``reveal``: every value under a key holding
    one of ``SENSITIVE_WORDS`` (in any case, at any depth) is :data:`MASK`."""
    if isinstance(value, dict):
        return {
            key: masked_extra(
                item, sensitive or any(w in str(key).lower() for w in SENSITIVE_WORDS)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [masked_extra(item, sensitive) for item in value]
    return MASK if sensitive and value is not None else value


def _connection_view(stored: secrets.StoredConnection, reveal: bool) -> dict[str, Any]:
    conn = stored.connection
    extra = conn.extra_dejson if conn.extra is not None else None
    view: dict[str, Any] = {
        "conn_id": conn.conn_id,
        "conn_type": conn.conn_type,
        "host": conn.host,
        "login": conn.login,
        "schema": conn.schema,
        "port": conn.port,
        "extra": extra if reveal else masked_extra(extra),
        "has_password": conn.password is not None,
        "queues": stored.queues,
        "description": stored.description,
        "created_at": stored.created_at.isoformat(),
        "updated_at": stored.updated_at.isoformat(),
    }
    if reveal:
        view["password"] = conn.password
        view["uri"] = conn.get_uri()
    return view


@router.post(
    "/connections",
    dependencies=[AdminAuth],
    status_code=status.HTTP_201_CREATED,
    response_model=A.ConnectionSaved,
    responses=E(409),
)
async def create_connection(body: ConnectionIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """Store a connection, its password and extra encrypted; 409 if the name is taken
    (unless ``replace``)."""
    try:
        conn = body.connection()
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None

    def create(s: Session) -> bool:
        created = secrets.set_connection(
            s, hub.secret_keys, conn, body.queues, body.description, replace=body.replace
        )
        details = {"conn_type": conn.conn_type, "host": conn.host, "queues": body.queues}
        action = "connection.create" if created else "connection.update"
        audit.note(s, who(request), action, f"connection:{conn.conn_id}", details)
        return created

    created = await in_session(hub, create)
    return {"conn_id": conn.conn_id, "state": "created" if created else "replaced"}


@router.get("/connections", dependencies=[ViewerAuth], response_model=A.ConnectionList)
async def list_connections(hub: HubDep) -> dict[str, Any]:
    """Names, types, hosts, queues and descriptions; never a password or an extra."""
    return {"connections": await in_read(hub, secrets.list_connections)}


@router.get(
    "/connections/{name:path}",
    dependencies=[ViewerAuth],
    response_model=A.Connection,
    # The password and URI are there only with reveal, and then even when null.
    response_model_exclude_unset=True,
    responses=E(404),
)
async def get_connection(
    name: str, request: Request, hub: HubDep, reveal: Reveal = False
) -> dict[str, Any]:
    """A connection's fields and extra; its password and URI only with ``reveal``."""
    if reveal:
        _check_reveal(request)

    def get(s: Session) -> dict[str, Any] | None:
        stored = secrets.get_connection(s, hub.secret_keys, name)
        if stored is None:
            return None
        if reveal:
            audit.note(s, who(request), "connection.reveal", f"connection:{name}")
        return _connection_view(stored, reveal)

    view = await (in_session if reveal else in_read)(hub, get)
    if view is None:
        raise _not_found("connection", name)
    return view


@router.delete(
    "/connections/{name:path}",
    dependencies=[AdminAuth],
    response_model=A.ConnectionDeleted,
    responses=E(404),
)
async def delete_connection(name: str, request: Request, hub: HubDep) -> dict[str, str]:
    def delete(s: Session) -> bool:
        found = secrets.delete_connection(s, name)
        if found:
            audit.note(s, who(request), "connection.delete", f"connection:{name}")
        return found

    if not await in_session(hub, delete):
        raise _not_found("connection", name)
    return {"conn_id": name, "state": "deleted"}


class VariableIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: StrictStr = Field(max_length=secrets.MAX_VALUE)
    #: A secret variable is never shown back without ``reveal`` and is masked in task logs.
    is_secret: StrictBool = False
    queues: list[StrictStr] = Field(default_factory=list, max_length=secrets.MAX_QUEUES)
    description: StrictStr | None = Field(default=None, max_length=secrets.MAX_DESCRIPTION)


@router.put("/variables/{key:path}", dependencies=[AdminAuth], response_model=A.VariableSaved)
async def set_variable(key: str, body: VariableIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """Create or replace a variable; its value is kept encrypted either way."""

    def put(s: Session) -> bool:
        created = secrets.set_variable(
            s,
            hub.secret_keys,
            key,
            body.value,
            is_secret=body.is_secret,
            queues=body.queues,
            description=body.description,
        )
        action = "variable.create" if created else "variable.update"
        details = {"is_secret": body.is_secret, "queues": body.queues}
        audit.note(s, who(request), action, f"variable:{key}", details)
        return created

    created = await in_session(hub, put)
    return {"key": key, "state": "created" if created else "updated"}


@router.get("/variables", dependencies=[ViewerAuth], response_model=A.VariableList)
async def list_variables(hub: HubDep) -> dict[str, Any]:
    """Names, secrecy, queues and descriptions; no values."""
    return {"variables": await in_read(hub, secrets.list_variables)}


@router.get(
    "/variables/{key:path}",
    dependencies=[ViewerAuth],
    response_model=A.Variable,
    # A secret value is there only with reveal.
    response_model_exclude_unset=True,
    responses=E(404),
)
async def get_variable(
    key: str, request: Request, hub: HubDep, reveal: Reveal = False
) -> dict[str, Any]:
    """A variable; a secret one's value only with ``reveal``."""
    if reveal:
        _check_reveal(request)

    def get(s: Session) -> dict[str, Any] | None:
        stored = secrets.get_variable(s, hub.secret_keys, key)
        if stored is None:
            return None
        view: dict[str, Any] = {
            "key": stored.key,
            "is_secret": stored.is_secret,
            "queues": stored.queues,
            "description": stored.description,
            "created_at": stored.created_at.isoformat(),
            "updated_at": stored.updated_at.isoformat(),
        }
        if not stored.is_secret or reveal:
            view["value"] = stored.value
        if stored.is_secret and reveal:
            audit.note(s, who(request), "variable.reveal", f"variable:{key}")
        return view

    view = await (in_session if reveal else in_read)(hub, get)
    if view is None:
        raise _not_found("variable", key)
    return view


@router.delete(
    "/variables/{key:path}",
    dependencies=[AdminAuth],
    response_model=A.VariableDeleted,
    responses=E(404),
)
async def delete_variable(key: str, request: Request, hub: HubDep) -> dict[str, str]:
    def delete(s: Session) -> bool:
        found = secrets.delete_variable(s, key)
        if found:
            audit.note(s, who(request), "variable.delete", f"variable:{key}")
        return found

    if not await in_session(hub, delete):
        raise _not_found("variable", key)
    return {"key": key, "state": "deleted"}


@router.post(
    "/secrets/rotate-key", dependencies=[AdminAuth], response_model=A.Rotation, responses=E(409)
)
async def rotate_key(request: Request, hub: HubDep) -> dict[str, Any]:
    """Re-encrypt every connection and variable under a new key, while the hub serves.

    With the home's key file, a new key is made and put first in the file, every
    value is re-encrypted, and the file is left with the new key alone. With
    TETHER_SECRET_KEY, every value is re-encrypted with its first key; the
    operator may then drop the others from it.
    """
    done = await run_in_threadpool(secrets.rotate_key, hub.store, hub.secret_keys)
    await in_session(hub, lambda s: audit.note(s, who(request), "secrets.rotate_key", None, done))
    if done["source"] == "environment":
        note = (
            "re-encrypted with the first key of TETHER_SECRET_KEY; "
            "the others may now be dropped from it"
        )
    else:
        note = f"re-encrypted with a new key, now the only one in {hub.secret_keys.path}"
    return {**done, "message": note}
