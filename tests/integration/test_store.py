"""The store on SQLite and PostgreSQL: migrations, claims, fencing, logs."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import InternalError, OperationalError

import tether
from tests.hubtools import Told, make_hub, parse, told, write_dag
from tether.hub.core import attempts, audit, control, limits, queries, runs, sessions
from tether.hub.services.scheduler import tick
from tether.hub.state import Hub
from tether.hub.store.db import migrate
from tether.hub.store.models import (
    RUN_SPECS,
    Base,
    DagRun,
    RunSpecs,
    TaskAttempt,
    TaskInstance,
    Worker,
)
from tether.protocol import AttemptResult


def test_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # a second run is a no-op
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "wide.py",
        """
        from tether import DAG, BashOperator
        with DAG("wide", max_active_tasks=100):
            for i in range(20):
                BashOperator(task_id=f"t{i}", bash_command="true", queue="q")
        with DAG("fan_in"):
            join = BashOperator(task_id="join", bash_command="true", queue="fan")
            for i in range(12):
                BashOperator(task_id=f"f{i}", bash_command="true", queue="fan") >> join
        with DAG("pair"):
            BashOperator(task_id="a", bash_command="true") >> BashOperator(
                task_id="b", bash_command="true")
    """,
    )
    hub = make_hub(tmp_path, database_url, dags)
    try:
        parse(hub)
        yield hub
    finally:
        hub.store.dispose()


def _trigger(hub: Hub, dag_id: str) -> str:
    with hub.store.transaction() as s:
        run_id = queries.trigger(s, dag_id, {}, None)
    return run_id


def test_concurrent_claims_never_hand_out_a_task_twice(hub: Hub) -> None:
    _trigger(hub, "wide")
    got: dict[str, list[str]] = {"w1": [], "w2": [], "w3": []}
    barrier = threading.Barrier(len(got))

    def claimer(name: str) -> None:
        barrier.wait()
        while True:
            with hub.store.transaction() as s:
                jobs = attempts.claim(s, name, ["q"], 3).jobs
            if not jobs:
                return
            got[name].extend(j.task_id for j in jobs)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [task for tasks in got.values() for task in tasks]
    assert sorted(claimed) == sorted(f"t{i}" for i in range(20))
    with hub.store.transaction() as s:
        states = set(s.scalars(select(TaskInstance.state)))
        tries = set(s.scalars(select(TaskInstance.try_number)))
    assert states == {"running"}
    assert tries == {1}


def test_siblings_finishing_at_once_free_their_join_exactly_once(hub: Hub) -> None:
    run_id = _trigger(hub, "fan_in")
    with hub.store.transaction() as s:
        jobs = attempts.claim(s, "w1", ["fan"], 100).jobs
    assert len(jobs) == 12
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def report(attempt_id: str) -> None:
        barrier.wait()
        try:
            with hub.store.transaction() as s:
                attempts.finish(s, attempt_id, "w1", AttemptResult("success"))
        except BaseException as exc:  # a deadlock or lock error would land here
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(j.attempt_id,)) for j in jobs]
    with told(hub) as woken:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    # Each end wakes the claims limits held back; only the last one frees join.
    assert sorted(woken.notifies, key=len) == [set()] * 11 + [{"fan"}]
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, "w1", ["fan"], 100).jobs
        assert job.task_id == "join"
        assert job.run_id == run_id
        assert len(job.inputs) == 12


def test_claim_takes_only_the_asked_queues(hub: Hub) -> None:
    _trigger(hub, "wide")
    with hub.store.transaction() as s:
        assert attempts.claim(s, "w", ["default", "other"], 10).jobs == []
        assert len(attempts.claim(s, "w", ["q"], 5).jobs) == 5


def _claim_one(hub: Hub, worker: str, queue: str = "default") -> str:
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, worker, [queue], 1).jobs
    return job.attempt_id


def _retry_at(hub: Hub, attempt_id: str) -> datetime:
    """When the task instance that ran ``attempt_id`` is due to retry."""
    with hub.store.read() as s:
        ti_id = s.scalar(select(TaskAttempt.task_instance_id).where(TaskAttempt.id == attempt_id))
        due = s.scalar(select(TaskInstance.next_retry_at).where(TaskInstance.id == ti_id))
    assert due is not None
    return due


class _Witness(Told):
    """Records, at each notify, how many queued task instances another
    connection can see then (only committed rows)."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.seen: list[int] = []

    def notify(self, queues: Iterable[str]) -> None:
        super().notify(queues)
        with self.hub.store.read() as s:
            queued = s.scalars(select(TaskInstance.id).where(TaskInstance.state == "queued"))
            self.seen.append(len(queued.all()))


