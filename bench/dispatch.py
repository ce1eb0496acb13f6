"""Dispatch latency and throughput of a real hub and worker on loopback.

Starts ``tether hub`` and ``tether worker`` as processes in a temporary home
(SQLite by default; set TETHER_DATABASE_URL for PostgreSQL) and measures:

- handoff: from one task's end to the start of its downstream task, in a
  chain of trivial tasks, as the hub records them;
- chain_ms_per_task: wall time of the whole chain per task, including the
  worker starting each task's process (Airflow's edge worker: ~4 s a link);
- dispatch: from a task being queued to a worker starting it;
- throughput: trivial tasks finished per second by one worker.

Prints a table and a final JSON line. Usage:
    python3 -m uv run python bench/dispatch.py [--chain 20] [--wide 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Bench, pct, ts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=20, help="tasks in the chained DAG")
    parser.add_argument("--wide", type=int, default=200, help="tasks in the parallel DAG")
    parser.add_argument("--concurrency", type=int, default=8, help="worker slots")
    args = parser.parse_args()

    with Bench() as bench:
        (bench.dags / "bench.py").write_text(
            textwrap.dedent(f"""
            from tether import DAG, EmptyOperator, chain
            with DAG("bench_chain"):
                chain(*[EmptyOperator(task_id=f"c{{i}}") for i in range({args.chain})])
            with DAG("bench_wide", max_active_tasks=100000):
                for i in range({args.wide}):
                    EmptyOperator(task_id=f"w{{i}}")
        """)
        )
        bench.start_hub("bench_chain", "bench_wide")
        worker = bench.start_worker("bench", concurrency=args.concurrency)

        bench.run("bench_chain")  # warm-up: the worker connects and caches the bundle
        chain_run = bench.run("bench_chain")
        tasks = sorted(chain_run["tasks"], key=lambda t: int(t["task_id"][1:]))
        handoffs = [
            ts(b["started_at"]) - ts(a["ended_at"]) for a, b in zip(tasks, tasks[1:], strict=False)
        ]
        dispatch = [ts(t["started_at"]) - ts(t["queued_at"]) for t in tasks]
        durations = [ts(t["ended_at"]) - ts(t["started_at"]) for t in tasks]
        chain_span = ts(tasks[-1]["ended_at"]) - ts(tasks[0]["queued_at"])

        wide = bench.run("bench_wide")["tasks"]
        span = max(ts(t["ended_at"]) for t in wide) - min(ts(t["queued_at"]) for t in wide)
        throughput = len(wide) / span

        rss_kb = 0
        for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])

    figures = {
        "store": bench.store,
        "chain_tasks": len(tasks),
        "handoff_ms_median": round(statistics.median(handoffs) * 1000, 1),
        "handoff_ms_p95": round(pct(handoffs, 95) * 1000, 1),
        "dispatch_ms_median": round(statistics.median(dispatch) * 1000, 1),
        "task_run_ms_median": round(statistics.median(durations) * 1000, 1),
        "chain_ms_per_task": round(chain_span / len(tasks) * 1000, 1),
        "wide_tasks": len(wide),
        "concurrency": args.concurrency,
        "throughput_tasks_per_s": round(throughput, 1),
        "worker_rss_mb": round(rss_kb / 1024, 1),
    }
    for key, value in figures.items():
        print(f"{key:28} {value}")
    print(json.dumps({"bench": "dispatch", **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
