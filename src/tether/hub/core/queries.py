"""Read and write operations behind the public REST API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tether.hub.core import assets, params, runs
from tether.hub.core import states as S
from tether.hub.core.timetable import manual_data_interval
from tether.hub.store.models import (
    Asset,
    AssetDagRunQueue,
    AssetEvent,
    Bundle,
    Dag,
    DagRun,
    DagScheduleAsset,
    ImportError_,
    LogChunk,
    TaskAttempt,
    TaskInstance,
    Worker,
)


class NotFound(LookupError):
    """The named DAG, run, task or try does not exist."""


class BadRequest(ValueError):
    """The request cannot be answered as asked (the reason says why)."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def dag_summary(dag: Dag, import_error: str | None = None) -> dict[str, Any]:
    """A DAG as lists show it. ``import_error``: its file's, if the file is broken now
    (the DAG then runs the last version that parsed)."""
    spec = dag.serialized
    return {
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "description": spec.get("description"),
        "schedule": spec.get("schedule"),
        "tags": spec.get("tags", []),
        "is_paused": dag.is_paused,
        "is_active": dag.is_active,
        "next_dagrun": _iso(dag.next_dagrun),
        "next_dagrun_create_after": _iso(dag.next_dagrun_create_after),
        "task_ids": [t["task_id"] for t in spec["tasks"]],
        "queues": sorted({t["queue"] for t in spec["tasks"]}),
        "bundle_sha": dag.bundle_sha,
        "import_error": import_error,
    }


def file_error(session: Session, fileloc: str) -> str | None:
    """The import error of a DAG file, if it has one now."""
    return session.scalar(select(ImportError_.message).where(ImportError_.fileloc == fileloc))


def list_dags(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Dag).where(Dag.is_active.is_(True)).order_by(Dag.dag_id))
    errors = {f: m for f, m in session.execute(select(ImportError_.fileloc, ImportError_.message))}
    return [dag_summary(d, errors.get(d.fileloc)) for d in rows]


def dag_detail(session: Session, dag_id: str) -> dict[str, Any]:
    """A DAG with its params, tasks, and the code a worker gets for it."""
    dag = get_dag(session, dag_id)
    files = session.scalar(select(Bundle.files).where(Bundle.sha == dag.bundle_sha))
    return {
        **dag_summary(dag, file_error(session, dag.fileloc)),
        "params": dag.serialized.get("params", {}),
        "tasks": dag.serialized["tasks"],
        "include": dag.serialized.get("include", []),
        # [{"name", "size"}]; None for a bundle made before the hub recorded them.
        "files": None if files is None else [{"name": n, "size": s} for n, s in files],
    }


def get_dag(session: Session, dag_id: str) -> Dag:
    dag = session.get(Dag, dag_id)
    if dag is None or not dag.is_active:
        raise NotFound(f"no DAG {dag_id!r}")
    return dag


def trigger(
    session: Session,
    dag_id: str,
    conf: dict[str, Any],
    run_id: str | None,
    logical_date: datetime | None = None,
) -> str:
    """Create a manual run; InvalidParams if ``conf`` gives the DAG's params bad
    values, ReservedRunId if ``run_id`` is one only the hub's own runs have.

    Its logical date is ``logical_date`` (aware) or now, and its data interval
    the one Airflow infers for a manual run at that date
    (``timetable.manual_data_interval``).
    """
    dag = get_dag(session, dag_id)
    if run_id is not None:
        runs.check_given_run_id(run_id)
    params.resolve(dag.serialized, conf)
    when = logical_date or runs.utcnow()
    run = runs.create_run(
        session,
        dag,
        run_type="manual",
        conf=conf,
        run_id=run_id,
        logical_date=when,
        data_interval=manual_data_interval(dag.serialized, when),
    )
    return run.run_id


def get_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    if run is None:
        raise NotFound(f"DAG {dag_id!r} has no run {run_id!r}")
    return run