def _trigger_then_fail(hub: Hub) -> None:
    with hub.store.transaction() as s:
        queries.trigger(s, "pair", {}, None)
        raise RuntimeError("the request fails after the store function")


def test_a_wake_up_fires_after_the_commit_and_never_for_a_rollback(hub: Hub) -> None:
    witness = _Witness(hub)
    before, hub.store.effects = hub.store.effects, witness
    try:
        with pytest.raises(RuntimeError):
            _trigger_then_fail(hub)
        assert witness.notifies == []  # the run was rolled back: nobody is woken for it
        with hub.store.transaction() as s:
            queries.trigger(s, "pair", {}, None)
            assert witness.notifies == []  # not before the commit
    finally:
        hub.store.effects = before
    # Woken once, after the commit: the queued task was already visible to a poll.
    assert (witness.notifies, witness.seen) == ([{"default"}], [1])


def test_only_the_store_tells_waiters() -> None:
    """Wake-ups go out through the transaction that made the change (store/effects.py),
    so no route or loop can forget one, or send one for work that was rolled back."""
    src = Path(tether.__file__).parent
    # broadcast.py fires what other hub processes committed (their transactions told).
    allowed = {src / "hub" / "wakeups.py"} | {
        src / "hub" / "store" / name for name in ("effects.py", "broadcast.py")
    }
    found: dict[str, int] = {}
    for path in sorted(set(src.rglob("*.py")) - allowed):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr
                in {"notify", "notify_worker", "poke_scheduler", "wake_everything"}
                # effects.wake/tell/poke_scheduler(session) record on the transaction
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "effects")
            ):
                name = str(path.relative_to(src))
                found[name] = found.get(name, 0) + 1
    # The scheduler's sweep is the one deliberate exception: its safety net for claims
    # that limits held back, which no single change is answerable for.
    assert found == {"hub/services/scheduler.py": 1}


def test_finish_frees_downstream_in_the_same_call(hub: Hub) -> None:
    run_id = _trigger(hub, "pair")
    attempt = _claim_one(hub, "w1")
    with told(hub) as woken, hub.store.transaction() as s:
        state = attempts.finish(s, attempt, "w1", AttemptResult("success", output={"n": 1}))
    assert (state, woken.notifies, woken.scheduler_pokes) == ("success", [{"default"}], 0)
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, "w1", ["default"], 1).jobs
    assert job.task_id == "b"
    assert job.inputs == {"a": {"n": 1}}
    assert job.run_id == run_id


def test_reports_are_fenced_and_idempotent(hub: Hub) -> None:
    _trigger(hub, "pair")
    attempt = _claim_one(hub, "w1")
    with hub.store.transaction() as s, pytest.raises(attempts.NotYourAttempt):
        attempts.finish(s, attempt, "w2", AttemptResult("success"))
    with hub.store.transaction() as s, pytest.raises(attempts.AttemptNotFound):
        attempts.finish(s, "0" * 32, "w1", AttemptResult("success"))
    with hub.store.transaction() as s:
        attempts.finish(s, attempt, "w1", AttemptResult("success"))
    with hub.store.transaction() as s:  # the same report again: accepted, nothing changes
        assert attempts.finish(s, attempt, "w1", AttemptResult("success")) == "success"
    with hub.store.transaction() as s, pytest.raises(attempts.AttemptFenced):
        attempts.finish(s, attempt, "w1", AttemptResult("failed"))


