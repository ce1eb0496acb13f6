"""Named REST API tokens, each with a role: who may use ``/api/v1``, and for what.

A token is ``tth_`` and 43 URL-safe characters (256 random bits). The hub
keeps its SHA-256 only, as it does for worker credentials: the value is too
random for a plain hash to be guessed back, so a leaked database lets no one
in. The prefix and the length let the auth gate refuse what cannot be a token
without looking anything up.

Each token has one :class:`Role`. The built-in admin token (``TETHER_ADMIN_TOKEN``
or ``HUB_HOME/admin_token``, ``hub/auth/tokens.py``) is not in this table; it
is the first admin, named ``admin``, and that name is reserved. Revoking a
token keeps its row (its name stays taken and its history readable); the
next request that presents it gets 401 "token revoked".

Which route needs which role is declared on each route (``hub/auth/deps.py``)
and listed in docs/api.md, "Roles".
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tether.hub.core import audit
from tether.hub.core.runs import utcnow
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import ApiToken

TOKEN_PREFIX = "tth_"
#: What a token looks like: the prefix and ``secrets.token_urlsafe(32)``.
TOKEN_RE = re.compile(r"tth_[A-Za-z0-9_-]{43}")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}"
NAME_RE = re.compile(NAME_PATTERN)
#: Names that are audit actors already: the built-in admin token's, and the
#: hub's own words for who acted (``hub/core/audit.py``). Compared without case.
RESERVED_NAMES = frozenset({"admin", "anonymous", "cli", "enrolment"})
#: Longest lifetime a token may be given; without one, it never expires.
MAX_LIFETIME = timedelta(days=3650)
#: How often a token's ``last_used_at`` is written, at most.
LAST_USED_EVERY = timedelta(minutes=1)

_AGE = re.compile(r"([0-9]{1,12})([smhdwy]?)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    """Every read of the REST API, but not a secret's value (``?reveal=true``)."""
    OPERATOR = "operator"
    """And run things: trigger, backfill, clear, mark, pause, post asset events,
    put workers in or out of maintenance."""
    ADMIN = "admin"
    """And everything else: pools, connections, variables, secrets, enrolment
    tokens, shutting down, revoking and removing workers, API tokens."""

    def includes(self, needed: Role) -> bool:
        """Whether a token of this role may do what ``needed`` may."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


class InvalidApiToken(ValueError):
    """A name, role or lifetime that cannot be used; the message says why (422)."""


class ApiTokenExists(Exception):
    """The name is taken, by a token (revoked ones too) or by the hub itself (409)."""


class ApiTokenNotFound(LookupError):
    """No API token has this name (404)."""


def validate_name(name: str) -> str:
    """``name`` if a token may have it; InvalidApiToken with the reason if not."""
    if not NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 100 else f"of {len(name)} characters"
        raise InvalidApiToken(
            f"invalid token name {shown}: use 1 to 100 letters, digits, '.', '_', '-', '@', "
            "starting with a letter or digit"
        )
    return name


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidApiToken(f"unknown role {text[:50]!r}: use one of {roles}") from None


def parse_lifetime(text: str) -> timedelta:
    """How long a token lives: a count and a unit (``90m``, ``12h``, ``30d``, ``8w``,
    ``1y``), more than zero and at most ten years. InvalidApiToken says why not."""
    age = _AGE.fullmatch(text)
    if age is None:
        raise InvalidApiToken(
            f"invalid expiry {text[:50]!r}: give a count and a unit, e.g. 12h, 30d, 8w, 1y"
        )
    count, unit = int(age[1]), age[2]
    if count == 0:
        raise InvalidApiToken(f"invalid expiry {text!r}: a token must live longer than zero")
    if not unit:
        raise InvalidApiToken(f"invalid expiry {text!r}: give a unit (s, m, h, d, w, y)")
    seconds = count * _UNITS[unit]  # compared as a number: 999999y is no timedelta
    if seconds > MAX_LIFETIME.total_seconds():
        raise InvalidApiToken(
            f"invalid expiry {text!r}: at most {MAX_LIFETIME.days}d (ten years); "
            "leave it out for a token that never expires"
        )
    return timedelta(seconds=seconds)


def looks_like_token(token: str) -> bool:
    """Whether ``token`` has an API token's shape (no lookup is worth it otherwise)."""
    return TOKEN_RE.fullmatch(token) is not None


