"""What differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
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