def test_log_appends_are_idempotent_by_offset(hub: Hub) -> None:
    _trigger(hub, "pair")
    attempt = _claim_one(hub, "w1")
    with hub.store.transaction() as s:
        assert attempts.append_log(s, attempt, "w1", 0, b"hello ") == 6
        assert attempts.append_log(s, attempt, "w1", 0, b"hello ") == 6  # resent
        assert attempts.append_log(s, attempt, "w1", 3, b"lo world\n") == 12  # overlaps
        assert attempts.append_log(s, attempt, "w1", 50, b"gap") == 12  # refused: a gap
        with pytest.raises(attempts.NotYourAttempt):
            attempts.append_log(s, attempt, "intruder", 12, b"x")
    with hub.store.transaction() as s:
        assert queries.read_log(s, s.get(TaskAttempt, attempt)) == b"hello world\n"


def test_a_try_keeps_its_first_log_bytes_and_takes_none_once_ended(hub: Hub) -> None:
    _trigger(hub, "pair")
    attempt = _claim_one(hub, "w1")
    with hub.store.transaction() as s:
        # In pieces, as a streamed upload stores them; only the first 4 bytes are kept.
        assert attempts.append_log(s, attempt, "w1", 0, [b"abc", b"def"], keep=4) == 6
        assert attempts.append_log(s, attempt, "w1", 6, b"gh", keep=4) == 8
        assert attempts.append_log(s, attempt, "w1", 6, b"gh", keep=4) == 8  # resent
    with hub.store.transaction() as s:
        assert queries.read_log(s, s.get(TaskAttempt, attempt)) == (
            b"abcd\n[tether] 4 bytes of this try's log were dropped: the hub keeps the first "
            b"TETHER_MAX_TASK_LOG_BYTES of a try\n"
        )
        attempts.finish(s, attempt, "w1", AttemptResult("success"))
    with (
        hub.store.transaction() as s,
        pytest.raises(attempts.AttemptFenced, match="ended as success"),
    ):
        attempts.append_log(s, attempt, "w1", 8, b"forged line after the end\n")


def test_a_log_read_from_an_offset_counts_the_bytes_sent_including_dropped_ones(
    hub: Hub,
) -> None:
    _trigger(hub, "pair")
    attempt = _claim_one(hub, "w1")
    with hub.store.transaction() as s:
        attempts.append_log(s, attempt, "w1", 0, [b"abc", b"def"], keep=4)
        attempts.append_log(s, attempt, "w1", 6, b"gh", keep=4)
    note = b"bytes of this try's log were dropped"
    with hub.store.transaction() as s:
        held = s.get(TaskAttempt, attempt)
        assert held is not None
        assert queries.read_log(s, held, 1).startswith(b"bcd\n[tether] 4 " + note)
        assert queries.read_log(s, held, 5).startswith(b"\n[tether] 3 " + note)
        assert queries.read_log(s, held, 8) == b""
        assert queries.read_log(s, held, 80) == b""