def token_hash(token: str) -> str:
    """What the table keeps of a token, and what a console session keeps of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def state(row: ApiToken, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def token_dict(row: ApiToken, now: datetime) -> dict[str, Any]:
    """A token as the API shows it: never the token, nor its hash."""
    return {
        "name": row.name,
        "role": row.role,
        "state": state(row, now),
        "builtin": False,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "expires_at": _iso(row.expires_at),
        "revoked_at": _iso(row.revoked_at),
        "last_used_at": _iso(row.last_used_at),
    }


def builtin_admin() -> dict[str, Any]:
    """How the built-in admin token is listed beside the table's tokens."""
    return {
        "name": "admin",
        "role": Role.ADMIN.value,
        "state": "active",
        "builtin": True,
        "created_at": None,
        "created_by": None,
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
    }


def create(
    session: Session, name: str, role: Role, lifetime: timedelta | None, by: audit.Who
) -> tuple[str, dict[str, Any]]:
    """A new token named ``name``: the token itself (shown once, kept nowhere) and
    its listing. ApiTokenExists if the name is taken; the audit entry is beside it."""
    validate_name(name)
    if name.lower() in RESERVED_NAMES:
        raise ApiTokenExists(
            f"the name {name!r} is reserved: the hub uses it for the built-in admin token "
            "or in the audit log"
        )
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ApiTokenExists(
            f"an API token named {name!r} exists (revoked ones keep their names); pick another"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        name=name,
        role=role.value,
        token_hash=token_hash(token),
        created_at=now,
        created_by=by.actor[:300],
        expires_at=now + lifetime if lifetime is not None else None,
    )
    session.add(row)
    details = {"role": role.value, "expires_at": _iso(row.expires_at)}
    audit.note(session, by, "api_token.create", f"api_token:{name}", details)
    return token, token_dict(row, now)


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """The built-in admin token, then every named token by name; no secrets."""
    now = utcnow()
    rows = session.scalars(select(ApiToken).order_by(ApiToken.name))
    return [builtin_admin(), *(token_dict(row, now) for row in rows)]


def revoke(session: Session, name: str, by: audit.Who) -> dict[str, Any]:
    """Revoke the token named ``name``: the next request with it gets 401.

    Revoking a revoked token changes nothing and writes no second entry.
    """
    if name.lower() == "admin":
        raise ApiTokenNotFound(
            "'admin' is the built-in admin token: change it by replacing TETHER_ADMIN_TOKEN "
            "or HUB_HOME/admin_token and restarting the hub"
        )
    row = session.scalar(lock_row(select(ApiToken).where(ApiToken.name == name), session))
    if row is None:
        raise ApiTokenNotFound(f"no API token {name!r}")
    now = utcnow()
    if row.revoked_at is None:
        row.revoked_at = now
        audit.note(session, by, "api_token.revoke", f"api_token:{name}", {"role": row.role})
    return token_dict(row, now)


@dataclass(frozen=True)
class Found:
    """A token that authenticates: who it is, and whether its use should be noted."""

    id: int
    name: str
    role: Role
    #: Its ``last_used_at`` is older than :data:`LAST_USED_EVERY` (or unset).
    stale: bool


def authenticate(session: Session, hashed: str) -> Found | str:
    """The token whose SHA-256 is ``hashed``, or why it is refused: ``invalid token``,
    ``token revoked`` or ``token expired``. Reads only."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hashed))
    if row is None:
        return "invalid token"
    now = utcnow()
    if row.revoked_at is not None:
        return "token revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "token expired"
    try:
        role = Role(row.role)
    except ValueError:  # written by a newer hub, perhaps: grant nothing
        return "invalid token"
    stale = row.last_used_at is None or row.last_used_at <= now - LAST_USED_EVERY
    return Found(row.id, row.name, role, stale)


def note_use(session: Session, token_id: int) -> None:
    """Set a token's ``last_used_at`` to now, unless it was set less than a minute ago
    (by another request, or another of the hub's processes)."""
    now = utcnow()
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_EVERY),
        )
        .values(last_used_at=now)
    )
