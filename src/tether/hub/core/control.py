"""Operator actions behind the REST API: revoke, maintenance, shutdown, update
and removal of workers; enrolment tokens; triggering, pausing and backfilling
DAGs; marking and clearing task instances and runs; pools; asset events.

Each records its audit entry (``hub/core/audit.py``) in the caller's transaction,
so the entry is written exactly when the change is, and takes the
:class:`~tether.hub.core.audit.Who` to record as its last argument. Whom a change
concerns (the queues that got work, the workers whose held polls must answer
now) is recorded on the session and told after the commit
(:mod:`tether.hub.store.effects`).

What an action on task instances, a run, a worker or a backfill would
change can be asked first, changing nothing (``preview_*``,
:func:`worker_preview`): each preview selects with the code its action
changes with (``lock=False``: no row locks, so it runs in a read-only
transaction), so the web console's confirmation lists exactly what the
action then does, unless something moved in between.

Lock order (as everywhere that changes a run): the ``dag_run`` row first,
then the task instances it changes in id order, then their attempts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import audit, backfill, credentials, limits, queries
from tether.hub.core import states as S
from tether.hub.core.audit import Who
from tether.hub.core.queries import NotFound, dag_summary, file_error, get_run
from tether.hub.core.runs import (
    advance_run,
    end_run,
    end_running_attempt,
    ended_state,
    retries_left,
    start_queued_runs,
    utcnow,
)
from tether.hub.core.sessions import fail_attempts_of
from tether.hub.store import effects
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import Dag, DagRun, Pool, TaskAttempt, TaskInstance, Worker


def _worker(session: Session, name: str) -> Worker:
    worker = session.scalar(lock_row(select(Worker).where(Worker.name == name), session))
    if worker is None:
        raise NotFound(f"no worker {name!r}")
    return worker


@dataclass(frozen=True)
class RunningTry:
    """A try a worker runs now, and what becomes of its task if the hub gives up on it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    #: ``up_for_retry`` when it has tries left, else ``failed`` (``runs.retries_left``).
    if_given_up: str


def worker_preview(session: Session, name: str) -> dict[str, Any]:
    """The worker ``name`` and the tries it runs now (what a revoke or a removal
    gives up on, and what a shutdown or maintenance lets finish); changes nothing."""
    worker = session.scalar(select(Worker).where(Worker.name == name))
    if worker is None:
        raise NotFound(f"no worker {name!r}")
    rows = session.execute(
        select(TaskAttempt, TaskInstance)
        .join(TaskInstance, TaskInstance.id == TaskAttempt.task_instance_id)
        .where(TaskAttempt.worker_name == name, TaskAttempt.state == S.RUNNING)
        .order_by(TaskAttempt.id)
    ).all()
    running = [
        RunningTry(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            ti.map_index,
            attempt.try_number,
            S.UP_FOR_RETRY if retries_left(ti) else S.FAILED,
        )
        for attempt, ti in rows
    ]
    return {
        "name": worker.name,
        "state": worker.state,
        "queues": list(worker.queues),
        "maintenance": bool(worker.requested_maintenance),
        "comment": worker.requested_comment,
        "running": running,
    }


class TokenSpent(Exception):
    """An enrolment token to revoke was spent already (409): revoke its worker."""


def set_maintenance(session: Session, name: str, on: bool, comment: str | None, by: Who) -> None:
    worker = _worker(session, name)
    worker.requested_maintenance = on
    worker.requested_comment = comment if on else None
    audit.note(session, by, "worker.maintenance", f"worker:{name}", {"on": on, "comment": comment})
    effects.tell(session, name)


def request_shutdown(session: Session, name: str, by: Who) -> None:
    _worker(session, name).shutdown_requested = True
    audit.note(session, by, "worker.shutdown", f"worker:{name}")
    effects.tell(session, name)


def request_update(session: Session, name: str, hub_version: str, by: Who) -> bool:
    """Ask worker ``name`` to move to ``hub_version`` (the hub's wheel); False,
    and nothing asked, when it already runs that version."""
    worker = _worker(session, name)
    if worker.version == hub_version:
        return False
    worker.update_requested = secrets.token_hex(16)
    audit.note(session, by, "worker.update", f"worker:{name}", {"to": hub_version})
    effects.tell(session, name)
    return True


