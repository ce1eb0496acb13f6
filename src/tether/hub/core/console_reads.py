"""The read side behind the web console's pages (``hub/ui/``), beside ``queries.py``.

What the REST API's reads already return is taken from ``queries``; this
module adds what only pages need: the last runs of every DAG at once, a
DAG's grid, one task instance with its tries, the tasks each worker runs,
and which queues have work that no live worker can take. Every function
only reads, so it runs in a read-only transaction (``Store.read``).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tether.hub.core import queries, sessions
from tether.hub.core import states as S
from tether.hub.store.models import Dag, DagRun, LogChunk, TaskAttempt, TaskInstance, Worker

#: Runs shown as marks beside each DAG in the list.
LIST_RUNS = 10
#: Runs (newest first) in a DAG's grid.
GRID_RUNS = 25
#: The DAG list's filters (``show=``).
SHOWS = ("all", "active", "paused", "failed")
#: Worker states as the console names them.
WORKER_LABELS = {S.WorkerState.RUNNING: "busy"}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _last_runs(session: Session, dag_ids: list[str], limit: int) -> dict[str, list[Any]]:
    """The newest ``limit`` runs of each DAG, oldest first (as marks read left to
    right): their ids, states and logical dates only, not the DAG copies they pin."""
    if not dag_ids:
        return {}
    rank = (
        func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.id.desc()).label("rank")
    )
    ranked = select(DagRun.id, rank).where(DagRun.dag_id.in_(dag_ids)).subquery()
    rows = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.logical_date)
        .join(ranked, ranked.c.id == DagRun.id)
        .where(ranked.c.rank <= limit)
        .order_by(DagRun.id)
    )
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(row.dag_id, []).append(row)
    return found


def _owners(spec: dict[str, Any]) -> list[str]:
    return sorted({t["owner"] for t in spec["tasks"] if t.get("owner")})


def dag_list(session: Session, search: str = "", show: str = "all") -> dict[str, Any]:
    """The DAGs page: every active DAG with its last runs, filtered as asked, and the
    DAG files that do not import now.

    ``search`` matches a DAG id, tag or owner, ignoring case; ``show`` is one of
    ``SHOWS`` (``failed``: a failed run among its last runs).
    """
    dags = queries.list_dags(session)
    specs: dict[str, dict[str, Any]] = dict(
        session.execute(select(Dag.dag_id, Dag.serialized).where(Dag.is_active)).all()
    )
    runs = _last_runs(session, [d["dag_id"] for d in dags], LIST_RUNS)
    needle = search.strip().lower()
    shown = []
    for dag in dags:
        dag["owners"] = _owners(specs.get(dag["dag_id"]) or {"tasks": []})
        dag["last_runs"] = [
            {"run_id": r.run_id, "state": r.state, "logical_date": r.logical_date}
            for r in runs.get(dag["dag_id"], [])
        ]
        words = [dag["dag_id"], *dag["tags"], *dag["owners"]]
        if needle and not any(needle in str(w).lower() for w in words):
            continue
        if show == "active" and dag["is_paused"]:
            continue
        if show == "paused" and not dag["is_paused"]:
            continue
        if show == "failed" and not any(r["state"] == S.RUN_FAILED for r in dag["last_runs"]):
            continue
        shown.append(dag)
    return {"dags": shown, "total": len(dags), "import_errors": queries.list_import_errors(session)}


def cell(tis: list[TaskInstance]) -> dict[str, Any]:
    """A grid cell: one task instance, or a mapped task's instances summed up."""
    if len(tis) == 1 and tis[0].map_index == -1:
        ti = tis[0]
        return {"state": ti.state or "none", "mapped": False, "try_number": ti.try_number}
    counts = Counter(ti.state or "none" for ti in tis if ti.map_index >= 0)
    total = sum(counts.values())
    # The cell shows the state that most needs an eye: a failure, then work under way.
    for state in ("failed", "upstream_failed", "up_for_retry", "running", "queued", "none"):
        if counts.get(state):
            break
    else:
        state = counts.most_common(1)[0][0] if counts else "none"
    return {
        "state": state,
        "mapped": True,
        "summary": ", ".join(f"{n}/{total} {s}" for s, n in sorted(counts.items())),
    }


