"""Create DAG runs and move their task instances forward.

These functions work inside the caller's transaction. What the rest of the
hub must hear (queues that got work, workers that must kill a task, a retry
to time) they record on the session (:mod:`tether.hub.store.effects`); the
transaction tells it after its commit.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from tether.hub.core import states as S
from tether.hub.store import effects
from tether.hub.store.dialect import lock_for_claim, lock_row
from tether.hub.store.models import (
    CallbackRequest,
    Dag,
    DagRun,
    LogChunk,
    TaskAttempt,
    TaskInstance,
)
from tether.sdk.mapping import MAX_MAP_LENGTH


def utcnow() -> datetime:
    return datetime.now(UTC)


class RunExists(Exception):
    """A run with this run_id already exists for the DAG."""


#: The run id prefixes the hub gives the runs it makes itself: a run id
#: given by a person (a trigger) may not start with one, or it could take
#: the id of a scheduled interval before the scheduler gets there, and that
#: interval would never run.
RESERVED_RUN_ID_PREFIXES = ("scheduled__", "backfill__", "asset_triggered__")


class ReservedRunId(ValueError):
    """A given run id that starts the way only the hub's own runs' ids do."""


def check_given_run_id(run_id: str) -> None:
    """Refuse a run id a person gives that the hub keeps for its own runs."""
    for prefix in RESERVED_RUN_ID_PREFIXES:
        if run_id.startswith(prefix):
            raise ReservedRunId(
                f"run ids starting with {prefix!r} are the hub's own (scheduled, "
                "backfilled and asset-triggered runs); give another run id"
            )


def create_run(
    session: Session,
    dag: Dag,
    *,
    run_type: str,
    conf: dict[str, Any] | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
) -> DagRun:
    """Create a run of ``dag`` pinned to its current bundle.

    The run starts (its root tasks are queued) at once if the DAG has fewer
    than ``max_active_runs`` running runs; otherwise it waits as ``queued``
    and starts when an earlier run ends (see :func:`start_queued_runs`).
    """
    now = utcnow()
    stamp = logical_date or now
    run_id = run_id or f"{run_type}__{stamp.isoformat()}"
    existing = session.scalar(
        select(DagRun.id).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id)
    )
    if existing is not None:
        raise RunExists(f"DAG {dag.dag_id!r} already has a run {run_id!r}")
    run = DagRun(
        dag_id=dag.dag_id,
        run_id=run_id,
        run_type=run_type,
        conf=conf or {},
        bundle_sha=dag.bundle_sha,
        serialized=dag.serialized,
        logical_date=logical_date,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        created_at=now,
    )
    S.move_run(run, S.RUN_QUEUED, "created", now)
    session.add(run)
    session.flush()
    for spec in dag.serialized["tasks"]:
        session.add(
            TaskInstance(
                dag_run_id=run.id,
                dag_id=dag.dag_id,
                run_id=run_id,
                task_id=spec["task_id"],
                map_index=-1,
                try_number=0,
                max_tries=spec["retries"] + 1,
                queue=spec["queue"],
                priority_weight=spec["priority_weight"],
                pool_slots=spec["pool_slots"],
                pool=spec.get("pool") or "default_pool",
            )
        )
    session.flush()
    start_queued_runs(session, dag.dag_id)
    return run


def start_queued_runs(session: Session, dag_id: str) -> None:
    """Start the oldest queued runs of a DAG while it has fewer than
    ``max_active_runs`` running.

    The DAG row's lock makes concurrent callers take turns. Queued runs are
    taken with SKIP LOCKED: one that someone else holds waits for the next
    call (every run end calls this; so does the scheduler's sweep).
    """
    dag = session.scalar(lock_row(select(Dag).where(Dag.dag_id == dag_id), session))
    if dag is None:
        return
    running = session.scalar(
        select(func.count())
        .select_from(DagRun)
        .where(DagRun.dag_id == dag_id, DagRun.state == S.RUN_RUNNING)
    )
    room = dag.max_active_runs - (running or 0) if dag.max_active_runs > 0 else None
    if room is not None and room <= 0:
        return
    queued = session.scalars(
        lock_for_claim(
            select(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state == S.RUN_QUEUED)
            .order_by(DagRun.logical_date, DagRun.id)
            .limit(room if room is not None else 1000),
            session,
        )
    ).all()
    for run in queued:
        if run.state != S.RUN_QUEUED:
            continue  # started meanwhile: a run that ended at once started the next ones
        S.move_run(run, S.RUN_RUNNING, "started", utcnow())
        assert run.started_at is not None
        timeout = run.serialized.get("dagrun_timeout")
        run.timeout_at = run.started_at + timedelta(seconds=timeout) if timeout else None
        advance_run(session, run)


def _decide(rule: str, counts: Counter[str], total: int) -> S.TaskState | None:
    """What a waiting task becomes given its upstream states, or None to keep waiting.

    Returns ``queued``, ``skipped`` or ``upstream_failed``.
    """
    done = sum(counts[s] for s in S.TI_FINISHED)
    success, skipped = counts[S.SUCCESS], counts[S.SKIPPED]
    failed = counts[S.FAILED] + counts[S.UPSTREAM_FAILED]
    all_done = done == total
    if total == 0 or rule == "always":
        return S.QUEUED
    if rule == "all_success":
        if failed:
            return S.UPSTREAM_FAILED
        if skipped:
            return S.SKIPPED
        return S.QUEUED if success == total else None
    if rule == "all_failed":
        if success or skipped:
            return S.SKIPPED
        return S.QUEUED if all_done else None
    if rule == "all_done":
        return S.QUEUED if all_done else None
    if rule == "one_success":
        if success:
            return S.QUEUED
        if all_done:
            return S.UPSTREAM_FAILED if failed else S.SKIPPED
        return None
    if rule == "one_failed":
        if failed:
            return S.QUEUED
        return S.SKIPPED if all_done else None
    if rule == "none_failed":
        if failed:
            return S.UPSTREAM_FAILED
        return S.QUEUED if all_done else None
    if rule == "none_failed_min_one_success":
        if failed:
            return S.UPSTREAM_FAILED
        if all_done:
            return S.QUEUED if success else S.SKIPPED
        return None
    if rule == "none_skipped":
        if skipped:
            return S.SKIPPED
        return S.QUEUED if all_done else None
    raise ValueError(f"unknown trigger rule {rule!r}")


def advance_run(session: Session, run: DagRun) -> None:
    """Queue every task whose upstream allows it; finish the run when all are done.

    The caller holds the run's row lock (or just created the run), which
    serialises every change to the run's task instances except claims. So the
    task instances are read without row locks: a claim only turns ``queued``
    into ``running``, which changes no decision here, and a lock would make
    concurrent claims (SKIP LOCKED) pass over queued work of this run and
    sleep until their wait ends.

    Cascades within the run (a skip or upstream failure can free further
    tasks). The queues that got work are woken after the commit.
    """
    if run.state == S.RUN_QUEUED:
        return  # not started yet (max_active_runs); start_queued_runs starts it
    if any(spec.get("mapped") for spec in run.serialized["tasks"]):
        _advance_loaded(session, run)
    else:
        _advance_light(session, run)


def _advance_light(session: Session, run: DagRun) -> None:
    """``advance_run`` for a run without mapped tasks: the same decisions, made from
    each task instance's state alone, loading as objects only the ones that move.

    Every finish of a task advances its run, so loading all of a wide run's
    task instances each time made a run of N tasks cost N² object loads.
    """
    now = utcnow()
    states: dict[str, list[str | None]] = {}
    for task_id, state in session.execute(
        select(TaskInstance.task_id, TaskInstance.state).where(TaskInstance.dag_run_id == run.id)
    ):
        states.setdefault(task_id, []).append(state)
    decided: dict[str, S.TaskState] = {}
    for spec in run.serialized["tasks"]:  # topological: upstream decisions come first
        own = states.get(spec["task_id"], [])
        if None not in own:
            continue
        upstream = [state for u in spec["upstream"] for state in states.get(u, [])]
        counts = Counter(state or "none" for state in upstream)
        decision = _decide(spec["trigger_rule"], counts, len(upstream))
        if decision is None:
            continue
        decided[spec["task_id"]] = decision
        states[spec["task_id"]] = [decision if state is None else state for state in own]
    # A query per few hundred that move, not one per task: a run's start decides
    # every root (in chunks: an older SQLite takes at most 999 parameters).
    names = list(decided)
    for first in range(0, len(names), 500):
        waiting = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_run_id == run.id,
                TaskInstance.task_id.in_(names[first : first + 500]),
                TaskInstance.state.is_(None),
            )
        )
        for ti in waiting:
            S.move_task(ti, decided[ti.task_id], "trigger_rule", now)
            if decided[ti.task_id] == S.QUEUED:
                effects.wake(session, ti.queue)
    everything = [state for group in states.values() for state in group]
    _finish_if_done(session, run, everything)


def _advance_loaded(session: Session, run: DagRun) -> None:
    """``advance_run`` with every task instance loaded: mapping needs them (the
    upstream values to expand over, the placeholders to turn into instances)."""
    now = utcnow()
    groups: dict[str, list[TaskInstance]] = {}
    for ti in session.scalars(
        select(TaskInstance).where(TaskInstance.dag_run_id == run.id).order_by(TaskInstance.id)
    ):
        groups.setdefault(ti.task_id, []).append(ti)
    # Serialized tasks are in topological order: one pass sees every upstream
    # decision (a skip or upstream failure cascades) before its downstream.
    for spec in run.serialized["tasks"]:
        group = groups.get(spec["task_id"], [])
        waiting = [ti for ti in group if ti.state is None]
        if not waiting:
            continue
        # Trigger rules count every upstream task instance (each map index).
        upstream = [ti for u in spec["upstream"] for ti in groups.get(u, [])]
        counts = Counter(ti.state or "none" for ti in upstream)
        decision = _decide(spec["trigger_rule"], counts, len(upstream))
        if decision is None:
            continue
        if decision == S.QUEUED and spec.get("mapped") and _unexpanded(group):
            expanded = _expand(session, run, spec, group[0], groups, now)
            if expanded is None:
                continue  # failed or skipped
            group[:] = waiting = expanded
        for ti in waiting:
            S.move_task(ti, decision, "trigger_rule", now)
            if decision == S.QUEUED:
                effects.wake(session, ti.queue)
    _finish_if_done(session, run, [ti.state for group in groups.values() for ti in group])


def _finish_if_done(session: Session, run: DagRun, states: list[str | None]) -> None:
    """End a running run whose task instances (their ``states``) have all finished."""
    if run.state == S.RUN_RUNNING and all(state in S.TI_FINISHED for state in states):
        failed = any(state in S.TI_FAILED for state in states)
        if failed:
            finish_run(session, run, S.RUN_FAILED, "task_failure")
        else:
            finish_run(session, run, S.RUN_SUCCESS, "success")


def finish_run(session: Session, run: DagRun, state: S.RunState, reason: str) -> None:
    """End a run as ``state``: ask for the DAG's callback, start the next queued run.

    ``reason`` tells the DAG callback why (success, task_failure, timed_out,
    marked); it is the run's move in :data:`states.RUN` too.
    """
    S.move_run(run, state, reason, utcnow())
    assert run.ended_at is not None
    kind = "on_success_callback" if state == S.RUN_SUCCESS else "on_failure_callback"
    if run.serialized.get(f"has_{kind}"):
        session.add(
            CallbackRequest(
                dag_id=run.dag_id,
                run_id=run.run_id,
                kind=kind,
                reason=reason,
                bundle_sha=run.bundle_sha,
                fileloc=run.serialized["fileloc"],
                created_at=run.ended_at,
            )
        )
    session.flush()
    start_queued_runs(session, run.dag_id)  # room for the next run


def _unexpanded(group: list[TaskInstance]) -> bool:
    return len(group) == 1 and group[0].map_index == -1


def _expand(
    session: Session,
    run: DagRun,
    spec: dict[str, Any],
    placeholder: TaskInstance,
    groups: dict[str, list[TaskInstance]],
    now: datetime,
) -> list[TaskInstance] | None:
    """Turn a mapped task's placeholder into one task instance per map index.

    Returns them, or None when the task ended here: skipped for zero
    values (as in Airflow), failed when an upstream value is not a list or
    the product exceeds MAX_MAP_LENGTH (the reason is the try's log).
    """
    size = 1
    for source in spec["mapped"]:
        if "length" in source:
            size *= int(source["length"])
            continue
        outputs = [ti.output for ti in groups.get(source["task_id"], []) if ti.state == S.SUCCESS]
        is_mapped = any(
            t["task_id"] == source["task_id"] and t.get("mapped") for t in run.serialized["tasks"]
        )
        value: Any = outputs if is_mapped else (outputs[0] if outputs else [])
        if source.get("key") is not None:
            value = value.get(source["key"]) if isinstance(value, dict) else None
        if not isinstance(value, list):
            fail_on_hub(
                session,
                placeholder,
                now,
                f"cannot expand {spec['task_id']!r}: {source['arg']}= needs a list from task "
                f"{source['task_id']!r}, which returned {type(value).__name__}",
            )
            return None
        size *= len(value)
    if size > MAX_MAP_LENGTH:
        fail_on_hub(
            session,
            placeholder,
            now,
            f"cannot expand {spec['task_id']!r}: {size} task instances; "
            f"the limit is {MAX_MAP_LENGTH}",
        )
        return None
    if size == 0:
        S.move_task(placeholder, S.SKIPPED, "no_map_values", now)
        return None
    placeholder.map_index = 0
    expanded = [placeholder]
    for index in range(1, size):
        ti = TaskInstance(
            dag_run_id=run.id,
            dag_id=run.dag_id,
            run_id=run.run_id,
            task_id=placeholder.task_id,
            map_index=index,
            try_number=0,
            max_tries=placeholder.max_tries,
            queue=placeholder.queue,
            priority_weight=placeholder.priority_weight,
            pool_slots=placeholder.pool_slots,
            pool=placeholder.pool,
        )
        session.add(ti)
        expanded.append(ti)
    session.flush()
    return expanded


def fail_on_hub(session: Session, ti: TaskInstance, now: datetime, reason: str) -> None:
    """End ``ti`` as failed with no worker involved; ``reason`` becomes its try's log."""
    ti.try_number += 1
    S.move_task(ti, S.FAILED, "hub_failed", now)
    ti.started_at = now  # a try that started and ended at once, on the hub
    ti.attempt_id = uuid.uuid4().hex
    attempt = TaskAttempt(
        id=ti.attempt_id,
        task_instance_id=ti.id,
        try_number=ti.try_number,
        worker_name="hub",
        error=reason,
        log_size=0,
    )
    S.move_attempt(attempt, S.AttemptState.FAILED, "hub_failed", now, ti)
    session.add(attempt)
    session.flush()
    hub_note(session, attempt, reason)


def hub_note(session: Session, attempt: TaskAttempt, text: str) -> None:
    """Add a line of the hub's own to the end of an attempt's log."""
    data = f"[tether] {text}\n".encode()
    session.add(LogChunk(attempt_id=attempt.id, offset=attempt.log_size, data=data))
    attempt.log_size += len(data)


def retry_delay(spec: dict[str, Any], try_number: int) -> timedelta:
    """The wait before the next try, after ``try_number`` failed."""
    delay = float(spec.get("retry_delay") or 0.0)
    if spec.get("retry_exponential_backoff"):
        delay = delay * (2 ** max(0, try_number - 1))
    max_delay = spec.get("max_retry_delay")
    if max_delay is not None:
        delay = min(delay, float(max_delay))
    return timedelta(seconds=delay)


def fail_task_instance(
    session: Session,
    run: DagRun,
    ti: TaskInstance,
    now: datetime,
    reason: str,
    *,
    may_retry: bool = True,
) -> datetime | None:
    """A try of ``ti`` failed: ``up_for_retry`` if tries are left, else ``failed``.

    ``reason`` is ``finished`` (the worker said so) or ``attempt_lost`` (the
    hub gave up on the try). The caller holds the run's lock. Returns the
    retry's time, if there is one.
    """
    effects.wake(session)  # running work ended: limits may have room
    if may_retry and retries_left(ti):
        spec = next(t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id)
        S.move_task(ti, S.UP_FOR_RETRY, reason, now)
        ti.next_retry_at = now + retry_delay(spec, ti.try_number)
        effects.poke_scheduler(session)  # it times the retry
        return ti.next_retry_at
    S.move_task(ti, S.FAILED, reason, now)
    advance_run(session, run)
    return None


def retries_left(ti: TaskInstance) -> bool:
    """Whether a try of ``ti`` that fails now is retried (``up_for_retry``)."""
    return ti.try_number < ti.max_tries


def lock_run_of(session: Session, task_instance_id: int) -> DagRun:
    """Lock and return the run of a task instance (taken before its task instances)."""
    run_pk = select(TaskInstance.dag_run_id).where(TaskInstance.id == task_instance_id)
    run = session.scalar(
        lock_row(
            select(DagRun)
            .where(DagRun.id == run_pk.scalar_subquery())
            .options(defer(DagRun.serialized_)),  # from RUN_SPECS: decoded once per run
            session,
        )
    )
    if run is None:
        raise LookupError(f"no run for task instance {task_instance_id}")
    return run


def requeue_due_retries(session: Session, now: datetime) -> None:
    """Queue the up_for_retry task instances whose retry time has come."""
    due = session.execute(
        select(TaskInstance.id, TaskInstance.dag_run_id)
        .where(
            TaskInstance.state.in_(S.TASK.sources(S.QUEUED, "retry_due")),
            TaskInstance.next_retry_at <= now,
        )
        .order_by(TaskInstance.dag_run_id, TaskInstance.id)
    ).all()
    for run_pk in sorted({run_pk for _, run_pk in due}):
        session.execute(lock_row(select(DagRun.id).where(DagRun.id == run_pk), session))
    tis = session.scalars(
        lock_row(
            select(TaskInstance)
            .where(TaskInstance.id.in_([ti_id for ti_id, _ in due]))
            .order_by(TaskInstance.id),
            session,
        )
    ).all()
    for ti in tis:
        if ti.state != S.UP_FOR_RETRY:  # changed since we looked
            continue
        S.move_task(ti, S.QUEUED, "retry_due", now)
        effects.wake(session, ti.queue)


def next_retry_time(session: Session) -> datetime | None:
    return session.scalar(
        select(TaskInstance.next_retry_at)
        .where(TaskInstance.state == S.UP_FOR_RETRY)
        .order_by(TaskInstance.next_retry_at)
        .limit(1)
    )


def skip_unchosen_branches(session: Session, run: DagRun, ti: TaskInstance, chosen: Any) -> None:
    """After a branch task succeeded: skip its direct downstream tasks it did not choose.

    ``chosen`` is the branch's output, a list of task ids (checked by the
    task itself; anything else chooses nothing). The caller holds the run's
    lock and calls :func:`advance_run` next, which spreads the skips.
    """
    spec = next(t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id)
    if not spec.get("branch"):
        return
    follow = set(chosen) if isinstance(chosen, list) else set()
    others = set(spec["downstream"]) - follow
    if not others:
        return
    now = utcnow()
    for other in session.scalars(
        select(TaskInstance)
        .where(
            TaskInstance.dag_run_id == run.id,
            TaskInstance.task_id.in_(others),
            TaskInstance.state.is_(None),
        )
        .order_by(TaskInstance.id)
    ):
        S.move_task(other, S.SKIPPED, "branch", now)


def end_running_attempt(session: Session, ti: TaskInstance, why: str) -> str | None:
    """Give up on ``ti``'s running attempt (its reports will be refused); its
    worker's held poll answers at once, with a directive to kill it.

    Returns that worker, if there was one.
    """
    if ti.state != S.RUNNING or ti.attempt_id is None:
        return None
    attempt = session.get(TaskAttempt, ti.attempt_id)
    if attempt is None or attempt.state != S.RUNNING:
        return None
    give_up_attempt(session, attempt, why, utcnow())
    return attempt.worker_name


def give_up_attempt(session: Session, attempt: TaskAttempt, why: str, now: datetime) -> None:
    """The hub ends a running attempt itself: it becomes ``lost``, and its log
    ends with the hub's own line saying why.

    Every later report on it is refused (409), log chunks included, so
    nothing can be added after that line; what the worker still had to send
    of the log is dropped.
    """
    ti = session.get(TaskInstance, attempt.task_instance_id)  # for the log line
    S.move_attempt(attempt, S.ATTEMPT_LOST, "given_up", now, ti)
    attempt.error = why
    effects.wake(session)  # running work ended: limits may have room
    effects.tell(session, attempt.worker_name)  # it kills the task, if it runs it
    hub_note(session, attempt, f"the hub ended this try: {why}")


def ended_state(ti_state: str | None, run_state: S.RunState) -> S.TaskState | None:
    """What a task instance in ``ti_state`` becomes when its run is ended as
    ``run_state`` (:func:`end_run`); None: it keeps its state (it is finished)."""
    if ti_state in S.TI_FINISHED:
        return None
    if run_state == S.RUN_SUCCESS:
        return S.SUCCESS
    return S.SKIPPED if ti_state is None else S.FAILED


def end_run(session: Session, run: DagRun, state: S.RunState, reason: str, why: str) -> None:
    """End a run now as ``state``, with its unfinished task instances.

    As Airflow: ``success`` makes every unfinished task instance ``success``;
    ``failed`` makes those that ran or were about to (``running``, ``queued``,
    ``up_for_retry``) ``failed`` and those that never started ``skipped``.
    Finished task instances keep their state; running attempts end (``why``
    is their error; their workers are told to kill them). ``reason`` is
    ``marked`` or ``timed_out``. A run that is in ``state`` already is left
    alone (no second callback). The caller holds the run's lock.
    """
    if run.state == state:
        return
    now = utcnow()
    for ti in session.scalars(
        lock_row(
            select(TaskInstance).where(TaskInstance.dag_run_id == run.id).order_by(TaskInstance.id),
            session,
        )
    ):
        to = ended_state(ti.state, state)
        if to is None:
            continue
        end_running_attempt(session, ti, why)
        S.move_task(ti, to, f"run_{reason}", now)
    # Not advance_run: it would judge the run by its task states, and a run
    # ended as success may hold failed tasks (or one ended as failed none).
    finish_run(session, run, state, reason)


def time_out_runs(session: Session, now: datetime) -> None:
    """Fail the running runs past their dagrun_timeout (reason ``timed_out``)."""
    due = session.scalars(
        lock_row(
            select(DagRun)
            .where(DagRun.state == S.RUN_RUNNING, DagRun.timeout_at <= now)
            .order_by(DagRun.id),
            session,
        )
    ).all()
    for run in due:
        limit = run.serialized.get("dagrun_timeout") or 0
        end_run(session, run, S.RUN_FAILED, "timed_out", f"dagrun_timeout of {limit:g}s exceeded")


def next_run_timeout(session: Session) -> datetime | None:
    return session.scalar(select(func.min(DagRun.timeout_at)).where(DagRun.state == S.RUN_RUNNING))
