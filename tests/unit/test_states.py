"""The state machines: their tables, the one door, and that nothing goes around it."""

from __future__ import annotations

import ast
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tether.hub.core import state_docs
from tether.hub.core import states as S
from tether.hub.core.states import (
    AttemptState,
    IllegalTransition,
    RunState,
    TaskState,
    WorkerState,
)
from tether.hub.store.models import DagRun, TaskAttempt, TaskInstance, Worker

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SRC = Path(S.__file__).resolve().parents[2]  # src/tether
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
MODELS = {"DagRun", "TaskInstance", "TaskAttempt", "Worker"}


def _ti(state: str | None = None) -> TaskInstance:
    return TaskInstance(
        dag_id="d", run_id="manual__1", task_id="t", map_index=3, state=state, try_number=1
    )


def test_every_member_has_its_own_docstring() -> None:
    for enum in (TaskState, RunState, AttemptState, WorkerState):
        source = ast.parse(Path(S.__file__).read_text())
        cls = next(
            n for n in source.body if isinstance(n, ast.ClassDef) and n.name == enum.__name__
        )
        documented = {
            target.id
            for before, after in zip(cls.body, cls.body[1:], strict=False)
            if isinstance(before, ast.Assign)
            for target in before.targets
            if isinstance(target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        }
        assert documented == set(enum.__members__), enum.__name__


def test_values_are_the_stored_strings() -> None:
    assert TaskState.UP_FOR_RETRY == "up_for_retry"
    assert AttemptState.LOST == "lost"
    assert {s.value for s in WorkerState} == {
        "enrolled",
        "idle",
        "running",
        "maintenance",
        "draining",
        "offline",
        "lost",
        "revoked",
    }


@pytest.mark.parametrize(
    ("machine", "source", "target", "reason"),
    [
        (S.TASK, None, TaskState.RUNNING, "claimed"),  # never queued
        (S.TASK, TaskState.SUCCESS, TaskState.QUEUED, "trigger_rule"),
        (S.TASK, TaskState.FAILED, TaskState.UP_FOR_RETRY, "finished"),
        (S.TASK, TaskState.RUNNING, TaskState.SUCCESS, "claimed"),  # a legal pair, wrong reason
        (S.RUN, RunState.SUCCESS, RunState.FAILED, "task_failure"),
        (S.RUN, RunState.QUEUED, RunState.SUCCESS, "success"),
        (S.ATTEMPT, AttemptState.LOST, AttemptState.SUCCESS, "finished"),
        (S.ATTEMPT, AttemptState.SUCCESS, AttemptState.LOST, "given_up"),
        (S.WORKER, WorkerState.REVOKED, WorkerState.IDLE, "reported"),
        (S.WORKER, WorkerState.OFFLINE, WorkerState.LOST, "silent"),
    ],
)
def test_an_illegal_move_is_refused(
    machine: S.Machine[TaskState], source: str | None, target: TaskState, reason: str
) -> None:
    with pytest.raises(IllegalTransition):
        machine.check(source, target, reason)


def test_a_refused_move_changes_nothing() -> None:
    ti = _ti(TaskState.SUCCESS)
    with pytest.raises(IllegalTransition, match="from success to running"):
        S.move_task(ti, TaskState.RUNNING, "claimed", NOW)
    assert ti.state == TaskState.SUCCESS
    assert ti.started_at is None


def test_a_lost_attempt_takes_no_report() -> None:
    attempt = TaskAttempt(id="a1", try_number=1, state=AttemptState.LOST)
    for to in (AttemptState.SUCCESS, AttemptState.FAILED, AttemptState.SKIPPED):
        with pytest.raises(IllegalTransition):
            S.move_attempt(attempt, to, "finished", NOW, None)


def test_the_log_line_has_every_field(caplog: pytest.LogCaptureFixture) -> None:
    ti = _ti(TaskState.QUEUED)
    with caplog.at_level(logging.DEBUG, logger="tether.states"):
        S.move_task(ti, TaskState.RUNNING, "claimed", NOW)
    (record,) = caplog.records
    assert record.name == "tether.states"
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        "task_instance dag_id=d run_id=manual__1 task_id=t map_index=3 "
        "from=queued to=running reason=claimed"
    )
    assert record.state_change == {  # type: ignore[attr-defined]
        "machine": "task instance",
        "dag_id": "d",
        "run_id": "manual__1",
        "task_id": "t",
        "map_index": 3,
        "from": "queued",
        "to": "running",
        "reason": "claimed",
    }


def test_what_needs_attention_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    ti = _ti(TaskState.RUNNING)
    attempt = TaskAttempt(id="a1", try_number=1, state=AttemptState.RUNNING)
    with caplog.at_level(logging.INFO, logger="tether.states"):
        S.move_task(_ti(None), TaskState.QUEUED, "trigger_rule", NOW)  # routine: DEBUG
        S.move_attempt(attempt, AttemptState.LOST, "given_up", NOW, ti)
        S.move_task(ti, TaskState.UP_FOR_RETRY, "attempt_lost", NOW)
    assert [r.getMessage() for r in caplog.records] == [
        "attempt dag_id=d run_id=manual__1 task_id=t map_index=3 attempt_id=a1 try_number=1 "
        "from=running to=lost reason=given_up",
        "task_instance dag_id=d run_id=manual__1 task_id=t map_index=3 "
        "from=running to=up_for_retry reason=attempt_lost",
    ]


