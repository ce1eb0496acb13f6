"""Connections and variables in the store, their secrets encrypted with the hub's keys.

A connection's type, host, login, schema and port are kept in clear (they are
shown to whoever may list connections); its password and extra are one Fernet
token of ``{"password": ..., "extra": ...}`` in the ``secret`` column. A
variable's value is always encrypted, secret or not: ``is_secret`` decides who
may see it back and whether task logs mask it, not how it is kept.

Each may be limited to queues (``queues``; empty means every queue): only a
task on one of them may read it. Names are checked here, for the REST API and
for anything else that writes: letters, digits and ``_ . -``, starting with a
letter, digit or ``_``, at most 250 characters (so no ``/``, no ``..``, nothing
that could be a path or need quoting).

:func:`read_connection` and :func:`read_variable` are what delivery to tasks
uses; :func:`rotate_key` re-encrypts everything while the hub serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tether.hub.core.runs import utcnow
from tether.hub.core.secret_keys import SecretKeys
from tether.hub.store.db import Store
from tether.hub.store.models import Connection as ConnectionRow
from tether.hub.store.models import Variable as VariableRow
from tether.protocol import InvalidQueueName, validate_queue_name
from tether.sdk.connection import Connection

MAX_NAME = 250
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,249}"
_NAME_RE = re.compile(NAME_PATTERN)
#: Longest connection type, and host, login or schema (the columns' sizes).
MAX_CONN_TYPE = 100
MAX_FIELD = 1000
#: Longest password, extra (as JSON text) and variable value, in characters.
MAX_PASSWORD = 10_000
MAX_EXTRA = 65_536
MAX_VALUE = 100_000
MAX_DESCRIPTION = 1000
MAX_QUEUES = 100
#: Rows re-encrypted per transaction by a rotation (each a short write).
ROTATE_BATCH = 100


class InvalidSecret(ValueError):
    """A name, queue or value the store refuses; the message says why (never the value)."""


class SecretExists(Exception):
    """A connection of that name exists already."""


class RotationInProgress(Exception):
    """A key rotation is already running in this hub process."""


def validate_name(name: object, what: str = "name") -> str:
    """``name`` if it may name a connection or variable, else InvalidSecret."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        shown = repr(name[:60]) + ("..." if len(name) > 60 else "") if isinstance(name, str) else ""
        raise InvalidSecret(
            f"invalid {what} {shown}: use 1 to {MAX_NAME} letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_'"
        )
    return name


def validate_queues(queues: Iterable[object]) -> list[str]:
    """The queues, checked, without repeats, sorted; [] means every queue."""
    names = list(queues)
    if len(names) > MAX_QUEUES:
        raise InvalidSecret(f"at most {MAX_QUEUES} queues, not {len(names)}")
    try:
        return sorted({validate_queue_name(q) for q in names})
    except InvalidQueueName as exc:
        raise InvalidSecret(str(exc)) from None


