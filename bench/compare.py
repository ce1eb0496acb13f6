"""Tether against a task queue, Celery on Redis, in one run so the machine's noise cancels.

The same workloads run on each, one side after the other (Celery first; each
side's processes are stopped before the other's start):

- fan-out: ``--fanout`` independent trivial tasks, tasks per second from the
  first enqueue to the last end. Celery: one group of a no-op task. Tether: a
  run of a DAG of as many ``BashOperator(bash_command="true")`` tasks, and a
  run of one of as many ``PythonOperator`` no-ops;
- chain: ``--chain`` trivial tasks one after another, the gap from one task's
  end to the next one's start, p50/p95. Celery: ``chain()`` of the no-op;
  Tether: a chain of ``PythonOperator`` no-ops;
- dispatch: ``--dispatch`` single tasks one at a time on an idle worker, from
  enqueue to start, p50/p99. Tether: runs of a one-task DAG, ``queued_at`` to
  ``started_at``.

Celery's stamps are the task's own ``time.time()`` at the start and end of its
body, returned through the result backend (bench/compare_celery.py); Tether's
are the hub's ``queued_at``/``started_at``/``ended_at`` from the REST API.

Celery and the ``redis`` client are installed from PyPI into a throw-away
virtualenv under a temporary directory (``uv venv``, ``uv pip install``),
never into the project's environment; the broker is a ``redis-server`` of the
bench's own (Debian's, /usr/bin/redis-server) on a free loopback port, with
no persistence. Celery's worker runs ``--pool prefork`` with ``--slots``
processes; Tether gets the same slots over ``--tether-workers`` workers. The
hub's store is SQLite in a temporary home, or the empty database
``--database-url`` names.

Prints the load average at the start and the end, the figures side by side
with their ratio (Tether / Celery), and a final JSON line. Exits 1 if a task
did not succeed on either side, 3 if a prerequisite is missing (redis-server,
or PyPI unreachable). Everything it starts is stopped on exit, on failure and
on Ctrl-C. Usage:
    python3 -m uv run python bench/compare.py [--fanout 500] [--chain 50] [--dispatch 20]
        [--slots 16] [--tether-workers 2]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/compare]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Bench, die_with_parent, free_port, pct, stop, ts

HERE = Path(__file__).resolve().parent
REDIS_SERVER = "/usr/bin/redis-server"

#: Exit status when something the bench needs is not there (redis-server, PyPI).
MISSING = 3


class Missing(Exception):
    """A prerequisite of the bench is not there; the message says which."""


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def throughput(enqueued: float, ends: list[float]) -> float | None:
    return round(len(ends) / (max(ends) - enqueued), 1) if ends else None


def gaps(marks: list[tuple[float, float]]) -> list[float]:
    """From each (start, end) to the next one's start."""
    return [b[0] - a[1] for a, b in zip(marks, marks[1:], strict=False)]


def ms(values: list[float], p: float) -> float | None:
    return round(pct(values, p) * 1000, 1) if values else None


def uv() -> list[str]:
    """The uv that runs this bench (``uv run`` names it in UV), else ``python3 -m uv``."""
    return [os.environ["UV"]] if "UV" in os.environ else ["python3", "-m", "uv"]


