"""What need-to-know secrets cost a task, with a real hub and worker on loopback.

Runs a DAG of W parallel tasks three times: tasks that read nothing, tasks
that read a connection from the hub (``get_connection``: the first read in a
process imports httpx and makes one request with the attempt's token), and
tasks that read a site-local connection (from the worker's environment; the
hub is only told the name was used). Each task times its own read. Prints
the read latency p50/p95 per source, the task durations as the hub records
them, and a final JSON line. Usage:

    python3 -m uv run python bench/secrets.py [--tasks 50] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Bench, pct, ts

DAGS = """
    import time

    from tether import DAG, PythonOperator, get_connection


    def read(name):
        started = time.perf_counter()
        conn = get_connection(name)
        print(f"read_ms={{(time.perf_counter() - started) * 1000:.3f}} host={{conn.host}}")


    with DAG("bench_none", max_active_tasks=100000):
        for i in range({tasks}):
            PythonOperator(task_id=f"t{{i}}", python_callable=print, op_args=["nothing"])

    with DAG("bench_hub", max_active_tasks=100000, connections=["warehouse"]):
        for i in range({tasks}):
            PythonOperator(task_id=f"t{{i}}", python_callable=read, op_args=["warehouse"])

    with DAG("bench_site", max_active_tasks=100000, connections=["site_db"]):
        for i in range({tasks}):
            PythonOperator(task_id=f"t{{i}}", python_callable=read, op_args=["site_db"])
"""


def _durations(run: dict) -> list[float]:
    return [ts(t["ended_at"]) - ts(t["started_at"]) for t in run["tasks"]]


def _reads(bench: Bench, run: dict) -> list[float]:
    found = []
    for task in run["tasks"]:
        match = re.search(r"read_ms=([0-9.]+)", bench.log(run, task["task_id"]))
        if match is None:
            raise SystemExit(
                f"{task['task_id']} printed no read time:\n{bench.log(run, task['task_id'])}"
            )
        found.append(float(match.group(1)))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=50, help="tasks per DAG")
    parser.add_argument("--concurrency", type=int, default=8, help="worker slots")
    args = parser.parse_args()
    with Bench() as bench:
        (bench.dags / "bench_secrets.py").write_text(textwrap.dedent(DAGS.format(tasks=args.tasks)))
        bench.start_hub("bench_none", "bench_hub", "bench_site")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tether",
                "connections",
                "add",
                "warehouse",
                "--uri",
                "postgresql://loader:bench-pw@wh.internal:5439/dw",
                "--hub",
                bench.url,
            ],
            env={**bench.env, "TETHER_TOKEN": bench.env["TETHER_ADMIN_TOKEN"]},
            check=True,
            capture_output=True,
        )
        bench.start_worker(
            "bench",
            concurrency=args.concurrency,
            TETHER_CONN_SITE_DB="postgresql://site:site-pw@db.site.local:5432/sales",
        )
        bench.run("bench_none")  # warm-up: the worker connects, the fork server starts
        runs = {name: bench.run(f"bench_{name}") for name in ("none", "hub", "site")}
        for name, run in runs.items():
            if run["state"] != "success":
                raise SystemExit(f"bench_{name} ended {run['state']}; see {bench.root}")
        reads = {name: _reads(bench, runs[name]) for name in ("hub", "site")}
        figures = {
            "store": bench.store,
            "tasks": args.tasks,
            "concurrency": args.concurrency,
            "hub_read_ms_p50": round(statistics.median(reads["hub"]), 2),
            "hub_read_ms_p95": round(pct(reads["hub"], 95), 2),
            "site_read_ms_p50": round(statistics.median(reads["site"]), 2),
            "site_read_ms_p95": round(pct(reads["site"], 95), 2),
            **{
                f"task_ms_p50_{name}": round(statistics.median(_durations(run)) * 1000, 1)
                for name, run in runs.items()
            },
        }
    for key, value in figures.items():
        print(f"{key:24} {value}")
    print(json.dumps({"bench": "secrets", **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
