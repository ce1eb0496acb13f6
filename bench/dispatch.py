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
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import httpx

ADMIN = "bench-admin-token-xxxxxxxxxxxx"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=20, help="tasks in the chained DAG")
    parser.add_argument("--wide", type=int, default=200, help="tasks in the parallel DAG")
    parser.add_argument("--concurrency", type=int, default=8, help="worker slots")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    dags = root / "dags"
    dags.mkdir()
    (dags / "bench.py").write_text(
        textwrap.dedent(f"""
        from tether import DAG, EmptyOperator, chain
        with DAG("bench_chain"):
            chain(*[EmptyOperator(task_id=f"c{{i}}") for i in range({args.chain})])
        with DAG("bench_wide", max_active_tasks=100000):
            for i in range({args.wide}):
                EmptyOperator(task_id=f"w{{i}}")
    """)
    )
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TETHER_ADMIN_TOKEN": ADMIN,
        "TETHER_DAG_SCAN_INTERVAL": "0.5",
    }
    env.setdefault("TETHER_DATABASE_URL", f"sqlite:///{root / 'tether.db'}")
    logs = (root / "hub.log").open("wb"), (root / "worker.log").open("wb")
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "hub",
            "--home",
            str(root / "hub"),
            "--dags",
            str(dags),
            "--port",
            str(port),
        ],
        env=env,
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    worker = None
    api = httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if {"bench_chain", "bench_wide"} <= {
                    d["dag_id"] for d in api.get("/dags").json()["dags"]
                }:
                    break
            except (httpx.TransportError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("hub did not come up; see " + str(root / "hub.log"))
            time.sleep(0.1)
        token = api.post(
            "/workers/enrolment-tokens", json={"queues": ["default"], "name": "bench"}
        ).json()["token"]
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "worker",
                "--hub",
                url,
                "--queues",
                "default",
                "--home",
                str(root / "worker"),
                "--enrol",
                token,
                "--concurrency",
                str(args.concurrency),
            ],
            env=env,
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        )

        def run(dag_id: str) -> dict:
            run_id = api.post(f"/dags/{dag_id}/runs", json={}).json()["run_id"]
            while True:
                detail = api.get(f"/dags/{dag_id}/runs/{run_id}").json()
                if detail["state"] in ("success", "failed"):
                    return detail
                time.sleep(0.05)

        run("bench_chain")  # warm-up: the worker connects and caches the bundle
        chain_run = run("bench_chain")
        tasks = sorted(chain_run["tasks"], key=lambda t: int(t["task_id"][1:]))
        handoffs = [
            _ts(b["started_at"]) - _ts(a["ended_at"])
            for a, b in zip(tasks, tasks[1:], strict=False)
        ]
        dispatch = [_ts(t["started_at"]) - _ts(t["queued_at"]) for t in tasks]
        durations = [_ts(t["ended_at"]) - _ts(t["started_at"]) for t in tasks]
        chain_span = _ts(tasks[-1]["ended_at"]) - _ts(tasks[0]["queued_at"])

        wide_run = run("bench_wide")
        wide = wide_run["tasks"]
        span = max(_ts(t["ended_at"]) for t in wide) - min(_ts(t["queued_at"]) for t in wide)
        throughput = len(wide) / span

        rss_kb = 0
        for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    finally:
        api.close()
        for proc in (worker, hub):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for f in logs:
            f.close()

    figures = {
        "store": env["TETHER_DATABASE_URL"].split(":", 1)[0],
        "chain_tasks": len(tasks),
        "handoff_ms_median": round(statistics.median(handoffs) * 1000, 1),
        "handoff_ms_p95": round(_pct(handoffs, 95) * 1000, 1),
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
    sys.exit(main())
