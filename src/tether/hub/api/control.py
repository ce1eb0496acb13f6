"""Operator actions behind the REST API: revoke, maintenance, shutdown and
removal of workers; pausing DAGs; marking and clearing task instances and runs.

Each returns what the route must announce after the commit: the queues that
got work and the workers whose held polls must answer now.

Lock order (as everywhere that changes a run): the ``dag_run`` row first,
then the task instances it changes in id order, then their attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.api.queries import NotFound, dag_summary, get_run
from tether.hub.auth import credentials
from tether.hub.scheduler import states as S
from tether.hub.scheduler.runs import (
    advance_run,
    end_run,
    end_running_attempt,
    start_queued_runs,
    utcnow,
)
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import Dag, DagRun, TaskInstance, Worker
from tether.hub.worker_api.sessions import fail_attempts_of


@dataclass
class Effects:
    queues: set[str] = field(default_factory=set)
    workers: set[str] = field(default_factory=set)


def _worker(session: Session, name: str) -> Worker:
    worker = session.scalar(lock_row(select(Worker).where(Worker.name == name), session))
    if worker is None:
        raise NotFound(f"no worker {name!r}")
    return worker


def set_maintenance(session: Session, name: str, on: bool, comment: str | None) -> Effects:
    worker = _worker(session, name)
    worker.requested_maintenance = on
    worker.requested_comment = comment if on else None
    return Effects(workers={name})


def request_shutdown(session: Session, name: str) -> Effects:
    _worker(session, name).shutdown_requested = True
    return Effects(workers={name})


def revoke(session: Session, name: str) -> Effects:
    """Revoke the credential; the worker's running attempts fail or retry elsewhere
    (its reports would be refused now, so nothing else would end them)."""
    try:
        credentials.revoke(session, name)
    except credentials.WorkerNotFound as exc:
        raise NotFound(str(exc)) from None
    queues = fail_attempts_of(session, name, f"worker {name} was revoked")
    return Effects(queues=queues, workers={name})


def remove(session: Session, name: str) -> Effects:
    """Revoke the worker, give up on its running attempts and forget it."""
    worker = _worker(session, name)
    queues = fail_attempts_of(session, name, f"worker {name} was removed")
    credentials.void_tokens_of(session, name)
    session.delete(worker)
    return Effects(queues=queues, workers={name})


def set_paused(session: Session, dag_id: str, paused: bool) -> dict[str, Any]:
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
    return dag_summary(dag)


def _task_instances(
    session: Session, run: DagRun, task_ids: set[str] | None = None
) -> list[TaskInstance]:
    """The run's task instances (``task_ids`` only, if given), locked, in id order."""
    stmt = select(TaskInstance).where(TaskInstance.dag_run_id == run.id)
    if task_ids is not None:
        stmt = stmt.where(TaskInstance.task_id.in_(task_ids))
    return list(session.scalars(lock_row(stmt.order_by(TaskInstance.id), session)))


def _end_running_attempt(session: Session, ti: TaskInstance, why: str, fx: Effects) -> None:
    worker = end_running_attempt(session, ti, why)
    if worker is not None:
        fx.workers.add(worker)  # its poll answers with "kill"


def _locked_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    run = get_run(session, dag_id, run_id)
    session.execute(lock_row(select(DagRun.id).where(DagRun.id == run.id), session))
    return run


def mark_task(session: Session, dag_id: str, run_id: str, task_id: str, state: str) -> Effects:
    """Set a task instance to success or failed; a running attempt is killed."""
    run = _locked_run(session, dag_id, run_id)
    tis = _task_instances(session, run, {task_id})
    if not tis:
        raise NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    fx = Effects()
    ti = tis[0]
    _end_running_attempt(session, ti, f"marked {state} by an operator", fx)
    ti.state = state
    ti.ended_at = utcnow()
    ti.next_retry_at = None
    if run.state in S.RUN_FINISHED:
        run.state, run.ended_at = S.RUN_RUNNING, None
    fx.queues |= advance_run(session, run)
    return fx


def _downstream(spec: dict[str, Any], task_id: str) -> set[str]:
    children = {t["task_id"]: t["downstream"] for t in spec["tasks"]}
    found, todo = set(), [task_id]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _clear(session: Session, run: DagRun, tis: list[TaskInstance], fx: Effects) -> None:
    """Make ``tis`` (locked) run again with their retries afresh, and reopen the run."""
    retries = {t["task_id"]: t["retries"] for t in run.serialized["tasks"]}
    for ti in tis:
        _end_running_attempt(session, ti, "cleared by an operator", fx)
        ti.state = None
        ti.max_tries = ti.try_number + retries[ti.task_id] + 1  # its retries, afresh
        ti.next_retry_at = None
        ti.started_at = ti.ended_at = ti.queued_at = None
        ti.worker_name = None
    if run.state in S.RUN_FINISHED:
        # Queued again, as in Airflow: it starts now if max_active_runs leaves
        # room, else when an earlier run ends.
        run.state, run.ended_at = S.RUN_QUEUED, None
        session.flush()
        fx.queues |= start_queued_runs(session, run.dag_id)
    else:  # running: queue what is ready now; queued: it waits its turn
        fx.queues |= advance_run(session, run)


def clear_task(
    session: Session, dag_id: str, run_id: str, task_id: str, downstream: bool
) -> tuple[list[str], Effects]:
    """Make a task instance (and, if asked, everything downstream) run again.

    Returns the cleared task ids, in the run's order.
    """
    run = _locked_run(session, dag_id, run_id)
    ids = {task_id} | (_downstream(run.serialized, task_id) if downstream else set())
    tis = _task_instances(session, run, ids)
    if not any(ti.task_id == task_id for ti in tis):
        raise NotFound(f"run {run_id!r} of DAG {dag_id!r} has no task {task_id!r}")
    fx = Effects()
    _clear(session, run, tis, fx)
    return _task_ids(tis), fx


def clear_run(
    session: Session, dag_id: str, run_id: str, only_failed: bool
) -> tuple[list[str], Effects]:
    """Run a whole run again, or only its ``failed`` and ``upstream_failed`` tasks.

    Returns the cleared task ids; when there are none the run is left as it is.
    """
    run = _locked_run(session, dag_id, run_id)
    tis = _task_instances(session, run)
    if only_failed:
        tis = [ti for ti in tis if ti.state in S.TI_FAILED]
    fx = Effects()
    if tis:
        _clear(session, run, tis, fx)
    return _task_ids(tis), fx


def _task_ids(tis: list[TaskInstance]) -> list[str]:
    """Each task once (a mapped task has a task instance per map index), in order."""
    return list(dict.fromkeys(ti.task_id for ti in tis))


def mark_run(session: Session, dag_id: str, run_id: str, state: str) -> Effects:
    """Set a run to success or failed, and its unfinished task instances with it.

    As Airflow: ``success`` makes every unfinished task instance ``success``;
    ``failed`` makes those that ran or were about to (``running``, ``queued``,
    ``up_for_retry``) ``failed`` and those that never started ``skipped``.
    Finished task instances keep their state. Running attempts are ended and
    their workers told to kill them. The run ends as any run does
    (``finish_run``): the DAG's callback is asked for, with reason ``marked``,
    and the next queued run may start.
    """
    run = _locked_run(session, dag_id, run_id)
    queues, workers = end_run(session, run, state, "marked", f"run marked {state} by an operator")
    return Effects(queues=queues, workers=workers)
