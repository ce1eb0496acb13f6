"""Data-aware scheduling: each DAG runs when the data it reads has been updated.

``cycle_trigger`` runs daily and updates the asset ``tether://cycle``. Three
ingestion DAGs are scheduled on that asset; each loads one source and updates
its own asset. ``dbt_finance`` is scheduled on the ledger and the FX rates
only, so it starts as soon as both are loaded, without waiting for the web
events, whose export is slow (``WEB_EVENTS_EXPORT_SECONDS`` in the worker's
environment, 3 seconds by default).

Try it: ``tether dags trigger cycle_trigger``, then ``tether assets list``;
or announce new data from outside with ``tether assets emit tether://ledger``.
"""

import os
import time
from datetime import datetime

from tether import DAG, Asset, BashOperator, dag, task

CYCLE = Asset("tether://cycle", name="daily cycle")
LEDGER = Asset("tether://ledger", {"source": "erp"})
FX_RATES = Asset("tether://fx_rates", {"source": "ecb"})
WEB_EVENTS = Asset("tether://web_events", {"source": "clickstream"})
FINANCE_MARTS = Asset("tether://finance_marts")

with DAG(
    "cycle_trigger",
    description="Opens the daily cycle: every ingestion DAG waits for it",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["assets"],
):
    BashOperator(
        task_id="open_cycle",
        bash_command='echo "cycle opened by run $TETHER_RUN_ID"',
        outlets=[CYCLE],
    )


@dag(schedule=[CYCLE], tags=["assets", "ingestion"])
def ingest_ledger():
    @task(outlets=[LEDGER])
    def load_ledger() -> dict:
        entries = [("4000", 1250.0), ("4010", -310.5), ("5000", 88.25)]
        print(f"loaded {len(entries)} ledger entries")
        return {"rows": len(entries)}

    load_ledger()


@dag(schedule=[CYCLE], tags=["assets", "ingestion"])
def ingest_fx_rates():
    @task(outlets=[FX_RATES])
    def load_fx_rates() -> dict:
        rates = {"USD": 1.08, "GBP": 0.85, "CHF": 0.94}
        print(f"loaded {len(rates)} EUR exchange rates")
        return rates

    load_fx_rates()


@dag(schedule=[CYCLE], tags=["assets", "ingestion"])
def ingest_web_events():
    @task(outlets=[WEB_EVENTS])
    def load_web_events() -> dict:
        seconds = float(os.environ.get("WEB_EVENTS_EXPORT_SECONDS", "3"))
        print(f"waiting {seconds:g}s for the clickstream export")
        time.sleep(seconds)
        return {"rows": 120_000}

    load_web_events()


@dag(schedule=[LEDGER, FX_RATES], tags=["assets", "dbt"])
def dbt_finance():
    @task
    def show_inputs(triggering_asset_events: dict | None = None) -> list:
        for uri, events in (triggering_asset_events or {}).items():
            last = events[-1]
            print(f"{uri}: {len(events)} new event(s), last from {last['source_dag_id']}")
        return sorted(triggering_asset_events or {})

    models = BashOperator(task_id="dbt_run", bash_command='echo "dbt run --select finance"')
    tests = BashOperator(
        task_id="dbt_test", bash_command='echo "dbt test --select finance"', outlets=[FINANCE_MARTS]
    )
    show_inputs() >> models >> tests


ingest_ledger()
ingest_fx_rates()
ingest_web_events()
dbt_finance()