def run_summary(run: DagRun) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_type": run.run_type,
        "state": run.state,
        "conf": run.conf,
        "params": params.effective(run.serialized, run.conf),
        "logical_date": _iso(run.logical_date),
        "data_interval_start": _iso(run.data_interval_start),
        "data_interval_end": _iso(run.data_interval_end),
        "started_at": _iso(run.started_at),
        "ended_at": _iso(run.ended_at),
        "bundle_sha": run.bundle_sha,
    }


def list_runs(
    session: Session,
    dag_id: str,
    *,
    state: str | None,
    limit: int,
    offset: int,
    run_type: str | None = None,
    run_id_prefix: str | None = None,
) -> dict[str, Any]:
    """A page of the DAG's runs, newest first, and how many there are in all.

    Runs of a DAG whose file went away (inactive) are still listed; only a
    DAG the hub never knew is 404. ``run_id_prefix``: only runs whose id
    starts with it, case and all (``substr``, not ``LIKE``: SQLite's ``LIKE``
    ignores case, and run ids are full of ``_``, its wildcard).
    """
    if session.get(Dag, dag_id) is None:
        raise NotFound(f"no DAG {dag_id!r}")
    where = [DagRun.dag_id == dag_id]
    if state is not None:
        where.append(DagRun.state == state)
    if run_type is not None:
        where.append(DagRun.run_type == run_type)
    if run_id_prefix is not None:
        where.append(func.substr(DagRun.run_id, 1, len(run_id_prefix)) == run_id_prefix)
    total = session.scalar(select(func.count()).select_from(DagRun).where(*where))
    page = session.scalars(
        select(DagRun).where(*where).order_by(DagRun.id.desc()).limit(limit).offset(offset)
    )
    return {"dag_runs": [run_summary(r) for r in page], "total_entries": total or 0}


def run_detail(session: Session, dag_id: str, run_id: str) -> dict[str, Any]:
    run = get_run(session, dag_id, run_id)
    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_run_id == run.id).order_by(TaskInstance.id)
    ).all()
    # Why the latest try of each task instance ended, when it did not succeed.
    errors = {
        attempt_id: error
        for attempt_id, error in session.execute(
            select(TaskAttempt.id, TaskAttempt.error).where(
                TaskAttempt.id.in_([ti.attempt_id for ti in tis if ti.attempt_id])
            )
        )
    }
    return {
        **run_summary(run),
        "tasks": [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": ti.state,
                "try_number": ti.try_number,
                "max_tries": ti.max_tries,
                "worker": ti.worker_name,
                "queue": ti.queue,
                "queued_at": _iso(ti.queued_at),
                "started_at": _iso(ti.started_at),
                "ended_at": _iso(ti.ended_at),
                "next_retry_at": _iso(ti.next_retry_at),
                "error": errors.get(ti.attempt_id) if ti.attempt_id else None,
            }
            for ti in tis
        ],
    }


@dataclass(frozen=True)
class LogSlice:
    """Part of a try's log, and where the try stands."""

    #: The log from the offset asked for to ``size``.
    data: bytes
    #: The try's log size in bytes so far: the offset to read on from.
    size: int
    try_number: int
    #: The try's state (``AttemptState``): while ``running`` the log may grow;
    #: after, it never changes (an ended attempt takes no more log).
    state: str