def test_a_failed_try_with_retries_waits_then_requeues(hub: Hub, tmp_path: Path) -> None:
    write_dag(
        hub.config.dags_folder,
        "retry.py",
        """
        from datetime import timedelta
        from tether import DAG, BashOperator
        with DAG("retry"):
            BashOperator(task_id="r", bash_command="false", retries=2,
                         retry_delay=timedelta(seconds=60), retry_exponential_backoff=True)
    """,
    )
    parse(hub)
    _trigger(hub, "retry")
    attempt = _claim_one(hub, "w1")
    with told(hub) as woken, hub.store.transaction() as s:
        assert attempts.finish(s, attempt, "w1", AttemptResult("failed")) == "up_for_retry"
    assert woken.queues == set()
    assert woken.scheduler_pokes == 1  # the scheduler times the retry
    retry_at = _retry_at(hub, attempt)
    with told(hub) as woken:
        with hub.store.transaction() as s:
            runs.requeue_due_retries(s, retry_at - runs.timedelta(seconds=1))
        assert woken.notifies == []
        with hub.store.transaction() as s:
            runs.requeue_due_retries(s, retry_at)
        assert woken.notifies == [{"default"}]
    second = _claim_one(hub, "w1")
    with hub.store.transaction() as s:
        assert attempts.finish(s, second, "w1", AttemptResult("failed")) == "up_for_retry"
    retry_at2 = _retry_at(hub, second)
    # Exponential backoff: the second wait is twice the first.
    assert 115 < (retry_at2 - runs.utcnow()).total_seconds() <= 120
    with hub.store.transaction() as s:
        runs.requeue_due_retries(s, retry_at2)
    third = _claim_one(hub, "w1")
    with hub.store.transaction() as s:
        assert attempts.finish(s, third, "w1", AttemptResult("failed")) == "failed"


@pytest.mark.parametrize(("catchup", "expected_runs"), [(True, 5), (False, 1)])
def test_the_scheduler_creates_cron_runs_with_their_data_intervals(
    hub: Hub, catchup: bool, expected_runs: int
) -> None:
    start = runs.utcnow().replace(minute=0, second=0, microsecond=0) - runs.timedelta(hours=5)
    write_dag(
        hub.config.dags_folder,
        "hourly.py",
        f"""
        from datetime import datetime
        from tether import DAG, EmptyOperator
        with DAG("hourly", schedule="@hourly", catchup={catchup},
                 start_date=datetime.fromisoformat("{start.isoformat()}")):
            EmptyOperator(task_id="tick")
    """,
    )
    parse(hub)
    now = start + runs.timedelta(hours=5, minutes=30)
    with told(hub) as woken:
        deadline = tick(hub.store, now)
    assert woken.queues == {"default"}
    assert deadline == start + runs.timedelta(hours=6)  # the next interval's end
    with hub.store.transaction() as s:
        rows = s.scalars(
            select(DagRun).where(DagRun.dag_id == "hourly").order_by(DagRun.logical_date)
        ).all()
        intervals = [(r.data_interval_start, r.data_interval_end) for r in rows]
        assert {r.run_type for r in rows} == {"scheduled"}
    hour = runs.timedelta(hours=1)
    first = 5 - expected_runs
    assert intervals == [(start + i * hour, start + (i + 1) * hour) for i in range(first, 5)]
    # Another pass at the same time creates nothing new.
    with told(hub) as woken:
        tick(hub.store, now)
    assert woken.queues == set()


@pytest.mark.parametrize(("catchup", "expected_runs"), [(True, 8), (False, 1)])
def test_a_paused_dag_gets_no_runs_and_unpaused_resumes_per_catchup(
    hub: Hub, catchup: bool, expected_runs: int
) -> None:
    start = runs.utcnow().replace(minute=0, second=0, microsecond=0) - runs.timedelta(hours=5)
    write_dag(
        hub.config.dags_folder,
        "hourly.py",
        f"""
        from datetime import datetime
        from tether import DAG, EmptyOperator
        with DAG("hourly", schedule="@hourly", catchup={catchup}, is_paused_upon_creation=True,
                 start_date=datetime.fromisoformat("{start.isoformat()}")):
            EmptyOperator(task_id="tick")
    """,
    )
    parse(hub)
    hour = runs.timedelta(hours=1)
    later = start + 8 * hour + runs.timedelta(minutes=30)  # three hours after the parse

    def intervals() -> list[tuple[object, object]]:
        with hub.store.transaction() as s:
            rows = s.scalars(
                select(DagRun).where(DagRun.dag_id == "hourly").order_by(DagRun.logical_date)
            )
            return [(r.data_interval_start, r.data_interval_end) for r in rows]

    with told(hub) as woken:
        assert tick(hub.store, later) is None  # paused: no run, no deadline
    assert woken.queues == set()
    assert intervals() == []
    with hub.store.transaction() as s:
        assert control.set_paused(s, "hourly", False, audit.Who("admin"))["is_paused"] is False
    with told(hub) as woken:
        deadline = tick(hub.store, later)
    assert woken.queues == {"default"}
    assert deadline == start + 9 * hour
    # catchup: every interval missed while paused; without: only the latest one.
    first = 8 - expected_runs
    assert intervals() == [(start + i * hour, start + (i + 1) * hour) for i in range(first, 8)]


