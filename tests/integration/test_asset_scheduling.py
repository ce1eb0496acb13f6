"""Data-aware scheduling in the store, on SQLite and PostgreSQL: asset events recorded by
finishing tasks, the queue of DAGs waiting on assets, and the runs it starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.hubtools import make_hub, parse, told, write_dag
from tether.hub.core import attempts, queries, runs
from tether.hub.services.scheduler import tick
from tether.hub.state import Hub
from tether.hub.store.models import (
    Asset,
    AssetDagRunQueue,
    AssetEvent,
    Dag,
    DagRun,
    DagScheduleAsset,
    TaskInstance,
)
from tether.protocol import AttemptResult

DAGS = """
from tether import DAG, Asset, EmptyOperator

A = Asset("tether://a", {"team": "finance"}, name="asset A")
B = Asset("tether://b")
C = Asset("tether://c")

with DAG("make_a"):
    EmptyOperator(task_id="emit", queue="prod", outlets=[A])
with DAG("make_b"):
    EmptyOperator(task_id="emit", queue="prod", outlets=[B])
with DAG("on_a", schedule=[A]):
    EmptyOperator(task_id="use", queue="cons_a")
"""


def _consumer(schedule: str) -> str:
    return f"""
        from tether import DAG, Asset, EmptyOperator
        with DAG("consumer", schedule={schedule}):
            EmptyOperator(task_id="use", queue="cons")
    """


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(dags, "producers.py", DAGS)
    write_dag(dags, "consumer.py", _consumer('[Asset("tether://a"), Asset("tether://b")]'))
    hub = make_hub(tmp_path, database_url, dags)
    try:
        parse(hub)
        yield hub
    finally:
        hub.store.dispose()


def _emit(hub: Hub, dag_id: str, state: str = "success") -> tuple[str, set[str]]:
    """Run the producer's only task to ``state``; its run id and the queues that got work."""
    with hub.store.transaction() as s:
        run_id = queries.trigger(s, dag_id, {}, None)
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, "w1", ["prod"], 1).jobs
    assert (job.dag_id, job.run_id) == (dag_id, run_id)
    with told(hub) as woken, hub.store.transaction() as s:
        attempts.finish(s, job.attempt_id, "w1", AttemptResult(state))
    return run_id, woken.queues


def _runs(hub: Hub, dag_id: str) -> list[DagRun]:
    with hub.store.transaction() as s:
        return list(s.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)))


def _queued(hub: Hub, dag_id: str) -> set[str]:
    with hub.store.transaction() as s:
        return set(
            s.scalars(
                select(Asset.uri)
                .join(AssetDagRunQueue, AssetDagRunQueue.asset_id == Asset.id)
                .where(AssetDagRunQueue.target_dag_id == dag_id)
            )
        )


def _sources(run: DagRun) -> dict[str, list[tuple[str | None, str | None, str | None]]]:
    """The triggering events of a run, as (source dag, run, task) per asset URI."""
    events: dict[str, list[dict[str, Any]]] = run.conf["triggering_asset_events"]
    return {
        uri: [(e["source_dag_id"], e["source_run_id"], e["source_task_id"]) for e in items]
        for uri, items in events.items()
    }


def test_a_dag_runs_once_every_scheduled_asset_has_had_a_new_event(hub: Hub) -> None:
    a1, woken = _emit(hub, "make_a")
    assert woken == {"cons_a"}  # on_a waits on A only: it runs at once
    a2, _ = _emit(hub, "make_a")
    assert _runs(hub, "consumer") == []  # A twice is not enough: B has had no event
    assert _queued(hub, "consumer") == {"tether://a"}

    b1, woken = _emit(hub, "make_b")
    assert woken == {"cons"}
    (first,) = _runs(hub, "consumer")
    assert first.run_type == "asset_triggered"
    assert first.run_id.startswith("asset_triggered__")
    assert first.state == "running"
    assert _queued(hub, "consumer") == set()
    # Every event since the DAG's last run, per asset, oldest first.
    assert _sources(first) == {
        "tether://a": [("make_a", a1, "emit"), ("make_a", a2, "emit")],
        "tether://b": [("make_b", b1, "emit")],
    }
    with hub.store.transaction() as s:
        (use,) = s.scalars(select(TaskInstance).where(TaskInstance.dag_run_id == first.id))
        assert (use.task_id, use.state) == ("use", "queued")
    # As in Airflow 2: the data interval spans the triggering events.
    events = first.conf["triggering_asset_events"]
    assert first.data_interval_start == datetime.fromisoformat(events["tether://a"][0]["timestamp"])
    assert first.data_interval_end == datetime.fromisoformat(events["tether://b"][0]["timestamp"])
    assert first.logical_date is not None
    assert first.data_interval_end <= first.logical_date

    b2, woken = _emit(hub, "make_b")
    assert woken == set()
    assert len(_runs(hub, "consumer")) == 1  # B is new again, A is not
    a3, _ = _emit(hub, "make_a")
    second = _runs(hub, "consumer")[1]
    assert _sources(second) == {
        "tether://a": [("make_a", a3, "emit")],
        "tether://b": [("make_b", b2, "emit")],
    }
    assert len(_runs(hub, "on_a")) == 3  # one per event of A


def test_only_a_successful_task_records_events(hub: Hub) -> None:
    _emit(hub, "make_a", state="failed")
    _emit(hub, "make_a", state="skipped")
    with hub.store.transaction() as s:
        assert s.scalars(select(AssetEvent)).all() == []
    assert _runs(hub, "on_a") == []
    _emit(hub, "make_a")
    assert len(_runs(hub, "on_a")) == 1


