"""Data-aware scheduling end to end: a real hub and worker running the asset example
(examples/dags/finance_assets.py) on SQLite and PostgreSQL.

The worker's environment makes the web-events export slow. ``dbt_finance`` waits
only on the ledger and the FX rates, so it must start before that unrelated
ingestion ends, and run exactly once per cycle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, make_database_url
from tests.integration.processes import EXAMPLES, Api, Hub, Worker, tether_cli, wait_for

pytestmark = pytest.mark.integration

#: How long the web-events ingestion takes here (the example reads it from the environment).
SLOW_SECONDS = 6
INGESTION = ("ingest_ledger", "ingest_fx_rates", "ingest_web_events")


@pytest.fixture(params=BACKENDS)
def hub(
    request: pytest.FixtureRequest, tmp_path: Path, _postgres_reason: str | None
) -> Iterator[Hub]:
    urls = make_database_url(request.param, tmp_path, _postgres_reason)
    hub = Hub(tmp_path / "hub-home", EXAMPLES, next(urls))
    worker = Worker(
        hub,
        tmp_path / "worker-home",
        "default",
        "edge-1",
        concurrency=8,
        env={"WEB_EVENTS_EXPORT_SECONDS": str(SLOW_SECONDS)},
    )
    try:
        worker.wait_registered()
        hub.api.wait_dags("cycle_trigger", "dbt_finance", *INGESTION)
        yield hub
    finally:
        worker.stop()
        hub.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


def _runs(api: Api, dag_id: str) -> list[dict[str, Any]]:
    """The DAG's runs, oldest first."""
    runs: list[dict[str, Any]] = api.get(f"/dags/{dag_id}/runs")["dag_runs"]
    return runs[::-1]


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _source_runs(run: dict[str, Any], uri: str) -> set[str]:
    """The runs whose tasks produced the events of ``uri`` that started ``run``."""
    return {e["source_run_id"] for e in run["conf"]["triggering_asset_events"][uri]}


def _settled(api: Api, count: int) -> bool:
    """The ``count``-th cycle has ended everywhere: its ingestions and dbt_finance."""
    for dag_id in (*INGESTION, "dbt_finance"):
        runs = _runs(api, dag_id)
        if len(runs) < count or runs[count - 1]["state"] not in ("success", "failed"):
            return False
    return True


def _wait_settled(api: Api, count: int) -> None:
    """Wait for cycle ``count`` to settle; if it does not, fail with every run's tasks."""
    try:
        wait_for(lambda: _settled(api, count), 60, f"cycle {count} to settle")
    except AssertionError as exc:
        detail = {
            dag_id: [api.run(dag_id, r["run_id"]) for r in _runs(api, dag_id)]
            for dag_id in ("cycle_trigger", *INGESTION, "dbt_finance")
        }
        raise AssertionError(f"{exc}; runs: {detail}") from None


def test_dbt_finance_starts_before_the_slow_unrelated_ingestion_ends(hub: Hub) -> None:
    api = hub.api
    # Cycle 1: the daily trigger's scheduled run, created as soon as the DAG loaded
    # (catchup=False: the latest complete day). Cycle 2: a manual trigger after it.
    first_cycle = wait_for(lambda: _runs(api, "cycle_trigger"), 30, "the scheduled cycle")[0]
    assert first_cycle["run_type"] == "scheduled"
    _wait_settled(api, 1)
    second_cycle = api.trigger("cycle_trigger")
    _wait_settled(api, 2)
    cycles = [first_cycle["run_id"], second_cycle]

    # Each ingestion ran once per cycle, started by that cycle's event.
    for dag_id in INGESTION:
        runs = _runs(api, dag_id)
        assert [r["state"] for r in runs] == ["success", "success"], dag_id
        assert [r["run_type"] for r in runs] == ["asset_triggered"] * 2
        assert [_source_runs(r, "tether://cycle") for r in runs] == [{c} for c in cycles]

    # dbt_finance ran exactly once per cycle, on that cycle's ledger and FX rates.
    ledger, fx = _runs(api, "ingest_ledger"), _runs(api, "ingest_fx_rates")
    dbt_runs = _runs(api, "dbt_finance")
    assert len(dbt_runs) == 2
    for n, dbt in enumerate(dbt_runs):
        assert dbt["state"] == "success", api.run("dbt_finance", dbt["run_id"])
        assert dbt["run_type"] == "asset_triggered"
        assert sorted(dbt["conf"]["triggering_asset_events"]) == [
            "tether://fx_rates",
            "tether://ledger",
        ]
        assert _source_runs(dbt, "tether://ledger") == {ledger[n]["run_id"]}
        assert _source_runs(dbt, "tether://fx_rates") == {fx[n]["run_id"]}

    # ... and started, and a worker began its first task, before the slow web-events
    # ingestion of the same cycle ended.
    for dbt, web in zip(dbt_runs, _runs(api, "ingest_web_events"), strict=True):
        detail = api.run("dbt_finance", dbt["run_id"])
        first_task = api.tasks(detail)["show_inputs"]
        web_ended = _at(web["ended_at"])
        assert _at(detail["started_at"]) < web_ended, (detail, web)
        assert _at(first_task["started_at"]) < web_ended, (first_task, web)

    # The task saw what started it, through the Airflow context key.
    log = api.log("dbt_finance", dbt_runs[1]["run_id"], "show_inputs")
    assert "tether://ledger: 1 new event(s), last from ingest_ledger" in log
    assert "tether://fx_rates: 1 new event(s), last from ingest_fx_rates" in log