def make_venv(root: Path) -> Path:
    """A virtualenv under ``root`` with celery and redis from PyPI; its python."""
    venv = root / "venv"
    for step in (
        [*uv(), "venv", "-q", "--python", sys.executable, str(venv)],
        [*uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
        + ["celery[redis]", "redis"],
    ):
        done = subprocess.run(step, capture_output=True, text=True, preexec_fn=die_with_parent)
        if done.returncode != 0:
            raise Missing(
                f"could not install celery and redis from PyPI into {venv} "
                f"({' '.join(step[-3:])} exited {done.returncode}): {done.stderr.strip()[-1500:]}"
            )
    return venv / "bin" / "python"


def start(
    processes: list[subprocess.Popen[bytes]], log: Path, args: list[str], **kwargs: Any
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, **kwargs
        )
    processes.append(proc)
    return proc


def start_redis(processes: list[subprocess.Popen[bytes]], root: Path) -> int:
    """Start a redis-server of the bench's own; its port once it answers PING."""
    if not os.access(REDIS_SERVER, os.X_OK):
        raise Missing(f"{REDIS_SERVER} is missing (Debian: apt-get install redis-server)")
    port = free_port()
    proc = start(
        processes,
        root / "redis.log",
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        + ["no", "--dir", str(root), "--daemonize", "no"],
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"redis-server did not come up; see {root / 'redis.log'}")
        time.sleep(0.1)


def run_celery(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The Celery side, from making its virtualenv to stopping its processes."""
    python = make_venv(root)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = start_redis(processes, root)
        # A copy of its own: bench/ on the path would shadow the stdlib's secrets module.
        shutil.copy(HERE / "compare_celery.py", root)
        env = {**os.environ, "PYTHONPATH": str(root), "COMPARE_REDIS": f"redis://127.0.0.1:{port}"}
        # No gossip, mingle or event heartbeats: nothing on the broker but the work.
        start(
            processes,
            root / "celery-worker.log",
            [str(python.parent / "celery"), "-A", "compare_celery", "worker", "--pool", "prefork"]
            + ["--concurrency", str(args.slots), "--loglevel", "warning"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env,
            cwd=root,
        )
        loaded = load()
        with (root / "celery-driver.log").open("wb") as log:
            driver = subprocess.run(
                [str(python), str(root / "compare_celery.py"), "--warmup", str(args.slots)]
                + ["--fanout", str(args.fanout), "--chain", str(args.chain)]
                + ["--dispatch", str(args.dispatch)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=root,
                timeout=1800,
                preexec_fn=die_with_parent,
            )
        if driver.returncode != 0:
            raise SystemExit(f"the Celery driver failed; see {root / 'celery-driver.log'}")
        raw = json.loads(driver.stdout)
    finally:
        stop(processes)
    version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    fanout, chain, dispatch = raw["fanout"], raw["chain"], raw["dispatch"]
    chain_gaps = gaps(chain)
    latencies = [started - enqueued for enqueued, started in dispatch]
    return {
        "versions": {
            "celery": raw["celery_version"],
            "redis_py": raw["redis_py_version"],
            "redis_server": version.split("v=", 1)[1].split()[0],
        },
        "load_start": loaded,
        "fanout_done": len(fanout["marks"]),
        "fanout_tasks_per_s": throughput(fanout["enqueued"], [e for _, e in fanout["marks"]]),
        "chain_done": len(chain),
        "chain_gap_ms_p50": ms(chain_gaps, 50),
        "chain_gap_ms_p95": ms(chain_gaps, 95),
        "dispatch_done": len(dispatch),
        "dispatch_ms_p50": ms(latencies, 50),
        "dispatch_ms_p99": ms(latencies, 99),
    }


def write_dags(bench: Bench, args: argparse.Namespace) -> None:
    (bench.dags / "compare.py").write_text(
        textwrap.dedent(f"""
        from tether import DAG, BashOperator, PythonOperator, chain

        def noop():
            pass

        with DAG("compare_warmup", max_active_tasks=100000):
            for i in range({args.slots}):
                PythonOperator(task_id=f"w{{i}}", python_callable=noop)
        with DAG("compare_fanout_bash", max_active_tasks=100000):
            for i in range({args.fanout}):
                BashOperator(task_id=f"b{{i}}", bash_command="true")
        with DAG("compare_fanout_python", max_active_tasks=100000):
            for i in range({args.fanout}):
                PythonOperator(task_id=f"p{{i}}", python_callable=noop)
        with DAG("compare_chain"):
            chain(*[PythonOperator(task_id=f"c{{i}}", python_callable=noop)
                    for i in range({args.chain})])
        with DAG("compare_single"):
            PythonOperator(task_id="single", python_callable=noop)
        """)
    )


def succeeded(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in run["tasks"] if t["state"] == "success"]


def run_tether(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    """The Tether side: a hub and ``--tether-workers`` workers sharing ``--slots``."""
    write_dags(bench, args)
    dags = ["compare_warmup", "compare_fanout_bash", "compare_fanout_python"]
    bench.start_hub(*dags, "compare_chain", "compare_single")
    for n in range(args.tether_workers):
        bench.start_worker(f"compare-{n}", concurrency=args.slots // args.tether_workers)
    loaded = load()
    # Every worker connects and caches the bundle: the warm-up has a task per slot.
    bench.run("compare_warmup")
    figures: dict[str, Any] = {"load_start": loaded}
    for kind in ("bash", "python"):
        tasks = succeeded(bench.run(f"compare_fanout_{kind}"))
        first = min((ts(t["queued_at"]) for t in tasks), default=0.0)
        figures[f"fanout_{kind}_done"] = len(tasks)
        figures[f"fanout_{kind}_tasks_per_s"] = throughput(
            first, [ts(t["ended_at"]) for t in tasks]
        )
    chain = sorted(succeeded(bench.run("compare_chain")), key=lambda t: int(t["task_id"][1:]))
    chain_gaps = gaps([(ts(t["started_at"]), ts(t["ended_at"])) for t in chain])
    figures["chain_done"] = len(chain)
    figures["chain_gap_ms_p50"] = ms(chain_gaps, 50)
    figures["chain_gap_ms_p95"] = ms(chain_gaps, 95)
    latencies = []
    for _ in range(args.dispatch):
        time.sleep(0.1)  # as on the Celery side
        for task in succeeded(bench.run("compare_single")):
            latencies.append(ts(task["started_at"]) - ts(task["queued_at"]))
    figures["dispatch_done"] = len(latencies)
    figures["dispatch_ms_p50"] = ms(latencies, 50)
    figures["dispatch_ms_p99"] = ms(latencies, 99)
    return figures


#: Each figure of the table: its label, Celery's key and Tether's key.
ROWS = [
    ("fan-out, Bash true (tasks/s)", "fanout_tasks_per_s", "fanout_bash_tasks_per_s"),
    ("fan-out, Python no-op (tasks/s)", "fanout_tasks_per_s", "fanout_python_tasks_per_s"),
    ("chain gap p50 (ms)", "chain_gap_ms_p50", "chain_gap_ms_p50"),
    ("chain gap p95 (ms)", "chain_gap_ms_p95", "chain_gap_ms_p95"),
    ("dispatch p50 (ms)", "dispatch_ms_p50", "dispatch_ms_p50"),
    ("dispatch p99 (ms)", "dispatch_ms_p99", "dispatch_ms_p99"),
]


def ratio(tether: float | None, celery: float | None) -> float | None:
    return round(tether / celery, 2) if tether is not None and celery else None


def complete(args: argparse.Namespace, celery: dict[str, Any], tether: dict[str, Any]) -> bool:
    """Whether each side finished every task of every workload."""
    counts = {"fanout": args.fanout, "chain": args.chain, "dispatch": args.dispatch}
    return all(celery[f"{name}_done"] == n for name, n in counts.items()) and all(
        tether[key] == n
        for key, n in [
            ("fanout_bash_done", args.fanout),
            ("fanout_python_done", args.fanout),
            ("chain_done", args.chain),
            ("dispatch_done", args.dispatch),
        ]
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fanout", type=int, default=500, help="independent trivial tasks")
    parser.add_argument("--chain", type=int, default=50, help="trivial tasks in the chain")
    parser.add_argument("--dispatch", type=int, default=20, help="single tasks one at a time")
    parser.add_argument("--slots", type=int, default=16, help="Celery's processes, Tether's slots")
    parser.add_argument("--tether-workers", type=int, default=2, help="workers sharing the slots")
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: SQLite in a temp dir)"
    )
    args = parser.parse_args()
    if args.fanout < 1 or args.chain < 2 or args.dispatch < 1:
        parser.error("--fanout and --dispatch must be at least 1, --chain at least 2")
    if args.tether_workers < 1 or args.slots % args.tether_workers:
        parser.error("--slots must be a multiple of --tether-workers")
    return args


def main() -> int:
    args = parse()
    # SIGTERM ends the bench as Ctrl-C does: through the finally blocks and the
    # Bench's exit, which stop what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load_start = load()
    print(f"load average at start: {load_start}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="tether-compare-"))
    env = {"TETHER_DATABASE_URL": args.database_url} if args.database_url else {}
    try:
        celery = run_celery(args, root)
        with Bench(**env) as bench:
            try:
                tether = run_tether(args, bench)
            except BaseException:
                print(f"the Tether side failed; logs kept in {bench.root}", file=sys.stderr)
                raise
    except Missing as missing:
        print(f"compare: {missing}", file=sys.stderr)
        return MISSING
    except KeyboardInterrupt:
        print(f"interrupted; logs kept in {root}", file=sys.stderr)
        return 130
    except BaseException:
        print(f"the compare bench failed; logs kept in {root}", file=sys.stderr)
        raise
    load_end = load()

    slots = args.slots // args.tether_workers
    versions = celery["versions"]
    print(
        f"celery {versions['celery']} (redis-py {versions['redis_py']}, redis-server"
        f" {versions['redis_server']}): 1 worker, --pool prefork --concurrency {args.slots}"
    )
    print(f"tether: {args.tether_workers} worker(s) of {slots} slots, store {bench.store}")
    print(f"{'figure':34} {'celery':>9} {'tether':>9} {'tether/celery':>14}")
    ratios = {}
    for label, celery_key, tether_key in ROWS:
        ratios[tether_key] = ratio(tether[tether_key], celery[celery_key])
        print(
            f"{label:34} {celery[celery_key]:>9} {tether[tether_key]:>9} {ratios[tether_key]!s:>14}"
        )
    print(f"load average at end: {load_end}")
    figures = {
        "bench": "compare",
        "store": bench.store,
        "fanout": args.fanout,
        "chain": args.chain,
        "dispatch": args.dispatch,
        "slots": args.slots,
        "tether_workers": args.tether_workers,
        "tether_worker_slots": slots,
        "celery": celery,
        "tether": tether,
        "ratios": ratios,
        "load_start": load_start,
        "load_end": load_end,
    }
    print(json.dumps(figures))
    if not complete(args, celery, tether):
        print(f"a task did not succeed; logs kept in {root} and {bench.root}", file=sys.stderr)
        return 1
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(bench.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
