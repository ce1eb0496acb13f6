"""Engine, sessions and migrations for the metadata store.

SQLite (WAL, under the hub's home) is the embedded default; PostgreSQL is used
when the URL says so. Dialect-specific SQL lives in :mod:`dialect`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tether.hub.store import broadcast, effects
from tether.hub.store.outages import Outage, watch

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Execution option of the connections of read-only transactions (see Store.read).
READ_ONLY = "tether_read_only"


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'tether.db'}"


#: A query parameter of a PostgreSQL URL that the hub reads itself: psycopg's
#: ``prepare_threshold`` (``none`` never prepares; for PgBouncer before 1.21 in
#: transaction mode, which cannot keep a prepared statement between transactions).
PREPARE_THRESHOLD = "prepare_threshold"


def connect_arguments(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without the parameters the hub reads itself, and the driver
    arguments they make (see :data:`PREPARE_THRESHOLD`)."""
    if url.startswith("sqlite"):
        return url, {}
    parsed = make_url(url)
    if PREPARE_THRESHOLD not in parsed.query:
        return url, {}
    value = parsed.query[PREPARE_THRESHOLD]
    text = value if isinstance(value, str) else value[-1]
    threshold: int | None
    if text.strip().lower() in ("none", "off", "never"):
        threshold = None
    else:
        try:
            threshold = int(text)
        except ValueError:
            raise ValueError(
                f"{PREPARE_THRESHOLD} in the database URL must be a whole number or "
                f"'none', not {text!r}"
            ) from None
    rest = parsed.difference_update_query([PREPARE_THRESHOLD])
    return rest.render_as_string(hide_password=False), {PREPARE_THRESHOLD: threshold}


def make_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite set up for a concurrent server."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, start transactions (see "begin").
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Take the write lock up front: a read that later writes would
            # otherwise fail with "database is locked" instead of waiting.
            # A read-only transaction (Store.read) takes none: in WAL mode it
            # reads a snapshot and never waits for a writer, and query_only
            # makes a write in it fail at once instead of queueing for the lock.
            if conn.get_execution_options().get(READ_ONLY, False):
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql("PRAGMA query_only = ON")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "checkin")
        def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
            # Whatever ended the read (commit, rollback, the pool's reset), the
            # connection goes back into the pool able to write again.
            if dbapi_conn is not None:  # None: it was invalidated, and is closed
                dbapi_conn.execute("PRAGMA query_only = OFF")

        return engine
    # A pooled connection a database restart cut is found on checkout and replaced
    # (see outages.py for the rest of an outage).
    url, connect_args = connect_arguments(url)
    return create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


class Store:
    """The engine and the two kinds of transaction.

    ``with store.transaction() as s`` is one unit of work: it commits at the
    end of the block (rolls back on an exception) and then fires the effects
    its store functions recorded (:mod:`tether.hub.store.effects`) into
    :attr:`effects`. ``with store.read() as s`` only reads.
    """

    def __init__(
        self, url: str, sink: effects.EffectSink | None = None, direct_url: str | None = None
    ) -> None:
        self.url = url
        #: Where committed effects go (the hub's wake-ups); None drops them.
        self.effects = sink
        self.engine = make_engine(url)
        #: PostgreSQL itself, for the connections that live as long as the hub
        #: (LISTEN, leader locks): a transaction-mode pooler in ``url`` cannot
        #: carry them. Defaults to ``url``.
        self.direct_url = direct_url or url
        #: This process's name on the effects channel (``store/broadcast.py``).
        self.sender = broadcast.new_sender()
        #: Whether transactions announce their effects to other hub processes.
        self.broadcasts = self.dialect == "postgresql"
        #: Whether the database is reachable; a lost one raises StoreUnavailable.
        self.outage = Outage()
        watch(self.engine, self.outage)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL: psycopg starts the transaction with BEGIN READ ONLY and
        # SQLAlchemy resets that when the connection goes back to the pool.
        readers = self.engine.execution_options(**{READ_ONLY: True})
        if self.dialect == "postgresql":
            readers = readers.execution_options(postgresql_readonly=True)
        self._readers = sessionmaker(readers, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as s:
            with s.begin():
                yield s
                told = effects.peek(s)
                if self.broadcasts and told is not None and told.any():
                    # Delivered by PostgreSQL at the commit, and only if it commits.
                    broadcast.announce(s, self.sender, told)
            # Committed: only now may anyone be told. A rollback raised out of
            # the block above, and the recorded effects went with the session.
            fx = effects.take(s)
        if fx is not None and self.effects is not None:
            fx.fire(self.effects)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads, and may only read: on SQLite it takes
        no write lock (a write in it fails at once), on PostgreSQL it is READ ONLY.

        For every REST read (``state.in_read``) and for lookups on paths anyone
        can hit (checking a presented credential), so that they never queue
        behind, or hold up, the hub's writers.
        """
        with self._readers() as s, s.begin():
            yield s

    def direct_connection(self) -> Any:
        """A new psycopg connection to :attr:`direct_url`, in autocommit mode,
        outside the pool: for a connection held as long as the hub runs.

        TCP keepalives are on at both ends, so that a peer that vanished (a
        hub's machine, a cut network) is noticed in about half a minute, and a
        leader lock held by a dead hub is released as soon.
        """
        import psycopg  # tether[postgres]

        # A direct connection runs a handful of statements: nothing to prepare.
        direct, _ = connect_arguments(self.direct_url)
        cargs, cparams = self.engine.dialect.create_connect_args(make_url(direct))
        conn = psycopg.connect(
            *cargs,
            **{
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "connect_timeout": 10,
                **cparams,
            },
            autocommit=True,
        )
        conn.execute("SET tcp_keepalives_idle = 10")
        conn.execute("SET tcp_keepalives_interval = 5")
        conn.execute("SET tcp_keepalives_count = 3")
        return conn

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
