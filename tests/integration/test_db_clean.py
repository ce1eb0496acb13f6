"""``tether db clean``: finished runs older than a cutoff go, with their task
instances, attempts, logs and outputs, in batches, while the hub keeps serving.
On SQLite and PostgreSQL: the store functions in process, then the real
command against the database of a real hub and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from tests.hubtools import make_hub, parse, write_dag
from tests.integration.processes import ADMIN_TOKEN, PROXY_VARIABLES, Hub, Worker
from tether.cli.main import main
from tether.hub.core.runs import utcnow
from tether.hub.services import cleanup
from tether.hub.state import Hub as InProcessHub
from tether.hub.store.db import Store
from tether.hub.store.models import (
    Bundle,
    CallbackRequest,
    Dag,
    DagRun,
    LogChunk,
    TaskAttempt,
    TaskInstance,
)

DAY = timedelta(days=1)
CHUNK = b"a log line\n"


def add_runs(
    store: Store,
    dag_id: str,
    prefix: str,
    n: int,
    *,
    state: str,
    age: timedelta,
    finished: bool = True,
    bundle_sha: str | None = None,
    chunks: int = 2,
) -> list[int]:
    """``n`` runs of ``dag_id`` created ``age`` ago, each task tried once with a log
    of ``chunks`` chunks and an output, written straight into the store."""
    at = utcnow() - age
    with store.transaction() as s:
        dag = s.get(Dag, dag_id)
        assert dag is not None
        task_ids = [t["task_id"] for t in dag.serialized["tasks"]]
        run_ids = list(
            s.scalars(
                insert(DagRun).returning(DagRun.id, sort_by_parameter_order=True),
                [
                    {
                        "dag_id": dag_id,
                        "run_id": f"{prefix}{i}",
                        "run_type": "scheduled",
                        "state": state,
                        "conf": {},
                        "bundle_sha": bundle_sha or dag.bundle_sha,
                        "serialized_": dag.serialized,  # the attribute (column "serialized")
                        "logical_date": at,
                        "created_at": at,
                        "started_at": at,
                        "ended_at": at if finished else None,
                    }
                    for i in range(n)
                ],
            )
        )
        ti_ids = list(
            s.scalars(
                insert(TaskInstance).returning(TaskInstance.id, sort_by_parameter_order=True),
                [
                    {
                        "dag_run_id": run_pk,
                        "dag_id": dag_id,
                        "run_id": f"{prefix}{i}",
                        "task_id": task_id,
                        "map_index": -1,
                        "state": "success" if finished else "running",
                        "try_number": 1,
                        "max_tries": 1,
                        "queue": "default",
                        "output": {"rows": i},
                    }
                    for i, run_pk in enumerate(run_ids)
                    for task_id in task_ids
                ],
            )
        )
        attempts = [
            {
                "id": uuid.uuid4().hex,
                "task_instance_id": ti_id,
                "try_number": 1,
                "worker_name": "old-worker",
                "state": "success" if finished else "running",
                "started_at": at,
                "log_size": chunks * len(CHUNK),
            }
            for ti_id in ti_ids
        ]
        s.execute(insert(TaskAttempt), attempts)
        if chunks:
            s.execute(
                insert(LogChunk),
                [
                    {"attempt_id": a["id"], "offset": k * len(CHUNK), "data": CHUNK}
                    for a in attempts
                    for k in range(chunks)
                ],
            )
    return run_ids


def add_bundle(store: Store, sha: str, age: timedelta) -> None:
    with store.transaction() as s:
        s.add(Bundle(sha=sha, data=b"not a real bundle", created_at=utcnow() - age))


def run_ids(store: Store) -> set[str]:
    with store.transaction() as s:
        return set(s.scalars(select(DagRun.run_id)))


def bundles(store: Store) -> set[str]:
    with store.transaction() as s:
        return set(s.scalars(select(Bundle.sha)))


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[InProcessHub]:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "pair.py",
        """
        from tether import DAG, BashOperator
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


