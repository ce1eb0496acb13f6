"""The public REST API (``/api/v1``). Each route: schema, store function, answer.

``trigger_run`` is the example to copy when adding an endpoint.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy.orm import Session

from tether import __version__
from tether.hub.api import answers as A
from tether.hub.auth.deps import AdminAuth, HubDep, OperatorAuth, ViewerAuth
from tether.hub.auth.gate import who
from tether.hub.core import audit, backfill, control, credentials, limits, queries, worker_logs
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.hub.core.runs import utcnow
from tether.hub.errors import responses as E
from tether.hub.state import in_read, in_session
from tether.hub.wire import StrictJSONRoute, wire_value
from tether.protocol import (
    ID_PATTERN,
    LOG_SIZE_HEADER,
    MAX_ID_LENGTH,
    MAX_WIRE_INT,
    RUN_ID_PATTERN,
    TRY_NUMBER_HEADER,
    TRY_STATE_HEADER,
    InvalidQueueName,
    validate_queue_name,
)
from tether.sdk.assets import ASSET_URI_PATTERN, MAX_URI_LENGTH, validate_asset_uri
from tether.sdk.dag import DagDefinitionError

router = APIRouter(prefix="/api/v1", tags=["api"], route_class=StrictJSONRoute)

# Every id in a path is checked before any store code sees it: the patterns
# are the ones the dag processor enforces, so a request for an id that
# cannot exist gets 422, never a query (PostgreSQL refuses NUL in text).
DagId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
TaskId = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
RunId = Annotated[str, Path(pattern=f"^{RUN_ID_PATTERN}$", max_length=MAX_ID_LENGTH)]
WorkerName = Annotated[str, Path(pattern=f"^{WORKER_NAME_PATTERN}$")]
#: Counts and offsets in queries fit a 64-bit column.
Offset = Annotated[int, Query(ge=0, le=MAX_WIRE_INT)]
#: The start of a run id: the characters a run id may hold (a prefix may end in a dot).
RunIdPrefix = Annotated[
    str | None, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9_.:+~-]+$")
]
#: Years a logical date given to a trigger may have (as for backfills: schedules
#: are computed in the DAG's zone, and the ends of Python's range overflow there).
LOGICAL_YEARS = (1900, 9000)


#: A try's log is text, and its headers say where it stands.
LOG_ANSWER: dict[str, Any] = {
    "description": "the log's bytes from `offset` on, as UTF-8 text",
    "content": {"text/plain": {"schema": {"type": "string"}}},
    "headers": {
        LOG_SIZE_HEADER: {
            "description": "the try's log size in bytes so far: the offset to read on from",
            "schema": {"type": "integer"},
        },
        TRY_NUMBER_HEADER: {"description": "the try this log is of", "schema": {"type": "integer"}},
        TRY_STATE_HEADER: {
            "description": "the try's state; while `running` the log may grow",
            "schema": {"type": "string"},
        },
    },
}


class TriggerIn(BaseModel):
    conf: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID_LENGTH, pattern=f"^{RUN_ID_PATTERN}$"
    )
    #: ISO 8601; without an offset it is UTC. Kept in UTC (so is the generated run id).
    logical_date: datetime | None = None

    _check_conf = field_validator("conf")(wire_value("conf"))

    @field_validator("logical_date", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> datetime | None:
        # Parsed here, not by pydantic, which also takes numbers as Unix times.
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > 40:
            raise ValueError("logical_date must be an ISO 8601 date or datetime string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date or datetime") from None
        low, high = LOGICAL_YEARS
        if not low <= parsed.year <= high:
            raise ValueError(f"{value!r}: a logical date is in the years {low} to {high}")
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@router.get("/health", response_model=A.Health)
async def health(hub: HubDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "version": __version__,
        "database": hub.store.dialect,
        "leads": sorted(role for role, lead in hub.leads.items() if lead.leading),
    }


@router.get("/dags", dependencies=[ViewerAuth], response_model=A.DagList)
async def list_dags(hub: HubDep) -> dict[str, Any]:
    return {"dags": await in_read(hub, queries.list_dags)}


@router.get(
    "/dags/{dag_id}", dependencies=[ViewerAuth], response_model=A.DagDetail, responses=E(404)
)
async def get_dag(dag_id: DagId, hub: HubDep) -> dict[str, Any]:
    return await in_read(hub, lambda s: queries.dag_detail(s, dag_id))


class DagPatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # nothing else of a DAG can be changed here
    is_paused: StrictBool


@router.patch(
    "/dags/{dag_id}", dependencies=[OperatorAuth], response_model=A.DagSummary, responses=E(404)
)
async def patch_dag(
    dag_id: DagId, body: DagPatchIn, request: Request, hub: HubDep
) -> dict[str, Any]:
    """Pause or unpause a DAG; an unpaused one is scheduled again at once."""
    by = who(request)
    return await in_session(hub, lambda s: control.set_paused(s, dag_id, body.is_paused, by))


RunState = Literal["queued", "running", "success", "failed"]
RunType = Literal["manual", "scheduled", "backfill", "asset_triggered"]


@router.get(
    "/dags/{dag_id}/runs", dependencies=[ViewerAuth], response_model=A.RunList, responses=E(404)
)
async def list_runs(
    dag_id: DagId,
    hub: HubDep,
    state: RunState | None = None,
    run_type: RunType | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
    run_id_prefix: RunIdPrefix = None,
) -> dict[str, Any]:
    """``run_id_prefix``: only runs whose id starts with it (how the CLI finds a run
    from the start of its id)."""
    return await in_read(
        hub,
        lambda s: queries.list_runs(
            s,
            dag_id,
            state=state,
            run_type=run_type,
            limit=limit,
            offset=offset,
            run_id_prefix=run_id_prefix,
        ),
    )


@router.post(
    "/dags/{dag_id}/runs",
    dependencies=[OperatorAuth],
    response_model=A.Triggered,
    responses=E(400, 404, 409),
)
async def trigger_run(
    dag_id: DagId, body: TriggerIn, request: Request, hub: HubDep
) -> dict[str, str]:
    by = who(request)  # who triggered, for the audit entry the store function writes
    # No try: RunExists, InvalidParams and NotFound are answered by hub/errors.py.
    run_id = await in_session(
        hub, lambda s: control.trigger(s, dag_id, body.conf, body.run_id, by, body.logical_date)
    )
    return {"run_id": run_id}


@router.get(
    "/dags/{dag_id}/runs/{run_id}",
    dependencies=[ViewerAuth],
    response_model=A.RunDetail,
    responses=E(404),
)
async def get_run(dag_id: DagId, run_id: RunId, hub: HubDep) -> dict[str, Any]:
    return await in_read(hub, lambda s: queries.run_detail(s, dag_id, run_id))


@router.get(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs",
    dependencies=[ViewerAuth],
    response_class=PlainTextResponse,
    responses={200: LOG_ANSWER, **E(400, 404)},
)
async def task_log(
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    hub: HubDep,
    try_number: Annotated[int | None, Query(ge=1, le=MAX_WIRE_INT)] = None,
    map_index: Annotated[int | None, Query(ge=-1, le=MAX_WIRE_INT)] = None,
    offset: Offset = 0,
) -> Response:
    """A try's log (the latest by default); a mapped task needs ``map_index``.

    ``offset``: the bytes of the log already seen; only what follows is sent.
    The headers (``protocol.LOG_SIZE_HEADER`` and the two after it) say where
    to read on from and whether the log can still grow, so a follower polls
    for the new bytes only.
    """
    got = await in_read(
        hub, lambda s: queries.task_log(s, dag_id, run_id, task_id, try_number, map_index, offset)
    )
    return Response(
        got.data,
        media_type="text/plain; charset=utf-8",
        headers={
            LOG_SIZE_HEADER: str(got.size),
            TRY_NUMBER_HEADER: str(got.try_number),
            TRY_STATE_HEADER: got.state,
        },
    )


@router.get(
    "/workers",
    dependencies=[ViewerAuth],
    response_model=A.WorkerList,
    # A worker's facts are absent until its first heartbeat; they stay absent.
    response_model_exclude_unset=True,
)
async def list_workers(hub: HubDep) -> dict[str, Any]:
    return {"workers": await in_read(hub, queries.list_workers)}


@router.get(
    "/workers/{name}/log",
    dependencies=[ViewerAuth],
    response_model=A.WorkerLog,
    responses=E(404),
)
async def worker_log(
    name: WorkerName,
    hub: HubDep,
    lines: Annotated[int, Query(ge=1, le=worker_logs.MAX_READ)] = worker_logs.DEFAULT_READ,
    after: Annotated[int | None, Query(ge=0, le=MAX_WIRE_INT)] = None,
) -> dict[str, Any]:
    """The worker's own log (not its tasks'): its newest ``lines`` lines, or with
    ``after`` (the ``last_id`` of a previous read) the lines that came since."""
    return await in_read(hub, lambda s: worker_logs.read(s, name, lines, after))


@router.get("/queues", dependencies=[ViewerAuth], response_model=A.QueueList)
async def list_queues(hub: HubDep) -> dict[str, Any]:
    return {"queues": await in_read(hub, queries.list_queues)}


@router.get("/import-errors", dependencies=[ViewerAuth], response_model=A.ImportErrorList)
async def import_errors(hub: HubDep) -> dict[str, Any]:
    return {"import_errors": await in_read(hub, queries.list_import_errors)}


AuditActor = Annotated[
    str | None, Query(min_length=1, max_length=300, pattern=r"^[^\x00-\x1f\x7f]+$")
]
#: Audit ids are a 32-bit INTEGER column: PostgreSQL refuses a larger number even in
#: a comparison (a 500), so the query refuses it first (422).
MAX_AUDIT_ID = 2**31 - 1
AuditAction = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[a-z0-9_.]+$")]


@router.get("/audit", dependencies=[ViewerAuth], response_model=A.AuditPage)
async def audit_log(
    hub: HubDep,
    since: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    actor: AuditActor = None,
    action: AuditAction = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIST)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_AUDIT_ID)] = None,
) -> dict[str, Any]:
    """The audit log, newest first; ``before_id`` (the last page's
    ``next_before_id``) pages on to older entries."""
    cutoff = audit.parse_since(since, utcnow()) if since is not None else None
    return await in_read(
        hub,
        lambda s: audit.list_entries(
            s, since=cutoff, actor=actor, action=action, limit=limit, before_id=before_id
        ),
    )


#: Largest ``extra`` of a posted asset event, as JSON: it is copied into the runs it starts.
MAX_EVENT_EXTRA = 65536


class AssetEventIn(BaseModel):
    uri: str
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("uri")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        try:
            return validate_asset_uri(value)
        except DagDefinitionError as exc:
            raise ValueError(str(exc)) from None

    _check_extra = field_validator("extra")(wire_value("extra"))

    @field_validator("extra")
    @classmethod
    def _small_extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value))
        if size > MAX_EVENT_EXTRA:
            raise ValueError(f"extra is {size} bytes as JSON; the limit is {MAX_EVENT_EXTRA}")
        return value


@router.get("/assets", dependencies=[ViewerAuth], response_model=A.AssetList)
async def list_assets(hub: HubDep) -> dict[str, Any]:
    return {"assets": await in_read(hub, queries.list_assets)}


@router.get(
    "/assets/events",
    dependencies=[ViewerAuth],
    response_model=A.AssetEventList,
    responses=E(404),
)
async def list_asset_events(
    hub: HubDep,
    uri: Annotated[
        str | None, Query(min_length=1, max_length=MAX_URI_LENGTH, pattern=ASSET_URI_PATTERN)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    events = await in_read(hub, lambda s: queries.list_asset_events(s, uri, limit))
    return {"asset_events": events}


@router.post(
    "/assets/events",
    dependencies=[OperatorAuth],
    response_model=A.PostedEvent,
    responses=E(404),
)
async def post_asset_event(body: AssetEventIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """Record an event of a known asset; the DAGs it makes due start at once."""
    by = who(request)
    return await in_session(hub, lambda s: control.post_asset_event(s, body.uri, body.extra, by))


class EnrolmentTokenIn(BaseModel):
    queues: list[str] = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, pattern=f"^{WORKER_NAME_PATTERN}$")
    expires_in: float = Field(default=86400.0, gt=0, le=365 * 86400)
    #: The name may be an existing worker's: spending the token replaces its credential.
    replace: bool = False

    @field_validator("queues")
    @classmethod
    def _valid_queues(cls, value: list[str]) -> list[str]:
        try:
            return [validate_queue_name(q) for q in value]
        except InvalidQueueName as exc:
            raise ValueError(str(exc)) from None


TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="an enrolment token's id")]


@router.post(
    "/workers/enrolment-tokens",
    dependencies=[AdminAuth],
    response_model=A.EnrolmentToken,
    responses=E(409),
)
async def create_enrolment_token(
    body: EnrolmentTokenIn, request: Request, hub: HubDep
) -> dict[str, Any]:
    """A one-time token a new worker exchanges for its own credential."""
    by = who(request)

    def create(s: Session) -> dict[str, Any]:
        expires_in = timedelta(seconds=body.expires_in)
        return control.create_enrolment_token(
            s, body.queues, body.name, expires_in, body.replace, by
        )

    return await in_session(hub, create)


@router.get(
    "/workers/enrolment-tokens", dependencies=[ViewerAuth], response_model=A.EnrolmentTokenList
)
async def list_enrolment_tokens(hub: HubDep) -> dict[str, Any]:
    """Every enrolment token with its state (unspent, used, revoked, expired); no secrets."""
    return {"tokens": await in_read(hub, credentials.list_tokens)}


@router.post(
    "/workers/enrolment-tokens/{token_id}/revoke",
    dependencies=[AdminAuth],
    response_model=A.EnrolmentTokenState,
    responses=E(404, 409),
)
async def revoke_enrolment_token(
    token_id: TokenId, request: Request, hub: HubDep
) -> dict[str, str]:
    """Revoke an unspent token: spending it is refused from now on."""
    by = who(request)
    state = await in_session(hub, lambda s: control.revoke_enrolment_token(s, token_id, by))
    return {"id": token_id, "state": state}


class MaintenanceIn(BaseModel):
    on: bool
    comment: str | None = Field(default=None, max_length=1000)


@router.post(
    "/workers/{name}/maintenance",
    dependencies=[OperatorAuth],
    response_model=A.Maintenance,
    responses=E(404),
)
async def worker_maintenance(
    name: WorkerName, body: MaintenanceIn, request: Request, hub: HubDep
) -> dict[str, str]:
    by = who(request)
    await in_session(hub, lambda s: control.set_maintenance(s, name, body.on, body.comment, by))
    return {"name": name, "maintenance": "on" if body.on else "off"}


@router.post(
    "/workers/{name}/shutdown",
    dependencies=[AdminAuth],
    response_model=A.Shutdown,
    responses=E(404),
)
async def worker_shutdown(name: WorkerName, request: Request, hub: HubDep) -> dict[str, str]:
    by = who(request)
    await in_session(hub, lambda s: control.request_shutdown(s, name, by))
    return {"name": name, "shutdown": "requested"}


@router.post(
    "/workers/{name}/update", dependencies=[AdminAuth], response_model=A.Update, responses=E(404)
)
async def worker_update(name: WorkerName, request: Request, hub: HubDep) -> dict[str, str]:
    """Ask the worker to drain, install the hub's wheel and restart on it."""
    by = who(request)
    asked = await in_session(hub, lambda s: control.request_update(s, name, __version__, by))
    return {"name": name, "update": "requested" if asked else "nothing to do", "to": __version__}


