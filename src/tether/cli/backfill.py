"""``tether dags backfill DAG --start DATE --end DATE``: runs for past intervals, with progress."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tether.cli.rest import Api, out

FINISHED = ("success", "failed")
BAR_WIDTH = 30


def _progress(states: Counter[str], total: int) -> str:
    done = states["success"] + states["failed"]
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"[{bar}] {done}/{total} runs done ({states['success']} succeeded, "
        f"{states['failed']} failed), {states['running']} running, {states['queued']} queued"
    )


def dags_backfill(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    made = api.post(f"/dags/{args.dag_id}/backfills", {"start": args.start, "end": args.end})
    run_ids: list[str] = made["run_ids"]
    notes = []
    if made["existing"]:
        notes.append(f"{len(made['existing'])} interval(s) already had a run")
    if made["future"]:
        notes.append(f"{made['future']} interval(s) have not ended yet")
    extra = f" ({'; '.join(notes)})" if notes else ""
    out(f"backfill of {args.dag_id}: {len(run_ids)} run(s) created{extra}")
    if not run_ids or args.no_wait:
        return 0
    wanted = set(run_ids)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    tty = sys.stdout.isatty()
    last = ""
    while True:
        listed = api.get(
            f"/dags/{args.dag_id}/runs",
            params={"run_type": "backfill", "limit": 1000},
        )["dag_runs"]
        states = Counter(r["state"] for r in listed if r["run_id"] in wanted)
        line = _progress(states, len(wanted))
        if tty:
            sys.stdout.write("\r" + line)
            sys.stdout.flush()
        elif line != last:
            out(line)
        last = line
        if states["success"] + states["failed"] >= len(wanted):
            break
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                sys.stdout.write("\n")
            out(f"backfill still running after {args.timeout:g}s")
            return 2
        time.sleep(args.interval)
    if tty:
        sys.stdout.write("\n")
    failed = [r["run_id"] for r in listed if r["run_id"] in wanted and r["state"] == "failed"]
    for run_id in sorted(failed):
        out(f"  failed: {run_id}")
    return 1 if failed else 0
