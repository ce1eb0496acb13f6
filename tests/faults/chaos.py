"""A workload whose every task body leaves a mark outside Tether, the hub
killed under it, and a check of the marks against what the hub reports.

Shared by tests/faults/test_hub_kills.py (reduced scale) and bench/soak.py
(full scale). Each task body appends one line

    dag_id run_id task_id map_index try attempt_id

to a side-channel file with a single ``O_APPEND`` write (lines of concurrent
bodies never interleave), then prints a body of log lines that depends only on
the task instance, so each successful try's log on the hub can be compared with
it. :func:`check` reads that file and the hub's REST API and counts what was
lost and what ran twice; :func:`soak` runs the whole thing: a real hub and two
real workers, ``kills`` ``kill -9`` of the hub at random moments (each followed
by :meth:`Hub.restart` on the same home, port and database) and
``worker_kills`` of a worker (restarted at once on its home, as its service
manager would), then the check.
"""

from __future__ import annotations

import random
import signal
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.processes import Api, Hub, Worker, wait_for

DAG_ID = "chaos"
#: Task bodies in one run of the chaos DAG: start, 3 fans, parts, 2 mapped, end.
BODIES_PER_RUN = 8
BODY_LINES = 5

DAG_FILE = """
    import os
    import time

    from tether import DAG, BashOperator, task

    OUT = {out!r}
    LINE = (
        '"$TETHER_DAG_ID" "$TETHER_RUN_ID" "$TETHER_TASK_ID" "$TETHER_MAP_INDEX"'
        ' "$TETHER_TRY_NUMBER" "$TETHER_ATTEMPT_ID"'
    )
    # One printf, one write(2) on an O_APPEND descriptor; then the body's log lines.
    BASH = (
        f'printf "%s %s %s %s %s %s\\\\n" {{LINE}} >> "{{OUT}}"; '
        'for k in $(seq 0 {last}); do '
        'echo "chaos body $TETHER_DAG_ID $TETHER_RUN_ID $TETHER_TASK_ID $TETHER_MAP_INDEX'
        ' line $k"; '
        "done; sleep {pause}"
    )


    def body() -> None:
        e = os.environ
        key = [e["TETHER_DAG_ID"], e["TETHER_RUN_ID"], e["TETHER_TASK_ID"], e["TETHER_MAP_INDEX"]]
        line = " ".join([*key, e["TETHER_TRY_NUMBER"], e["TETHER_ATTEMPT_ID"]]) + "\\n"
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        for k in range({lines}):
            print("chaos body", *key, "line", k)
        time.sleep({pause})


    with DAG({dag_id!r}, max_active_runs=16, max_active_tasks=64,
             default_args={{"retries": 2, "retry_delay": 1}}):
        start = BashOperator(task_id="start", bash_command=BASH)
        end = BashOperator(task_id="end", bash_command=BASH)

        @task
        def fan() -> None:
            body()

        @task
        def parts() -> list[int]:
            body()
            return [0, 1]

        @task
        def part(n: int) -> None:
            body()

        fans = [fan.override(task_id=f"fan_{{i}}")() for i in range(3)]
        listed = parts()
        mapped = part.expand(n=listed)
        start >> fans
        start >> listed
        fans >> end
        mapped >> end
"""


def write_dags(folder: Path, out: Path, pause: float = 0.3) -> None:
    """The chaos DAG in ``folder``, its bodies appending to ``out``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DAG_FILE.format(
        out=str(out), dag_id=DAG_ID, lines=BODY_LINES, last=BODY_LINES - 1, pause=pause
    )
    (folder / "chaos.py").write_text(textwrap.dedent(text))


def expected_body(run_id: str, task_id: str, map_index: int) -> str:
    """The log lines every try of this task instance prints."""
    return "".join(
        f"chaos body {DAG_ID} {run_id} {task_id} {map_index} line {k}\n" for k in range(BODY_LINES)
    )


@dataclass
class Report:
    """What the side channel and the hub say, compared."""

    runs: int = 0
    tasks: int = 0
    attempts: int = 0
    retried: int = 0
    log_bytes: int = 0
    lost: list[str] = field(default_factory=list)
    run_twice: list[str] = field(default_factory=list)
    bad_logs: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        figures = asdict(self)
        for name in ("lost", "run_twice", "bad_logs"):
            figures[name] = len(figures[name])
        return figures


def side_channel(out: Path) -> list[tuple[str, str, str, int, int, str]]:
    """The lines of ``out``: (dag_id, run_id, task_id, map_index, try, attempt_id)."""
    if not out.exists():
        return []
    lines = []
    for raw in out.read_text().splitlines():
        dag_id, run_id, task_id, map_index, try_number, attempt_id = raw.split(" ")
        lines.append((dag_id, run_id, task_id, int(map_index), int(try_number), attempt_id))
    return lines


def _header_attempt(log: str) -> str | None:
    """The attempt id of the log's ``[tether] dag=… attempt=…`` line."""
    for line in log.splitlines():
        if line.startswith("[tether] dag="):
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            return fields.get("attempt")
    return None