def request_queue_update(
    session: Session, queue: str, hub_version: str, by: Who
) -> dict[str, list[str]]:
    """:func:`request_update` for every worker serving ``queue`` now (not revoked,
    not offline or lost: those hear nothing). The names, by answer."""
    answer: dict[str, list[str]] = {"requested": [], "current": []}
    workers = session.scalars(
        select(Worker.name)
        .where(Worker.state.not_in(("revoked", "offline", "lost", "enrolled")))
        .order_by(Worker.name)
    ).all()
    for name in workers:
        worker = _worker(session, name)
        if queue not in worker.queues:
            continue
        asked = request_update(session, name, hub_version, by)
        answer["requested" if asked else "current"].append(name)
    return answer


def revoke(session: Session, name: str, by: Who) -> None:
    """Revoke the credential; the worker's running attempts fail or retry elsewhere
    (its reports would be refused now, so nothing else would end them)."""
    try:
        credentials.revoke(session, name)
    except credentials.WorkerNotFound as exc:
        raise NotFound(str(exc)) from None
    fail_attempts_of(session, name, f"worker {name} was revoked")
    audit.note(session, by, "worker.revoke", f"worker:{name}")
    effects.tell(session, name)


def remove(session: Session, name: str, by: Who) -> None:
    """Revoke the worker, give up on its running attempts and forget it."""
    worker = _worker(session, name)
    fail_attempts_of(session, name, f"worker {name} was removed")
    credentials.void_tokens_of(session, name)
    session.delete(worker)
    audit.note(session, by, "worker.remove", f"worker:{name}")
    effects.tell(session, name)


def create_enrolment_token(
    session: Session,
    queues: list[str],
    name: str | None,
    expires_in: timedelta,
    replace: bool,
    by: Who,
) -> dict[str, Any]:
    """A one-time enrolment token, as the API answers it. Its entry names the
    token's id, never the token."""
    token, worker_name, expires_at = credentials.create_enrolment_token(
        session, queues, name, expires_in, replace=replace
    )
    answer = {
        "token": token,
        "id": credentials.token_id(token),
        "name": worker_name,
        "queues": queues,
        "replace": replace,
        "expires_at": expires_at.isoformat(),
    }
    details = {k: answer[k] for k in ("id", "queues", "replace", "expires_at")}
    audit.note(session, by, "enrolment_token.create", f"worker:{worker_name}", details)
    return answer


def revoke_enrolment_token(session: Session, token_id: str, by: Who) -> str:
    """Revoke an unspent enrolment token; returns its state. TokenSpent if it was
    spent (raised in the transaction, so nothing, the entry included, is written)."""
    state = credentials.revoke_token(session, token_id)
    if state == "used":
        raise TokenSpent(f"enrolment token {token_id} was already spent; revoke its worker instead")
    audit.note(session, by, "enrolment_token.revoke", f"enrolment_token:{token_id}")
    return state


def trigger(
    session: Session,
    dag_id: str,
    conf: dict[str, Any],
    run_id: str | None,
    by: Who,
    logical_date: datetime | None = None,
) -> str:
    """A manual run (``queries.trigger``). The entry names the run, not its
    ``conf``: a run's inputs are data that may be anyone's."""
    made = queries.trigger(session, dag_id, conf, run_id, logical_date)
    details: dict[str, Any] = {"run_id": made}
    if logical_date is not None:
        details["logical_date"] = logical_date.isoformat()
    audit.note(session, by, "dag.trigger", f"dag:{dag_id}", details)
    return made


def create_backfill(
    session: Session, dag_id: str, start: datetime, end: datetime, by: Who
) -> backfill.Backfill:
    """Backfill runs for the DAG's intervals in [start, end] (``backfill.py``)."""
    made = backfill.create_backfill(session, queries.get_dag(session, dag_id), start, end, utcnow())
    details = {"start": start.isoformat(), "end": end.isoformat(), "run_ids": made.run_ids}
    audit.note(session, by, "dag.backfill", f"dag:{dag_id}", details)
    return made


def preview_backfill(
    session: Session, dag_id: str, start: datetime, end: datetime
) -> backfill.Plan:
    """The runs :func:`create_backfill` would create, changing nothing."""
    return backfill.plan_backfill(session, queries.get_dag(session, dag_id), start, end, utcnow())


