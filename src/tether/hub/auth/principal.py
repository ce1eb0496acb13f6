"""Who a REST request acts as: a :class:`Principal`, a name and a role.

Two kinds of token make one. The built-in admin token (``auth/tokens.py``) is
the principal :data:`ADMIN`, named ``admin``. A named API token
(``hub/core/api_tokens.py``) is looked up by its SHA-256 on every request,
in a read-only transaction (which never takes SQLite's write lock); nothing
is cached, so a revocation, by any of the hub's processes, holds from the very
next request.

The auth gate (``auth/gate.py``) calls :func:`resolve` for each ``/api/v1``
request. The web console keeps only a token's SHA-256 in its signed session
cookie and calls :func:`principal_for_hash` for each of its requests; both
get the same answer for the same token. What a principal may do is its
role's: the routes declare the role they need (``auth/deps.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from tether.hub.core import api_tokens
from tether.hub.core.api_tokens import Role

log = logging.getLogger("tether.hub")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: Most tokens :class:`LastUsed` remembers at once.
LAST_USED_ENTRIES = 10_000


@dataclass(frozen=True)
class Principal:
    """Who a REST request acts as.

    ``name`` is the audit actor of what the request changes (``admin`` for the
    built-in admin token, else the API token's name); ``role`` is what it may
    do. Immutable and small: the gate puts one in each request's scope
    (``PRINCIPAL``), and the console may build its pages from it.
    """

    name: str
    role: Role
    #: False for the built-in admin token, which is not in the token table.
    named: bool = True

    def may(self, needed: Role) -> bool:
        """Whether this principal may do what needs ``needed``."""
        return self.role.includes(needed)


#: The principal of the built-in admin token.
ADMIN = Principal("admin", Role.ADMIN, named=False)


class LastUsed:
    """When this process last asked to write each token's ``last_used_at``.

    The write is bookkeeping: it runs beside the request, never in its way
    (a read must not wait for SQLite's write lock), and at most once a minute
    per token and process; the UPDATE itself skips a token another process
    noted less than a minute ago.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._noted: OrderedDict[int, float] = OrderedDict()

    def due(self, token_id: int) -> bool:
        """Whether to note a use of ``token_id`` now; if so, it is not due for a minute."""
        now = self._clock()
        at = self._noted.get(token_id)
        if at is not None and now - at < api_tokens.LAST_USED_EVERY.total_seconds():
            return False
        self._noted[token_id] = now
        self._noted.move_to_end(token_id)
        if len(self._noted) > LAST_USED_ENTRIES:
            self._noted.popitem(last=False)
        return True


def _note_use(hub: Any, token_id: int) -> None:
    if not hub.principals.last_used.due(token_id):
        return

    def write() -> None:
        try:
            with hub.store.transaction() as s:
                api_tokens.note_use(s, token_id)
        except Exception as exc:  # a lost database, a held lock: the request is not hurt
            log.debug("could not note the use of API token %s: %s", token_id, exc)

    asyncio.get_running_loop().run_in_executor(None, write)


async def resolve(hub: Any, token_hash: str) -> Principal | str:
    """The principal of the token whose SHA-256 (hex) is ``token_hash``, or why
    there is none: ``invalid token``, ``token revoked`` or ``token expired``."""
    if not _SHA256_HEX.fullmatch(token_hash):
        return "invalid token"
    if hmac.compare_digest(token_hash, api_tokens.token_hash(hub.tokens.admin)):
        return ADMIN

    def lookup() -> api_tokens.Found | str:
        with hub.store.read() as s:
            return api_tokens.authenticate(s, token_hash)

    found = await run_in_threadpool(lookup)
    if isinstance(found, str):
        return found
    if found.stale:
        _note_use(hub, found.id)
    return Principal(found.name, found.role)


async def principal_for_hash(hub: Any, token_hash: str) -> Principal | None:
    """The principal of the token whose SHA-256 (hex) is ``token_hash``, if it is
    valid now (not unknown, revoked or expired); for the web console, which
    keeps that hash in its session. :func:`resolve` also says why not."""
    found = await resolve(hub, token_hash)
    return found if isinstance(found, Principal) else None
