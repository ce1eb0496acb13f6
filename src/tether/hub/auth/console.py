"""Who is using the web console: its session cookie and the principal behind it.

The console (``hub/ui/``) signs in with an API token. The session it opens is
kept in the store (``hub/core/console_sessions.py``): a row keyed by the
SHA-256 of a random session id, holding the SHA-256 of the token and when the
session ends. The browser's cookie holds only the session id, signed with
HMAC-SHA256 under the *console key* (``TETHER_CONSOLE_KEY``, or
``HUB_HOME/console_key``, made on first start, 0600) so that a forged cookie
is refused before any lookup; hubs that share a database and a load balancer
share the key through the variable. The token itself never leaves the login
request, and nothing in the cookie is in the database: a leaked database
opens no session, and a leaked key alone mints none.

Each request of a session looks its row up and resolves the token hash to a
principal again, with :func:`principal_for`, so signing out, or a token that
stops being good, ends the session at its next request, whoever holds a copy
of the cookie. Every form of a session carries a CSRF secret derived from
the session id under the key. The gate (``auth/gate.py``) never reads this
cookie: a console session opens the console only, never ``/api/...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from tether.hub.auth.principal import Principal, principal_for_hash
from tether.hub.core import console_sessions

#: The session cookie; its path is /ui, so the browser sends it nowhere else.
SESSION_COOKIE = "tether_console"
#: The login form's own CSRF cookie (double submit: before there is a session).
LOGIN_COOKIE = "tether_console_login"
COOKIE_PATH = "/ui"
#: A console key given in TETHER_CONSOLE_KEY must be at least this long.
MIN_KEY_CHARS = 32
#: Longer cookies are not even decoded.
MAX_COOKIE_CHARS = 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = "v2"


class ConsoleKeyError(ValueError):
    """TETHER_CONSOLE_KEY is too short to sign with."""


def load_key(home: Path) -> bytes:
    """The console key: TETHER_CONSOLE_KEY, else ``home/console_key`` (made if absent)."""
    given = os.environ.get("TETHER_CONSOLE_KEY")
    if given:
        if len(given) < MIN_KEY_CHARS:
            raise ConsoleKeyError(
                f"TETHER_CONSOLE_KEY must be at least {MIN_KEY_CHARS} characters "
                "(it signs console sessions); make one with: openssl rand -hex 32"
            )
        return given.encode()
    path = home / "console_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


#: Who a console session acts as: the API principal of the token it signed in with.
ConsolePrincipal = Principal


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def principal_for(hub: Any, hashed: str) -> Principal | None:
    """The principal whose API token has sha256 ``hashed``, or None: the one place
    the console decides who a token is, at login and on every request after it.
    The same answer as the REST API's (``auth/principal.py``): the built-in
    admin token or a named token that is neither revoked nor expired, with its role.
    """
    return await principal_for_hash(hub, hashed)


@dataclass(frozen=True)
class ConsoleSession:
    """A live console session, as its cookie and the store say."""

    #: The SHA-256 of the session id in the cookie: the store's key for it.
    session_hash: str
    #: The SHA-256 of the API token it signed in with.
    token_hash: str
    #: Unix time the session ends.
    expires: int
    #: Every form of this session carries it (``csrf``), checked on POST.
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(key: bytes, purpose: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{purpose}|{payload}".encode(), hashlib.sha256).digest())


def _signed(key: bytes, purpose: str, value: str | None) -> str | None:
    """The payload of a ``v2.PAYLOAD.SIGNATURE`` value signed for ``purpose``, or None."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return None
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        return None
    if not hmac.compare_digest(parts[2], _sign(key, purpose, parts[1])):
        return None
    return parts[1]


def _csrf_for(key: bytes, session_id: str) -> str:
    """A session's CSRF secret: derived from its id, so it is kept nowhere."""
    return hmac.new(key, f"csrf|{session_id}".encode(), hashlib.sha256).hexdigest()[:32]


def _session_id(key: bytes, value: str | None) -> str | None:
    """The session id a cookie value carries, if the hub signed it."""
    session_id = _signed(key, "session", value)
    return session_id if session_id and _HEX64.fullmatch(session_id) else None


async def open_session(hub: Any, hashed: str, lifetime: float) -> tuple[str, ConsoleSession]:
    """A new session for the token with SHA-256 ``hashed``, kept in the store:
    its cookie value and what it says."""
    session_id = secrets.token_hex(32)
    session = ConsoleSession(
        token_hash(session_id),
        hashed,
        int(time.time() + lifetime),
        _csrf_for(hub.console_key, session_id),
    )
    ends = datetime.fromtimestamp(session.expires, UTC)

    def keep() -> None:
        with hub.store.transaction() as s:
            console_sessions.open_session(s, session.session_hash, hashed, ends)

    await run_in_threadpool(keep)
    return f"{_VERSION}.{session_id}.{_sign(hub.console_key, 'session', session_id)}", session


async def read_session(hub: Any, value: str | None) -> ConsoleSession | None:
    """The session a cookie value stands for, if the hub signed it and the
    store has it neither signed out nor expired. The signature is checked
    first, so a forged cookie costs no lookup."""
    session_id = _session_id(hub.console_key, value)
    if session_id is None:
        return None
    hashed = token_hash(session_id)

    def lookup() -> console_sessions.Found | None:
        with hub.store.read() as s:
            return console_sessions.find(s, hashed)

    found = await run_in_threadpool(lookup)
    if found is None:
        return None
    csrf = _csrf_for(hub.console_key, session_id)
    return ConsoleSession(hashed, found.token_hash, int(found.expires_at.timestamp()), csrf)


async def session_principal(hub: Any, session: ConsoleSession) -> Principal | None:
    """Whom ``session`` acts for now: None once it is signed out or its token is
    no longer good (for a log stream, which outlives the request that checked)."""

    def lookup() -> console_sessions.Found | None:
        with hub.store.read() as s:
            return console_sessions.find(s, session.session_hash)

    if await run_in_threadpool(lookup) is None:
        return None
    return await principal_for(hub, session.token_hash)


async def end_session(hub: Any, session: ConsoleSession) -> None:
    """Sign ``session`` out: its cookie opens nothing from now on, wherever it is."""

    def end() -> None:
        with hub.store.transaction() as s:
            console_sessions.end(s, session.session_hash)

    await run_in_threadpool(end)


def new_login_csrf(key: bytes) -> tuple[str, str]:
    """The login form's CSRF value and the signed cookie that must come back with it."""
    value = secrets.token_hex(16)
    return value, f"{_VERSION}.{value}.{_sign(key, 'login', value)}"


def login_csrf_ok(key: bytes, cookie: str | None, submitted: str | None) -> bool:
    """Whether the login form's CSRF field matches the signed login cookie."""
    value = _signed(key, "login", cookie)
    return bool(value and submitted and hmac.compare_digest(value, submitted))


def csrf_ok(session: ConsoleSession, submitted: str | None) -> bool:
    """Whether a form of ``session`` carries its CSRF secret."""
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted or "")