def test_clean_deletes_old_finished_runs_their_rows_and_unused_bundles(
    hub: InProcessHub,
) -> None:
    store = hub.store
    (current,) = bundles(store)
    # Bundles from oldest to newest; the hub's current one was made just now.
    add_bundle(store, "pinned", 70 * DAY)  # used by an unfinished old run: kept
    add_bundle(store, "old", 60 * DAY)  # replaced 50 days ago, unused: deleted
    add_bundle(store, "awaits-callback", 55 * DAY)  # a DAG callback still needs it: kept
    with store.transaction() as s:
        s.add(
            CallbackRequest(
                dag_id="pair",
                run_id="gone-long-ago",
                kind="on_failure_callback",
                reason="task_failure",
                bundle_sha="awaits-callback",
                fileloc="pair.py",
                created_at=utcnow() - 50 * DAY,
            )
        )
    add_bundle(store, "used-by-old-runs", 50 * DAY)  # unused once they go: deleted
    add_bundle(store, "recent", 40 * DAY)  # current until the hub's bundle: kept
    add_runs(
        store, "pair", "old-ok-", 20, state="success", age=30 * DAY, bundle_sha="used-by-old-runs"
    )
    add_runs(
        store, "pair", "old-failed-", 3, state="failed", age=30 * DAY, bundle_sha="used-by-old-runs"
    )
    add_runs(
        store,
        "pair",
        "old-running-",
        2,
        state="running",
        age=30 * DAY,
        finished=False,
        bundle_sha="pinned",
    )
    add_runs(store, "pair", "recent-", 4, state="success", age=DAY)
    cutoff = utcnow() - 14 * DAY

    with store.transaction() as s:
        before = cleanup.count_rows(s)
        old = cleanup.count_old(s, cutoff)
    assert before == {
        "dag_run": 29,
        "task_instance": 58,
        "task_attempt": 58,
        "log_chunk": 116,
        "bundle": 6,
    }
    assert old == {
        "dag_run": 23,
        "task_instance": 46,
        "task_attempt": 46,
        "log_chunk": 92,
        "bundle": 2,
    }
    progress: list[int] = []
    result = cleanup.clean(store, cutoff, 7, lambda r: progress.append(r.runs))
    assert (result.runs, result.batches, result.bundles) == (23, 4, 2)
    assert progress == [7, 14, 21, 23]

    with store.transaction() as s:
        after = cleanup.count_rows(s)
    assert after == {table: before[table] - old[table] for table in before}
    assert run_ids(store) == {"old-running-0", "old-running-1"} | {f"recent-{i}" for i in range(4)}
    assert bundles(store) == {current, "pinned", "awaits-callback", "recent"}
    # Nothing is left behind: every row belongs to a run that is kept.
    with store.transaction() as s:
        orphans = s.scalar(
            select(func.count())
            .select_from(LogChunk)
            .join(TaskAttempt, LogChunk.attempt_id == TaskAttempt.id)
            .join(TaskInstance, TaskAttempt.task_instance_id == TaskInstance.id)
        )
    assert orphans == after["log_chunk"]
    again = cleanup.clean(store, cutoff, 7)
    assert (again.runs, again.batches, again.bundles) == (0, 0, 0)