def test_a_dag_id_defined_in_two_files_is_an_import_error_of_the_second(hub: Hub) -> None:
    write_dag(
        hub.config.dags_folder,
        "zz_copy.py",
        """
        from tether import DAG, EmptyOperator
        with DAG("pair"):
            EmptyOperator(task_id="impostor")
    """,
    )
    parse(hub)
    with hub.store.transaction() as s:
        errors = {e["fileloc"]: e["message"] for e in queries.list_import_errors(s)}
        pair = queries.get_dag(s, "pair")
        assert pair.fileloc == "wide.py"
    assert errors == {"zz_copy.py": "DuplicateDagId: DAG id 'pair' is already defined in wide.py"}


def test_claims_respect_pool_slots(hub: Hub) -> None:
    write_dag(
        hub.config.dags_folder,
        "heavy.py",
        """
        from tether import DAG, BashOperator
        with DAG("heavy"):
            BashOperator(task_id="big", bash_command="true", queue="h", pool_slots=3,
                         priority_weight=10)
            BashOperator(task_id="small1", bash_command="true", queue="h")
            BashOperator(task_id="small2", bash_command="true", queue="h")
    """,
    )
    parse(hub)
    _trigger(hub, "heavy")
    with hub.store.transaction() as s:
        # Two free slots: the big task does not fit; the small ones do.
        assert sorted(j.task_id for j in attempts.claim(s, "w", ["h"], 2).jobs) == [
            "small1",
            "small2",
        ]
    with hub.store.transaction() as s:
        assert attempts.claim(s, "w", ["h"], 2).jobs == []
        (big,) = attempts.claim(s, "w", ["h"], 3).jobs
    assert (big.task_id, big.pool_slots) == ("big", 3)


