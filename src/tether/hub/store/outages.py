"""The database going away and coming back, as the hub lives through it.

A PostgreSQL restart (an upgrade, a fail-over, a crash) cuts every pooled
connection and refuses new ones until the server is back. Nothing of the
hub's state is lost with them: each transaction either committed or rolls
back, so the hub only has to wait and try again. What must not happen is
what the default handling does: a traceback per request and per loop pass,
a 500 to every worker, a loop that dies.

So, for the whole hub:

- the engine reports, through SQLAlchemy's ``handle_error`` event, every
  error that means the database cannot be reached (a connection cut in the
  middle, or one that cannot be opened), and raises :class:`StoreUnavailable`
  in its place, so every caller can tell an outage from a bug by its type;
- :class:`Outage` writes one warning when the first such error comes, and
  one line when a new connection opens again (the pool's ``connect`` event),
  however many requests and passes fail in between;
- stale pooled connections are found by ``pool_pre_ping`` and replaced, and
  SQLAlchemy drops the whole pool on a disconnect, so the first transaction
  after the restart already works;
- the APIs answer 503 with ``Retry-After`` (``hub/app.py``), which workers
  retry; the background loops wait with :class:`Backoff` and go on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("tether.hub.store")


class StoreUnavailable(DBAPIError):
    """The database cannot be reached just now; try the transaction again later."""


def _summary(exc: BaseException) -> str:
    """The driver's message, first line only (it never holds the password)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Outage:
    """Whether the database is away, logged once per outage. Safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def began(self, exc: BaseException) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.warning(
            "the database is unreachable (%s); requests get 503 and background work "
            "waits until it is back",
            _summary(exc),
        )

    def ended(self) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted, self._since = time.monotonic() - self._since, None
        log.warning("the database is back after %.1fs", lasted)


def watch(engine: Engine, outage: Outage) -> None:
    """Report the engine's lost connections to ``outage`` and raise StoreUnavailable."""

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> BaseException | None:
        # No connection: it could not be opened. A disconnect: it was cut.
        if not (ctx.is_disconnect or ctx.connection is None):
            return None
        if not isinstance(ctx.original_exception, Exception):
            return None
        outage.began(ctx.original_exception)
        return StoreUnavailable(
            ctx.statement,
            ctx.parameters,
            ctx.original_exception,
            connection_invalidated=ctx.is_disconnect,
        )

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_conn: Any, _record: Any) -> None:
        outage.ended()


class Backoff:
    """How long a background loop waits after a failed pass: ``first`` seconds,
    doubling up to ``most``, back to ``first`` after a pass that worked.

    The loop logs a bug (any other exception) with its traceback, but not an
    outage: :class:`Outage` has said that once for the whole hub.
    """

    def __init__(self, logger: logging.Logger, first: float = 0.5, most: float = 10.0) -> None:
        self.log, self.first, self.most = logger, first, most
        self._next = first

    def failed(self, exc: Exception, what: str) -> float:
        """Log ``exc`` unless it is an outage; the seconds to wait before the next pass."""
        if not isinstance(exc, StoreUnavailable):
            self.log.error("%s failed; trying again", what, exc_info=exc)
        wait, self._next = self._next, min(self._next * 2, self.most)
        return wait

    def succeeded(self) -> None:
        self._next = self.first
