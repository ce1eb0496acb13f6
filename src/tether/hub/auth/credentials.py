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

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.scheduler.runs import utcnow
from tether.hub.store.models import EnrolmentToken, Worker
from tether.protocol import validate_queue_name

WORKER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,249}"
WORKER_NAME_RE = re.compile(WORKER_NAME_PATTERN)
_ENROLMENT_PREFIX = "tte_"
_CREDENTIAL_PREFIX = "ttw_"


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


def create_enrolment_token(
    session: Session, queues: list[str], name: str | None, expires_in: timedelta
) -> tuple[str, str, datetime]:
    """A one-time token for a worker named ``name`` (generated if None) serving ``queues``."""
    for q in queues:
        validate_queue_name(q)
    if not queues:
        raise ValueError("an enrolment token needs at least one queue")
    worker_name = validate_worker_name(name) if name else f"worker-{secrets.token_hex(4)}"
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
        )
    )
    return f"{_ENROLMENT_PREFIX}{token_id}.{secret}", worker_name, now + expires_in


def enrol(session: Session, token: str) -> tuple[Worker, str]:
    """Spend an enrolment token; returns the worker and its new credential.

    Enrolling a name that exists replaces its credential (the old one stops
    working), so a worker can be re-enrolled after a revoke or a lost disk.
    """
    token_id, _, secret = token.removeprefix(_ENROLMENT_PREFIX).partition(".")
    row = session.get(EnrolmentToken, token_id) if token.startswith(_ENROLMENT_PREFIX) else None
    if row is None or not hmac.compare_digest(row.token_hash, _hash(secret)):
        raise InvalidCredential("unknown enrolment token")
    now = utcnow()
    if row.used_at is not None:
        raise InvalidCredential("this enrolment token was already used")
    if row.expires_at <= now:
        raise InvalidCredential("this enrolment token has expired")
    row.used_at = now
    credential = _CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    worker = session.get(Worker, row.worker_name)
    if worker is None:
        worker = Worker(name=row.worker_name, queues=[], info={}, enrolled_at=now)
        session.add(worker)
    worker.credential_hash = _hash(credential)
    worker.allowed_queues = list(row.queues)
    worker.state = "enrolled"
    worker.enrolled_at = now
    worker.revoked_at = None
    worker.session_id = None
    return worker, credential


def authenticate(session: Session, credential: str) -> Worker:
    """The worker holding ``credential``; InvalidCredential if none does."""
    if not credential.startswith(_CREDENTIAL_PREFIX):
        raise InvalidCredential("invalid worker credential")
    worker = session.scalar(select(Worker).where(Worker.credential_hash == _hash(credential)))
    if worker is None:
        raise InvalidCredential("invalid or revoked worker credential")
    return worker


def revoke(session: Session, name: str) -> Worker:
    worker = session.get(Worker, name)
    if worker is None:
        raise WorkerNotFound(f"no worker {name!r}")
    worker.credential_hash = None
    worker.revoked_at = utcnow()
    worker.state = "revoked"
    worker.session_id = None
    return worker
