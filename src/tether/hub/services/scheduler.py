"""The scheduler loop: scheduled runs and due retries.

Most progress happens without it: a finishing task frees its downstream,
and starts the asset-triggered runs its outlets make due, in the same
request (see ``core.attempts.finish``). This loop creates cron runs
and re-queues retries at their due time; it sleeps until the next such
deadline or until poked, with a periodic sweep as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select

from tether.hub.core import assets, runs
from tether.hub.core import states as S
from tether.hub.core.sessions import mark_lost_workers
from tether.hub.core.timetable import Timetable
from tether.hub.store.db import Store
from tether.hub.store.dialect import lock_row
from tether.hub.store.leadership import RETRY_INTERVAL, Lead
from tether.hub.store.models import Dag, DagRun
from tether.hub.store.outages import Backoff
from tether.hub.wakeups import Wakeups

log = logging.getLogger("tether.hub.scheduler")

#: Most runs one DAG gets per pass (a long catchup proceeds over several passes).
MAX_RUNS_PER_PASS = 50


def skip_missed_intervals(dag: Dag, timetable: Timetable, now: datetime) -> None:
    """Without catchup, move a stale next run to the latest complete interval.

    The stored next run falls behind while a DAG is paused (or the hub is
    down); catchup=False means only the latest interval runs when it is
    scheduled again, as in Airflow, which recomputes it on every parse.
    """
    if timetable.catchup or dag.next_dagrun is None:
        return
    later = timetable.next_interval(dag.next_dagrun, now, dag.last_parsed_at)
    if later is not None and later[1] <= now:  # a later interval is complete too
        dag.next_dagrun, dag.next_dagrun_create_after = later


def create_scheduled_runs(store: Store, now: datetime) -> None:
    with store.transaction() as s:
        due = s.scalars(
            lock_row(
                select(Dag)
                .where(
                    Dag.is_active.is_(True),
                    Dag.is_paused.is_(False),
                    Dag.next_dagrun_create_after <= now,
                )
                .order_by(Dag.dag_id),  # the lock order the dag processor's updates use
                s,
            )
        ).all()
        for dag in due:
            timetable = Timetable.from_serialized(dag.serialized)
            if timetable is not None:
                skip_missed_intervals(dag, timetable, now)
            for _ in range(MAX_RUNS_PER_PASS):
                start, end = dag.next_dagrun, dag.next_dagrun_create_after
                if timetable is None or start is None or end is None or end > now:
                    break
                try:
                    runs.create_run(
                        s,
                        dag,
                        run_type="scheduled",
                        logical_date=start,
                        data_interval=(start, end),
                    )
                except runs.RunExists:
                    pass
                interval = timetable.next_interval(start, now, dag.last_parsed_at)
                dag.next_dagrun, dag.next_dagrun_create_after = interval or (None, None)


def tick(store: Store, now: datetime, lost_timeout: timedelta | None = None) -> datetime | None:
    """One pass of the scheduler; returns the earliest time something becomes
    due (a run, a retry, a timeout), if anything will.

    Each step is its own transaction, and tells whom it concerns (the queues
    that got work, the workers that must kill a task) when it commits.
    """
    create_scheduled_runs(store, now)
    with store.transaction() as s:
        runs.time_out_runs(s, now)
    if lost_timeout is not None:
        with store.transaction() as s:
            mark_lost_workers(s, now, lost_timeout)
    with store.transaction() as s:
        runs.requeue_due_retries(s, now)
    with store.transaction() as s:
        waiting = s.scalars(
            select(DagRun.dag_id).where(DagRun.state == S.RUN_QUEUED).distinct()
        ).all()
    for dag_id in waiting:  # normally started as earlier runs end; this is the safety net
        with store.transaction() as s:
            runs.start_queued_runs(s, dag_id)
    with store.transaction() as s:
        assets.create_ready_runs(s)
    with store.transaction() as s:
        deadlines = [
            runs.next_retry_time(s),
            runs.next_run_timeout(s),
            s.scalar(
                select(func.min(Dag.next_dagrun_create_after)).where(
                    Dag.is_active.is_(True), Dag.is_paused.is_(False)
                )
            ),
        ]
    upcoming = [d for d in deadlines if d is not None]
    return min(upcoming) if upcoming else None


class Scheduler:
    def __init__(
        self,
        store: Store,
        wakeups: Wakeups,
        sweep_interval: float,
        lost_timeout: float,
        on_pass: Callable[[float], None] | None = None,
        lead: Lead | None = None,
    ) -> None:
        self.store = store
        self.wakeups = wakeups
        self.sweep_interval = sweep_interval
        self.lost_timeout = timedelta(seconds=lost_timeout)
        self.started = runs.utcnow()
        #: Told the seconds each pass took, a failed one too (the hub's metrics).
        self.on_pass = on_pass
        #: Passes run only while this holds (several hubs on one PostgreSQL);
        #: None: always.
        self.lead = lead

    async def run(self) -> None:
        """Pass after pass until cancelled; a failed pass (the database is away, a
        bug) is followed by a growing wait, never by the loop's end."""
        backoff = Backoff(log)
        try:
            await self._passes(backoff)
        finally:  # the hub stops: a standby takes the lead at once
            if self.lead is not None:
                await asyncio.to_thread(self.lead.release)

    async def _passes(self, backoff: Backoff) -> None:
        swept = time.monotonic()
        while True:
            self.wakeups.scheduler.clear()
            if self.lead is not None and not await asyncio.to_thread(self.lead.hold):
                # A standby: another hub schedules. Its effects reach this hub's
                # polls (store/broadcast.py); the local safety net still runs.
                if time.monotonic() - swept >= self.sweep_interval:
                    swept = self._sweep()
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            now = runs.utcnow()
            # After a hub outage every worker has been silent: give them one
            # lost-timeout from the hub's start to reconnect before judging.
            judge = self.lost_timeout if now - self.started >= self.lost_timeout else None
            began = time.perf_counter()
            try:
                deadline = await asyncio.to_thread(tick, self.store, now, judge)
            except Exception as exc:
                self._timed(began)
                await asyncio.sleep(backoff.failed(exc, "scheduler pass"))
                continue
            self._timed(began)
            backoff.succeeded()
            swept = self._sweep()
            wait = self.sweep_interval
            if deadline is not None:
                wait = max(0.0, min(wait, (deadline - runs.utcnow()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wakeups.scheduler.wait()

    def _sweep(self) -> float:
        """The safety net of claims that limits held back; returns when it ran."""
        self.wakeups.notify(())
        return time.monotonic()

    def _timed(self, began: float) -> None:
        if self.on_pass is not None:
            self.on_pass(time.perf_counter() - began)
