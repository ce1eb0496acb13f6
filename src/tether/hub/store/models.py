"""The metadata store's tables (SQLAlchemy 2). Alembic migrations must match these."""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always time-zone aware UTC in Python.

    SQLite keeps no zone, so values are stored as UTC and given the zone back
    when read; PostgreSQL stores ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Bundle(Base):
    """A content-addressed tar.gz of the code one DAG needs (a few files of the
    DAGs folder; bundles of hubs before 0006 hold the whole folder)."""

    __tablename__ = "bundle"
    sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    #: When a parse last found it current (made it, or found it again): ``db clean``
    #: deletes a bundle nothing uses by how long ago that was.
    created_at: Mapped[datetime]
    #: What it holds: ``[[name, size], ...]`` sorted by name (null before 0006).
    files: Mapped[list[Any] | None] = mapped_column(JSON)


class Dag(Base):
    __tablename__ = "dag"
    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    fileloc: Mapped[str] = mapped_column(String(1000))
    bundle_sha: Mapped[str] = mapped_column(String(64))
    serialized: Mapped[dict[str, Any]]
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    schedule: Mapped[str | None] = mapped_column(String(200))
    #: Start of the data interval of the next scheduled run, if any.
    next_dagrun: Mapped[datetime | None]
    #: When that run may be created (the end of its data interval).
    next_dagrun_create_after: Mapped[datetime | None]
    #: Most runs of this DAG that may be running at once; more wait as ``queued``.
    max_active_runs: Mapped[int] = mapped_column(Integer, default=16)
    #: Most task instances of this DAG (all its runs) that may be running at once.
    max_active_tasks: Mapped[int] = mapped_column(Integer, default=16)
    last_parsed_at: Mapped[datetime]