def task_log(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int | None,
    map_index: int | None = None,
    offset: int = 0,
) -> LogSlice:
    """A try's log (the latest try by default) from byte ``offset`` on."""
    run = get_run(session, dag_id, run_id)
    tis = {
        ti.map_index: ti
        for ti in session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id
            )
        )
    }
    if not tis:
        raise NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    if map_index is None:
        if -1 not in tis:
            raise BadRequest(f"task {task_id!r} is mapped: give map_index (0 to {max(tis)})")
        map_index = -1
    ti = tis.get(map_index)
    if ti is None:
        raise NotFound(f"task {task_id!r} has no map index {map_index}")
    number = try_number if try_number is not None else ti.try_number
    attempt = session.scalar(
        select(TaskAttempt).where(
            TaskAttempt.task_instance_id == ti.id, TaskAttempt.try_number == number
        )
    )
    if attempt is None:
        raise NotFound(f"task {task_id!r} has no try {number} (it has had {ti.try_number})")
    # The attempt (state and size) is read before its chunks: on PostgreSQL each
    # statement sees what has committed by then, so a try read as ended has all
    # of its log in the chunks read after it.
    state, size = attempt.state, attempt.log_size
    return LogSlice(read_log(session, attempt, offset), size, number, state)


def list_workers(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "name": w.name,
            "state": w.state,
            "queues": w.queues,
            "allowed_queues": w.allowed_queues,
            "concurrency": w.concurrency,
            "free_slots": w.free_slots,
            "version": w.version,
            "maintenance": w.maintenance,
            "maintenance_comment": w.maintenance_comment,
            "requested_maintenance": w.requested_maintenance,
            "shutdown_requested": w.shutdown_requested,
            "update_requested": w.update_requested is not None,
            "enrolled_at": _iso(w.enrolled_at),
            "first_seen": _iso(w.first_seen),
            "last_heartbeat": _iso(w.last_heartbeat),
            **w.info,
        }
        for w in session.scalars(select(Worker).order_by(Worker.name))
    ]


def list_queues(session: Session) -> list[dict[str, Any]]:
    queued = count_queued(session)
    names: set[str] = set(queued)
    served: dict[str, list[str]] = {}
    for w in session.scalars(
        select(Worker).where(Worker.state.in_(("idle", "running", "maintenance")))
    ):
        for q in w.queues:
            served.setdefault(q, []).append(w.name)
            names.add(q)
    for spec in session.scalars(select(Dag.serialized).where(Dag.is_active.is_(True))):
        names.update(t["queue"] for t in spec["tasks"])
    return [
        {
            "name": q,
            "queued": queued.get(q, {}).get("queued", 0),
            "oldest_queued_at": _iso(queued.get(q, {}).get("oldest_queued_at")),
            "workers": sorted(served.get(q, [])),
        }
        for q in sorted(names)
    ]


def list_assets(session: Session) -> list[dict[str, Any]]:
    """Every known asset with the active DAGs that use it and its newest event."""
    consumers: dict[int, list[str]] = {}
    for asset_id, dag_id in session.execute(
        select(DagScheduleAsset.asset_id, DagScheduleAsset.dag_id)
        .join(Dag, Dag.dag_id == DagScheduleAsset.dag_id)
        .where(Dag.is_active.is_(True))
        .order_by(DagScheduleAsset.dag_id)
    ):
        consumers.setdefault(asset_id, []).append(dag_id)
    producers: dict[str, list[dict[str, str]]] = {}
    for spec in session.scalars(
        select(Dag.serialized).where(Dag.is_active.is_(True)).order_by(Dag.dag_id)
    ):
        for task in spec["tasks"]:
            for uri in task.get("outlets") or []:
                producers.setdefault(uri, []).append(
                    {"dag_id": spec["dag_id"], "task_id": task["task_id"]}
                )
    queued: dict[int, list[str]] = {}
    for asset_id, dag_id in session.execute(
        select(AssetDagRunQueue.asset_id, AssetDagRunQueue.target_dag_id).order_by(
            AssetDagRunQueue.target_dag_id
        )
    ):
        queued.setdefault(asset_id, []).append(dag_id)
    newest = select(func.max(AssetEvent.id)).group_by(AssetEvent.asset_id)
    last = {
        e.asset_id: e for e in session.scalars(select(AssetEvent).where(AssetEvent.id.in_(newest)))
    }
    return [
        {
            "uri": a.uri,
            "name": a.name,
            "extra": a.extra,
            "created_at": _iso(a.created_at),
            "consumers": consumers.get(a.id, []),
            "producers": producers.get(a.uri, []),
            "queued_for": queued.get(a.id, []),
            "last_event": assets.event_dict(last[a.id], a.uri) if a.id in last else None,
        }
        for a in session.scalars(select(Asset).order_by(Asset.uri))
    ]


