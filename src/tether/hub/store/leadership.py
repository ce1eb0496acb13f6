"""Which hub process leads a role (the scheduler, the dag processor) on one database.

Several hubs may share one PostgreSQL, and each runs the scheduler loop and
the dag processor loop, but only one of each may act at a time: two
schedulers would each create the same cron runs and retry each retry (the
store's row locks keep that correct, not cheap), two dag processors would
race to store the same files. A role's leader holds a PostgreSQL
session-level advisory lock (``pg_try_advisory_lock``) on a connection of
its own (:meth:`Store.direct_connection
<tether.hub.store.db.Store.direct_connection>`). The lock is the
session's, so it goes when the leader does: a stopped hub closes the
connection, a killed one's socket is closed by its kernel, a vanished
machine's by TCP keepalives on the database's side. The other hubs try for
the lock every :data:`RETRY_INTERVAL` seconds and one takes over.

:meth:`Lead.hold` is asked before each pass of the role's loop; it checks
that the lock's connection is still alive (a database restart drops the
session and the lock with it) and steps down if not. A leader whose
connection died finds out at its next pass, so for at most one pass two
hubs may act at once: every pass is made of transactions that lock the
rows they change, which keeps that correct.

SQLite is one hub's own file: there every hub leads every role.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tether.hub.store.db import Store

log = logging.getLogger("tether.hub.store")

#: The advisory lock key of each role (any other use of advisory locks in
#: the same database must avoid them; claims use ``dialect.CLAIM_LOCK_KEY``).
ROLE_KEYS = {
    "scheduler": 0x7E7E_5C4E,
    "dag_processor": 0x7E7E_DA65,
}

#: Seconds between a standby hub's tries to take a role.
RETRY_INTERVAL = 1.0


class Lead:
    """This process's claim to one role. Blocking: call from a thread."""

    def __init__(self, store: Store, role: str) -> None:
        if role not in ROLE_KEYS:
            raise ValueError(f"unknown role {role!r}")
        self.store = store
        self.role = role
        self._conn: Any = None
        self._lock = threading.Lock()
        self._failing = False  # say it once per outage, not once a second
        #: Whether other hub processes may share the database (PostgreSQL).
        self._shared = store.dialect == "postgresql"
        #: What the last :meth:`hold` found (read without blocking, e.g. by /health).
        self.leading = not self._shared

    def hold(self) -> bool:
        """Whether this process leads the role now: keeps the lock it has (if
        its connection lives) or tries to take it.

        A standby keeps its connection between tries (one try a second costs
        a query, not a new database session each time).
        """
        if not self._shared:
            return True
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self.store.direct_connection()
                if self.leading:
                    self._conn.execute("SELECT 1")  # the session, and the lock, live
                    return True
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (ROLE_KEYS[self.role],)
                ).fetchone()
            except Exception as exc:
                if self.leading:
                    log.warning("%s: lost the leader lock's connection (%s)", self.role, exc)
                elif not self._failing:
                    log.warning("%s: cannot try for the leader lock (%s)", self.role, exc)
                self._failing = True
                self._drop()
                return False
            self._failing = False
            if row is not None and row[0] is True:
                self.leading = True
                log.info("this hub now leads the %s", self.role.replace("_", " "))
            return self.leading

    def release(self) -> None:
        """Give the role up (the hub stops): another hub takes it at once."""
        with self._lock:
            if self.leading and self._shared:
                log.info("this hub no longer leads the %s", self.role.replace("_", " "))
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.leading = not self._shared
        if conn is not None:
            try:
                conn.close()  # the session ends, and its lock with it
            except Exception:  # already broken
                pass