def test_db_clean_refuses_bad_arguments_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    home = str(tmp_path / "nowhere")
    for args, reason in (
        (["--older-than", "soon"], "invalid duration 'soon'"),
        (["--older-than", "0d"], "--older-than must be more than 0"),
        (["--older-than", "14d", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--older-than", "14d"], "no database at sqlite:///"),
    ):
        assert main(["db", "clean", "--home", home, *args]) == 1
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # no database was made by asking


DAG_SOURCE = """
    from tether import DAG, BashOperator
    with DAG("logged"):
        BashOperator(task_id="a", bash_command="echo first line; echo second line") >> (
            BashOperator(task_id="b", bash_command="echo from b"))
"""


def _counts(output: str, label: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith(f"{label}: "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _db_clean(home: Path, database_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "tether", "db", "clean", "--home", str(home), *args],
        env={**env, "TETHER_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _hammer(url: str, run_id: str, stop: threading.Event, statuses: list[int]) -> None:
    """REST requests, reads and writes, one after another until ``stop``."""
    with httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ) as client:
        paused = False
        while not stop.is_set():
            paused = not paused
            for response in (
                client.get("/dags/logged/runs", params={"limit": 50}),
                client.get(f"/dags/logged/runs/{run_id}"),
                client.get(f"/dags/logged/runs/{run_id}/tasks/a/logs"),
                client.patch("/dags/logged", json={"is_paused": paused}),
                client.get("/workers"),
            ):
                statuses.append(response.status_code)


@pytest.mark.integration
def test_db_clean_counts_deletes_in_batches_and_the_hub_keeps_serving(
    tmp_path: Path, database_url: str
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "logged.py").write_text(textwrap.dedent(DAG_SOURCE))
    hub = Hub(tmp_path / "hub-home", dags, database_url)
    worker = Worker(hub, tmp_path / "worker-home", "default", "cleaner-test")
    store = Store(database_url)
    try:
        worker.wait_registered()
        hub.api.wait_dags("logged")
        aged = hub.api.trigger("logged")
        kept = hub.api.trigger("logged")
        assert hub.api.wait_run("logged", aged)["state"] == "success"
        assert hub.api.wait_run("logged", kept)["state"] == "success"
        with store.transaction() as s:
            aged_pk = s.scalar(select(DagRun.id).where(DagRun.run_id == aged))
            aged_chunks = s.scalar(
                select(func.count())
                .select_from(LogChunk)
                .join(TaskAttempt, LogChunk.attempt_id == TaskAttempt.id)
                .join(TaskInstance, TaskAttempt.task_instance_id == TaskInstance.id)
                .where(TaskInstance.dag_run_id == aged_pk)
            )
            month_ago = utcnow() - 30 * DAY
            s.execute(
                update(DagRun)
                .where(DagRun.id == aged_pk)
                .values(created_at=month_ago, started_at=month_ago, ended_at=month_ago)
            )
        assert aged_chunks >= 2
        add_bundle(store, "replaced-long-ago", 60 * DAY)
        add_bundle(store, "replaced-by-the-hubs", 40 * DAY)
        add_runs(store, "logged", "old-", 600, state="success", age=30 * DAY)
        add_runs(store, "logged", "old-running-", 3, state="running", age=30 * DAY, finished=False)
        add_runs(store, "logged", "recent-", 5, state="failed", age=2 * DAY)
        with store.transaction() as s:
            before = cleanup.count_rows(s)
        expected = {
            "dag_run": 601,
            "task_instance": 1202,
            "task_attempt": 1202,
            "log_chunk": 2400 + aged_chunks,
            "bundle": 1,
        }

        dry = _db_clean(hub.home, database_url, "--older-than", "14d", "--dry-run")
        assert _counts(dry, "before") == before
        assert _counts(dry, "would delete") == expected
        assert "dry run: nothing deleted" in dry
        with store.transaction() as s:
            assert cleanup.count_rows(s) == before

        statuses: list[int] = []
        stop = threading.Event()
        hammer = threading.Thread(target=_hammer, args=(hub.url, kept, stop, statuses))
        hammer.start()
        try:
            out = _db_clean(hub.home, database_url, "--older-than", "14d", "--batch-size", "50")
        finally:
            stop.set()
            hammer.join(60)
        assert statuses, "the API was not called while cleaning"
        assert set(statuses) == {200}, statuses

        assert _counts(out, "before") == before
        assert _counts(out, "to delete") == expected
        assert "deleted 601 run(s) in 13 batch(es), 1 unused bundle(s)" in out
        after = {table: before[table] - expected[table] for table in before}
        assert _counts(out, "after") == after
        with store.transaction() as s:
            assert cleanup.count_rows(s) == after

        remaining = run_ids(store)
        assert kept in remaining
        assert aged not in remaining
        assert {f"old-running-{i}" for i in range(3)} <= remaining
        assert {f"recent-{i}" for i in range(5)} <= remaining
        assert not any(r.startswith("old-") and "running" not in r for r in remaining)
        assert "replaced-long-ago" not in bundles(store)
        assert "replaced-by-the-hubs" in bundles(store)
        assert hub.api.http.get(f"/dags/logged/runs/{aged}").status_code == 404
        assert "first line" in hub.api.log("logged", kept, "a")
        # The hub and the worker go on as before.
        hub.api.http.patch("/dags/logged", json={"is_paused": False})
        assert hub.api.wait_run("logged", hub.api.trigger("logged"))["state"] == "success"
    finally:
        store.dispose()
        worker.stop()
        hub.stop()