class QueueUpdateIn(BaseModel):
    queue: str = Field(min_length=1, max_length=256)

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        try:
            return validate_queue_name(value)
        except InvalidQueueName as exc:
            raise ValueError(str(exc)) from None


@router.post("/workers/update", dependencies=[AdminAuth], response_model=A.QueueUpdate)
async def queue_update(body: QueueUpdateIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """:func:`worker_update` for every live worker serving ``queue``."""
    by = who(request)
    answer = await in_session(
        hub, lambda s: control.request_queue_update(s, body.queue, __version__, by)
    )
    return {"queue": body.queue, "to": __version__, **answer}


@router.post(
    "/workers/{name}/revoke",
    dependencies=[AdminAuth],
    response_model=A.WorkerState,
    responses=E(404),
)
async def worker_revoke(name: WorkerName, request: Request, hub: HubDep) -> dict[str, str]:
    by = who(request)
    await in_session(hub, lambda s: control.revoke(s, name, by))
    hub.principals.forget(name)
    return {"name": name, "state": "revoked"}


@router.delete(
    "/workers/{name}", dependencies=[AdminAuth], response_model=A.WorkerState, responses=E(404)
)
async def worker_remove(name: WorkerName, request: Request, hub: HubDep) -> dict[str, str]:
    by = who(request)
    await in_session(hub, lambda s: control.remove(s, name, by))
    hub.principals.forget(name)
    return {"name": name, "state": "removed"}


class TaskStateIn(BaseModel):
    state: Literal["success", "failed"]
    #: One instance of a mapped task; None marks every map index.
    map_index: int | None = Field(default=None, ge=-1, le=MAX_WIRE_INT)


@router.patch(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
    dependencies=[OperatorAuth],
    response_model=A.MarkedTask,
    responses=E(404),
)
async def mark_task(
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    body: TaskStateIn,
    request: Request,
    hub: HubDep,
) -> dict[str, Any]:
    """Mark a task instance success or failed; a running one is killed on its worker.

    A mapped task: every map index, or the one ``map_index`` names.
    """
    by = who(request)
    indexes = await in_session(
        hub,
        lambda s: control.mark_task(s, dag_id, run_id, task_id, body.state, by, body.map_index),
    )
    return {"task_id": task_id, "state": body.state, "map_indexes": indexes}


class ClearIn(BaseModel):
    downstream: bool = False


@router.post(
    "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear",
    dependencies=[OperatorAuth],
    response_model=A.ClearedTask,
    responses=E(404),
)
async def clear_task(
    dag_id: DagId, run_id: RunId, task_id: TaskId, body: ClearIn, request: Request, hub: HubDep
) -> dict[str, Any]:
    """Run a task instance again (with its downstream if asked); a running one is killed."""
    by = who(request)
    cleared = await in_session(
        hub, lambda s: control.clear_task(s, dag_id, run_id, task_id, body.downstream, by)
    )
    return {"task_id": task_id, "state": "cleared", "cleared": cleared}


class RunStateIn(BaseModel):
    state: Literal["success", "failed"]


@router.patch(
    "/dags/{dag_id}/runs/{run_id}",
    dependencies=[OperatorAuth],
    response_model=A.MarkedRun,
    responses=E(404),
)
async def mark_run(
    dag_id: DagId, run_id: RunId, body: RunStateIn, request: Request, hub: HubDep
) -> dict[str, str]:
    """Mark a run success or failed, with its unfinished task instances."""
    by = who(request)
    await in_session(hub, lambda s: control.mark_run(s, dag_id, run_id, body.state, by))
    return {"run_id": run_id, "state": body.state}


class ClearRunIn(BaseModel):
    only_failed: bool = False


@router.post(
    "/dags/{dag_id}/runs/{run_id}/clear",
    dependencies=[OperatorAuth],
    response_model=A.ClearedRun,
    responses=E(404),
)
async def clear_run(
    dag_id: DagId, run_id: RunId, body: ClearRunIn, request: Request, hub: HubDep
) -> dict[str, Any]:
    """Run a whole run again, or only its failed tasks."""
    by = who(request)
    cleared = await in_session(
        hub, lambda s: control.clear_run(s, dag_id, run_id, body.only_failed, by)
    )
    return {"run_id": run_id, "cleared": cleared}


POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$"
PoolName = Annotated[str, Path(pattern=POOL_NAME)]


class PoolIn(BaseModel):
    slots: int = Field(ge=-1, le=1_000_000, description="-1 for unlimited")
    description: str | None = Field(default=None, max_length=1000)


@router.get("/pools", dependencies=[ViewerAuth], response_model=A.PoolList)
async def list_pools(hub: HubDep) -> dict[str, Any]:
    """Pools with their slots and use; pools that tasks name but that do not exist
    are listed with ``missing: true`` (their tasks wait)."""
    return {"pools": await in_read(hub, limits.list_pools)}


@router.put("/pools/{name}", dependencies=[AdminAuth], response_model=A.Pool, responses=E(409))
async def set_pool(name: PoolName, body: PoolIn, request: Request, hub: HubDep) -> dict[str, Any]:
    """Create a pool or change its slots; waiting tasks are looked at again at once."""
    by = who(request)

    def put(s: Session) -> dict[str, Any]:
        pool = control.set_pool(s, name, body.slots, body.description, by)
        return {"name": pool.name, "slots": pool.slots, "description": pool.description}

    return await in_session(hub, put)


@router.delete(
    "/pools/{name}", dependencies=[AdminAuth], response_model=A.Deleted, responses=E(404)
)
async def delete_pool(name: PoolName, request: Request, hub: HubDep) -> dict[str, str]:
    by = who(request)
    found = await in_session(hub, lambda s: control.delete_pool(s, name, by))
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no pool {name!r}")
    return {"name": name, "state": "deleted"}


class BackfillIn(BaseModel):
    #: Dates or datetimes (ISO 8601); without an offset, in the DAG's time zone.
    start: str = Field(max_length=40)
    end: str = Field(max_length=40)

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str) -> str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date or datetime") from None
        # Schedules are computed in the DAG's zone; years at the ends of Python's
        # range overflow there, and no one backfills them.
        if not 1900 <= parsed.year <= 9000:
            raise ValueError(f"{value!r}: backfills cover years 1900 to 9000")
        return value


@router.post(
    "/dags/{dag_id}/backfills",
    dependencies=[OperatorAuth],
    response_model=A.Backfill,
    responses=E(400, 404),
)
async def create_backfill(
    dag_id: DagId, body: BackfillIn, request: Request, hub: HubDep
) -> dict[str, Any]:
    """Runs for the DAG's intervals whose logical date is in [start, end] (see backfill.py)."""
    by = who(request)
    start, end = datetime.fromisoformat(body.start), datetime.fromisoformat(body.end)

    def create(s: Session) -> backfill.Backfill:
        return control.create_backfill(s, dag_id, start, end, by)

    made = await in_session(hub, create)
    return {
        "dag_id": dag_id,
        "run_ids": made.run_ids,
        "existing": [d.isoformat() for d in made.existing],
        "future": made.future,
    }
