"""Each worker's own log (not its tasks'): kept bounded, read per worker.

A worker ships the lines it writes to its stderr (``worker/own_log.py``)
over ``POST /api/worker/v1/worker-log``. The hub keeps the newest
``keep`` lines of each worker: every append deletes the older ones in the
same transaction, so a worker can never hold more than that, however long
it runs. :class:`Budget` holds a worker to ``per_minute`` lines (a burst of
as many): what is over it is refused with 429, and the worker sends it
again later or drops it, counted, so a chatty or hostile worker cannot
fill the database nor keep the write lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tether.hub.core.queries import NotFound
from tether.hub.store.models import Worker, WorkerLogLine

#: Lines returned by a read unless fewer are asked for, and at most.
DEFAULT_READ = 200
MAX_READ = 5000
#: Workers whose budget is remembered; past it the one heard from longest ago is forgotten.
BUDGETS = 10_000


class Budget:
    """Lines each worker may send: a token bucket of ``per_minute`` a worker."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        #: worker -> (lines left, when counted); least recently heard from first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def spend(self, worker: str, lines: int) -> float | None:
        """Take ``lines`` from ``worker``'s budget, or none of them and say in how
        many seconds it will have enough (None: taken)."""
        now = self._clock()
        left, at = self._buckets.get(worker, (self.capacity, now))
        left = min(self.capacity, left + (now - at) * self.rate)
        need = min(float(lines), self.capacity)  # a batch over the burst waits for a full one
        if left < need:
            self._buckets[worker] = (left, now)
            return (need - left) / self.rate
        self._buckets[worker] = (left - lines, now)
        self._buckets.move_to_end(worker)
        if len(self._buckets) > BUDGETS:
            self._buckets.popitem(last=False)
        return None


def dropped_note(count: int) -> str:
    return f"[tether] {count} line(s) of this worker's log were dropped on the worker"


def append(
    session: Session, worker: str, lines: list[str], dropped: int, now: datetime, keep: int
) -> int:
    """Store ``lines`` of ``worker`` (after a note of ``dropped`` lines, if any) and
    delete all but its newest ``keep``; the number stored."""
    shipped = ([dropped_note(dropped)] if dropped else []) + lines
    session.add_all(WorkerLogLine(worker=worker, received_at=now, line=line) for line in shipped)
    session.flush()
    oldest_kept = session.scalar(
        select(WorkerLogLine.id)
        .where(WorkerLogLine.worker == worker)
        .order_by(WorkerLogLine.id.desc())
        .offset(keep - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(
            delete(WorkerLogLine).where(
                WorkerLogLine.worker == worker, WorkerLogLine.id < oldest_kept
            )
        )
    return len(shipped)


def read(session: Session, name: str, lines: int, after: int | None) -> dict[str, Any]:
    """The newest ``lines`` lines of ``name``'s own log, oldest first, or those after
    the line ``after`` (a follower's last) up to ``lines``; NotFound for no such worker."""
    if session.get(Worker, name) is None:
        raise NotFound(f"no worker named {name}")
    query = select(WorkerLogLine).where(WorkerLogLine.worker == name)
    if after is None:
        rows = list(session.scalars(query.order_by(WorkerLogLine.id.desc()).limit(lines)))
        rows.reverse()
    else:
        query = query.where(WorkerLogLine.id > after).order_by(WorkerLogLine.id).limit(lines)
        rows = list(session.scalars(query))
    return {
        "name": name,
        "lines": [
            {"id": r.id, "received_at": r.received_at.isoformat(), "line": r.line} for r in rows
        ],
        "last_id": rows[-1].id if rows else after,
    }
