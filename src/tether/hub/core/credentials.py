"""Enrolment tokens and per-worker credentials.

An operator creates a one-time enrolment token naming a worker and its queues;
the worker exchanges it for its own credential. The hub keeps only SHA-256
hashes: tokens are 256-bit random values, so a plain hash is enough to make a
leaked database useless for impersonation. Revoking a worker clears its hash;
its next request gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tether.hub.core import states
from tether.hub.core.runs import utcnow
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import EnrolmentToken, TaskAttempt, Worker
from tether.protocol import validate_queue_name

WORKER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,249}"
WORKER_NAME_RE = re.compile(WORKER_NAME_PATTERN)
_ENROLMENT_PREFIX = "tte_"
_CREDENTIAL_PREFIX = "ttw_"
_ATTEMPT_TOKEN_PREFIX = "tta_"


class InvalidCredential(Exception):
    """Unknown, used, expired or revoked token or credential (401)."""


class EnrolmentRefused(Exception):
    """A valid token that cannot be spent as it stands (409); the reason says why."""


class WorkerNotFound(LookupError):
    """No worker of that name (404)."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_worker_name(name: str) -> str:
    if not WORKER_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid worker name {name!r}: use 1 to 250 letters, digits, '.', '_', '-', ':', '@'"
        )
    return name


class WorkerExists(Exception):
    """A token for a name that is taken was asked for without ``replace`` (409)."""


class TokenNotFound(LookupError):
    """No enrolment token has this id (404)."""


def create_enrolment_token(
    session: Session,
    queues: list[str],
    name: str | None,
    expires_in: timedelta,
    *,
    replace: bool = False,
) -> tuple[str, str, datetime]:
    """A one-time token for a worker named ``name`` (generated if None) serving ``queues``.

    A token for a name an existing worker has must say ``replace``: spending
    it gives that worker a new credential and voids the old one, which is
    never what an operator who made a typo meant.
    """
    for q in queues:
        validate_queue_name(q)
    if not queues:
        raise ValueError("an enrolment token needs at least one queue")
    worker_name = validate_worker_name(name) if name else f"worker-{secrets.token_hex(4)}"
    if not replace and session.get(Worker, worker_name) is not None:
        raise WorkerExists(
            f"a worker named {worker_name!r} exists; spending a token for it would replace its "
            "credential. Ask for replace (tether workers token create --replace) to do that"
        )
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        EnrolmentToken(
            id=token_id,
            token_hash=_hash(secret),
            worker_name=worker_name,
            queues=list(queues),
            created_at=now,
            expires_at=now + expires_in,
            replace=replace,
        )
    )
    return f"{_ENROLMENT_PREFIX}{token_id}.{secret}", worker_name, now + expires_in


def token_id(token: str) -> str:
    """The public id of an enrolment token (the part before its secret)."""
    return token.removeprefix(_ENROLMENT_PREFIX).split(".")[0]


