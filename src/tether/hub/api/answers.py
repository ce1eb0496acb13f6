"""What the REST API answers, as pydantic models: the OpenAPI document's response bodies.

The store functions build plain dicts (``core/queries.py`` and its peers);
each route names one of these models as its ``response_model``, and FastAPI
checks the dict against it on the way out. The models are strict and forbid
unknown fields, so they can only describe an answer, never change it: a key
the store adds without a field here, or a value of another type, is a 500 in
the first test that reads the route, not a document that silently lies.
Routes whose answers leave keys out (a worker that never sent its facts, a
variable whose value is secret) use ``response_model_exclude_unset``, so an
absent key stays absent rather than becoming ``null``.

Times are ISO 8601 strings with an offset, as the store functions write them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """Strict and closed: what the route returns must be exactly this."""

    model_config = ConfigDict(extra="forbid", strict=True)


Time = str | None
#: Any JSON value a DAG author or a client chose (conf, params, extra, outputs).
Json = dict[str, Any]


class Health(Answer):
    status: str = Field(description="always `ok` when the hub answers")
    version: str
    database: str = Field(description="the store's dialect: `sqlite` or `postgresql`")
    leads: list[str] = Field(
        description="the roles this hub process leads now, of `scheduler` and "
        "`dag_processor`: every one on SQLite; with several hubs on one PostgreSQL, "
        "one hub leads each (docs/deployment.md)"
    )


class DagSummary(Answer):
    """A DAG as lists show it."""

    dag_id: str
    fileloc: str = Field(description="the DAG file, relative to the DAGs folder")
    description: str | None
    schedule: str | int | float | dict[str, Any] | None = Field(
        description="a cron expression or preset, seconds of a timedelta, "
        '`{"assets": [URI, ...]}`, or null'
    )
    tags: list[str]
    is_paused: bool
    is_active: bool
    next_dagrun: Time
    next_dagrun_create_after: Time
    task_ids: list[str]
    queues: list[str]
    bundle_sha: str | None
    import_error: str | None = Field(
        description="its file's import error, if the file is broken now (the DAG "
        "then runs the last version that parsed)"
    )


class DagList(Answer):
    dags: list[DagSummary]


class BundleFile(Answer):
    name: str
    size: int


class DagDetail(DagSummary):
    """A DAG with its params, tasks, and the files of the code a worker gets for it."""

    params: dict[str, Json] = Field(
        description='name -> {"schema", "description", "default" (absent: required)}'
    )
    tasks: list[Json] = Field(description="each task as the dag processor serialized it")
    include: list[str]
    files: list[BundleFile] | None = Field(
        description="the DAG bundle's files; null for a bundle made before the hub recorded them"
    )


class RunSummary(Answer):
    dag_id: str
    run_id: str
    run_type: str = Field(description="`manual`, `scheduled`, `backfill` or `asset_triggered`")
    state: str = Field(description="`queued`, `running`, `success` or `failed`")
    conf: Json
    params: Json = Field(description="the DAG's param defaults overridden by `conf`")
    logical_date: Time
    data_interval_start: Time
    data_interval_end: Time
    started_at: Time
    ended_at: Time
    bundle_sha: str | None


class RunList(Answer):
    dag_runs: list[RunSummary]
    total_entries: int = Field(description="runs that match, on every page")


class TaskInstanceRow(Answer):
    task_id: str
    map_index: int = Field(description="-1 when the task is not mapped")
    state: str | None = Field(description="null while it waits for its upstream tasks")
    try_number: int
    max_tries: int
    worker: str | None
    queue: str
    queued_at: Time
    started_at: Time
    ended_at: Time
    next_retry_at: Time
    error: str | None = Field(description="why its latest try ended, when it did not succeed")


class RunDetail(RunSummary):
    tasks: list[TaskInstanceRow]


class Triggered(Answer):
    run_id: str


class WorkerRow(Answer):
    """A worker; the facts after ``last_heartbeat`` come from its heartbeats, and
    are absent until it has sent one."""

    name: str
    state: str = Field(
        description="`enrolled`, `idle`, `running`, `maintenance`, `draining`, `offline`, "
        "`lost` or `revoked`"
    )
    queues: list[str] = Field(description="the queues it serves now")
    allowed_queues: list[str] = Field(description="the queues its credential allows")
    concurrency: int | None
    free_slots: int | None
    version: str | None
    maintenance: bool | None
    maintenance_comment: str | None
    requested_maintenance: bool | None
    shutdown_requested: bool | None
    update_requested: bool
    enrolled_at: Time
    first_seen: Time
    last_heartbeat: Time
    hostname: str | None = None
    platform: str | None = None
    python: str | None = None
    running: list[str] = Field(default_factory=list, description="attempt ids it runs")
    spool_error: str | None = None
    update_error: str | None = None


class WorkerList(Answer):
    workers: list[WorkerRow]


class QueueRow(Answer):
    name: str
    queued: int
    oldest_queued_at: Time
    workers: list[str] = Field(description="the live workers that serve it")


class QueueList(Answer):
    queues: list[QueueRow]


class ImportErrorRow(Answer):
    fileloc: str
    message: str
    timestamp: Time


class ImportErrorList(Answer):
    import_errors: list[ImportErrorRow]


class AuditEntry(Answer):
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    address: str | None
    details: Json


class AuditPage(Answer):
    entries: list[AuditEntry]
    next_before_id: int | None = Field(
        description="pass as `before_id` for the next, older page; null on the last"
    )


class AssetEvent(Answer):
    id: int
    uri: str
    extra: Json
    source_dag_id: str | None = Field(description="null for an event posted to the API")
    source_run_id: str | None
    source_task_id: str | None
    timestamp: str


class Producer(Answer):
    dag_id: str
    task_id: str


class AssetRow(Answer):
    uri: str
    name: str
    extra: Json
    created_at: Time
    consumers: list[str] = Field(description="active DAGs scheduled on it")
    producers: list[Producer] = Field(description="tasks that have it in their outlets")
    queued_for: list[str] = Field(description="DAGs waiting for their other assets")
    last_event: AssetEvent | None


class AssetList(Answer):
    assets: list[AssetRow]


class AssetEventList(Answer):
    asset_events: list[AssetEvent]


class RunRef(Answer):
    dag_id: str
    run_id: str


class PostedEvent(Answer):
    event: AssetEvent
    triggered_runs: list[RunRef]


class EnrolmentToken(Answer):
    """The one answer that holds the token: it is shown once."""

    token: str
    id: str
    name: str
    queues: list[str]
    replace: bool
    expires_at: str


class EnrolmentTokenRow(Answer):
    id: str
    name: str | None
    queues: list[str]
    replace: bool
    state: str = Field(description="`unspent`, `used`, `revoked` or `expired`")
    created_at: str
    expires_at: str
    used_at: Time
    revoked_at: Time


class EnrolmentTokenList(Answer):
    tokens: list[EnrolmentTokenRow]


class EnrolmentTokenState(Answer):
    id: str
    state: str


class Maintenance(Answer):
    name: str
    maintenance: str = Field(description="`on` or `off`")


class Shutdown(Answer):
    name: str
    shutdown: str = Field(description="`requested`")


class Update(Answer):
    name: str
    update: str = Field(description="`requested`, or `nothing to do` on the hub's version")
    to: str = Field(description="the hub's version")


class QueueUpdate(Answer):
    queue: str
    to: str
    requested: list[str] = Field(description="workers asked to update")
    current: list[str] = Field(description="workers on the hub's version already")


class WorkerLogEntry(Answer):
    id: int = Field(description="grows with every line; give the last one as `after` to read on")
    received_at: str = Field(description="when the hub received it")
    line: str = Field(description="as the worker wrote it to its stderr, its secrets masked")


class WorkerLog(Answer):
    name: str
    lines: list[WorkerLogEntry] = Field(description="oldest first")
    last_id: int | None = Field(description="the last line's id (or `after`'s): read on from it")


class WorkerState(Answer):
    name: str
    state: str = Field(description="`revoked` or `removed`")


class MarkedTask(Answer):
    task_id: str
    state: str
    map_indexes: list[int]


class ClearedTask(Answer):
    task_id: str
    state: str = Field(description="`cleared`")
    cleared: list[str] = Field(description="the task ids that run again")


class MarkedRun(Answer):
    run_id: str
    state: str


class ClearedRun(Answer):
    run_id: str
    cleared: list[str]


class PoolRow(Answer):
    name: str
    slots: int | None = Field(description="-1 for unlimited; null for a missing pool")
    description: str | None
    missing: bool = Field(description="tasks name it but it does not exist (they wait)")
    running: int
    queued: int
    occupied_slots: int


class PoolList(Answer):
    pools: list[PoolRow]


class Pool(Answer):
    name: str
    slots: int
    description: str | None


class Deleted(Answer):
    name: str
    state: str = Field(description="`deleted`")


class Backfill(Answer):
    dag_id: str
    run_ids: list[str] = Field(description="the runs created")
    existing: list[str] = Field(description="logical dates in the range that had a run already")
    future: int = Field(description="intervals in the range that have not ended yet")


class ConnectionSaved(Answer):
    conn_id: str
    state: str = Field(description="`created` or `replaced`")


class ConnectionRow(Answer):
    conn_id: str
    conn_type: str
    host: str | None
    queues: list[str]
    description: str | None


class ConnectionList(Answer):
    connections: list[ConnectionRow]


class Connection(Answer):
    """A connection; ``password`` and ``uri`` only with ``reveal``. Without it,
    values under keys of the extra that look secret read ``***``."""

    conn_id: str
    conn_type: str
    host: str | None
    login: str | None
    schema_: str | None = Field(alias="schema")
    port: int | None
    extra: Json | None
    has_password: bool
    queues: list[str]
    description: str | None
    created_at: str
    updated_at: str
    password: str | None = None
    uri: str | None = None


class ConnectionDeleted(Answer):
    conn_id: str
    state: str = Field(description="`deleted`")


class VariableSaved(Answer):
    key: str
    state: str = Field(description="`created` or `updated`")


class VariableRow(Answer):
    key: str
    is_secret: bool
    queues: list[str]
    description: str | None


class VariableList(Answer):
    variables: list[VariableRow]


class Variable(Answer):
    """A variable; a secret one's ``value`` only with ``reveal``."""

    key: str
    is_secret: bool
    queues: list[str]
    description: str | None
    created_at: str
    updated_at: str
    value: str | None = None


class VariableDeleted(Answer):
    key: str
    state: str = Field(description="`deleted`")


class Rotation(Answer):
    source: str = Field(description="`key_file` or `environment`")
    keys_kept: int
    connections: int = Field(description="connections re-encrypted")
    variables: int = Field(description="variables re-encrypted")
    message: str


class ApiTokenRow(Answer):
    name: str
    role: str = Field(description="`viewer`, `operator` or `admin`")
    state: str = Field(description="`active`, `expired` or `revoked`")
    builtin: bool = Field(description="the built-in admin token")
    created_at: Time
    created_by: str | None
    expires_at: Time
    revoked_at: Time
    last_used_at: Time


class ApiToken(ApiTokenRow):
    """The one answer that holds the token: it is shown once."""

    token: str


class ApiTokenList(Answer):
    tokens: list[ApiTokenRow]
