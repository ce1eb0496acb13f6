"""Who is using the web console: its signed session cookie and the principal behind it.

The console (``hub/ui/``) signs in with an API token and keeps, in a cookie,
only what it needs to recognise the browser again: the token's sha256, when
the session ends, and a CSRF secret that every form of the session carries.
The token itself never leaves the login request. The cookie is signed with
HMAC-SHA256 under the *console key* (``TETHER_CONSOLE_KEY``, or
``HUB_HOME/console_key``, made on first start, 0600), so a browser cannot
change what it holds; hubs that share a database and a load balancer share
the key through the variable.

Each request of a session resolves the token hash to a principal again, with
:func:`principal_for`, so a token that stops being good ends its sessions at
their next request. The gate (``auth/gate.py``) never reads this cookie: a
console session opens the console only, never ``/api/...``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.hub.auth.principal import Principal, principal_for_hash

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
_CSRF = re.compile(r"[0-9a-f]{32}")
_VERSION = "v1"


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
    """What a valid session cookie says."""

    token_hash: str
    #: Unix time the session ends.
    expires: int
    #: Every form of this session carries it (``csrf``), checked on POST.
    csrf: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, purpose: str, payload: str) -> str:
    return _b64(hmac.new(key, f"{purpose}|{payload}".encode(), hashlib.sha256).digest())


def _signed(key: bytes, purpose: str, value: str | None) -> str | None:
    """The payload of a ``v1.PAYLOAD.SIGNATURE`` value signed for ``purpose``, or None."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return None
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        return None
    if not hmac.compare_digest(parts[2], _sign(key, purpose, parts[1])):
        return None
    return parts[1]


def new_session(key: bytes, hashed: str, lifetime: float) -> tuple[str, ConsoleSession]:
    """A session for the token with sha256 ``hashed``: its cookie value and what it says."""
    session = ConsoleSession(hashed, int(time.time() + lifetime), secrets.token_hex(16))
    body = {"t": session.token_hash, "e": session.expires, "c": session.csrf}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{_VERSION}.{payload}.{_sign(key, 'session', payload)}", session


def read_session(key: bytes, value: str | None, now: float | None = None) -> ConsoleSession | None:
    """The session a cookie value holds, if it is signed with ``key`` and not expired."""
    payload = _signed(key, "session", value)
    if payload is None:
        return None
    try:
        body = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    hashed, expires, csrf = body.get("t"), body.get("e"), body.get("c")
    if not (isinstance(hashed, str) and _HEX64.fullmatch(hashed)):
        return None
    if not (isinstance(csrf, str) and _CSRF.fullmatch(csrf)):
        return None
    if type(expires) is not int or expires <= (time.time() if now is None else now):
        return None
    return ConsoleSession(hashed, expires, csrf)


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