def token_state(row: EnrolmentToken, now: datetime) -> str:
    """``unspent``, ``used``, ``revoked`` or ``expired``."""
    if row.used_at is not None:
        return "used"
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if row.expires_at <= now else "unspent"


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every enrolment token, newest first; never a secret or its hash."""
    now = utcnow()
    rows = session.scalars(
        select(EnrolmentToken).order_by(EnrolmentToken.created_at.desc(), EnrolmentToken.id)
    )
    return [
        {
            "id": row.id,
            "name": row.worker_name,
            "queues": row.queues,
            "replace": row.replace,
            "state": token_state(row, now),
            "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat(),
            "used_at": row.used_at.isoformat() if row.used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        }
        for row in rows
    ]


def revoke_token(session: Session, token_id: str) -> str:
    """Revoke an unspent token; returns its state afterwards (a used one stays used)."""
    row = session.scalar(
        lock_row(select(EnrolmentToken).where(EnrolmentToken.id == token_id), session)
    )
    if row is None:
        raise TokenNotFound(f"no enrolment token {token_id!r}")
    if row.used_at is None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return token_state(row, utcnow())


def void_tokens_of(session: Session, worker_name: str) -> int:
    """Revoke the unspent tokens for ``worker_name`` (it is being revoked or removed)."""
    result = session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.worker_name == worker_name,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def find_token(session: Session, token: str) -> EnrolmentToken:
    """The enrolment token ``token`` is; InvalidCredential if it is none.

    Reads only: the enrolment route calls it in a read-only transaction
    first, so a made-up token never takes the store's write lock.
    """
    token_id, _, secret = token.removeprefix(_ENROLMENT_PREFIX).partition(".")
    row = session.get(EnrolmentToken, token_id) if token.startswith(_ENROLMENT_PREFIX) else None
    if row is None or not hmac.compare_digest(row.token_hash, _hash(secret)):
        raise InvalidCredential("unknown enrolment token")
    return row


def enrol(session: Session, token: str) -> tuple[Worker, str]:
    """Spend an enrolment token; returns the worker and its new credential.

    The token is spent by one conditional UPDATE (``used_at`` still null),
    so of concurrent spends exactly one succeeds on either store: on
    PostgreSQL the others wait for its row lock and then find it used. A
    token for a name that exists (a re-enrolment after a revoke or a lost
    disk) must have been made with ``replace``, and replaces the credential.
    """
    row = find_token(session, token)
    now = utcnow()
    spent = session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.id == row.id,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.revoked_at.is_(None),
            EnrolmentToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(row)
        state = token_state(row, now)
        raise InvalidCredential(
            {
                "used": "this enrolment token was already used",
                "revoked": "this enrolment token was revoked",
            }.get(state, "this enrolment token has expired")
        )
    credential = _CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    worker = session.scalar(lock_row(select(Worker).where(Worker.name == row.worker_name), session))
    if worker is not None and not row.replace:
        raise EnrolmentRefused(
            f"a worker named {row.worker_name!r} exists and this token was not made to replace "
            "it; create one with --replace"
        )
    if worker is None:
        worker = Worker(name=row.worker_name, queues=[], info={})
        session.add(worker)
    worker.credential_hash = _hash(credential)
    worker.allowed_queues = list(row.queues)
    states.move_worker(worker, states.WorkerState.ENROLLED, "enrolled", now)
    worker.session_id = None
    return worker, credential


def looks_like_credential(credential: str) -> bool:
    """Whether ``credential`` has a worker credential's form (worth a lookup)."""
    return credential.startswith(_CREDENTIAL_PREFIX) and len(credential) <= 100


def new_attempt_token() -> tuple[str, str]:
    """``(token, its hash)`` for a task attempt that may fetch its declared secrets.

    Only the hash is stored (``task_attempt.token_hash``); the token travels in
    the job, and is good only while that attempt runs
    (:mod:`tether.hub.core.handout`).
    """
    token = _ATTEMPT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, _hash(token)


def looks_like_attempt_token(token: str) -> bool:
    return token.startswith(_ATTEMPT_TOKEN_PREFIX) and len(token) <= 100


def attempt_token_hash(token: str) -> str:
    return _hash(token)


def is_attempt_token(session: Session, token_hash: str) -> bool:
    """Whether an attempt was ever given the token hashing to ``token_hash``
    (whether it still runs is the route's to check, in its own transaction)."""
    found = session.scalar(
        select(TaskAttempt.id).where(TaskAttempt.token_hash == token_hash).limit(1)
    )
    return found is not None


def authenticate(session: Session, credential: str) -> Worker:
    """The worker holding ``credential``; InvalidCredential if none does."""
    if not looks_like_credential(credential):
        raise InvalidCredential("invalid worker credential")
    worker = session.scalar(select(Worker).where(Worker.credential_hash == _hash(credential)))
    if worker is None:
        raise InvalidCredential("invalid or revoked worker credential")
    return worker


def revoke(session: Session, name: str) -> Worker:
    """Revoke ``name``'s credential; its unspent enrolment tokens are void too."""
    worker = session.get(Worker, name)
    if worker is None:
        raise WorkerNotFound(f"no worker {name!r}")
    void_tokens_of(session, name)
    worker.credential_hash = None
    states.move_worker(worker, states.WorkerState.REVOKED, "revoked", utcnow())
    worker.session_id = None
    return worker