def grid(session: Session, dag_id: str, limit: int = GRID_RUNS) -> dict[str, Any]:
    """A DAG's newest runs (newest first) × its tasks, each cell a state."""
    dag = queries.get_dag(session, dag_id)
    runs = session.execute(
        select(
            DagRun.id,
            DagRun.run_id,
            DagRun.state,
            DagRun.run_type,
            DagRun.logical_date,
            DagRun.started_at,
        )
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.id.desc())
        .limit(limit)
    ).all()
    tis: dict[tuple[int, str], list[TaskInstance]] = {}
    for ti in session.scalars(
        select(TaskInstance)
        .where(TaskInstance.dag_run_id.in_([r.id for r in runs]))
        .order_by(TaskInstance.map_index)
    ):
        tis.setdefault((ti.dag_run_id, ti.task_id), []).append(ti)
    task_ids = [t["task_id"] for t in dag.serialized["tasks"]]
    # Tasks that old runs had and the DAG no longer has, after the current ones.
    task_ids += sorted({task_id for _, task_id in tis} - set(task_ids))
    return {
        **queries.dag_summary(dag, queries.file_error(session, dag.fileloc)),
        "runs": [
            {
                "run_id": r.run_id,
                "state": r.state,
                "run_type": r.run_type,
                "logical_date": r.logical_date,
                "started_at": r.started_at,
                "cells": {
                    task_id: cell(tis[(r.id, task_id)])
                    for task_id in task_ids
                    if (r.id, task_id) in tis
                },
            }
            for r in runs
        ],
        "grid_tasks": task_ids,
    }


def _stored_end(session: Session, attempt_id: str) -> int:
    """Where the bytes the hub stored of a try end (its first gap, if any, is past them)."""
    end = session.scalar(
        select(func.max(LogChunk.offset + func.length(LogChunk.data))).where(
            LogChunk.attempt_id == attempt_id
        )
    )
    return int(end or 0)


def task_instance(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None,
    try_number: int | None,
) -> dict[str, Any]:
    """One task instance with its tries and the log of one of them (the latest by default).

    A mapped task asked for without a map index answers with its instances
    (``map_indexes``) instead of one of them.
    """
    run = queries.get_run(session, dag_id, run_id)
    rows = session.scalars(
        select(TaskInstance)
        .where(TaskInstance.dag_run_id == run.id, TaskInstance.task_id == task_id)
        .order_by(TaskInstance.map_index)
    ).all()
    if not rows:
        raise queries.NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    spec: dict[str, Any] = next((t for t in run.serialized["tasks"] if t["task_id"] == task_id), {})
    base: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "run_state": run.state,
        "task_id": task_id,
        "spec": spec,
    }
    if map_index is None and rows[0].map_index != -1:
        listed = [{"map_index": ti.map_index, "state": ti.state or "none"} for ti in rows]
        return {**base, "map_indexes": listed}
    wanted = -1 if map_index is None else map_index
    ti = next((t for t in rows if t.map_index == wanted), None)
    if ti is None:
        raise queries.NotFound(f"task {task_id!r} has no map index {wanted}")
    tries = session.scalars(
        select(TaskAttempt)
        .where(TaskAttempt.task_instance_id == ti.id)
        .order_by(TaskAttempt.try_number)
    ).all()
    if try_number is not None and try_number not in {a.try_number for a in tries}:
        raise queries.NotFound(f"task {task_id!r} has no try {try_number}")
    shown = next((a for a in tries if a.try_number == try_number), tries[-1] if tries else None)
    log = None
    if shown is not None:
        running = shown.state == S.AttemptState.RUNNING
        log = {
            "try_number": shown.try_number,
            "running": running,
            # A running try is shown as stored so far, and followed from where that ends.
            "text": queries.read_log(session, shown).decode(errors="replace"),
            "offset": _stored_end(session, shown.id) if running else shown.log_size,
        }
    return {
        **base,
        "map_index": ti.map_index,
        "state": ti.state or "none",
        "try_number": ti.try_number,
        "max_tries": ti.max_tries,
        "queue": ti.queue,
        "worker": ti.worker_name,
        "pool": ti.pool,
        "queued_at": ti.queued_at,
        "started_at": ti.started_at,
        "ended_at": ti.ended_at,
        "duration": _seconds(ti.started_at, ti.ended_at),
        "next_retry_at": ti.next_retry_at,
        "has_output": ti.output is not None,
        "output": ti.output,
        "tries": [
            {
                "try_number": a.try_number,
                "state": a.state,
                "worker": a.worker_name,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "duration": _seconds(a.started_at, a.ended_at),
                "error": a.error,
                "log_size": a.log_size,
            }
            for a in tries
        ],
        "log": log,
    }