def get_asset(session: Session, uri: str) -> Asset:
    asset = session.scalar(select(Asset).where(Asset.uri == uri))
    if asset is None:
        raise NotFound(f"no asset {uri!r}: an asset is known once a DAG names it")
    return asset


def list_asset_events(session: Session, uri: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` asset events, of one asset or of all, newest first."""
    query = select(AssetEvent, Asset.uri).join(Asset, Asset.id == AssetEvent.asset_id)
    if uri is not None:
        query = query.where(AssetEvent.asset_id == get_asset(session, uri).id)
    rows = session.execute(query.order_by(AssetEvent.id.desc()).limit(limit))
    return [assets.event_dict(event, event_uri) for event, event_uri in rows]


def post_asset_event(session: Session, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Record an event of a known asset from outside; start the runs it makes due."""
    recorded = assets.record_events(session, [get_asset(session, uri).id], extra=extra)
    (event,) = recorded.events
    answer = {
        "event": assets.event_dict(event, uri),
        "triggered_runs": [{"dag_id": r.dag_id, "run_id": r.run_id} for r in recorded.runs],
    }
    return answer


def list_import_errors(session: Session) -> list[dict[str, Any]]:
    return [
        {"fileloc": e.fileloc, "message": e.message, "timestamp": _iso(e.created_at)}
        for e in session.scalars(select(ImportError_).order_by(ImportError_.fileloc))
    ]


def read_log(session: Session, attempt: TaskAttempt, start: int = 0) -> bytes:
    """A try's log as the hub holds it, from byte ``start`` to its ``log_size``
    as loaded; where it dropped bytes (past ``max_task_log_bytes``), a line
    says how many.

    Offsets count the bytes the worker sent, not those notes, so a reader that
    asks from the size it was last told never sees a byte twice.
    """
    size = attempt.log_size
    # The chunk that holds byte ``start``, or the first after it.
    first = session.scalar(
        select(func.max(LogChunk.offset)).where(
            LogChunk.attempt_id == attempt.id, LogChunk.offset <= start
        )
    )
    chunks = session.execute(
        select(LogChunk.offset, LogChunk.data)
        .where(
            LogChunk.attempt_id == attempt.id,
            LogChunk.offset >= (first or 0),
            # Chunks that committed after ``attempt`` was loaded start here or later.
            LogChunk.offset < size,
        )
        .order_by(LogChunk.offset)
    )
    parts: list[bytes] = []
    end = start
    for offset, data in chunks:
        if offset + len(data) <= end:
            continue
        if offset > end:
            parts.append(dropped_note(offset - end))
            end = offset
        parts.append(data[end - offset :])
        end = offset + len(data)
    if size > end:
        parts.append(dropped_note(size - end))
    return b"".join(parts)


def dropped_note(size: int) -> bytes:
    """The line a log reads with where the hub dropped ``size`` of its bytes."""
    return (
        f"\n[tether] {size} bytes of this try's log were dropped: the hub keeps the first "
        "TETHER_MAX_TASK_LOG_BYTES of a try\n"
    ).encode()


def count_queued(session: Session) -> dict[str, dict[str, Any]]:
    """Per queue: number of queued task instances and the oldest queued time."""
    rows = session.execute(
        select(TaskInstance.queue, func.count(), func.min(TaskInstance.queued_at))
        .where(TaskInstance.state == S.QUEUED)
        .group_by(TaskInstance.queue)
    )
    return {q: {"queued": n, "oldest_queued_at": oldest} for q, n, oldest in rows}