def test_a_finishing_sibling_does_not_hide_queued_work_from_claims(hub: Hub) -> None:
    _trigger(hub, "wide")
    with hub.store.transaction() as s:
        (first,) = attempts.claim(s, "w1", ["q"], 1).jobs
    finishing, claimed = threading.Event(), threading.Event()
    got: list[str] = []

    def finish_slowly() -> None:
        with hub.store.transaction() as s:
            attempts.finish(s, first.attempt_id, "w1", AttemptResult("success"))
            finishing.set()
            claimed.wait(2)  # hold the transaction open while the other claims

    def claim_meanwhile() -> None:
        finishing.wait(10)
        with hub.store.transaction() as s:
            got.extend(j.task_id for j in attempts.claim(s, "w2", ["q"], 5).jobs)
        claimed.set()

    threads = [threading.Thread(target=finish_slowly), threading.Thread(target=claim_meanwhile)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Row locks taken by the finish must not make SKIP LOCKED pass over the siblings.
    assert len(got) == 5


def test_a_read_transaction_refuses_a_write_and_leaves_its_connection_writable(
    hub: Hub,
) -> None:
    """``store.read()`` may only read (READ ONLY on PostgreSQL, query_only on SQLite),
    so a read route that slipped in a write fails at once instead of queueing for
    SQLite's write lock; the connection it used writes again once back in the pool."""
    refused = OperationalError if hub.store.dialect == "sqlite" else InternalError
    for _ in range(3):  # the pool hands the same connections out again
        with pytest.raises(refused), hub.store.read() as s:
            limits.set_pool(s, "made-in-a-read", 1, None)
        with hub.store.transaction() as s:
            limits.set_pool(s, "made-in-a-transaction", 1, None)
    with hub.store.read() as s:
        names = {p["name"] for p in limits.list_pools(s)}
    assert "made-in-a-transaction" in names
    assert "made-in-a-read" not in names


def test_claims_and_finishes_read_a_runs_serialized_dag_once_per_process(hub: Hub) -> None:
    """The serialized DAG of a run never changes: the hot paths take it from
    memory (models.RUN_SPECS) instead of reading and decoding it per request."""
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "dag_run.serialized" in statement:
            reads.append(statement)

    RUN_SPECS._items.clear()
    _trigger(hub, "wide")
    event.listen(hub.store.engine, "before_cursor_execute", count)
    try:
        for n in range(5):
            attempt = _claim_one(hub, f"w{n}", queue="q")
            with hub.store.transaction() as s:
                attempts.finish(s, attempt, f"w{n}", AttemptResult("success"))
    finally:
        event.remove(hub.store.engine, "before_cursor_execute", count)
    assert len(reads) == 1, reads  # the first claim's; four more claims, five finishes from memory


def test_a_run_made_again_under_the_same_names_is_not_taken_for_the_old_one() -> None:
    """A run deleted (db clean) and made again may get its old id, DAG and run id
    back (SQLite reuses ids), with another version of the DAG, or the same
    bundle parsed again: when it was made tells them apart."""
    specs = RunSpecs(size=2)
    first = datetime(2026, 12, 4, 10, tzinfo=UTC)

    def run(made_at: datetime, tasks: list[str], bundle: str = "a" * 64) -> DagRun:
        made = DagRun(id=7, dag_id="d", run_id="manual__x", bundle_sha=bundle, created_at=made_at)
        made.serialized_ = {"tasks": tasks}
        return made

    later = first + timedelta(hours=1)
    assert specs.get(run(first, ["old"])) == {"tasks": ["old"]}
    assert specs.get(run(later, ["new"])) == {"tasks": ["new"]}
    assert specs.get(run(first, ["not read"])) == {"tasks": ["old"]}  # from memory
    assert specs.get(run(later, ["other"], bundle="b" * 64)) == {"tasks": ["other"]}
    assert (specs.hits, specs.misses) == (1, 3)
    # Two kept: the oldest-used (the second) went.
    assert specs.get(run(later, ["read again"])) == {"tasks": ["read again"]}


def test_a_heartbeats_reconcile_reads_its_workers_attempts_by_index(tmp_path: Path) -> None:
    """A heartbeat looks up the running attempts of its worker: through the
    (worker_name, state) index, not by reading every attempt ever made."""
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'tether.db'}", tmp_path / "dags")
    seen: list[tuple[str, Any]] = []

    def capture(conn: object, cursor: object, statement: str, params: Any, *rest: object) -> None:
        if "FROM task_attempt" in statement:
            seen.append((statement, params))

    try:
        event.listen(hub.store.engine, "before_cursor_execute", capture)
        with hub.store.transaction() as s:
            worker = cast(Worker, SimpleNamespace(name="w1"))
            sessions.reconcile(s, worker, [], runs.utcnow(), timedelta(seconds=30))
        event.remove(hub.store.engine, "before_cursor_execute", capture)
        ((statement, params),) = seen
        with hub.store.read() as s:
            plan = s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            details = " ".join(str(row[-1]) for row in plan)
        assert "USING INDEX ix_task_attempt_worker_name_state" in details, details
    finally:
        hub.store.dispose()