def test_a_repeated_finish_report_records_no_second_event(hub: Hub) -> None:
    with hub.store.transaction() as s:
        queries.trigger(s, "make_a", {}, None)
    with hub.store.transaction() as s:
        (job,) = attempts.claim(s, "w1", ["prod"], 1).jobs
    for _ in range(2):  # the worker re-sends its report after a timeout
        with hub.store.transaction() as s:
            attempts.finish(s, job.attempt_id, "w1", AttemptResult("success"))
    with hub.store.transaction() as s:
        assert len(s.scalars(select(AssetEvent)).all()) == 1
    assert len(_runs(hub, "on_a")) == 1


def test_paused_and_inactive_dags_are_not_queued_for(hub: Hub) -> None:
    with hub.store.transaction() as s:
        s.get_one(Dag, "consumer").is_paused = True
        s.get_one(Dag, "on_a").is_active = False
    _emit(hub, "make_a")
    _emit(hub, "make_b")
    assert _queued(hub, "consumer") == set()
    assert _runs(hub, "consumer") == []
    assert _runs(hub, "on_a") == []
    with hub.store.transaction() as s:
        s.get_one(Dag, "consumer").is_paused = False
    # Events from while it was paused do not count: it waits for new ones of both.
    _emit(hub, "make_a")
    assert _runs(hub, "consumer") == []
    _emit(hub, "make_b")
    assert len(_runs(hub, "consumer")) == 1


def test_the_dag_processor_registers_assets_and_schedules(hub: Hub) -> None:
    with hub.store.transaction() as s:
        assets = {a.uri: a for a in s.scalars(select(Asset))}
        refs = {
            (r.dag_id, assets_uri)
            for r, assets_uri in s.execute(
                select(DagScheduleAsset, Asset.uri).join(
                    Asset, Asset.id == DagScheduleAsset.asset_id
                )
            )
        }
    assert set(assets) == {"tether://a", "tether://b"}  # C is named by no DAG yet
    assert (assets["tether://a"].name, assets["tether://a"].extra) == (
        "asset A",
        {"team": "finance"},
    )
    assert refs == {("consumer", "tether://a"), ("consumer", "tether://b"), ("on_a", "tether://a")}


def test_a_schedule_change_drops_stale_queue_rows_and_a_dag_made_ready_runs(hub: Hub) -> None:
    folder = hub.config.dags_folder
    _emit(hub, "make_a")
    assert _queued(hub, "consumer") == {"tether://a"}

    write_dag(folder, "consumer.py", _consumer('[Asset("tether://b"), Asset("tether://c")]'))
    parse(hub)
    assert _queued(hub, "consumer") == set()  # A is no longer in its schedule
    b1, _ = _emit(hub, "make_b")
    assert _queued(hub, "consumer") == {"tether://b"}
    assert _runs(hub, "consumer") == []

    # Now B is all it waits for, and B has had an event: the scheduler's pass runs it.
    write_dag(folder, "consumer.py", _consumer('[Asset("tether://b")]'))
    parse(hub)
    assert _runs(hub, "consumer") == []
    with told(hub) as woken:
        tick(hub.store, runs.utcnow())
    assert woken.queues == {"cons"}
    (run,) = _runs(hub, "consumer")
    assert _sources(run) == {"tether://b": [("make_b", b1, "emit")]}
    with told(hub) as woken:
        tick(hub.store, runs.utcnow())
    assert woken.queues == set()
    assert len(_runs(hub, "consumer")) == 1

    # A cron schedule again: no asset keeps it waiting.
    write_dag(folder, "consumer.py", _consumer('"@daily"'))
    parse(hub)
    _emit(hub, "make_b")
    assert _queued(hub, "consumer") == set()
    assert len(_runs(hub, "consumer")) == 1


def test_two_assets_emitted_at_once_start_exactly_one_run(hub: Hub) -> None:
    """Tasks of two runs finish at the same moment, each emitting one of the consumer's
    two assets. Nothing else serialises them (they lock different runs): the consumer's
    row lock must make the second see the first's queue row, so there is one run,
    not none and not two."""
    rounds = 8
    for n in range(1, rounds + 1):
        with hub.store.transaction() as s:
            queries.trigger(s, "make_a", {}, None)
            queries.trigger(s, "make_b", {}, None)
        with hub.store.transaction() as s:
            jobs = attempts.claim(s, "w1", ["prod"], 2).jobs
        assert sorted(j.dag_id for j in jobs) == ["make_a", "make_b"]
        assert _finish_at_once(hub, [j.attempt_id for j in jobs]) == []
        assert len(_runs(hub, "consumer")) == n, f"round {n}"
        assert _queued(hub, "consumer") == set()
    assert len(_runs(hub, "on_a")) == rounds


def _finish_at_once(hub: Hub, attempt_ids: list[str]) -> list[BaseException]:
    """Report every attempt a success from its own thread at the same moment; the errors."""
    barrier = threading.Barrier(len(attempt_ids))
    errors: list[BaseException] = []

    def report(attempt_id: str) -> None:
        barrier.wait()
        try:
            with hub.store.transaction() as s:
                attempts.finish(s, attempt_id, "w1", AttemptResult("success"))
        except BaseException as exc:  # a deadlock or a unique violation lands here
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(a,)) for a in attempt_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors
