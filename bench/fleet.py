"""A fleet of simulated workers against one real hub: what a worker costs it.

Starts ``tether hub`` in a temporary home (SQLite by default, or the empty
database ``--database-url`` names) and ``--workers`` simulated workers run
from ``--clients`` separate processes (bench/fleet_workers.py: each worker
enrolled with its own token, speaking the real protocol: a session, one
held poll, heartbeats at the interval the hub gives). A share of them
(``--active``) each serve a queue that gets work: the DAG written here has
one trivial task per active queue, and ``--runs`` runs of it are triggered
evenly over the measured window of ``--duration`` seconds, which starts once
the whole fleet is connected. Prints:

- the time to connect the fleet (enrol + session: per worker, and all of it);
- heartbeat round trips in the window, p50/p95/p99;
- poll-to-job latency: a job's arrival at its worker minus its task's
  ``queued_at`` (REST API), p50/p95/p99, and whether every job arrived;
- errors by kind (endpoint and HTTP status or exception class), counted;
- hub CPU over the window (utime + stime of its process, as a share of one
  core, and per worker-second; with ``--hubs`` N, the sum of the hub
  processes and each one's share) and its peak RSS (the sum of the peaks);
  the simulated workers' CPU (all clients together: on a small machine they
  compete with the hub); the load average at the start and the end;

then a final JSON line. Exits 1 if anything failed (an error, a worker not
connected, a job not received). Everything it starts is stopped on exit.
Usage:
    python3 -m uv run python bench/fleet.py [--workers 100] [--clients 4] [--active 0.1]
        [--runs 10] [--duration 30] [--heartbeat-interval 10]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/fleet [--hubs 2]]

With ``--hubs`` N (PostgreSQL only), N hub processes share the database
(docs/deployment.md): the clients spread over them, client k on hub k mod N,
and the runs are triggered through the first, so most jobs reach their
worker through another hub's notification.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tether.protocol import MAX_CLAIM_WAIT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ADMIN, Bench, die_with_parent, pct, run_and_report, ts

HERE = Path(__file__).resolve().parent

DAG_ID = "fleet"


class Client:
    """One process of simulated workers, and the JSON lines it says."""

    def __init__(self, bench: Bench, number: int, args: argparse.Namespace, url: str) -> None:
        self.number = number
        self.log = bench.root / f"client-{number}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "fleet_workers.py"), "--hub", url]
                + ["--client", str(number), "--clients", str(args.clients)]
                + ["--workers", str(args.workers), "--concurrency", str(args.concurrency)]
                + ["--poll-wait", str(args.poll_wait)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "FLEET_ADMIN_TOKEN": ADMIN},
                preexec_fn=die_with_parent,
            )
        bench.processes.append(self.proc)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, key: str, deadline: float) -> Any:
        try:
            message = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            message = None
        if message is None or key not in message:
            raise SystemExit(f"client {self.number} said no {key!r} in time; see {self.log}")
        return message[key]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (not its children), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss(threading.Thread):
    """The highest VmRSS of ``pid`` seen while it runs (sampled every 0.2 s)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_mb(pid), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


def ms(values: list[float], p: float) -> float | None:
    return round(pct(values, p) * 1000, 1) if values else None


def write_dag(bench: Bench, active: int) -> None:
    (bench.dags / "fleet.py").write_text(
        textwrap.dedent(f"""
        from tether import DAG, BashOperator
        with DAG({DAG_ID!r}, max_active_runs=100000, max_active_tasks=100000):
            for i in range({active}):
                BashOperator(task_id=f"t{{i}}", bash_command="true", queue=f"site-{{i}}")
        """)
    )


def trigger_runs(
    bench: Bench, runs: int, began: float, duration: float, errors: Counter[str]
) -> list[str]:
    """Trigger ``runs`` runs spread evenly over the window; their ids."""
    ids = []
    for i in range(runs):
        time.sleep(max(0.0, began + (i + 0.5) * duration / runs - time.monotonic()))
        answer = bench.api.post(f"/dags/{DAG_ID}/runs", json={"run_id": f"fleet-{i}"})
        if answer.status_code == 200:
            ids.append(f"fleet-{i}")
        else:
            errors[f"trigger: HTTP {answer.status_code}"] += 1
    return ids


def wait_runs(bench: Bench, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Each run's detail once it has ended, or as it is when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    ended: list[dict[str, Any]] = []
    for run_id in ids:
        while True:
            detail: dict[str, Any] = bench.api.get(f"/dags/{DAG_ID}/runs/{run_id}").json()
            if detail["state"] in ("success", "failed") or time.monotonic() > deadline:
                ended.append(detail)
                break
            time.sleep(0.2)
    return ended


def measure(bench: Bench, args: argparse.Namespace, active: int) -> dict[str, Any]:
    write_dag(bench, active)
    bench.start_hub(DAG_ID)
    urls = [bench.url] + [bench.start_replica(n) for n in range(1, args.hubs)]
    hubs = [proc.pid for proc in bench.processes]  # only hubs so far
    # Runs are triggered through the first hub; the clients spread over all.
    clients = [Client(bench, n, args, urls[n % len(urls)]) for n in range(args.clients)]
    setup = time.monotonic() + 120 + args.workers / 10
    for client in clients:
        client.expect("ready", setup)

    load_start = os.getloadavg()
    go = time.monotonic()
    for client in clients:
        client.send("go")
    connected = [client.expect("connected", setup + 120 + args.workers / 10) for client in clients]
    connect_total = time.monotonic() - go

    errors: Counter[str] = Counter()
    began, began_wall = time.monotonic(), time.time()
    cpu_began = [cpu_seconds(pid) for pid in hubs]
    clients_began = sum(cpu_seconds(c.proc.pid) for c in clients)
    rss = [PeakRss(pid) for pid in hubs]
    for sampler in rss:
        sampler.start()
    run_ids = trigger_runs(bench, args.runs, began, args.duration, errors)
    time.sleep(max(0.0, began + args.duration - time.monotonic()))
    window = time.monotonic() - began
    cpu_each = [cpu_seconds(pid) - b for pid, b in zip(hubs, cpu_began, strict=True)]
    cpu = sum(cpu_each)
    clients_cpu = sum(cpu_seconds(c.proc.pid) for c in clients) - clients_began
    ended_wall = time.time()
    rss_peak = sum(sampler.stop() for sampler in rss)
    load_end = os.getloadavg()

    runs = wait_runs(bench, run_ids, 60 + args.runs * active / 20)
    for client in clients:
        client.send("stop")
    closing = time.monotonic() + 60 + args.workers / 20
    results = [client.expect("result", closing) for client in clients]
    for client in clients:
        client.proc.wait(30)

    for result in results:
        errors.update(result["errors"])
    connect = [s for c in connected for s in c["seconds"]]
    beats = [
        rtt for r in results for sent, rtt in r["heartbeats"] if began_wall <= sent <= ended_wall
    ]
    received: dict[tuple[str, str], list[float]] = {}
    for r in results:
        for job in r["jobs"]:
            received.setdefault((job["run_id"], job["task_id"]), []).append(job["received"])
    latencies = [
        min(received[(run["run_id"], t["task_id"])]) - ts(t["queued_at"])
        for run in runs
        for t in run["tasks"]
        if (run["run_id"], t["task_id"]) in received and t["queued_at"]
    ]
    workers = args.workers
    return {
        "store": bench.store,
        "hubs": len(hubs),
        "workers": workers,
        "clients": args.clients,
        "active": active,
        "runs": args.runs,
        "duration_s": round(window, 1),
        "heartbeat_interval_s": args.heartbeat_interval,
        "poll_wait_s": args.poll_wait,
        "connected": sum(c["workers"] for c in connected),
        "connect_failed": sum(c["failed"] for c in connected),
        "connect_total_s": round(connect_total, 3),
        "connect_ms_p50": ms(connect, 50),
        "connect_ms_p99": ms(connect, 99),
        "heartbeats": len(beats),
        "heartbeat_ms_p50": ms(beats, 50),
        "heartbeat_ms_p95": ms(beats, 95),
        "heartbeat_ms_p99": ms(beats, 99),
        "jobs_expected": args.runs * active,
        "jobs_received": len(latencies),
        "jobs_received_twice": sum(len(v) > 1 for v in received.values()),
        "jobs_finished": sum(r["finished"] for r in results),
        "runs_succeeded": sum(run["state"] == "success" for run in runs),
        "poll_to_job_ms_p50": ms(latencies, 50),
        "poll_to_job_ms_p95": ms(latencies, 95),
        "poll_to_job_ms_p99": ms(latencies, 99),
        "error_count": sum(errors.values()),
        "errors": dict(sorted(errors.items())),
        "hub_cpu_core_share": round(cpu / window, 3),
        "hub_cpu_core_share_each": [round(c / window, 3) for c in cpu_each],
        "hub_cpu_ms_per_worker_s": round(cpu * 1000 / (workers * window), 3),
        "hub_rss_mb_peak": round(rss_peak, 1),
        "clients_cpu_core_share": round(clients_cpu / window, 3),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in load_end],
    }


def failed(figures: dict[str, Any]) -> bool:
    return bool(
        figures["error_count"]
        or figures["connect_failed"]
        or figures["jobs_received"] < figures["jobs_expected"]
        or figures["jobs_received_twice"]
        or figures["runs_succeeded"] < figures["runs"]
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=100, help="simulated workers")
    parser.add_argument("--clients", type=int, default=4, help="processes they run from")
    parser.add_argument("--active", type=float, default=0.1, help="share of them that get work")
    parser.add_argument("--runs", type=int, default=10, help="runs triggered in the window")
    parser.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=10.0, help="TETHER_WORKER_HEARTBEAT"
    )
    parser.add_argument(
        "--poll-wait", type=float, default=MAX_CLAIM_WAIT, help="how long a poll is held"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="slots of each worker")
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: SQLite in a temp dir)"
    )
    parser.add_argument(
        "--hubs", type=int, default=1, help="hub processes on the one PostgreSQL database"
    )
    args = parser.parse_args()
    if args.hubs < 1 or (args.hubs > 1 and not (args.database_url or "").startswith("postgres")):
        parser.error("--hubs above 1 needs a PostgreSQL --database-url")
    if args.workers < 1 or not 1 <= args.clients <= args.workers:
        parser.error("--workers must be at least 1, --clients between 1 and --workers")
    if not 0 < args.active <= 1 or args.runs < 1 or args.duration <= 0:
        parser.error("--active must be in (0, 1], --runs at least 1, --duration positive")
    return args


def main() -> int:
    args = parse()
    # SIGTERM ends the bench as Ctrl-C does: through the Bench's exit, which stops
    # what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    env = {"TETHER_WORKER_HEARTBEAT": str(args.heartbeat_interval), "TETHER_DAG_SCAN_INTERVAL": "2"}
    if args.database_url:
        env["TETHER_DATABASE_URL"] = args.database_url
    active = max(1, round(args.workers * args.active))
    return run_and_report(
        "fleet", env, lambda bench: measure(bench, args, active), failed, width=28
    )


if __name__ == "__main__":
    raise SystemExit(main())
