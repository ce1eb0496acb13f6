"""``python -m tether.hub.services.callback_child BUNDLE_DIR RELPATH DAG_ID KIND CONTEXT_FILE``.

Imports the DAG file and calls the DAG's ``KIND`` callback(s) with the
run's context. Exit code 1 if a callback raised (its traceback is printed).
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from tether.hub.services.children import tie_to_hub
from tether.sdk.context import DagRunInfo
from tether.sdk.loader import load_dag_file


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def main() -> int:
    tie_to_hub()  # before any DAG code: killed if the hub dies
    bundle_dir, relpath, dag_id, kind = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    raw = json.loads(Path(sys.argv[5]).read_text())
    dag = next(d for d in load_dag_file(bundle_dir / relpath, bundle_dir) if d.dag_id == dag_id)
    logical = _date(raw["logical_date"])
    context: dict[str, Any] = {
        "dag": dag,
        "run_id": raw["run_id"],
        "reason": raw["reason"],
        "state": raw["state"],
        "conf": raw["conf"],
        "params": {**dag.params, **raw["conf"]},
        "logical_date": logical,
        "data_interval_start": _date(raw["data_interval_start"]),
        "data_interval_end": _date(raw["data_interval_end"]),
        "dag_run": DagRunInfo(
            dag_id=dag_id, run_id=raw["run_id"], conf=raw["conf"], logical_date=logical
        ),
    }
    callbacks = getattr(dag, kind) or []
    failed = False
    for callback in callbacks if isinstance(callbacks, list | tuple) else [callbacks]:
        try:
            callback(context)
        except BaseException:
            failed = True
            traceback.print_exc()
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