def test_a_value_with_spaces_is_quoted(caplog: pytest.LogCaptureFixture) -> None:
    run = DagRun(dag_id="d", run_id="my run", state=RunState.RUNNING)
    with caplog.at_level(logging.INFO, logger="tether.states"):
        S.move_run(run, RunState.FAILED, "timed_out", NOW)
    assert caplog.records[0].getMessage() == (
        "run dag_id=d run_id='my run' from=running to=failed reason=timed_out"
    )


def test_moves_stamp_the_times() -> None:
    ti = _ti(None)
    S.move_task(ti, TaskState.QUEUED, "trigger_rule", NOW)
    assert (ti.queued_at, ti.started_at, ti.ended_at) == (NOW, None, None)
    S.move_task(ti, TaskState.RUNNING, "claimed", NOW)
    ti.worker_name = "w1"
    assert (ti.started_at, ti.ended_at) == (NOW, None)
    S.move_task(ti, TaskState.UP_FOR_RETRY, "finished", NOW)
    ti.next_retry_at = NOW
    assert ti.ended_at == NOW
    S.move_task(ti, TaskState.QUEUED, "retry_due", NOW)  # a fresh try: no worker, no times
    assert (ti.worker_name, ti.started_at, ti.ended_at, ti.next_retry_at) == (None,) * 4
    S.move_task(ti, TaskState.FAILED, "marked", NOW)
    S.move_task(ti, None, "cleared", NOW)
    assert (ti.queued_at, ti.ended_at) == (None, None)

    run = DagRun(dag_id="d", run_id="r")
    S.move_run(run, RunState.QUEUED, "created", NOW)
    S.move_run(run, RunState.SUCCESS, "marked", NOW)  # never started: starts as it ends
    assert (run.started_at, run.ended_at) == (NOW, NOW)


def test_a_heartbeat_that_repeats_the_state_is_no_move(caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(name="w1", state=WorkerState.IDLE)
    with caplog.at_level(logging.DEBUG, logger="tether.states"):
        assert S.move_worker(worker, WorkerState.IDLE, "reported", NOW) is False
        assert S.move_worker(worker, WorkerState.RUNNING, "reported", NOW) is True
    assert [r.getMessage() for r in caplog.records] == [
        "worker worker=w1 from=idle to=running reason=reported"
    ]


def test_sources_come_from_the_table() -> None:
    assert S.WORKER.sources(WorkerState.LOST, "silent") == S.WORKER_LIVE
    assert S.TASK.sources(TaskState.QUEUED, "retry_due") == (TaskState.UP_FOR_RETRY,)


def test_the_diagrams_in_the_docs_are_drawn_from_the_tables() -> None:
    text = ARCHITECTURE.read_text()
    assert state_docs.render_docs(text) == text, (
        "docs/architecture.md is out of date: python -m tether.hub.core.state_docs --write-docs"
    )


def test_render_docs_refuses_a_file_without_markers() -> None:
    with pytest.raises(ValueError, match="state-machine: task"):
        state_docs.render_docs("# no diagrams here\n")


def _state_writes(tree: ast.AST) -> list[int]:
    """Lines that set a state column other than through the states module."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _flat(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in targets):
            found.append(node.lineno)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            sets_state = any(k.arg == "state" for k in node.keywords) or (
                name == "values" and any(_mentions_state(a) for a in node.args)
            )
            if sets_state and name in MODELS | {"values"}:
                found.append(node.lineno)
    return found


def _flat(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for elt in target.elts for t in _flat(elt)]
    return [target]


def _mentions_state(arg: ast.expr) -> bool:
    """``values({"state": ...})`` or ``values({Model.state: ...})``."""
    if not isinstance(arg, ast.Dict):
        return False
    return any(
        (isinstance(k, ast.Constant) and k.value == "state")
        or (isinstance(k, ast.Attribute) and k.attr == "state")
        for k in arg.keys
    )


def test_no_state_is_set_outside_the_states_module() -> None:
    """Every state change goes through the one door (``states.move_*``).

    The worker package is left out: its ``state`` is the worker process's own
    report (status.json, heartbeats), which the hub turns into a worker state
    through :func:`states.move_worker`.
    """
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == Path(S.__file__).resolve() or (SRC / "worker") in path.parents:
            continue
        offenders += [
            f"{path.relative_to(SRC)}:{line}" for line in _state_writes(ast.parse(path.read_text()))
        ]
    assert offenders == [], "set these states through tether.hub.core.states"


@pytest.mark.parametrize(
    "code",
    [
        "ti.state = 'queued'",
        "run.state, run.ended_at = 'running', None",
        "session.execute(update(TaskInstance).values(state='failed'))",
        "session.execute(update(TaskInstance).values({TaskInstance.state: 'failed'}))",
        "session.add(TaskAttempt(id=x, state='running'))",
    ],
)
def test_the_scan_catches_each_way_of_setting_a_state(code: str) -> None:
    assert _state_writes(ast.parse(code)) == [1]