def post_asset_event(session: Session, uri: str, extra: dict[str, Any], by: Who) -> dict[str, Any]:
    """An asset event from outside (``queries.post_asset_event``); the entry names
    the event and the runs it started, not its ``extra``."""
    answer = queries.post_asset_event(session, uri, extra)
    details = {
        "event_id": answer["event"]["id"],
        "triggered_runs": [f"{r['dag_id']}/{r['run_id']}" for r in answer["triggered_runs"]],
    }
    audit.note(session, by, "asset.event", f"asset:{uri}", details)
    return answer


def set_pool(session: Session, name: str, slots: int, description: str | None, by: Who) -> Pool:
    pool = limits.set_pool(session, name, slots, description)
    audit.note(session, by, "pool.set", f"pool:{name}", {"slots": slots})
    effects.wake(session)  # more room: claims held back by the pool look again
    return pool


def delete_pool(session: Session, name: str, by: Who) -> bool:
    """Delete a pool; False (and no entry: nothing changed) if there was none."""
    found = limits.delete_pool(session, name)
    if found:
        audit.note(session, by, "pool.delete", f"pool:{name}")
    return found


def set_paused(session: Session, dag_id: str, paused: bool, by: Who) -> dict[str, Any]:
    """Pause or unpause a DAG: a paused DAG gets no scheduled runs.

    Runs that exist go on, and manual runs can still be triggered (as in
    Airflow, which creates them too). The flag is the DAG row's own: the dag
    processor never overwrites it on a re-parse. The scheduler picks an
    unpaused DAG up where its schedule stands (``loop.skip_missed_intervals``).
    """
    dag = session.scalar(lock_row(select(Dag).where(Dag.dag_id == dag_id), session))
    if dag is None or not dag.is_active:
        raise NotFound(f"no DAG {dag_id!r}")
    dag.is_paused = paused
    if not paused:
        effects.poke_scheduler(session)  # scheduled again at once
    audit.note(session, by, "dag.pause" if paused else "dag.unpause", f"dag:{dag_id}")
    return dag_summary(dag, file_error(session, dag.fileloc))


def _task_instances(
    session: Session, run: DagRun, task_ids: set[str] | None = None, *, lock: bool = True
) -> list[TaskInstance]:
    """The run's task instances (``task_ids`` only, if given), in id order; locked
    unless ``lock`` is False (a preview, in a read-only transaction)."""
    stmt = select(TaskInstance).where(TaskInstance.dag_run_id == run.id)
    if task_ids is not None:
        stmt = stmt.where(TaskInstance.task_id.in_(task_ids))
    stmt = stmt.order_by(TaskInstance.id)
    return list(session.scalars(lock_row(stmt, session) if lock else stmt))


def _locked_run(session: Session, dag_id: str, run_id: str, *, lock: bool = True) -> DagRun:
    run = get_run(session, dag_id, run_id)
    if lock:
        session.execute(lock_row(select(DagRun.id).where(DagRun.id == run.id), session))
    return run


@dataclass(frozen=True)
class Move:
    """One task instance an action names: its state now and the one it would get."""

    task_id: str
    map_index: int
    #: ``None``: no state yet (waiting for its upstream).
    from_state: str | None
    #: ``None`` after a clear: it runs again.
    to_state: str | None
    #: The worker its running try is on; the action ends that try there.
    worker: str | None = None


@dataclass
class Preview:
    """What an action on a run's task instances would change, and what it names
    but leaves as it is."""

    dag_id: str
    run_id: str
    run_from: str
    #: The run's state after the action's own move; ``None``: it stays as it is.
    run_to: str | None
    moves: list[Move] = field(default_factory=list)
    kept: list[Move] = field(default_factory=list)


def _move(ti: TaskInstance, to: str | None) -> Move:
    worker = ti.worker_name if ti.state == S.RUNNING else None
    return Move(ti.task_id, ti.map_index, ti.state, to, worker)


