"""Concurrency limits with a real hub and real workers: hub-wide parallelism,
a DAG's max_active_tasks and max_active_runs, pools, and priority_weight.

Every check reads the start and end times the hub recorded for each task
instance and counts how many overlapped at any moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.conftest import BACKENDS
from tests.hubtools import write_dag
from tests.integration.processes import Hub, running_hub, tether_cli

pytestmark = pytest.mark.integration

LIMITS_DAGS = """
from tether import DAG, BashOperator

# Six tasks at once, but at most two of this DAG may run at a time.
with DAG("two_at_a_time", max_active_tasks=2):
    for i in range(6):
        BashOperator(task_id=f"t{i}", bash_command="sleep 0.6")

# Eight tasks of two DAGs share the pool "warehouse" (3 slots).
for name in ("load_sales", "load_stock"):
    with DAG(name):
        for i in range(4):
            BashOperator(task_id=f"t{i}", bash_command="sleep 0.6", pool="warehouse")

# Free tasks: only the hub's parallelism holds them back.
with DAG("free"):
    for i in range(6):
        BashOperator(task_id=f"t{i}", bash_command="sleep 0.6")

with DAG("one_run_at_a_time", max_active_runs=1):
    BashOperator(task_id="a", bash_command="sleep 0.3") >> BashOperator(
        task_id="b", bash_command="sleep 0.3"
    )

# One slot, five tasks queued together: they start by priority_weight.
with DAG("by_priority"):
    for weight in (3, 10, 1, 7, 5):
        BashOperator(
            task_id=f"w{weight}", bash_command="sleep 0.1", priority_weight=weight,
            queue="single",
        )

with DAG("needs_missing_pool"):
    BashOperator(task_id="t", bash_command="echo ran", pool="not_yet")
"""


class Env:
    def __init__(self, hub: Hub) -> None:
        self.hub, self.api = hub, hub.api


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Env]:
    """A hub with parallelism 4, two workers of 4 slots, one worker of 1 slot."""
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    write_dag(root / "dags", "limits.py", LIMITS_DAGS)
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        root / "dags",
        workers=[("default", "w0", 4), ("default", "w1", 4), ("single", "single", 1)],
        wait_dags=["two_at_a_time", "load_sales", "free", "by_priority"],
        TETHER_PARALLELISM="4",
    ) as (hub, _):
        yield Env(hub)


def _intervals(runs: list[dict[str, object]]) -> list[tuple[datetime, datetime]]:
    spans = []
    for run in runs:
        for t in run["tasks"]:  # type: ignore[attr-defined]
            assert t["state"] == "success", t
            spans.append(
                (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["ended_at"]))
            )
    return spans


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    # At equal times an end sorts before a start (-1 < 1): a slot freed and
    # retaken in the same instant is not an overlap.
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_parallelism_max_active_tasks_and_pool_are_never_exceeded(env: Env) -> None:
    result = tether_cli("pools", "set", "warehouse", "3", "--description", "dw", hub=env.hub)
    assert result.returncode == 0, result.stderr
    assert "warehouse: 3 slots" in result.stdout

    dag_ids = ["two_at_a_time", "load_sales", "load_stock", "free"]
    started = [(d, env.api.trigger(d)) for d in dag_ids]
    runs = {d: env.api.wait_run(d, r, timeout=120) for d, r in started}

    every = _intervals(list(runs.values()))
    pooled = _intervals([runs["load_sales"], runs["load_stock"]])
    capped = _intervals([runs["two_at_a_time"]])
    assert len(every) == 20
    # 20 tasks of 0.6 s, 8 worker slots: parallelism is what binds, and fully.
    assert _most_at_once(every) == 4
    assert _most_at_once(pooled) <= 3
    assert _most_at_once(capped) <= 2
    pools = {p["name"]: p for p in env.api.get("/pools")["pools"]}
    assert pools["warehouse"]["slots"] == 3
    assert pools["warehouse"]["running"] == 0


def test_pool_limit_alone_is_reached_and_held(env: Env) -> None:
    env.api.http.put("/pools/warehouse", json={"slots": 3}).raise_for_status()
    runs = [env.api.trigger(d) for d in ("load_sales", "load_stock")]
    done = [
        env.api.wait_run(d, r, timeout=120)
        for d, r in zip(("load_sales", "load_stock"), runs, strict=True)
    ]
    assert _most_at_once(_intervals(done)) == 3


def test_max_active_tasks_alone_is_reached_and_held(env: Env) -> None:
    run = env.api.wait_run("two_at_a_time", env.api.trigger("two_at_a_time"), timeout=120)
    assert _most_at_once(_intervals([run])) == 2


def test_max_active_runs_queues_further_runs(env: Env) -> None:
    run_ids = [env.api.trigger("one_run_at_a_time") for _ in range(3)]
    first = env.api.run("one_run_at_a_time", run_ids[0])
    later = [env.api.run("one_run_at_a_time", r) for r in run_ids[1:]]
    assert first["state"] == "running"
    assert all(r["state"] == "queued" for r in later), later
    done = [env.api.wait_run("one_run_at_a_time", r, timeout=60) for r in run_ids]
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
        for r in done
    )
    assert all(r["state"] == "success" for r in done)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # runs one after the other
    # ...and in the order they were triggered.
    assert [r["run_id"] for r in sorted(done, key=lambda r: r["started_at"])] == run_ids


def test_priority_weight_orders_queued_work(env: Env) -> None:
    run = env.api.wait_run("by_priority", env.api.trigger("by_priority"), timeout=60)
    order = [t["task_id"] for t in sorted(run["tasks"], key=lambda t: t["started_at"])]
    assert order == ["w10", "w7", "w5", "w3", "w1"]


def test_a_task_in_a_missing_pool_waits_for_the_pool(env: Env) -> None:
    run_id = env.api.trigger("needs_missing_pool")
    pools = {p["name"]: p for p in env.api.get("/pools")["pools"]}
    assert pools["not_yet"]["missing"] is True
    assert pools["not_yet"]["queued"] == 1
    assert env.api.run("needs_missing_pool", run_id)["tasks"][0]["state"] == "queued"
    env.api.http.put("/pools/not_yet", json={"slots": 1}).raise_for_status()
    run = env.api.wait_run("needs_missing_pool", run_id, timeout=60)
    assert run["state"] == "success"


def test_pool_api_refuses_bad_input(env: Env) -> None:
    http = env.api.http
    bad_slots = http.put("/pools/p1", json={"slots": -2})
    assert bad_slots.status_code == 422
    bad_name = http.put("/pools/bad%20name", json={"slots": 1})
    assert bad_name.status_code == 422
    assert http.delete("/pools/default_pool").status_code == 409
    assert "cannot be deleted" in http.delete("/pools/default_pool").json()["detail"]
    assert http.delete("/pools/never_made").status_code == 404


def test_pools_cli_lists_and_deletes(env: Env) -> None:
    assert tether_cli("pools", "set", "scratch", "-1", hub=env.hub).returncode == 0
    listed = tether_cli("pools", "list", hub=env.hub)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith("scratch"))
    assert "unlimited" in line
    assert tether_cli("pools", "delete", "scratch", hub=env.hub).returncode == 0
    refused = tether_cli("pools", "delete", "default_pool", hub=env.hub)
    assert refused.returncode == 1
    assert "cannot be deleted" in refused.stderr
