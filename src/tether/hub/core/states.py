"""The four state machines of the hub, and the one door every state change goes through.

Task instances, runs, attempts and workers each have a ``StrEnum`` of states
(the values are the strings the database and the API have always held, and a
member compares equal to its string), and a table of legal moves: from which
states a move with a given *reason* may go to which state. Every state change
goes through :func:`move_task`, :func:`move_run`, :func:`move_attempt` or
:func:`move_worker`, which refuse a move the table does not list
(:class:`IllegalTransition`), stamp the times that belong to the new state, and
write one structured line to the ``tether.states`` logger. Queries that select
rows to move take their from-states from the same table (:meth:`Machine.sources`),
so a query and the move it prepares cannot disagree.

The idea is Prefect's orchestration policy (rules that declare ``FROM_STATES``
and ``TO_STATES``), cut down to what Tether needs: a table, not a rule engine.
The state diagrams in ``docs/architecture.md`` are drawn from these tables
(:mod:`tether.hub.core.state_docs`); a unit test checks that the file
matches.

Log levels: routine moves (a task queued, claimed, succeeded; a worker's
heartbeat changing idle to running) log at DEBUG, so a busy hub's log is not
one line per step of every task; moves someone may have to act on, or that
someone made (failures, retries, lost attempts and workers, marks, clears,
revokes), log at INFO. ``tether hub -v`` shows both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from tether.hub.store.models import DagRun, TaskAttempt, TaskInstance, Worker

log = logging.getLogger("tether.states")


class TaskState(StrEnum):
    """A task instance's state (``task_instance.state``). Waiting is SQL ``NULL``
    (Airflow's "none"), written ``None`` here and ``null`` in JSON."""

    QUEUED = "queued"
    """Its trigger rule is met (or its retry is due): waiting for a worker to claim it."""
    RUNNING = "running"
    """A worker claimed it; ``attempt_id`` names the attempt that holds it."""
    SUCCESS = "success"
    """Its last try succeeded, or an operator marked it so."""
    FAILED = "failed"
    """Its last try failed with no tries left, the hub could not run it, or an operator
    marked it so."""
    SKIPPED = "skipped"
    """Not run: its trigger rule, an unchosen branch, an empty mapping or its run's end
    said so, or the task skipped itself."""
    UPSTREAM_FAILED = "upstream_failed"
    """Not run because an upstream task failed (trigger rule)."""
    UP_FOR_RETRY = "up_for_retry"
    """A try failed and tries are left: queued again at ``next_retry_at``."""
    REMOVED = "removed"
    """Airflow's state for a task gone from the DAG. Defined, never set yet."""


class RunState(StrEnum):
    """A DAG run's state (``dag_run.state``)."""

    QUEUED = "queued"
    """Created (or cleared) and waiting for room under the DAG's ``max_active_runs``."""
    RUNNING = "running"
    """Started: its task instances are scheduled as their trigger rules allow."""
    SUCCESS = "success"
    """Every task instance finished and none failed, or an operator marked it so."""
    FAILED = "failed"
    """A task instance failed, the run timed out, or an operator marked it so."""


class AttemptState(StrEnum):
    """One try's state (``task_attempt.state``)."""

    RUNNING = "running"
    """Handed to a worker; its reports are taken."""
    SUCCESS = "success"
    """The worker reported success."""
    FAILED = "failed"
    """The worker reported a failure, or the hub failed it without a worker."""
    SKIPPED = "skipped"
    """The worker reported that the task skipped itself."""
    LOST = "lost"
    """The hub gave up on it (worker lost, revoked or removed, not listed in heartbeats,
    task marked or cleared, run ended): every later report is refused."""


class WorkerState(StrEnum):
    """A worker's state (``worker.state``), as it last reported, or as the hub judged it."""

    ENROLLED = "enrolled"
    """It spent an enrolment token and has never opened a session since."""
    IDLE = "idle"
    """Live, running no attempt."""
    RUNNING = "running"
    """Live, running at least one attempt."""
    MAINTENANCE = "maintenance"
    """Live, taking no new work (asked locally or by the centre)."""
    DRAINING = "draining"
    """Stopping: finishing its attempts, taking no new work."""
    OFFLINE = "offline"
    """Said goodbye when its process stopped."""
    LOST = "lost"
    """Silent for longer than ``TETHER_WORKER_LOST_TIMEOUT``; its attempts were given up."""
    REVOKED = "revoked"
    """Its credential was revoked: it can no longer talk to the hub."""


# Short names, as the store queries have always used them.
QUEUED = TaskState.QUEUED
RUNNING = TaskState.RUNNING
SUCCESS = TaskState.SUCCESS
FAILED = TaskState.FAILED
SKIPPED = TaskState.SKIPPED
UPSTREAM_FAILED = TaskState.UPSTREAM_FAILED
UP_FOR_RETRY = TaskState.UP_FOR_RETRY
REMOVED = TaskState.REMOVED
ATTEMPT_LOST = AttemptState.LOST
RUN_QUEUED = RunState.QUEUED
RUN_RUNNING = RunState.RUNNING
RUN_SUCCESS = RunState.SUCCESS
RUN_FAILED = RunState.FAILED

#: A task instance in one of these states will not run again by itself.
TI_FINISHED = frozenset({SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED, REMOVED})
TI_FAILED = frozenset({FAILED, UPSTREAM_FAILED})
RUN_FINISHED = frozenset({RUN_SUCCESS, RUN_FAILED})
#: Workers that may be serving: the ones that can be judged lost.
WORKER_LIVE = (WorkerState.IDLE, WorkerState.RUNNING, WorkerState.MAINTENANCE, WorkerState.DRAINING)


class IllegalTransition(Exception):
    """A state change the machine's table does not allow: a bug in the caller."""


E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Move(Generic[E]):
    """Legal moves: from each of ``sources`` to each of ``targets``, for ``reason``.

    ``None`` stands for "no state" (a task instance waiting, a row being
    created). ``label`` is the diagram's text; ``by_hand`` moves (an
    operator's) are listed in a table under the diagram instead of drawn;
    ``loud`` moves log at INFO, the rest at DEBUG.
    """

    sources: tuple[E | None, ...]
    targets: tuple[E | None, ...]
    reason: str
    label: str
    by_hand: bool = False
    loud: bool = False


class Machine(Generic[E]):
    """One state machine: its states and its table of moves (drawn by ``state_docs``)."""

    def __init__(
        self,
        name: str,
        states: type[E],
        moves: Iterable[Move[E]],
        group: tuple[str, tuple[E, ...]] | None = None,
        waiting: str | None = None,
    ) -> None:
        self.name = name
        #: For a machine whose ``None`` is a state of its own (a task instance
        #: waiting): drawn as ``none``, entered from ``[*]`` with this label.
        self.waiting = waiting
        self.states = states
        self.moves = tuple(moves)
        #: A set of states drawn as one composite state (the worker's live states).
        self.group = group
        self._table: dict[tuple[E | None, E | None, str], Move[E]] = {}
        for move in self.moves:
            for source in move.sources:
                for target in move.targets:
                    if source != target:
                        self._table[(source, target, move.reason)] = move

    def check(self, source: str | None, target: E | None, reason: str) -> Move[E]:
        """The move from ``source`` to ``target`` for ``reason``; IllegalTransition if none."""
        state = None if source is None else self.states(source)
        move = self._table.get((state, target, reason))
        if move is None:
            move_text = f"from {state_name(state)} to {state_name(target)} for {reason!r}"
            raise IllegalTransition(f"{self.name}: no move {move_text}")
        return move

    def sources(self, target: E | None, reason: str) -> tuple[E, ...]:
        """The states a move to ``target`` for ``reason`` may start from (for a WHERE clause)."""
        found = {s for (s, t, r) in self._table if t == target and r == reason and s is not None}
        return tuple(s for s in self.states if s in found)


def state_name(state: StrEnum | None) -> str:
    """A state as the docs and the log lines write it (a task instance waiting: ``none``)."""
    return "none" if state is None else state.value


T = TaskState
_TI_UNFINISHED: tuple[TaskState | None, ...] = (None, T.QUEUED, T.RUNNING, T.UP_FOR_RETRY)
_TI_ALL: tuple[TaskState | None, ...] = (None, *TaskState)

TASK: Machine[TaskState] = Machine(
    "task instance",
    TaskState,
    [
        Move((None,), (T.QUEUED,), "trigger_rule", "trigger rule met (advance_run)"),
        Move((None,), (T.SKIPPED,), "trigger_rule", "trigger rule says skip"),
        Move((None,), (T.UPSTREAM_FAILED,), "trigger_rule", "upstream failed", loud=True),
        Move((None,), (T.SKIPPED,), "branch", "a branch did not choose it"),
        Move((None,), (T.SKIPPED,), "no_map_values", "mapped over no values"),
        Move(
            (None, T.QUEUED),
            (T.FAILED,),
            "hub_failed",
            "the hub cannot expand or send it",
            loud=True,
        ),
        Move((T.QUEUED,), (T.RUNNING,), "claimed", "claimed by a worker (new attempt)"),
        Move((T.RUNNING,), (T.SUCCESS,), "finished", "finish success"),
        Move((T.RUNNING,), (T.SKIPPED,), "finished", "finish skipped"),
        Move(
            (T.RUNNING,),
            (T.FAILED,),
            "finished",
            "finish failed, no tries left or no_retry",
            loud=True,
        ),
        Move((T.RUNNING,), (T.UP_FOR_RETRY,), "finished", "finish failed, tries left", loud=True),
        Move(
            (T.RUNNING,), (T.UP_FOR_RETRY,), "attempt_lost", "attempt lost, tries left", loud=True
        ),
        Move((T.RUNNING,), (T.FAILED,), "attempt_lost", "attempt lost, no tries left", loud=True),
        Move((T.UP_FOR_RETRY,), (T.QUEUED,), "retry_due", "scheduler, at next_retry_at"),
        Move(
            tuple(s for s in _TI_ALL if s != T.SUCCESS),
            (T.SUCCESS,),
            "marked",
            "an operator marks the task (`PATCH …/tasks/{task_id}`)",
            by_hand=True,
            loud=True,
        ),
        Move(
            tuple(s for s in _TI_ALL if s != T.FAILED),
            (T.FAILED,),
            "marked",
            "an operator marks the task",
            by_hand=True,
            loud=True,
        ),
        Move(
            tuple(TaskState),
            (None,),
            "cleared",
            "an operator clears it, its run, or an upstream task with `downstream`",
            by_hand=True,
            loud=True,
        ),
        Move(
            _TI_UNFINISHED,
            (T.SUCCESS,),
            "run_marked",
            "its run is marked success (`PATCH …/runs/{run_id}`)",
            by_hand=True,
            loud=True,
        ),
        Move(
            _TI_UNFINISHED[1:],
            (T.FAILED,),
            "run_marked",
            "its run is marked failed: what ran or was about to",
            by_hand=True,
            loud=True,
        ),
        Move(
            (None,),
            (T.SKIPPED,),
            "run_marked",
            "its run is marked failed: what never started",
            by_hand=True,
            loud=True,
        ),
        Move(
            _TI_UNFINISHED[1:],
            (T.FAILED,),
            "run_timed_out",
            "run timed out: what ran or was about to",
            loud=True,
        ),
        Move(
            (None,),
            (T.SKIPPED,),
            "run_timed_out",
            "run timed out: what never started",
            loud=True,
        ),
    ],
    waiting="run created",
)

R = RunState
RUN: Machine[RunState] = Machine(
    "run",
    RunState,
    [
        Move((None,), (R.QUEUED,), "created", "create_run"),
        Move((R.QUEUED,), (R.RUNNING,), "started", "room under max_active_runs"),
        Move((R.RUNNING,), (R.SUCCESS,), "success", "all task instances finished, none failed"),
        Move(
            (R.RUNNING,),
            (R.FAILED,),
            "task_failure",
            "all finished, one failed or upstream_failed",
            loud=True,
        ),
        Move((R.RUNNING,), (R.FAILED,), "timed_out", "dagrun_timeout passed", loud=True),
        Move(
            (R.QUEUED, R.RUNNING, R.FAILED),
            (R.SUCCESS,),
            "marked",
            "an operator marks the run (`PATCH …/runs/{run_id}`)",
            by_hand=True,
            loud=True,
        ),
        Move(
            (R.QUEUED, R.RUNNING, R.SUCCESS),
            (R.FAILED,),
            "marked",
            "an operator marks the run",
            by_hand=True,
            loud=True,
        ),
        Move(
            (R.SUCCESS, R.FAILED),
            (R.QUEUED,),
            "cleared",
            "an operator clears the run or one of its tasks (it starts as max_active_runs allows)",
            by_hand=True,
            loud=True,
        ),
        Move(
            (R.SUCCESS, R.FAILED),
            (R.RUNNING,),
            "task_marked",
            "an operator marks one of its tasks (the run is judged again)",
            by_hand=True,
            loud=True,
        ),
    ],
)

A = AttemptState
ATTEMPT: Machine[AttemptState] = Machine(
    "attempt",
    AttemptState,
    [
        Move((None,), (A.RUNNING,), "claimed", "claim"),
        Move((None,), (A.FAILED,), "hub_failed", "the hub fails the task without a worker"),
        Move((A.RUNNING,), (A.SUCCESS, A.FAILED, A.SKIPPED), "finished", "the worker's finish"),
        Move((A.RUNNING,), (A.LOST,), "given_up", "the hub gives up on it", loud=True),
    ],
)

W = WorkerState
WORKER: Machine[WorkerState] = Machine(
    "worker",
    WorkerState,
    [
        Move((None,), (W.ENROLLED,), "enrolled", "enrolment token spent", loud=True),
        Move(
            (W.ENROLLED, W.OFFLINE, *WORKER_LIVE),
            WORKER_LIVE,
            "reported",
            "session or heartbeat: what it reports",
        ),
        Move((W.LOST,), WORKER_LIVE, "reported", "back: session or heartbeat", loud=True),
        Move(
            (W.ENROLLED, W.LOST, *WORKER_LIVE),
            (W.OFFLINE,),
            "reported",
            "goodbye heartbeat",
            loud=True,
        ),
        Move((W.LOST,), (W.IDLE, W.RUNNING), "polled", "polls again", loud=True),
        Move(WORKER_LIVE, (W.LOST,), "silent", "silent > TETHER_WORKER_LOST_TIMEOUT", loud=True),
        Move(
            tuple(s for s in WorkerState if s != W.REVOKED),
            (W.REVOKED,),
            "revoked",
            "an operator revokes its credential",
            by_hand=True,
            loud=True,
        ),
        Move(
            tuple(s for s in WorkerState if s != W.ENROLLED),
            (W.ENROLLED,),
            "enrolled",
            "it spends a token made with `replace`",
            by_hand=True,
            loud=True,
        ),
    ],
    group=("live", WORKER_LIVE),
)


def _note(
    machine: Machine[E],
    move: Move[E],
    fields: Mapping[str, object],
    source: str | None,
    target: E | None,
) -> None:
    """Write the one line of a state change: ``key=value`` pairs, in a fixed order."""
    level = logging.INFO if move.loud else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    pairs = {**fields, "from": source or "none", "to": state_name(target), "reason": move.reason}
    log.log(
        level,
        "%s %s",
        machine.name.replace(" ", "_"),
        " ".join(f"{k}={_value(v)}" for k, v in pairs.items()),
        extra={"state_change": {"machine": machine.name, **pairs}},
    )


def _value(value: object) -> str:
    text = str(value)
    return text if re.fullmatch(r"[^\s\"=]+", text) else repr(text)


def _ti_fields(ti: TaskInstance) -> dict[str, object]:
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
    }


