"""The audit log: who did what, when, from where.

Every change an admin makes, every enrolment and credential change, and every
secret handed to a task attempt is written as one :class:`AuditEntry`, in the
same transaction as the change it records (so an entry exists exactly when
the change does). Entries name secrets, never hold their values.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from tether.hub.auth.gate import ADMIN, PRINCIPAL, WorkerIdentity
from tether.hub.scheduler.runs import utcnow
from tether.hub.store.models import AuditEntry

#: Longest text kept in one detail value; longer ones are cut (an entry stays small).
MAX_DETAIL_CHARS = 500


def actor_of(request: Request | None) -> tuple[str, str | None]:
    """``(actor, address)`` of the request: ``admin`` or ``worker:NAME``, and the
    client's address as the gate saw it (the socket's peer, or the client a
    trusted proxy names)."""
    if request is None:
        return "cli", None
    principal = request.scope.get(PRINCIPAL)
    if principal == ADMIN:
        actor = "admin"
    elif isinstance(principal, WorkerIdentity):
        actor = f"worker:{principal.name}"
    else:
        actor = "anonymous"
    client = request.scope.get("client")
    return actor, (str(client[0])[:100] if client else None)


def _small(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_DETAIL_CHARS else value[: MAX_DETAIL_CHARS - 3] + "..."
    if isinstance(value, list | tuple):
        return [_small(v) for v in list(value)[:50]]
    if isinstance(value, dict):
        return {str(k)[:100]: _small(v) for k, v in list(value.items())[:50]}
    if value is None or isinstance(value, bool | int | float):
        return value
    return _small(str(value))


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    address: str | None = None,
) -> None:
    """Add an entry to the audit log, in ``session``'s transaction."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor[:300],
            action=action[:100],
            target=target[:1000] if target else None,
            details=_small(details or {}),
            address=address,
        )
    )


def record_request(
    session: Session,
    request: Request | None,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """:func:`record` with the actor and address of ``request``."""
    actor, address = actor_of(request)
    record(session, actor, action, target, details, address)