class ImportError_(Base):
    """A DAG file that failed to load."""

    __tablename__ = "import_error"
    fileloc: Mapped[str] = mapped_column(String(1000), primary_key=True)
    message: Mapped[str] = mapped_column(Text)
    bundle_sha: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DagRun(Base):
    __tablename__ = "dag_run"
    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        Index(None, "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(250), index=True)
    run_id: Mapped[str] = mapped_column(String(250))
    run_type: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    conf: Mapped[dict[str, Any]]
    bundle_sha: Mapped[str] = mapped_column(String(64))
    #: The DAG as it was when the run started (a run is pinned to its bundle);
    #: read it as :attr:`serialized`.
    serialized_: Mapped[dict[str, Any]] = mapped_column("serialized", JSON)
    logical_date: Mapped[datetime | None]
    data_interval_start: Mapped[datetime | None]
    data_interval_end: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    #: When a running run fails for taking too long (the DAG's dagrun_timeout).
    timeout_at: Mapped[datetime | None] = mapped_column(index=True)

    @property
    def serialized(self) -> dict[str, Any]:
        """The DAG as it was when the run started. Never changed after the
        run's creation, and never to be changed in place.

        A query on a hot path (a finish, a claim) leaves the column out
        (``defer(DagRun.serialized_)``): then it comes from this process's
        :data:`RUN_SPECS`, decoded once per run instead of once per request
        (a DAG of 2,000 tasks is most of a megabyte of JSON).
        """
        if "serialized_" in self.__dict__ or self.id is None:
            return self.serialized_
        return RUN_SPECS.get(self)

    @serialized.setter
    def serialized(self, value: dict[str, Any]) -> None:
        self.serialized_ = value


class RunSpecs:
    """The decoded ``serialized`` of the runs used lately, in this process.

    Keyed by what names one run for good (its id, DAG, run id, bundle and
    the moment it was made), so a run deleted and made again under the same
    names (SQLite may give it the same id) is not taken for the old one; the
    newest ``size`` are kept.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        #: Lookups answered from memory, and those that read the store.
        self.hits = 0
        self.misses = 0

    def get(self, run: DagRun) -> dict[str, Any]:
        key = (run.id, run.dag_id, run.run_id, run.bundle_sha, run.created_at)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
        value = run.serialized_  # loads the deferred column: one SELECT
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


#: This process's :class:`RunSpecs`.
RUN_SPECS = RunSpecs()


class TaskInstance(Base):
    __tablename__ = "task_instance"
    __table_args__ = (
        UniqueConstraint("dag_run_id", "task_id", "map_index"),
        # The claim query: queued work of some queues, by priority then age.
        Index(None, "state", "queue", "priority_weight", "queued_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_run_id: Mapped[int] = mapped_column(ForeignKey("dag_run.id", ondelete="CASCADE"))
    dag_id: Mapped[str] = mapped_column(String(250))
    run_id: Mapped[str] = mapped_column(String(250))
    task_id: Mapped[str] = mapped_column(String(250))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    state: Mapped[str | None] = mapped_column(String(20))
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(String(256))
    priority_weight: Mapped[int] = mapped_column(Integer, default=1)
    pool_slots: Mapped[int] = mapped_column(Integer, default=1)
    pool: Mapped[str] = mapped_column(String(256), default="default_pool")
    #: The attempt that currently holds this task instance, if any.
    attempt_id: Mapped[str | None] = mapped_column(String(32))
    worker_name: Mapped[str | None] = mapped_column(String(250))
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    next_retry_at: Mapped[datetime | None] = mapped_column(index=True)
    output: Mapped[Any | None] = mapped_column(JSON)


class TaskAttempt(Base):
    """One try of one task instance on one worker. Reports name its id."""

    __tablename__ = "task_attempt"
    __table_args__ = (
        UniqueConstraint("task_instance_id", "try_number"),
        # Each heartbeat looks up its worker's running attempts (reconcile, directives).
        Index(None, "worker_name", "state"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_instance_id: Mapped[int] = mapped_column(
        ForeignKey("task_instance.id", ondelete="CASCADE")
    )
    try_number: Mapped[int] = mapped_column(Integer)
    worker_name: Mapped[str] = mapped_column(String(250))
    state: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    log_size: Mapped[int] = mapped_column(BigInteger, default=0)
    #: sha256 of the token its task process fetches its declared secrets with;
    #: the token is good only while this attempt runs.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)


class LogChunk(Base):
    __tablename__ = "log_chunk"
    __table_args__ = (UniqueConstraint("attempt_id", "offset"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[str] = mapped_column(ForeignKey("task_attempt.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Worker(Base):
    """An enrolled edge worker: its credential, what it may serve, what it reports."""

    __tablename__ = "worker"
    name: Mapped[str] = mapped_column(String(250), primary_key=True)
    #: enrolled (never connected), idle, running, maintenance, offline, lost, revoked
    state: Mapped[str] = mapped_column(String(20))
    #: sha256 of the worker's credential; the credential itself is never stored.
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: The queues this credential may serve (its tenant).
    allowed_queues: Mapped[list[str]] = mapped_column(JSON)
    #: The queues the worker serves now (a subset of allowed_queues).
    queues: Mapped[list[str]] = mapped_column(JSON)
    concurrency: Mapped[int] = mapped_column(Integer, default=0)
    free_slots: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str | None] = mapped_column(String(50))
    info: Mapped[dict[str, Any]]
    #: The current process of this worker; an older session is refused (409).
    session_id: Mapped[str | None] = mapped_column(String(32))
    #: Maintenance as the worker reports it (set on its machine or from the centre).
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    maintenance_comment: Mapped[str | None] = mapped_column(Text)
    #: Maintenance asked for from the centre, delivered in replies to the worker.
    requested_maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_comment: Mapped[str | None] = mapped_column(Text)
    shutdown_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The id of an update to the hub's version an operator asked for, until the
    #: worker acts on it (Directives.update); None: none asked for.
    update_requested: Mapped[str | None] = mapped_column(String(32))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    first_seen: Mapped[datetime | None]
    last_heartbeat: Mapped[datetime | None]


class WorkerLogLine(Base):
    """One line of a worker's own log, as it shipped it (``hub/core/worker_logs.py``).

    Only the newest lines of each worker are kept; removing the worker removes them.
    """

    __tablename__ = "worker_log_line"
    __table_args__ = (Index(None, "worker", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str] = mapped_column(ForeignKey("worker.name", ondelete="CASCADE"))
    #: When the hub received it (the line itself starts with the worker's own time).
    received_at: Mapped[datetime]
    line: Mapped[str] = mapped_column(Text)


class CallbackRequest(Base):
    """A DAG-level callback (on_success_callback / on_failure_callback) to run on the hub."""

    __tablename__ = "callback_request"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(250))
    run_id: Mapped[str] = mapped_column(String(250))
    #: on_success_callback or on_failure_callback
    kind: Mapped[str] = mapped_column(String(40))
    #: Why the run ended: success, task_failure, timed_out, marked.
    reason: Mapped[str] = mapped_column(String(40))
    bundle_sha: Mapped[str] = mapped_column(String(64))
    fileloc: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime]


class Pool(Base):
    """A named number of slots that the running task instances in it may take."""

    __tablename__ = "pool"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    #: Slots of the pool; -1 is unlimited.
    slots: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)


class Asset(Base):
    """A piece of data that tasks update (``outlets``) and DAGs wait for (``schedule=[...]``).

    Registered by the dag processor from the DAGs that name it; never deleted,
    so its events stay readable after the DAGs change.
    """

    __tablename__ = "asset"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uri: Mapped[str] = mapped_column(String(1500), unique=True)
    name: Mapped[str] = mapped_column(String(1500))
    extra: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class AssetEvent(Base):
    """An update of an asset: a task with it in ``outlets`` succeeded, or someone posted one."""

    __tablename__ = "asset_event"
    __table_args__ = (Index(None, "asset_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="CASCADE"))
    extra: Mapped[dict[str, Any]]
    #: The task that produced it; all three are null for an event posted to the API.
    source_dag_id: Mapped[str | None] = mapped_column(String(250))
    source_run_id: Mapped[str | None] = mapped_column(String(250))
    source_task_id: Mapped[str | None] = mapped_column(String(250))
    created_at: Mapped[datetime]


class DagScheduleAsset(Base):
    """One asset of a DAG's ``schedule=[...]``; kept by the dag processor."""

    __tablename__ = "dag_schedule_asset"
    dag_id: Mapped[str] = mapped_column(
        ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True
    )
    asset_id: Mapped[int] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AssetDagRunQueue(Base):
    """An asset that has had an event since the last run of a DAG scheduled on it.

    When every asset of the DAG's schedule has a row, a run is created and
    the DAG's rows are deleted (``scheduler.assets``). Rows of a DAG are only
    written while its ``dag`` row is locked.
    """

    __tablename__ = "asset_dag_run_queue"
    asset_id: Mapped[int] = mapped_column(
        ForeignKey("asset.id", ondelete="CASCADE"), primary_key=True
    )
    target_dag_id: Mapped[str] = mapped_column(
        ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: The first event of the asset since the DAG's last run; the run lists it and later ones.
    first_event_id: Mapped[int] = mapped_column(ForeignKey("asset_event.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class EnrolmentToken(Base):
    """A one-time token that a new worker exchanges for its own credential."""

    __tablename__ = "enrolment_token"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    worker_name: Mapped[str] = mapped_column(String(250), index=True)
    queues: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    #: Revoked by an operator, or voided when its worker was revoked or removed.
    revoked_at: Mapped[datetime | None]
    #: It may replace a worker of its name that exists (--replace); else it is refused.
    replace: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A named REST API token with a role (``hub/core/api_tokens.py``).

    Only the token's SHA-256 is kept, never the token. Revoked tokens stay, so
    the name keeps its history and the audit log its meaning.
    """

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    #: ``viewer``, ``operator`` or ``admin``.
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    #: The audit actor that made it (``admin``, or another admin token's name).
    created_by: Mapped[str] = mapped_column(String(300))
    #: None: it never expires.
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    #: When it last authenticated a request, written at most once a minute.
    last_used_at: Mapped[datetime | None]


class ConsoleSession(Base):
    """A web console session (``hub/core/console_sessions.py``).

    Keyed by the SHA-256 of the random session id its cookie carries, so the
    table holds nothing a browser could present; signing out ends the row, and
    a copied cookie with it.
    """

    __tablename__ = "console_session"
    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The SHA-256 of the API token it signed in with: resolved to a principal
    #: on every request, so a revoked token ends its sessions.
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    #: When it was signed out; None while it lasts.
    ended_at: Mapped[datetime | None]


class Connection(Base):
    """A connection (Airflow's sense): where a system is and how to log in.

    The password and the extra are kept encrypted (``hub/core/vault.py``); the rest
    is shown to anyone who may list connections.
    """

    __tablename__ = "connection"
    conn_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    conn_type: Mapped[str] = mapped_column(String(100))
    host: Mapped[str | None] = mapped_column(String(1000))
    login: Mapped[str | None] = mapped_column(String(1000))
    schema: Mapped[str | None] = mapped_column(String(1000))
    port: Mapped[int | None] = mapped_column(Integer)
    #: ``{"password": ..., "extra": ...}`` as JSON, encrypted with the hub's key.
    secret: Mapped[str] = mapped_column(Text)
    #: Queues whose tasks may read it; empty means every queue.
    queues: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Variable(Base):
    """A named value tasks read (``Variable.get``); kept encrypted, like a connection's
    password. A secret one is never shown back and is masked in task logs."""

    __tablename__ = "variable"
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    #: The value, encrypted with the hub's key.
    value: Mapped[str] = mapped_column(Text)
    is_secret: Mapped[bool] = mapped_column(Boolean, default=False)
    queues: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AuditEntry(Base):
    """Who did what, when, from where (``hub/core/audit.py``). Never holds a secret value."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    #: ``admin``, an API token's name, ``worker:NAME``, ``attempt:ID``, ``enrolment``, ``cli``.
    actor: Mapped[str] = mapped_column(String(300), index=True)
    #: What was done, dotted: ``dag.trigger``, ``connection.create``, ``secret.read``, ...
    action: Mapped[str] = mapped_column(String(100))
    #: What it was done to: ``dag:ID``, ``connection:NAME``, ``worker:NAME``, ...
    target: Mapped[str | None] = mapped_column(String(1000))
    details: Mapped[dict[str, Any]]
    #: The client's address, as the gate saw it.
    address: Mapped[str | None] = mapped_column(String(100))