def _check_text(value: str | None, what: str, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidSecret(f"the {what} is {len(value)} characters long; the limit is {limit}")


def _check_connection(conn: Connection) -> None:
    validate_name(conn.conn_id, "connection name")
    _check_text(conn.conn_type, "connection type", MAX_CONN_TYPE)
    for what in ("host", "login", "schema"):
        _check_text(getattr(conn, what), what, MAX_FIELD)
    _check_text(conn.password, "password", MAX_PASSWORD)
    _check_text(conn.extra, "extra", MAX_EXTRA)


def _description(text: str | None) -> str | None:
    _check_text(text, "description", MAX_DESCRIPTION)
    if text is not None and "\x00" in text:
        raise InvalidSecret("the description holds a NUL character")
    return text


# Connections.


@dataclass(frozen=True)
class StoredConnection:
    """A connection with what the hub keeps beside it."""

    connection: Connection
    queues: list[str]
    description: str | None
    created_at: datetime
    updated_at: datetime


def set_connection(
    session: Session,
    keys: SecretKeys,
    conn: Connection,
    queues: Iterable[object] = (),
    description: str | None = None,
    *,
    replace: bool = False,
) -> bool:
    """Store ``conn``; True if it is new. SecretExists if it exists and not ``replace``."""
    _check_connection(conn)
    queue_list = validate_queues(queues)
    description = _description(description)
    secret = keys.encrypt(json.dumps({"password": conn.password, "extra": conn.extra}))
    now = utcnow()
    row = session.get(ConnectionRow, conn.conn_id)
    if row is not None and not replace:
        raise SecretExists(
            f"connection {conn.conn_id!r} exists; delete it first, or replace it "
            '(--replace, or "replace": true)'
        )
    if row is None:
        row = ConnectionRow(conn_id=conn.conn_id, created_at=now)
        session.add(row)
    row.conn_type = conn.conn_type
    row.host, row.login, row.schema, row.port = conn.host, conn.login, conn.schema, conn.port
    row.secret = secret
    row.queues = queue_list
    row.description = description
    row.updated_at = now
    return row.created_at == now


def _connection(keys: SecretKeys, row: ConnectionRow) -> StoredConnection:
    secret = json.loads(keys.decrypt(row.secret))
    return StoredConnection(
        Connection(
            conn_id=row.conn_id,
            conn_type=row.conn_type,
            host=row.host,
            login=row.login,
            password=secret["password"],
            schema=row.schema,
            port=row.port,
            extra=secret["extra"],
        ),
        list(row.queues),
        row.description,
        row.created_at,
        row.updated_at,
    )


def get_connection(session: Session, keys: SecretKeys, conn_id: str) -> StoredConnection | None:
    """The connection named ``conn_id``, decrypted; None if there is none."""
    row = session.get(ConnectionRow, validate_name(conn_id, "connection name"))
    return None if row is None else _connection(keys, row)


def read_connection(
    session: Session, keys: SecretKeys, conn_id: str
) -> tuple[Connection, list[str]] | None:
    """For delivery to a task: the connection and the queues it is limited to
    ([] = every queue); None if there is none. The caller checks the queues."""
    stored = get_connection(session, keys, conn_id)
    return None if stored is None else (stored.connection, stored.queues)


def list_connections(session: Session) -> list[dict[str, Any]]:
    """Every connection's name, type, host, queues and description; nothing secret
    (nothing is decrypted)."""
    rows = session.execute(
        select(
            ConnectionRow.conn_id,
            ConnectionRow.conn_type,
            ConnectionRow.host,
            ConnectionRow.queues,
            ConnectionRow.description,
        ).order_by(ConnectionRow.conn_id)
    )
    return [
        {"conn_id": c, "conn_type": t, "host": h, "queues": list(q), "description": d}
        for c, t, h, q, d in rows
    ]


def delete_connection(session: Session, conn_id: str) -> bool:
    """Delete a connection; False if there was none."""
    row = session.get(ConnectionRow, validate_name(conn_id, "connection name"))
    if row is None:
        return False
    session.delete(row)
    return True


# Variables.


@dataclass(frozen=True)
class StoredVariable:
    key: str
    value: str
    is_secret: bool
    queues: list[str]
    description: str | None
    created_at: datetime
    updated_at: datetime


def set_variable(
    session: Session,
    keys: SecretKeys,
    key: str,
    value: str,
    *,
    is_secret: bool = False,
    queues: Iterable[object] = (),
    description: str | None = None,
) -> bool:
    """Create or replace a variable; True if it is new."""
    validate_name(key, "variable name")
    _check_text(value, "value", MAX_VALUE)
    queue_list = validate_queues(queues)
    description = _description(description)
    now = utcnow()
    row = session.get(VariableRow, key)
    created = row is None
    if row is None:
        row = VariableRow(key=key, created_at=now)
        session.add(row)
    row.value = keys.encrypt(value)
    row.is_secret = is_secret
    row.queues = queue_list
    row.description = description
    row.updated_at = now
    return created


def get_variable(session: Session, keys: SecretKeys, key: str) -> StoredVariable | None:
    """The variable named ``key``, decrypted; None if there is none."""
    row = session.get(VariableRow, validate_name(key, "variable name"))
    if row is None:
        return None
    return StoredVariable(
        row.key,
        keys.decrypt(row.value),
        row.is_secret,
        list(row.queues),
        row.description,
        row.created_at,
        row.updated_at,
    )


def read_variable(
    session: Session, keys: SecretKeys, key: str
) -> tuple[str, bool, list[str]] | None:
    """For delivery to a task: ``(value, is_secret, queues)``; None if there is none."""
    stored = get_variable(session, keys, key)
    return None if stored is None else (stored.value, stored.is_secret, stored.queues)


def list_variables(session: Session) -> list[dict[str, Any]]:
    """Every variable's name, secrecy, queues and description; no values."""
    rows = session.execute(
        select(
            VariableRow.key, VariableRow.is_secret, VariableRow.queues, VariableRow.description
        ).order_by(VariableRow.key)
    )
    return [{"key": k, "is_secret": s, "queues": list(q), "description": d} for k, s, q, d in rows]


def delete_variable(session: Session, key: str) -> bool:
    """Delete a variable; False if there was none."""
    row = session.get(VariableRow, validate_name(key, "variable name"))
    if row is None:
        return False
    session.delete(row)
    return True


# Rotation.


def reencrypt_all(store: Store, keys: SecretKeys, batch_size: int = ROTATE_BATCH) -> dict[str, int]:
    """Encrypt every stored secret again with the first key, ``batch_size`` rows per
    transaction, so the hub's other writers wait for one short batch at most.

    Each row is written only if it still holds what was read (compare and swap):
    a row changed meanwhile was encrypted with the first key by its writer
    already, and is left as that writer made it.
    """
    counts = {}
    for model, pk, column in (
        (ConnectionRow, ConnectionRow.conn_id, ConnectionRow.secret),
        (VariableRow, VariableRow.key, VariableRow.value),
    ):
        done, after = 0, None
        while True:
            with store.transaction() as s:
                query = select(pk, column).order_by(pk).limit(batch_size)
                if after is not None:
                    query = query.where(pk > after)
                rows = s.execute(query).all()
                for name, token in rows:
                    s.execute(
                        update(model)
                        .where(pk == name, column == token)
                        .values({column.key: keys.reencrypt(token)})
                    )
            done += len(rows)
            if len(rows) < batch_size:
                break
            after = rows[-1][0]
        counts[model.__tablename__ + "s"] = done
    return counts


def rotate_key(store: Store, keys: SecretKeys) -> dict[str, Any]:
    """Re-encrypt every secret under a new key (key file) or under the first key of
    TETHER_SECRET_KEY; returns what was done, for the answer and the audit log."""
    if not keys.rotating.acquire(blocking=False):
        raise RotationInProgress("a key rotation is already running; wait for it to end")
    try:
        keys.begin_rotation()
        counts = reencrypt_all(store, keys)
        keys.finish_rotation()
    finally:
        keys.rotating.release()
    source = "environment" if keys.from_environment else "key_file"
    return {"source": source, "keys_kept": keys.count, **counts}