@pytest.mark.parametrize("hub", ["sqlite"], indirect=True)  # the CLI sees only the API
def test_assets_cli_lists_assets_and_emits_events_that_start_dbt_finance(hub: Hub) -> None:
    # No cycle has to run for this: events from outside are enough.
    wait_for(lambda: _runs(hub.api, "cycle_trigger"), 30, "the scheduled cycle")
    wait_for(lambda: _settled(hub.api, 1), 60, "the scheduled cycle to settle")

    listed = tether_cli("assets", "list", "--json", hub=hub)
    assert listed.returncode == 0, listed.stderr
    assets = {a["uri"]: a for a in json.loads(listed.stdout)}
    assert assets["tether://ledger"]["consumers"] == ["dbt_finance"]
    assert assets["tether://ledger"]["producers"] == [
        {"dag_id": "ingest_ledger", "task_id": "load_ledger"}
    ]
    assert assets["tether://cycle"]["consumers"] == list(sorted(INGESTION))
    assert assets["tether://web_events"]["consumers"] == []
    table = tether_cli("assets", "list", hub=hub)
    assert "tether://finance_marts" in table.stdout
    dags = tether_cli("dags", "list", hub=hub)
    assert "assets:tether://ledger,tether://fx_rates" in dags.stdout

    fx = tether_cli("assets", "emit", "tether://fx_rates", "--extra", '{"batch": 7}', hub=hub)
    assert fx.returncode == 0, fx.stderr
    assert "recorded event" in fx.stdout
    assert "started" not in fx.stdout  # dbt_finance still waits for the ledger
    assert len(_runs(hub.api, "dbt_finance")) == 1

    ledger = tether_cli("assets", "emit", "tether://ledger", hub=hub)
    assert ledger.returncode == 0, ledger.stderr
    assert "started dbt_finance run asset_triggered__" in ledger.stdout
    run = _runs(hub.api, "dbt_finance")[-1]
    assert run["run_id"] in ledger.stdout
    assert hub.api.wait_run("dbt_finance", run["run_id"])["state"] == "success"
    (posted,) = run["conf"]["triggering_asset_events"]["tether://fx_rates"]
    assert posted["extra"] == {"batch": 7}
    assert posted["source_dag_id"] is None

    events = tether_cli("assets", "events", "tether://fx_rates", hub=hub)
    assert events.returncode == 0, events.stderr
    lines = events.stdout.splitlines()
    assert "posted" in lines[0]
    assert '{"batch": 7}' in lines[0]
    assert "ingest_fx_rates.load_fx_rates run asset_triggered__" in lines[1]

    unknown = tether_cli("assets", "emit", "tether://nope", hub=hub)
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    assert "no asset 'tether://nope'" in unknown.stderr
    bad = tether_cli("assets", "emit", "tether://ledger", "--extra", "[1]", hub=hub)
    assert bad.returncode == 1
    assert "--extra must be a JSON object" in bad.stderr
