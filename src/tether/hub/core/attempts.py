"""Store operations behind the worker API: claim, log, finish, heartbeat."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session, defer

from tether.hub.core import assets, credentials, limits, params
from tether.hub.core import states as S
from tether.hub.core.runs import (
    advance_run,
    fail_on_hub,
    fail_task_instance,
    lock_run_of,
    skip_unchosen_branches,
    utcnow,
)
from tether.hub.store import effects
from tether.hub.store.dialect import lock_for_claim, lock_row, serialise_claims
from tether.hub.store.models import DagRun, LogChunk, TaskAttempt, TaskInstance
from tether.protocol import (
    ATTEMPT_FAILED,
    ATTEMPT_SUCCESS,
    DEFAULT_MAX_JOB_BYTES,
    DEFAULT_MAX_TASK_OUTPUT_BYTES,
    ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    MAX_WIRE_INT,
    AttemptResult,
    Job,
    WireError,
    check_wire_value,
    output_too_large,
    wire_size,
)


class AttemptNotFound(LookupError):
    """No attempt has this id."""


class NotYourAttempt(PermissionError):
    """The attempt is held by another worker."""


class AttemptFenced(Exception):
    """The hub has given up on this attempt, or it ended; its reports are refused."""


class InvalidReport(ValueError):
    """A report the hub cannot take as it is (422); the reason says why."""


@dataclass
class Claimed:
    """What a claim hands out, and what it could not."""

    jobs: list[Job] = field(default_factory=list)
    #: Task instances left queued because their job cannot be encoded, with the
    #: reason: :func:`fail_undeliverable` ends them after the claim's commit.
    undeliverable: list[tuple[int, str]] = field(default_factory=list)
    #: ``(queue, seconds it waited queued)`` of each job: the dispatch latency,
    #: which the caller observes once the claim has committed.
    waits: list[tuple[str, float]] = field(default_factory=list)
    #: The queues held no queued work at all: the claim looked no further.
    nothing_queued: bool = False


def claim(
    session: Session,
    worker_name: str,
    queues: list[str],
    slots: int,
    parallelism: int = 0,
    max_job_bytes: int = DEFAULT_MAX_JOB_BYTES,
) -> Claimed:
    """Hand queued task instances of ``queues`` to a worker with ``slots`` free slots.

    Highest ``priority_weight`` first, then oldest. A task takes ``pool_slots``
    worker slots and as many slots of its pool; tasks that do not fit, or
    that the limits hold back (``parallelism``, the DAG's
    ``max_active_tasks``, the pool), stay queued. Each claimed task becomes
    ``running`` under a new attempt id, in this transaction.

    A job is built and checked as the wire will carry it *before* its task
    instance changes: one whose data cannot be encoded (stored before the
    hub validated its input, say) is not claimed, so the poll's reply can
    always be sent and no job of another DAG in it is lost with it.
    """
    out = Claimed()
    if slots <= 0 or not queues:
        return out
    # Most looks find nothing (an idle fleet's polls; held polls woken for work
    # that another worker took): they neither wait for the claims' lock nor
    # count the limits. Work queued after this look wakes the poll again.
    if not has_queued_work(session, queues):
        out.nothing_queued = True
        return out
    serialise_claims(session)
    use = limits.usage(session, parallelism)
    if use.parallelism_room is not None and use.parallelism_room < 1:
        return out
    window = slots * 4 + 16  # room for candidates a limit turns down
    candidates = session.execute(
        lock_for_claim(
            select(TaskInstance.id, TaskInstance.dag_id, TaskInstance.pool, TaskInstance.pool_slots)
            .where(
                TaskInstance.state == S.QUEUED,
                TaskInstance.queue.in_(queues),
                TaskInstance.pool_slots <= slots,
                TaskInstance.dag_id.not_in(use.full_dags),
                TaskInstance.pool.in_(use.open_pools),
            )
            .order_by(TaskInstance.priority_weight.desc(), TaskInstance.queued_at, TaskInstance.id)
            .limit(window),
            session,
        )
    ).all()
    use.add_dags(session, {dag_id for _, dag_id, _, _ in candidates})  # nothing running yet
    ids: list[int] = []
    for ti_id, dag_id, pool, need in candidates:
        if need <= slots and use.admits(dag_id, pool, need):
            use.take(dag_id, pool, need)
            ids.append(ti_id)
            slots -= need
            if slots <= 0:
                break
    if not ids:
        return out
    now = utcnow()
    tis = session.scalars(select(TaskInstance).where(TaskInstance.id.in_(ids))).all()
    runs = {
        r.id: r
        for r in session.scalars(
            select(DagRun)
            .where(DagRun.id.in_({ti.dag_run_id for ti in tis}))
            .options(defer(DagRun.serialized_))  # from RUN_SPECS: decoded once per run
        )
    }
    for ti in sorted(tis, key=lambda t: ids.index(t.id)):
        run = runs[ti.dag_run_id]
        attempt_id = uuid.uuid4().hex
        try:
            job = _job(session, ti, run, attempt_id, ti.try_number + 1, max_job_bytes)
            # The fields as they are (the reply's to_dict makes the one deep copy).
            check_wire_value(vars(job), "the job", MAX_JSON_DEPTH + ENVELOPE_DEPTH)
        except (WireError, JobTooLarge) as exc:
            out.undeliverable.append((ti.id, str(exc)))
            continue
        if ti.queued_at is not None:
            out.waits.append((ti.queue, (now - ti.queued_at).total_seconds()))
        ti.try_number += 1
        S.move_task(ti, S.RUNNING, "claimed", now)
        ti.attempt_id = attempt_id
        ti.worker_name = worker_name
        hashed = None
        if job.connections or job.variables:  # a task that declares none needs no token
            token, hashed = credentials.new_attempt_token()
            job = dataclasses.replace(job, secrets_token=token)
        attempt = TaskAttempt(
            id=attempt_id,
            task_instance_id=ti.id,
            try_number=ti.try_number,
            worker_name=worker_name,
            token_hash=hashed,
        )
        S.move_attempt(attempt, S.AttemptState.RUNNING, "claimed", now, ti)
        session.add(attempt)
        out.jobs.append(job)
    return out


def fail_undeliverable(session: Session, ti_id: int, reason: str) -> None:
    """Fail a queued task instance whose job cannot be sent (see :func:`claim`).

    Runs in its own transaction after the claim's, with the run's lock, as
    every change to a run's task instances does.
    """
    run = lock_run_of(session, ti_id)
    ti = session.scalar(lock_row(select(TaskInstance).where(TaskInstance.id == ti_id), session))
    if ti is None or ti.state != S.QUEUED:
        return
    fail_on_hub(session, ti, utcnow(), f"the hub cannot send this task to a worker: {reason}")
    advance_run(session, run)


def has_queued_work(session: Session, queues: list[str]) -> bool:
    """Whether ``queues`` hold queued work (after a claim: work the limits held back)."""
    if not queues:
        return False
    found = session.scalar(
        select(TaskInstance.id)
        .where(TaskInstance.state == S.QUEUED, TaskInstance.queue.in_(queues))
        .limit(1)
    )
    return found is not None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class JobTooLarge(Exception):
    """A job would carry more input data than a job may (TETHER_MAX_JOB_BYTES)."""


def _job(
    session: Session,
    ti: TaskInstance,
    run: DagRun,
    attempt_id: str,
    try_number: int,
    max_job_bytes: int,
) -> Job:
    spec = next(t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id)
    inputs: dict[str, Any] = {}
    if spec["upstream"]:
        upstream = (
            TaskInstance.dag_run_id == run.id,
            TaskInstance.task_id.in_(spec["upstream"]),
            TaskInstance.state == S.SUCCESS,
        )
        # Measured in the store before anything is loaded: a reduce over a
        # thousand mapped outputs must not be built in the hub's memory to find
        # out it is too large.
        size = session.scalar(
            select(func.coalesce(func.sum(func.length(cast(TaskInstance.output, Text))), 0)).where(
                *upstream
            )
        )
        if size and size > max_job_bytes:
            raise JobTooLarge(
                f"its inputs (the return values of its upstream tasks) are {size} bytes as "
                f"JSON; a job carries at most {max_job_bytes} (TETHER_MAX_JOB_BYTES). Return "
                "references to the data (paths, URIs, table names), not the data itself"
            )
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.output)
            .where(*upstream)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
        )
        mapped = {t["task_id"] for t in run.serialized["tasks"] if t.get("mapped")}
        for task_id, _index, output in rows:
            if task_id in mapped:  # every index's value, in map-index order
                inputs.setdefault(task_id, []).append(output)
            else:
                inputs[task_id] = output
    return Job(
        attempt_id=attempt_id,
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        try_number=try_number,
        queue=ti.queue,
        bundle_sha=run.bundle_sha,
        fileloc=run.serialized["fileloc"],
        conf=run.conf,
        params=params.effective(run.serialized, run.conf),
        inputs=inputs,
        logical_date=_iso(run.logical_date),
        data_interval_start=_iso(run.data_interval_start),
        data_interval_end=_iso(run.data_interval_end),
        execution_timeout=spec.get("execution_timeout"),
        pool_slots=ti.pool_slots,
        map_index=ti.map_index,
        max_tries=ti.max_tries,
        connections=list(spec.get("connections", [])),
        variables=list(spec.get("variables", [])),
    )


def _held_attempt(
    session: Session, attempt_id: str, worker_name: str, *, lock: bool = True
) -> TaskAttempt:
    query = select(TaskAttempt).where(TaskAttempt.id == attempt_id)
    attempt = session.scalar(lock_row(query, session) if lock else query)
    if attempt is None:
        raise AttemptNotFound(f"no attempt {attempt_id}")
    if attempt.worker_name != worker_name:
        raise NotYourAttempt(f"attempt {attempt_id} is held by another worker")
    return attempt


def append_log(
    session: Session,
    attempt_id: str,
    worker_name: str,
    offset: int,
    pieces: bytes | Iterable[bytes],
    keep: int | None = None,
) -> int:
    """Store log bytes that start at ``offset`` (given in pieces); return the stored size.

    Idempotent: bytes the hub already has are dropped, so a chunk re-sent
    after a timeout is not duplicated. A chunk that would leave a gap stores
    nothing; the worker resumes from the returned size. Of one try the hub
    keeps the first ``keep`` bytes: past them it counts what arrives (so the
    worker's offsets stay right) but stores nothing, and the log reads with
    a note in the gap (None: keep all). An attempt that has ended takes no
    more logs (AttemptFenced): nothing can be added after its last word.
    """
    attempt = _held_attempt(session, attempt_id, worker_name)
    if attempt.state != S.RUNNING:
        raise AttemptFenced(f"attempt {attempt_id} already ended as {attempt.state}")
    keep = MAX_WIRE_INT if keep is None else keep
    for data in [pieces] if isinstance(pieces, bytes) else pieces:
        size = attempt.log_size
        if offset <= size < offset + len(data):
            new = data[size - offset :]
            if size < keep:
                session.add(LogChunk(attempt_id=attempt_id, offset=size, data=new[: keep - size]))
            attempt.log_size = size + len(new)
        offset += len(data)
    return attempt.log_size


def _branch_choice(run: DagRun, ti: TaskInstance, output: Any) -> None:
    spec = next(t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id)
    if spec.get("branch") and not (
        output is None or (isinstance(output, list) and all(isinstance(o, str) for o in output))
    ):
        raise InvalidReport(
            f"task {ti.task_id!r} is a branch: its output must be a list of task ids, "
            f"not {str(output)[:100]}"
        )


def finish(
    session: Session,
    attempt_id: str,
    worker_name: str,
    result: AttemptResult,
    max_output: int = DEFAULT_MAX_TASK_OUTPUT_BYTES,
) -> str:
    """Record the end of an attempt and move its run forward.

    A success records an event for each asset in the task's ``outlets`` and
    starts the asset-triggered runs that makes due. A success whose output is
    more than ``max_output`` bytes as JSON is recorded as a failure that says
    so (the worker checks first; this is for one that did not). Returns the
    task instance's new state.
    """
    if result.state == ATTEMPT_SUCCESS and (size := wire_size(result.output)) > max_output:
        result = AttemptResult(state=ATTEMPT_FAILED, error=output_too_large(size, max_output))
    attempt = _held_attempt(session, attempt_id, worker_name, lock=False)
    # Lock order for everything that changes a run's task instances: the run
    # row, then task instances by id, then attempts (as fail_attempt and the
    # operator actions do). A claim waits only for the claim lock, which it
    # takes before any row lock, and then never waits on a row (SKIP LOCKED),
    # so claims cannot join a deadlock.
    run = lock_run_of(session, attempt.task_instance_id)
    ti = session.scalar(
        lock_row(select(TaskInstance).where(TaskInstance.id == attempt.task_instance_id), session)
    )
    assert ti is not None
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(attempt, with_for_update=True)  # now lock it, in that order
    if attempt.state != S.RUNNING:
        if ti.attempt_id == attempt_id and attempt.state == result.state:
            return ti.state or ""  # a repeated report: already recorded
        raise AttemptFenced(f"attempt {attempt_id} already ended as {attempt.state}")
    if ti.attempt_id != attempt_id or ti.state != S.RUNNING:
        raise AttemptFenced(f"attempt {attempt_id} no longer holds its task instance")
    if result.state == ATTEMPT_SUCCESS:
        _branch_choice(run, ti, result.output)
    now = utcnow()
    S.move_attempt(attempt, S.AttemptState(result.state), "finished", now, ti)
    attempt.error = result.error
    effects.wake(session)  # running work ended: limits may have room
    if result.state == ATTEMPT_FAILED:
        fail_task_instance(session, run, ti, now, "finished", may_retry=not result.no_retry)
        assert ti.state is not None
        return ti.state
    S.move_task(ti, S.TaskState(result.state), "finished", now)
    if result.state == ATTEMPT_SUCCESS:
        ti.output = result.output
    if result.state == ATTEMPT_SUCCESS:
        skip_unchosen_branches(session, run, ti, result.output)
        # Its outlets' events, and the runs they start, in this transaction. Before
        # advance_run: this locks the consuming DAGs' rows and the run's own (which
        # ending the run locks) together, in dag_id order, after the locks above.
        assets.record_task_events(session, run, ti)
    advance_run(session, run)
    return ti.state


def ran_bundle(session: Session, worker_name: str, sha: str, queues: Iterable[str]) -> bool:
    """Whether ``worker_name`` was handed an attempt of a run pinned to bundle ``sha``,
    of a task on one of ``queues`` (the queues its credential allows now: a name
    enrolled again for another tenant does not inherit the old tenant's code)."""
    found = session.scalar(
        select(TaskAttempt.id)
        .join(TaskInstance, TaskInstance.id == TaskAttempt.task_instance_id)
        .join(DagRun, DagRun.id == TaskInstance.dag_run_id)
        .where(
            TaskAttempt.worker_name == worker_name,
            DagRun.bundle_sha == sha,
            TaskInstance.queue.in_(list(queues)),
        )
        .limit(1)
    )
    return found is not None