def _mark_selection(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str,
    map_index: int | None,
    *,
    lock: bool,
) -> tuple[DagRun, list[TaskInstance], list[TaskInstance]]:
    """The run, the task instances a mark names, and those of them it changes."""
    run = _locked_run(session, dag_id, run_id, lock=lock)
    tis = _task_instances(session, run, {task_id}, lock=lock)
    if not tis:
        raise NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    if map_index is not None:
        tis = [ti for ti in tis if ti.map_index == map_index]
        if not tis:
            raise NotFound(f"task {task_id!r} of run {run_id!r} has no map index {map_index}")
    to = S.TaskState(state)
    return run, tis, [ti for ti in tis if ti.state != to]


def preview_mark_task(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str,
    map_index: int | None = None,
) -> Preview:
    """What :func:`mark_task` would change. A finished run it changes is reopened
    (``running``) and then judged again by its tasks' states."""
    run, tis, changed = _mark_selection(
        session, dag_id, run_id, task_id, state, map_index, lock=False
    )
    reopened = bool(changed) and run.state in S.RUN_FINISHED
    return Preview(
        dag_id,
        run_id,
        run.state,
        S.RUN_RUNNING if reopened else None,
        [_move(ti, state) for ti in changed],
        [_move(ti, ti.state) for ti in tis if ti not in changed],
    )


def mark_task(
    session: Session,
    dag_id: str,
    run_id: str,
    task_id: str,
    state: str,
    by: Who,
    map_index: int | None = None,
) -> list[int]:
    """Set a task instance to success or failed; a running attempt is killed.

    A mapped task has one instance per map index: all of them are marked, or
    only ``map_index`` when given. One in ``state`` already is left as it is
    (as Airflow), and when all are, a finished run is not reopened. Returns
    the map indexes marked (``[-1]`` for a task that is not mapped).
    """
    run, tis, changed = _mark_selection(
        session, dag_id, run_id, task_id, state, map_index, lock=True
    )
    now = utcnow()
    to = S.TaskState(state)
    for ti in changed:
        end_running_attempt(session, ti, f"marked {state} by an operator")
        S.move_task(ti, to, "marked", now)
    if changed and run.state in S.RUN_FINISHED:
        S.move_run(run, S.RUN_RUNNING, "task_marked", now)
    advance_run(session, run)
    indexes = sorted(ti.map_index for ti in tis)
    details = {"run_id": run_id, "task_id": task_id, "state": state, "map_indexes": indexes}
    audit.note(session, by, "task.mark", f"dag:{dag_id}", details)
    return indexes


def _downstream(spec: dict[str, Any], task_id: str) -> set[str]:
    children = {t["task_id"]: t["downstream"] for t in spec["tasks"]}
    found, todo = set(), [task_id]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _clear(session: Session, run: DagRun, tis: list[TaskInstance]) -> None:
    """Make ``tis`` (locked) run again with their retries afresh, and reopen the run."""
    retries = {t["task_id"]: t["retries"] for t in run.serialized["tasks"]}
    now = utcnow()
    for ti in tis:
        end_running_attempt(session, ti, "cleared by an operator")
        if ti.state is not None:  # one still waiting has nothing to clear but its tries
            S.move_task(ti, None, "cleared", now)
        ti.max_tries = ti.try_number + retries[ti.task_id] + 1  # its retries, afresh
    if run.state in S.RUN_FINISHED:
        # Queued again, as in Airflow: it starts now if max_active_runs leaves
        # room, else when an earlier run ends.
        S.move_run(run, S.RUN_QUEUED, "cleared", now)
        session.flush()
        start_queued_runs(session, run.dag_id)
    else:  # running: queue what is ready now; queued: it waits its turn
        advance_run(session, run)


def _clear_task_selection(
    session: Session, dag_id: str, run_id: str, task_id: str, downstream: bool, *, lock: bool
) -> tuple[DagRun, list[TaskInstance]]:
    """The run and the task instances :func:`clear_task` clears."""
    run = _locked_run(session, dag_id, run_id, lock=lock)
    ids = {task_id} | (_downstream(run.serialized, task_id) if downstream else set())
    tis = _task_instances(session, run, ids, lock=lock)
    if not any(ti.task_id == task_id for ti in tis):
        raise NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    return run, tis


def _clear_run_selection(
    session: Session, dag_id: str, run_id: str, only_failed: bool, *, lock: bool
) -> tuple[DagRun, list[TaskInstance]]:
    """The run and the task instances :func:`clear_run` clears."""
    run = _locked_run(session, dag_id, run_id, lock=lock)
    tis = _task_instances(session, run, lock=lock)
    if only_failed:
        tis = [ti for ti in tis if ti.state in S.TI_FAILED]
    return run, tis


