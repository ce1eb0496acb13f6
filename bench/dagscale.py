"""The dag processor and the scheduler of one real hub over a large DAGs folder.

Writes ``--files`` generated DAG files of ``--tasks`` tasks each into the DAGs
folder (a mix of Bash, Python and Empty operators in a tree of dependencies,
every fifth DAG on a schedule whose start is tomorrow, so none of them runs
here), starts ``tether hub`` in a temporary home (SQLite by default, or the
empty database ``--database-url`` names) and measures, through the REST API
and /metrics only:

- the time from the hub's start to its API answering, and to every DAG
  listed by ``GET /api/v1/dags``; the hub's CPU over it (its own, and that
  of the parse children it waited for: ``cutime + cstime`` in
  /proc/PID/stat, since the dag processor imports each file in a child of
  its own) and its RSS after it (and the peak while parsing);
- the time to notice a changed file (one more task in it, until the DAG's
  detail shows that task), ``--changes`` times, p50 and max; a new file
  (until its DAG is listed) and a deleted one (until its DAG is 404);
- the scheduler pass with every DAG loaded, from the hub's own
  ``tether_scheduler_pass_seconds`` histogram over an idle window of
  ``--idle`` seconds: passes, mean, and the bucket bounds of p50 and max;

then the scheduled correctness, in the same hub: ``--scheduled`` more DAGs on
a one-minute cron, ``catchup=True``, a ``start_date`` ``--intervals`` minutes
ago and an ``end_date`` that makes exactly that many intervals due, one
EmptyOperator each, run by one real worker. It reports when all their runs
existed and when all had succeeded (task instances counted from /metrics),
the scheduler pass meanwhile, and checks through the REST API that each DAG
has exactly the expected logical dates: none missing, none twice, none
extra.

Prints the figures and a final JSON line. Exits 1 if a DAG was not seen, a
change not noticed, or a run missed, duplicated or not successful.
Everything it starts is stopped on exit. Usage:
    python3 -m uv run python bench/dagscale.py [--files 1000] [--tasks 10] [--changes 5]
        [--idle 20] [--scheduled 100] [--intervals 60] [--concurrency 16]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/dagscale]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import PeakRss, cpu_seconds, rss_mb
from harness import Bench, pct, run_and_report

#: Seconds between two looks at one DAG while waiting for a change to show.
POLL = 0.2
#: Seconds between two looks at the whole list (or /metrics): a ``GET /dags``
#: of a thousand DAGs costs the hub tens of milliseconds, so looking at it
#: every POLL would take a good share of the CPU it measures.
POLL_LIST = 1.0


def dag_id(number: int) -> str:
    return f"scale_{number:05d}"


def dag_file(number: int, tasks: int, tomorrow: datetime, extra: str | None = None) -> str:
    """A DAG of ``tasks`` tasks (Bash, Python, Empty in turn), each downstream of
    the one at half its index: a tree, as wide as it is deep. Every fifth DAG is
    scheduled, from tomorrow; ``extra`` adds a task of that id at the end."""
    schedules = ['"@daily"', '"0 */6 * * *"', "timedelta(hours=1)"]
    schedule = schedules[number // 5 % 3] if number % 5 == 0 else "None"
    return textwrap.dedent(f"""
        from datetime import datetime, timedelta, timezone

        from tether import DAG, BashOperator, EmptyOperator, PythonOperator


        def transform(rows=3):
            return sum(range(rows))


        with DAG(
            {dag_id(number)!r},
            schedule={schedule},
            start_date=datetime({tomorrow:%Y, %-m, %-d}, tzinfo=timezone.utc),
            tags=["generated", "team-{number % 7}"],
            default_args={{"retries": 1, "retry_delay": timedelta(seconds=30)}},
        ):
            made = []
            for i in range({tasks}):
                if i % 3 == 0:
                    op = BashOperator(
                        task_id=f"extract_{{i}}", bash_command="echo {{{{ ds }}}} {number}"
                    )
                elif i % 3 == 1:
                    op = PythonOperator(
                        task_id=f"transform_{{i}}", python_callable=transform, op_args=[i]
                    )
                else:
                    op = EmptyOperator(task_id=f"join_{{i}}")
                if made:
                    made[(i - 1) // 2] >> op
                made.append(op)
        """) + (f"    made[-1] >> EmptyOperator(task_id={extra!r})\n" if extra else "")


def scheduled_id(number: int) -> str:
    return f"minutely_{number:04d}"


def scheduled_file(number: int, first: datetime, last: datetime) -> str:
    """A DAG on a one-minute cron whose due intervals are exactly those starting
    ``first`` to ``last`` (catchup=True; ``end_date`` stops it after ``last``)."""

    def literal(moment: datetime) -> str:
        return f"datetime({moment:%Y, %-m, %-d, %-H, %-M}, tzinfo=timezone.utc)"

    return textwrap.dedent(f"""
        from datetime import datetime, timezone

        from tether import DAG, EmptyOperator

        with DAG(
            {scheduled_id(number)!r},
            schedule="* * * * *",
            start_date={literal(first)},
            end_date={literal(last)},
            catchup=True,
        ):
            EmptyOperator(task_id="tick")
        """)


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = POLL) -> float:
    """Seconds until ``check()`` holds, looking every ``every`` seconds."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - began


def hub_cpu(pid: int) -> tuple[float, float]:
    """(the hub's own CPU seconds, its reaped children's): the parse children."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return cpu_seconds(pid), (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def listed(bench: Bench) -> set[str]:
    """The DAG ids ``GET /dags`` lists (it answers with all of them: no pages)."""
    answer = bench.api.get("/dags")
    answer.raise_for_status()
    return {d["dag_id"] for d in answer.json()["dags"]}


_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")


def metrics(bench: Bench) -> dict[tuple[str, str], float]:
    """The hub's /metrics as {(name, labels): value}."""
    answer = bench.api.get(bench.url + "/metrics")
    answer.raise_for_status()
    found = {}
    for line in answer.text.splitlines():
        matched = _SAMPLE.match(line)
        if matched:
            found[(matched[1], matched[2] or "")] = float(matched[3])
    return found


def passes(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, Any]:
    """The scheduler passes between two scrapes: how many, their mean, and the
    upper bounds of the histogram buckets their p50 and slowest fall in."""
    name = "tether_scheduler_pass_seconds"
    count = after[(f"{name}_count", "")] - before[(f"{name}_count", "")]
    total = after[(f"{name}_sum", "")] - before[(f"{name}_sum", "")]
    buckets = sorted(
        (float(labels.split('"')[1]), value - before.get((key, labels), 0.0))
        for (key, labels), value in after.items()
        if key == f"{name}_bucket"
    )

    def bound(rank: float) -> float | None:
        for upper, seen in buckets:
            if seen >= rank:
                return None if upper == float("inf") else round(upper * 1000, 1)
        return None

    return {
        "passes": int(count),
        "ms_mean": round(total / count * 1000, 1) if count else None,
        "ms_p50_le": bound(count / 2) if count else None,
        "ms_max_le": bound(count) if count else None,
    }


def task_states(bench: Bench) -> Counter[str]:
    """Task instances by state, from /metrics (one GROUP BY on the hub)."""
    return Counter(
        {
            labels.split('"')[1]: int(value)
            for (key, labels), value in metrics(bench).items()
            if key == "tether_task_instances" and value
        }
    )


def load(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Start the hub over the full folder: until every DAG is listed."""
    expected = {dag_id(n) for n in range(args.files)}
    began = time.monotonic()
    bench.start_hub()
    api_up = time.monotonic() - began
    hub = bench.processes[0].pid
    rss = PeakRss(hub)
    rss.start()
    seen = wait_for(
        "every DAG listed", lambda: expected <= listed(bench), 120 + args.files, POLL_LIST
    )
    all_listed = api_up + seen
    own, children = hub_cpu(hub)
    peak = rss.stop()
    errors = bench.api.get("/import-errors").json()
    answers = []
    for _ in range(5):
        asked = time.monotonic()
        listed(bench)
        answers.append(time.monotonic() - asked)
    return {
        "api_up_s": round(api_up, 2),
        "all_listed_s": round(all_listed, 2),
        "files_per_s": round(args.files / all_listed, 1),
        "dags_listed": len(expected & listed(bench)),
        "import_errors": len(errors.get("import_errors", [])),
        "load_hub_cpu_s": round(own, 2),
        "load_children_cpu_s": round(children, 2),
        "load_cpu_core_share": round((own + children) / all_listed, 3),
        "load_rss_mb_peak": round(peak, 1),
        "rss_mb_after_load": round(rss_mb(hub), 1),
        "list_dags_ms_p50": round(pct(answers, 50) * 1000, 1),
    }


def notice(bench: Bench, args: argparse.Namespace, tomorrow: datetime) -> dict[str, Any]:
    """A changed, a new and a deleted file: until the API shows each."""
    changed = []
    for k in range(args.changes):
        number = (k * 7919 + 1) % args.files
        extra = f"added_{k}"
        (bench.dags / f"{dag_id(number)}.py").write_text(
            dag_file(number, args.tasks, tomorrow, extra)
        )

        def shows(number: int = number, extra: str = extra) -> bool:
            tasks = bench.api.get(f"/dags/{dag_id(number)}").json()["tasks"]
            return any(t["task_id"] == extra for t in tasks)

        changed.append(wait_for(f"{extra} in {dag_id(number)}", shows, 120))
    new = args.files
    (bench.dags / f"{dag_id(new)}.py").write_text(dag_file(new, args.tasks, tomorrow))
    new_s = wait_for(
        "the new DAG", lambda: bench.api.get(f"/dags/{dag_id(new)}").status_code == 200, 120
    )
    gone = args.files // 2 + 1
    (bench.dags / f"{dag_id(gone)}.py").unlink()
    deleted_s = wait_for(
        "the deleted DAG gone",
        lambda: bench.api.get(f"/dags/{dag_id(gone)}").status_code == 404,
        120,
    )
    return {
        "changes": len(changed),
        "changed_s_p50": round(pct(changed, 50), 2),
        "changed_s_max": round(max(changed), 2),
        "new_file_s": round(new_s, 2),
        "deleted_file_s": round(deleted_s, 2),
        "dags_listed_after_changes": len(listed(bench)),
    }


def idle(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The scheduler's passes over an idle window, every DAG loaded."""
    hub = bench.processes[0].pid
    before, cpu_before = metrics(bench), sum(hub_cpu(hub))
    time.sleep(args.idle)
    after, cpu_after = metrics(bench), sum(hub_cpu(hub))
    found = passes(before, after)
    return {
        "idle_window_s": args.idle,
        "idle_scheduler_passes": found["passes"],
        "idle_scheduler_pass_ms_mean": found["ms_mean"],
        "idle_scheduler_pass_ms_p50_le": found["ms_p50_le"],
        "idle_scheduler_pass_ms_max_le": found["ms_max_le"],
        "idle_hub_cpu_core_share": round((cpu_after - cpu_before) / args.idle, 3),
        "rss_mb_idle": round(rss_mb(hub), 1),
    }


def scheduled(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """S DAGs with N minutely intervals due at once: every run created once, run."""
    bench.start_worker("dagscale", concurrency=args.concurrency)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    first, last = minute - timedelta(minutes=args.intervals), minute - timedelta(minutes=1)
    expected_dates = {first + timedelta(minutes=i) for i in range(args.intervals)}
    total = args.scheduled * args.intervals
    hub = bench.processes[0].pid
    before, cpu_before = metrics(bench), sum(hub_cpu(hub))
    began = time.monotonic()
    for n in range(args.scheduled):
        (bench.dags / f"{scheduled_id(n)}.py").write_text(scheduled_file(n, first, last))
    ids = {scheduled_id(n) for n in range(args.scheduled)}
    timeout = 120 + total / 5
    visible = wait_for(
        "the scheduled DAGs listed", lambda: ids <= listed(bench), timeout, POLL_LIST
    )
    created = visible + wait_for(
        "every scheduled run created",
        lambda: task_states(bench).total() >= total,
        timeout,
        POLL_LIST,
    )

    def ended() -> bool:
        states = task_states(bench)
        return states["success"] + states["failed"] >= total

    finished = created + wait_for("every scheduled run done", ended, timeout, POLL_LIST)
    after, cpu_after = metrics(bench), sum(hub_cpu(hub))
    found = passes(before, after)

    missing = duplicated = extra = unsuccessful = 0
    for dag in sorted(ids):
        runs = bench.api.get(f"/dags/{dag}/runs", params={"limit": 1000}).json()["dag_runs"]
        dates = Counter(datetime.fromisoformat(r["logical_date"]) for r in runs)
        missing += len(expected_dates - set(dates))
        duplicated += sum(n - 1 for n in dates.values() if n > 1)
        extra += sum(n for d, n in dates.items() if d not in expected_dates)
        unsuccessful += sum(r["state"] != "success" for r in runs)
    return {
        "scheduled_dags": args.scheduled,
        "intervals": args.intervals,
        "runs_expected": total,
        "scheduled_listed_s": round(visible, 2),
        "runs_created_s": round(created, 2),
        "runs_finished_s": round(finished, 2),
        "runs_per_s": round(total / (finished - visible), 1),
        "runs_missing": missing,
        "runs_duplicated": duplicated,
        "runs_extra": extra,
        "runs_unsuccessful": unsuccessful,
        "catchup_scheduler_passes": found["passes"],
        "catchup_scheduler_pass_ms_mean": found["ms_mean"],
        "catchup_scheduler_pass_ms_p50_le": found["ms_p50_le"],
        "catchup_scheduler_pass_ms_max_le": found["ms_max_le"],
        "catchup_hub_cpu_core_share": round(
            (cpu_after - cpu_before) / (time.monotonic() - began), 3
        ),
        "rss_mb_end": round(rss_mb(hub), 1),
        "elapsed_s": round(time.monotonic() - began, 1),
    }


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    for n in range(args.files):
        (bench.dags / f"{dag_id(n)}.py").write_text(dag_file(n, args.tasks, tomorrow))
    figures: dict[str, Any] = {
        "store": bench.store,
        "files": args.files,
        "tasks": args.tasks,
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    figures |= load(bench, args)
    figures |= notice(bench, args, tomorrow)
    figures |= idle(bench, args)
    figures["load_before_scheduled"] = [round(x, 2) for x in os.getloadavg()]
    figures |= scheduled(bench, args)
    figures["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def failed(figures: dict[str, Any]) -> bool:
    return bool(
        figures["dags_listed"] < figures["files"]
        or figures["import_errors"]
        or figures["dags_listed_after_changes"] < figures["files"]
        or figures["runs_missing"]
        or figures["runs_duplicated"]
        or figures["runs_extra"]
        or figures["runs_unsuccessful"]
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000, help="generated DAG files")
    parser.add_argument("--tasks", type=int, default=10, help="tasks in each")
    parser.add_argument("--changes", type=int, default=5, help="files changed one at a time")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--scheduled", type=int, default=100, help="DAGs on a minutely cron")
    parser.add_argument("--intervals", type=int, default=60, help="minutes of catchup each")
    parser.add_argument("--concurrency", type=int, default=16, help="slots of the worker")
    parser.add_argument(
        "--scan-interval", type=float, default=2.0, help="TETHER_DAG_SCAN_INTERVAL (hub default)"
    )
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: SQLite in a temp dir)"
    )
    args = parser.parse_args()
    if args.files < 2 or args.tasks < 1 or args.changes < 1:
        parser.error("--files must be at least 2, --tasks and --changes at least 1")
    if args.scheduled < 1 or args.intervals < 1 or args.idle <= 0:
        parser.error("--scheduled and --intervals must be at least 1, --idle positive")
    return args


def main() -> int:
    args = parse()
    # SIGTERM ends the bench as Ctrl-C does: through the Bench's exit, which stops
    # what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    env = {"TETHER_DAG_SCAN_INTERVAL": str(args.scan_interval)}
    if args.database_url:
        env["TETHER_DATABASE_URL"] = args.database_url
    return run_and_report("dagscale", env, lambda bench: measure(bench, args), failed, width=34)


if __name__ == "__main__":
    raise SystemExit(main())
