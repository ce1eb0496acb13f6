"""Web console sessions, kept in the store so that signing out ends them.

A session's cookie carries a random id (256 bits) and nothing else the hub
trusts; the store keeps the id's SHA-256, the SHA-256 of the API token it
signed in with, and when it ends. A copied cookie is good only while its row
is: signing out sets ``ended_at`` and the cookie opens nothing from the next
request on, in every hub process on the database. Rows past their expiry are
deleted at the next sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tether.hub.core.runs import utcnow
from tether.hub.store.models import ConsoleSession


@dataclass(frozen=True)
class Found:
    """A live session: whose token it signed in with, and when it ends."""

    token_hash: str
    expires_at: datetime


def open_session(s: Session, session_hash: str, token_hash: str, expires_at: datetime) -> None:
    """Keep a new session, and let go of those that have expired."""
    now = utcnow()
    s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    s.add(
        ConsoleSession(
            session_hash=session_hash,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )


def find(s: Session, session_hash: str) -> Found | None:
    """The session whose id has SHA-256 ``session_hash``, if it is neither
    signed out nor expired."""
    row = s.execute(
        select(ConsoleSession.token_hash, ConsoleSession.expires_at).where(
            ConsoleSession.session_hash == session_hash,
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.expires_at > utcnow(),
        )
    ).first()
    return None if row is None else Found(row.token_hash, row.expires_at)


def end(s: Session, session_hash: str) -> bool:
    """Sign the session out; False if it had ended already."""
    ended = s.execute(
        update(ConsoleSession)
        .where(ConsoleSession.session_hash == session_hash, ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )
    return bool(ended.rowcount)  # type: ignore[attr-defined]