def _clear_preview(run: DagRun, tis: list[TaskInstance]) -> Preview:
    """A finished run with something to clear is queued again (as :func:`_clear` does)."""
    reopened = bool(tis) and run.state in S.RUN_FINISHED
    return Preview(
        run.dag_id,
        run.run_id,
        run.state,
        S.RUN_QUEUED if reopened else None,
        [_move(ti, None) for ti in tis],
    )


def preview_clear_task(
    session: Session, dag_id: str, run_id: str, task_id: str, downstream: bool
) -> Preview:
    """The task instances :func:`clear_task` would clear, changing nothing."""
    run, tis = _clear_task_selection(session, dag_id, run_id, task_id, downstream, lock=False)
    return _clear_preview(run, tis)


def preview_clear_run(session: Session, dag_id: str, run_id: str, only_failed: bool) -> Preview:
    """The task instances :func:`clear_run` would clear, changing nothing."""
    run, tis = _clear_run_selection(session, dag_id, run_id, only_failed, lock=False)
    return _clear_preview(run, tis)


def clear_task(
    session: Session, dag_id: str, run_id: str, task_id: str, downstream: bool, by: Who
) -> list[str]:
    """Make a task instance (and, if asked, everything downstream) run again.

    Returns the cleared task ids, in the run's order.
    """
    run, tis = _clear_task_selection(session, dag_id, run_id, task_id, downstream, lock=True)
    _clear(session, run, tis)
    cleared = _task_ids(tis)
    details = {"run_id": run_id, "task_id": task_id, "downstream": downstream, "cleared": cleared}
    audit.note(session, by, "task.clear", f"dag:{dag_id}", details)
    return cleared


def clear_run(session: Session, dag_id: str, run_id: str, only_failed: bool, by: Who) -> list[str]:
    """Run a whole run again, or only its ``failed`` and ``upstream_failed`` tasks.

    Returns the cleared task ids; when there are none the run is left as it is.
    """
    run, tis = _clear_run_selection(session, dag_id, run_id, only_failed, lock=True)
    if tis:
        _clear(session, run, tis)
    cleared = _task_ids(tis)
    details = {"run_id": run_id, "only_failed": only_failed, "cleared": cleared}
    audit.note(session, by, "run.clear", f"dag:{dag_id}", details)
    return cleared


def _task_ids(tis: list[TaskInstance]) -> list[str]:
    """Each task once (a mapped task has a task instance per map index), in order."""
    return list(dict.fromkeys(ti.task_id for ti in tis))


def preview_mark_run(session: Session, dag_id: str, run_id: str, state: str) -> Preview:
    """What :func:`mark_run` would change (``runs.end_run``): each unfinished task
    instance and what it becomes; nothing when the run is in ``state`` already."""
    run = _locked_run(session, dag_id, run_id, lock=False)
    if run.state == state:
        return Preview(dag_id, run_id, run.state, None)
    moves, kept = [], []
    for ti in _task_instances(session, run, lock=False):
        to = ended_state(ti.state, S.RunState(state))
        if to is None:
            kept.append(_move(ti, ti.state))
        else:
            moves.append(_move(ti, to))
    return Preview(dag_id, run_id, run.state, state, moves, kept)


def mark_run(session: Session, dag_id: str, run_id: str, state: str, by: Who) -> None:
    """Set a run to success or failed, and its unfinished task instances with it.

    As Airflow: ``success`` makes every unfinished task instance ``success``;
    ``failed`` makes those that ran or were about to (``running``, ``queued``,
    ``up_for_retry``) ``failed`` and those that never started ``skipped``.
    Finished task instances keep their state. Running attempts are ended and
    their workers told to kill them. A run in ``state`` already is left as it
    is. Otherwise the run ends as any run does
    (``finish_run``): the DAG's callback is asked for, with reason ``marked``,
    and the next queued run may start.
    """
    run = _locked_run(session, dag_id, run_id)
    end_run(session, run, S.RunState(state), "marked", f"run marked {state} by an operator")
    audit.note(session, by, "run.mark", f"dag:{dag_id}", {"run_id": run_id, "state": state})
