"""DAGs generated from the JSON config file beside this one: one DAG per
source, one sync task per table. Edit the JSON and the DAGs follow."""

import json
from datetime import datetime
from pathlib import Path

from tether import DAG, BashOperator, EmptyOperator

CONFIG = json.loads((Path(__file__).parent / "generated_dags.json").read_text())

for source in CONFIG["sources"]:
    with DAG(
        f"sync_{source['name']}",
        schedule=source["schedule"],
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["generated"],
    ):
        start = EmptyOperator(task_id="start")
        done = EmptyOperator(task_id="done")
        for table in source["tables"]:
            sync = BashOperator(
                task_id=f"sync_{table}",
                bash_command=f"echo 'synced {source['name']}.{table}'",
            )
            start >> sync >> done
