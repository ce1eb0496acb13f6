"""What differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, text
from sqlalchemy.orm import Session

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def lock_for_claim(stmt: S, session: Session) -> S:
    """Make a SELECT of claimable rows safe against concurrent claimers.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets hub replicas claim different
    rows at once. SQLite has no row locks and SQLAlchemy drops ``FOR UPDATE``
    there; every write transaction already starts with ``BEGIN IMMEDIATE``
    (see :func:`tether.hub.store.db.make_engine`), which holds the database's
    single write lock from the SELECT to the commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True)
    return stmt


def lock_row(stmt: S, session: Session) -> S:
    """``FOR UPDATE`` on PostgreSQL; SQLite is already serialised (see above)."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


#: Key of the PostgreSQL advisory lock that serialises claims.
CLAIM_LOCK_KEY = 0x7E7E_C1A1

#: Key of the one that serialises migrations (hubs starting at once; see
#: ``migrations/env.py``). Leader locks: ``leadership.ROLE_KEYS``.
MIGRATE_LOCK_KEY = 0x7E7E_D1A5


def serialise_claims(session: Session) -> None:
    """Make claims take turns until the end of the transaction.

    A claim counts what is running against the limits (parallelism,
    max_active_tasks, pools) and then takes work; two claims interleaving
    could both take the last slot. PostgreSQL: a transaction-scoped advisory
    lock (claims are short and never wait on anything else while holding
    it). SQLite: ``BEGIN IMMEDIATE`` already serialises every writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY})


def pause_between_batches(session: Session) -> float:
    """Seconds a long housekeeping job waits between its transactions.

    SQLite: a hub transaction waiting for the write lock retries on a
    back-off of up to 100 ms (the driver's busy handler), so a job that took
    the lock again at once could keep it from ever getting in. PostgreSQL
    locks rows, and its waiters queue: no pause needed.
    """
    return 0.1 if session.get_bind().dialect.name == "sqlite" else 0.0


def foreign_keys_enforced(session: Session) -> bool:
    """Whether deletes cascade along foreign keys on this connection.

    SQLite enforces them only when a connection asks (``make_engine`` does);
    PostgreSQL always does.
    """
    if session.get_bind().dialect.name == "sqlite":
        return bool(session.execute(text("PRAGMA foreign_keys")).scalar() == 1)
    return True