def check(api: Api, run_ids: list[str], out: Path) -> Report:
    """Compare the side channel ``out`` with the hub's runs, task instances and logs."""
    report = Report(runs=len(run_ids))
    marks = side_channel(out)
    report.attempts = len(marks)
    per_attempt = Counter(mark[5] for mark in marks)
    report.run_twice += [f"attempt {a} ran {n} times" for a, n in per_attempt.items() if n > 1]
    tries: dict[tuple[str, str, int], dict[int, str]] = defaultdict(dict)
    for _, run_id, task_id, map_index, try_number, attempt_id in marks:
        seen = tries[(run_id, task_id, map_index)]
        if try_number in seen and seen[try_number] != attempt_id:
            report.run_twice.append(f"{run_id} {task_id}[{map_index}] try {try_number} ran twice")
        seen[try_number] = attempt_id
    for run_id in run_ids:
        run = api.run(DAG_ID, run_id)
        if run["state"] != "success":
            report.lost.append(f"run {run_id} is {run['state']}")
        for ti in run["tasks"]:
            report.tasks += 1
            key = (run_id, ti["task_id"], ti["map_index"])
            name = f"{run_id} {ti['task_id']}[{ti['map_index']}]"
            ran = tries.pop(key, {})
            if ti["state"] != "success":
                report.lost.append(f"{name} is {ti['state']}")
                continue
            if ti["try_number"] > 1:
                report.retried += 1
            if len(ran) > ti["try_number"] or any(t > ti["try_number"] for t in ran):
                report.run_twice.append(
                    f"{name}: tries {sorted(ran)}, hub counts {ti['try_number']}"
                )
            mapped = ti["map_index"] if ti["map_index"] >= 0 else None
            log = api.log(DAG_ID, run_id, ti["task_id"], ti["try_number"], mapped)
            body = expected_body(run_id, ti["task_id"], ti["map_index"])
            if body not in log or _header_attempt(log) != ran.get(ti["try_number"]):
                report.bad_logs.append(f"{name} try {ti['try_number']}:\n{log}")
            else:
                report.log_bytes += len(body.encode())
    report.lost += [f"{r} {t}[{m}] ran but the hub does not list it" for r, t, m in tries]
    return report


def soak(
    root: Path,
    database_url: str,
    *,
    runs: int,
    kills: int,
    seed: int,
    worker_kills: int = 0,
    say: Callable[[str], None] = print,
    timeout: float = 120,
) -> Report:
    """Trigger ``runs`` runs of the chaos DAG on a hub with two workers, kill -9
    the hub ``kills`` times and a worker ``worker_kills`` times at random points
    of the workload, restarting each, wait for every run to end, and check.
    Stops everything it started."""
    rng = random.Random(seed)
    say(
        f"chaos seed {seed}: {runs} runs, {runs * BODIES_PER_RUN} task bodies, "
        f"{kills} hub kills, {worker_kills} worker kills"
    )
    out = root / "side-channel.txt"
    write_dags(root / "dags", out)
    total = runs * BODIES_PER_RUN
    # Kill at random points of progress (bodies started), so every kill lands
    # inside the workload, never after it.
    targets = sorted(rng.sample(range(1, total), kills + worker_kills))
    victims = ["hub"] * kills + ["worker"] * worker_kills
    rng.shuffle(victims)
    hub = Hub(
        root / "hub",
        root / "dags",
        database_url,
        TETHER_WORKER_HEARTBEAT="1",
        TETHER_SCHEDULER_SWEEP="0.5",
    )
    workers: list[Worker] = []
    try:
        for name in ("w1", "w2"):
            workers.append(Worker(hub, root / name, "default", name, concurrency=4))
        for worker in workers:
            worker.wait_registered()
        hub.api.wait_dags(DAG_ID)
        run_ids = [hub.api.trigger(DAG_ID) for _ in range(runs)]
        for number, (target, victim) in enumerate(zip(targets, victims, strict=True), 1):
            wait_for(
                lambda target=target: len(side_channel(out)) >= target,
                timeout,
                f"{target} bodies to have started",
            )
            # A random moment between two events too, not only just after a body began.
            time.sleep(rng.uniform(0, 0.5))
            started = len(side_channel(out))
            if victim == "hub":
                hub.stop(signal.SIGKILL)
                hub = hub.restart()
                what = f"hub restarted, pid {hub.pid}"
            else:
                i = rng.randrange(len(workers))
                old = workers[i]
                old.stop(signal.SIGKILL)
                # Its tasks died with it; the new process reports them and the
                # hub retries them (the chaos DAG has retries=2).
                workers[i] = Worker(hub, old.home, "default", old.name, concurrency=4)
                what = f"worker {old.name} killed and restarted"
            say(f"kill {number}/{len(targets)}: after {started} bodies; {what}")
        for run_id in run_ids:
            hub.api.wait_run(DAG_ID, run_id, timeout=timeout)
        return check(hub.api, run_ids, out)
    finally:
        for worker in workers:
            worker.stop()
        hub.stop()
