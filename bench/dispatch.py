"""Dispatch latency and throughput of a real hub and real workers on loopback.

Starts ``tether hub`` and ``--workers`` ``tether worker`` processes in a
temporary home (SQLite by default; ``--database-url`` or TETHER_DATABASE_URL
for PostgreSQL) and measures, with trivial tasks of ``--kind`` (``bash``:
``BashOperator`` running ``true``; ``python``: a ``PythonOperator`` no-op;
``empty``: ``EmptyOperator``):

- dispatch: from a task being queued to a worker claiming it (the hub's
  ``queued_at`` and ``started_at``), for ``--singles`` one-task runs, each
  triggered while the workers are idle and holding their polls;
- handoff: from one task's end to its downstream task's claim, in a chain of
  ``--chain`` tasks, as the hub records them; and the chain's wall time per
  task, the worker starting each task's process included (Airflow's edge
  worker: ~4 s a link);
- throughput: ``--wide`` independent tasks of one run, from the first queued
  to the last ended, over all the workers' slots.

Prints a table and a final JSON line. Usage:
    python3 -m uv run python bench/dispatch.py [--kind bash] [--workers 2] \\
        [--concurrency 16] [--wide 2000] [--chain 50] [--singles 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Bench, pct, ts

OPERATORS = {
    "bash": "BashOperator(task_id={id}, bash_command='true')",
    "python": "PythonOperator(task_id={id}, python_callable=noop)",
    "empty": "EmptyOperator(task_id={id})",
}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` so far, in seconds (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float], p: float) -> float:
    return round(pct(values, p) * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=sorted(OPERATORS), default="bash")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="slots of each worker")
    parser.add_argument("--chain", type=int, default=50, help="tasks in the chained DAG")
    parser.add_argument("--wide", type=int, default=2000, help="tasks in the parallel DAG")
    parser.add_argument("--singles", type=int, default=50, help="one-task runs for dispatch")
    parser.add_argument("--database-url", help="an empty database (default: SQLite)")
    args = parser.parse_args()

    env = {"TETHER_DATABASE_URL": args.database_url} if args.database_url else {}
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with Bench(**env) as bench:
        op = OPERATORS[args.kind]
        (bench.dags / "bench.py").write_text(
            textwrap.dedent(f"""
            from tether import DAG, BashOperator, EmptyOperator, PythonOperator, chain

            def noop():
                pass

            with DAG("bench_single"):
                {op.format(id="'t'")}
            with DAG("bench_chain"):
                chain(*[{op.format(id="f'c{i}'")} for i in range({args.chain})])
            with DAG("bench_wide", max_active_tasks=1000000):
                for i in range({args.wide}):
                    {op.format(id="f'w{i}'")}
            """)
        )
        bench.start_hub("bench_single", "bench_chain", "bench_wide")
        workers = [
            bench.start_worker(f"w{n}", concurrency=args.concurrency) for n in range(args.workers)
        ]
        for _ in range(args.workers * 2):  # warm-up: they connect and cache the bundle
            bench.run("bench_single")

        dispatch: list[float] = []
        for _ in range(args.singles):
            time.sleep(0.2)  # idle again, its poll held
            (task,) = bench.run("bench_single")["tasks"]
            dispatch.append(ts(task["started_at"]) - ts(task["queued_at"]))

        chain_run = bench.run("bench_chain")
        tasks = sorted(chain_run["tasks"], key=lambda t: int(t["task_id"][1:]))
        handoffs = [
            ts(b["started_at"]) - ts(a["ended_at"]) for a, b in zip(tasks, tasks[1:], strict=False)
        ]
        durations = [ts(t["ended_at"]) - ts(t["started_at"]) for t in tasks]
        chain_span = ts(tasks[-1]["ended_at"]) - ts(tasks[0]["queued_at"])

        hub_pid = bench.processes[0].pid
        cpu_before = [_cpu_s(hub_pid), *(_cpu_s(w.pid) for w in workers)]
        wide_run = bench.run("bench_wide")
        cpu_used = [
            after - before
            for before, after in zip(
                cpu_before, [_cpu_s(hub_pid), *(_cpu_s(w.pid) for w in workers)], strict=True
            )
        ]
        wide = wide_run["tasks"]
        span = max(ts(t["ended_at"]) for t in wide) - min(ts(t["queued_at"]) for t in wide)
        rss = [_rss_mb(w.pid) for w in workers]
        hub_rss = _rss_mb(hub_pid)

    figures = {
        "store": bench.store,
        "kind": args.kind,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "load_start": load_start,
        "dispatch_ms_p50": _ms(dispatch, 50),
        "dispatch_ms_p99": _ms(dispatch, 99),
        "chain_tasks": len(tasks),
        "chain_state": chain_run["state"],
        "handoff_ms_p50": _ms(handoffs, 50),
        "handoff_ms_p95": _ms(handoffs, 95),
        "task_run_ms_p50": round(statistics.median(durations) * 1000, 1),
        "chain_ms_per_task": round(chain_span / len(tasks) * 1000, 1),
        "wide_tasks": len(wide),
        "wide_state": wide_run["state"],
        "throughput_tasks_per_s": round(len(wide) / span, 1),
        # The wide run's CPU per task: the hub's, and the worker processes' own
        # (their task processes not included).
        "hub_cpu_ms_per_task": round(cpu_used[0] / len(wide) * 1000, 2),
        "worker_cpu_ms_per_task": round(sum(cpu_used[1:]) / len(wide) * 1000, 2),
        "worker_rss_mb": max(rss),
        "hub_rss_mb": hub_rss,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for key, value in figures.items():
        print(f"{key:24} {value}")
    print(json.dumps({"bench": "dispatch", **figures}))
    if (chain_run["state"], wide_run["state"]) != ("success", "success"):
        print(f"a run failed; logs kept in {bench.root}", file=sys.stderr)
        return 1
    shutil.rmtree(bench.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
