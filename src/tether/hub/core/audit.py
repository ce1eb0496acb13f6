"""The audit log: who did what, when, from where.

Every change an admin makes, every enrolment and credential change, and every
secret handed to a task attempt is written as one :class:`AuditEntry`, in the
same transaction as the change it records (so an entry exists exactly when
the change does). Entries name secrets, never hold their values.

Routes turn their request into a :class:`Who` and hand it to the store
function that makes the change (``core/control.py``), which records the entry
beside it; a change that fails rolls its entry back with it. Reading the log
(:func:`list_entries`) is here too, behind ``GET /api/v1/audit``, and so is the
one rule for ``since`` values (:func:`parse_since`) that the route applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core.runs import utcnow
from tether.hub.store.models import AuditEntry

#: Longest text kept in one detail value; longer ones are cut (an entry stays small).
MAX_DETAIL_CHARS = 500
#: Most entries one read of the log returns.
MAX_LIST = 1000
#: A ``since`` given as an age: a number and a unit (seconds, minutes, hours, days).
_AGE = re.compile(r"([0-9]{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InvalidFilter(ValueError):
    """A filter of the audit log that cannot be applied; the message says why (422)."""


@dataclass(frozen=True)
class Who:
    """Who makes a change and from where: what a store function needs to record it.

    Built from the request by the route (``auth.gate.who``), so store
    functions never see the request itself.
    """

    actor: str
    address: str | None = None


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


def note(
    session: Session,
    by: Who,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """:func:`record` for a change made by ``by``."""
    record(session, by.actor, action, target, details, by.address)


def parse_since(value: str, now: datetime) -> datetime:
    """The time a ``since`` filter names: an age (``30m``, ``12h``, ``1d``, ``90s``)
    before ``now``, or an ISO 8601 time (UTC if it has no offset).

    InvalidFilter with the reason for anything else, so a typo is a 422 that
    says so rather than a filter that silently matches nothing.
    """
    age = _AGE.fullmatch(value)
    if age:
        seconds = int(age[1]) * _UNITS[age[2]]
        if seconds > 100 * 365 * 86400:
            raise InvalidFilter(f"since {value!r} reaches back more than 100 years")
        return now - timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFilter(
            f"since {value!r} is neither an age (90s, 30m, 12h, 1d) nor an ISO 8601 time"
        ) from None
    try:  # the store compares in UTC; 0001-01-01T00:00+05:00 has no UTC time
        return at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    except OverflowError:
        raise InvalidFilter(f"since {value!r} is out of range") from None


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "address": entry.address,
        "details": entry.details,
    }


def list_entries(
    session: Session,
    *,
    since: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> dict[str, Any]:
    """Entries newest first, filtered; ``next_before_id`` pages on to older ones.

    ``actor`` matches exactly; ``action`` is a prefix (``worker.`` finds every
    worker action), its ``%`` and ``_`` taken literally. Paging is by id
    (``before_id``), not by offset, so entries written meanwhile do not shift
    the pages.
    """
    stmt = select(AuditEntry)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    limit = max(1, min(limit, MAX_LIST))
    rows = list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)))
    return {
        "entries": [entry_dict(row) for row in rows],
        "next_before_id": rows[-1].id if len(rows) == limit else None,
    }
