"""Backfill: runs of a DAG for the data intervals between two dates.

``tether dags backfill DAG --start D1 --end D2`` creates one ``backfill`` run
per interval of the DAG's timetable whose logical date lies in
``[D1, D2]``, oldest first, whatever ``catchup`` says. Runs wait as
``queued`` and start under the DAG's ``max_active_runs``, oldest logical
date first (see runs.start_queued_runs). An interval that already has a
run (of any kind) is left alone, as is one that has not ended yet (the
scheduler will run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import runs
from tether.hub.core.timetable import Timetable, zone
from tether.hub.store.models import Dag, DagRun

#: Most runs one backfill may create.
MAX_BACKFILL_RUNS = 1000


class BackfillError(ValueError):
    """The backfill cannot be made (no time schedule, bad range, too many runs)."""


@dataclass
class Backfill:
    run_ids: list[str] = field(default_factory=list)
    #: Logical dates in the range that already had a run.
    existing: list[datetime] = field(default_factory=list)
    #: Intervals in the range that have not ended yet.
    future: int = 0


def local(value: datetime, dag: Dag) -> datetime:
    """``value`` as an aware datetime; a naive one is read in the DAG's time zone."""
    if value.tzinfo is None:
        return value.replace(tzinfo=zone(dag.serialized.get("timezone")))
    return value


@dataclass
class Plan:
    """What a backfill would do: the intervals it would create runs for, and
    those it leaves alone. :func:`create_backfill` makes exactly these runs."""

    #: (start, end) of each interval that would get a run, oldest first.
    create: list[tuple[datetime, datetime]] = field(default_factory=list)
    existing: list[datetime] = field(default_factory=list)
    future: int = 0


def run_id_for(interval_start: datetime) -> str:
    return f"backfill__{interval_start.isoformat()}"


def plan_backfill(
    session: Session, dag: Dag, start: datetime, end: datetime, now: datetime
) -> Plan:
    """The runs a backfill of ``dag`` over [start, end] would create, changing nothing
    (the console shows it before asking; :func:`create_backfill` follows it)."""
    start, end = local(start, dag), local(end, dag)
    if end < start:
        raise BackfillError(f"--end {end.isoformat()} is before --start {start.isoformat()}")
    timetable = Timetable.from_serialized(dag.serialized)
    if timetable is None or timetable.once:
        raise BackfillError(
            f"DAG {dag.dag_id!r} has no time schedule (cron, preset or timedelta) to backfill"
        )
    intervals = timetable.intervals_between(start, end, MAX_BACKFILL_RUNS + 1)
    if len(intervals) > MAX_BACKFILL_RUNS:
        raise BackfillError(
            f"the range holds more than {MAX_BACKFILL_RUNS} intervals; backfill it in parts"
        )
    plan = Plan()
    if not intervals:
        return plan
    taken = set(
        session.scalars(
            select(DagRun.logical_date).where(
                DagRun.dag_id == dag.dag_id,
                DagRun.logical_date >= intervals[0][0],
                DagRun.logical_date <= intervals[-1][0],
            )
        )
    )
    for interval_start, interval_end in intervals:
        if interval_end > now:
            plan.future += 1
        elif interval_start in taken:
            plan.existing.append(interval_start)
        else:
            plan.create.append((interval_start, interval_end))
    return plan


def create_backfill(
    session: Session, dag: Dag, start: datetime, end: datetime, now: datetime
) -> Backfill:
    plan = plan_backfill(session, dag, start, end, now)
    result = Backfill(existing=plan.existing, future=plan.future)
    for interval_start, interval_end in plan.create:
        run = runs.create_run(
            session,
            dag,
            run_type="backfill",
            run_id=run_id_for(interval_start),
            logical_date=interval_start,
            data_interval=(interval_start, interval_end),
        )
        result.run_ids.append(run.run_id)
    return result