def move_task(ti: TaskInstance, to: TaskState | None, reason: str, now: datetime) -> None:
    """Move a task instance, stamping its times.

    ``queued``: ``queued_at`` now, and no worker, start or end (a retry starts
    afresh; the previous try's worker stays on its attempt row). ``running``:
    started now, not ended. ``up_for_retry`` and the finished states: ended now;
    finished ones wait for no retry. ``None`` (cleared): no times, no worker.
    """
    source = ti.state
    move = TASK.check(source, to, reason)
    ti.state = to
    if to == T.QUEUED:
        ti.queued_at = now
        ti.started_at = ti.ended_at = ti.next_retry_at = None
        ti.worker_name = None
    elif to == T.RUNNING:
        ti.started_at, ti.ended_at = now, None
    elif to is None:
        ti.queued_at = ti.started_at = ti.ended_at = ti.next_retry_at = None
        ti.worker_name = None
    else:
        ti.ended_at = now
        if to in TI_FINISHED:
            ti.next_retry_at = None
    _note(TASK, move, _ti_fields(ti), source, to)


def move_run(run: DagRun, to: RunState, reason: str, now: datetime) -> None:
    """Move a run, stamping its times.

    ``queued`` (created or cleared): not ended. ``running``: started now when it
    starts from ``queued`` (a run reopened by a marked task keeps its start),
    not ended. Finished: ended now (started now too if it never started), and
    no timeout pending.
    """
    source = run.state
    move = RUN.check(source, to, reason)
    run.state = to
    if to == R.QUEUED:
        run.ended_at = None
    elif to == R.RUNNING:
        if source == R.QUEUED:
            run.started_at = now
        run.ended_at = None
    else:
        run.started_at = run.started_at or now
        run.ended_at = now
        run.timeout_at = None
    _note(RUN, move, {"dag_id": run.dag_id, "run_id": run.run_id}, source, to)