def find_try(
    session: Session, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> TaskAttempt:
    """The attempt of one try of one task instance, or NotFound."""
    run = queries.get_run(session, dag_id, run_id)
    attempt = session.scalar(
        select(TaskAttempt)
        .join(TaskInstance, TaskInstance.id == TaskAttempt.task_instance_id)
        .where(
            TaskInstance.dag_run_id == run.id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
            TaskAttempt.try_number == try_number,
        )
    )
    if attempt is None:
        raise queries.NotFound(f"task {task_id!r} has no try {try_number} (map index {map_index})")
    return attempt


def log_since(
    session: Session, attempt_id: str, offset: int, limit: int
) -> tuple[bytes, int, bool]:
    """The stored log bytes of an attempt from ``offset`` on (about ``limit`` of
    them at most), where they end, and whether that is all there will be: the
    attempt has ended and nothing stored is left. The note for bytes the hub
    dropped (past ``TETHER_MAX_TASK_LOG_BYTES``) comes with the last of them."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        raise queries.NotFound(f"no attempt {attempt_id}")
    ended = attempt.state != S.AttemptState.RUNNING
    chunks = session.execute(
        select(LogChunk.offset, LogChunk.data)
        .where(
            LogChunk.attempt_id == attempt_id,
            LogChunk.offset + func.length(LogChunk.data) > offset,
        )
        .order_by(LogChunk.offset)
    )
    parts: list[bytes] = []
    end = offset
    size = 0
    for start, data in chunks:
        if start > end:
            break  # a gap: the rest was dropped, said below once the try has ended
        parts.append(data[end - start :])
        size += len(parts[-1])
        end = start + len(data)
        if size >= limit:
            return b"".join(parts), end, False
    if ended and attempt.log_size > end:
        parts.append(queries.dropped_note(attempt.log_size - end))
        end = attempt.log_size
    return b"".join(parts), end, ended


def workers(session: Session) -> list[dict[str, Any]]:
    """The workers page: every worker as the REST API lists it, with the task
    instances it runs now and its state as the console names it."""
    running: dict[str, list[dict[str, Any]]] = {}
    for ti in session.scalars(
        select(TaskInstance)
        .where(TaskInstance.state == S.RUNNING, TaskInstance.worker_name.is_not(None))
        .order_by(TaskInstance.started_at)
    ):
        running.setdefault(ti.worker_name or "", []).append(
            {
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "started_at": ti.started_at,
            }
        )
    listed = queries.list_workers(session)
    for w in listed:
        w["label"] = WORKER_LABELS.get(w["state"], w["state"])
        w["slots_used"] = max(0, (w["concurrency"] or 0) - (w["free_slots"] or 0))
        w["tasks"] = running.get(w["name"], [])
    return listed


def can_take_work(worker: Worker) -> bool:
    """Whether a worker would be handed new tasks now: live (idle or busy), taking
    work as it last reported, and not asked for maintenance or shutdown."""
    return (
        worker.state in (S.WorkerState.IDLE, S.WorkerState.RUNNING)
        and sessions.accepting(worker)
        and not worker.requested_maintenance
        and not worker.shutdown_requested
    )


def queues(session: Session) -> list[dict[str, Any]]:
    """The queues page: each queue's depth and oldest queued task, the live workers
    serving it, and ``unserved`` when it has work and none of them can take it."""
    live: dict[str, list[dict[str, Any]]] = {}
    for w in session.scalars(
        select(Worker).where(Worker.state.in_(S.WORKER_LIVE)).order_by(Worker.name)
    ):
        for q in w.queues:
            live.setdefault(q, []).append(
                {
                    "name": w.name,
                    "label": WORKER_LABELS.get(S.WorkerState(w.state), w.state),
                    "takes_work": can_take_work(w),
                }
            )
    listed = queries.list_queues(session)
    for queue in listed:
        serving = live.get(queue["name"], [])
        queue["live_workers"] = serving
        queue["unserved"] = queue["queued"] > 0 and not any(w["takes_work"] for w in serving)
    return listed