def move_attempt(
    attempt: TaskAttempt, to: AttemptState, reason: str, now: datetime, ti: TaskInstance | None
) -> None:
    """Move an attempt, stamping its times: ``running`` starts now, the rest end now.

    ``ti`` is its task instance, for the log line (None if it is gone).
    """
    source = attempt.state
    move = ATTEMPT.check(source, to, reason)
    attempt.state = to
    if to == A.RUNNING:
        attempt.started_at, attempt.ended_at = now, None
    else:
        attempt.started_at = attempt.started_at or now
        attempt.ended_at = now
    fields: dict[str, object] = _ti_fields(ti) if ti is not None else {}
    fields |= {"attempt_id": attempt.id, "try_number": attempt.try_number}
    _note(ATTEMPT, move, fields, source, to)


def move_worker(worker: Worker, to: WorkerState, reason: str, now: datetime) -> bool:
    """Move a worker, stamping ``enrolled_at`` or ``revoked_at``; whether its state changed.

    A worker reports its state with every heartbeat, so a "move" to the state it
    is in is no move: nothing is checked or logged (the stamps are, as a repeated
    enrolment or revoke sets its time again).
    """
    source = worker.state
    changed = source != to
    move = WORKER.check(source, to, reason) if changed else None
    worker.state = to
    if to == W.ENROLLED:
        worker.enrolled_at, worker.revoked_at = now, None
    elif to == W.REVOKED:
        worker.revoked_at = now
    if move is not None:
        _note(WORKER, move, {"worker": worker.name}, source, to)
    return changed
