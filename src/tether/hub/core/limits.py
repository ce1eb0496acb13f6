"""Concurrency limits: hub-wide parallelism, per-DAG max_active_tasks, pools.

A task instance counts against the limits while it is ``running`` (claimed by
a worker). Claims check the limits in the same transaction that takes the
work, and claims are serialised (see :func:`dialect.serialise_claims`), so
two workers claiming at once cannot both take the last free slot.

Pools live in the ``pool`` table. A task names one (``default_pool`` unless
set) and takes ``pool_slots`` of it. A pool with -1 slots is unlimited; a
task naming a pool that does not exist waits until the pool is created.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tether.hub.core import states as S
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import Dag, Pool, TaskInstance

DEFAULT_POOL = "default_pool"
UNLIMITED = -1


class PoolError(ValueError):
    """A pool change that cannot be made (bad slots, deleting default_pool)."""


@dataclass
class Usage:
    """What the running task instances take now, and what is left."""

    running: int = 0
    by_dag: Counter[str] = field(default_factory=Counter)
    pool_slots: Counter[str] = field(default_factory=Counter)
    #: Remaining room; absent keys are unlimited.
    dag_room: dict[str, int] = field(default_factory=dict)
    pool_room: dict[str, int] = field(default_factory=dict)
    parallelism_room: int | None = None
    _loaded: set[str] = field(default_factory=set)

    def admits(self, dag_id: str, pool: str, slots: int) -> bool:
        if self.parallelism_room is not None and self.parallelism_room < 1:
            return False
        if pool not in self.pool_room:
            return False  # no such pool: wait until it is created
        pool_left = self.pool_room[pool]
        if pool_left != UNLIMITED and pool_left < slots:
            return False
        return self.dag_room.get(dag_id, 1) >= 1

    def take(self, dag_id: str, pool: str, slots: int) -> None:
        if self.parallelism_room is not None:
            self.parallelism_room -= 1
        if self.pool_room[pool] != UNLIMITED:
            self.pool_room[pool] -= slots
        if dag_id in self.dag_room:
            self.dag_room[dag_id] -= 1

    def add_dags(self, session: Session, dag_ids: set[str]) -> None:
        """Load the ``max_active_tasks`` room of ``dag_ids`` not known yet."""
        wanted = dag_ids - set(self.dag_room) - self._loaded
        if not wanted:
            return
        self._loaded |= wanted
        for dag_id, limit in session.execute(
            select(Dag.dag_id, Dag.max_active_tasks).where(Dag.dag_id.in_(wanted))
        ):
            if limit > 0:
                self.dag_room[dag_id] = limit - self.by_dag[dag_id]

    @property
    def full_dags(self) -> list[str]:
        return [d for d, room in self.dag_room.items() if room < 1]

    @property
    def open_pools(self) -> list[str]:
        return [p for p, room in self.pool_room.items() if room == UNLIMITED or room > 0]


def usage(session: Session, parallelism: int) -> Usage:
    """The limits as they stand, for the DAGs running now (see :meth:`Usage.add_dags`)."""
    u = Usage()
    rows = session.execute(
        select(
            TaskInstance.dag_id,
            TaskInstance.pool,
            func.count(),
            func.coalesce(func.sum(TaskInstance.pool_slots), 0),
        )
        .where(TaskInstance.state == S.RUNNING)
        .group_by(TaskInstance.dag_id, TaskInstance.pool)
    )
    for dag_id, pool, count, slots in rows:
        u.running += count
        u.by_dag[dag_id] += count
        u.pool_slots[pool] += int(slots)
    if parallelism > 0:
        u.parallelism_room = parallelism - u.running
    for name, slots in session.execute(select(Pool.name, Pool.slots)):
        u.pool_room[name] = UNLIMITED if slots < 0 else slots - u.pool_slots[name]
    u.add_dags(session, set(u.by_dag))
    return u


def list_pools(session: Session) -> list[dict[str, Any]]:
    """Every pool with its use, plus pools that tasks name but nobody created."""
    use: dict[str, dict[str, int]] = {}
    for pool, state, count, slots in session.execute(
        select(
            TaskInstance.pool,
            TaskInstance.state,
            func.count(),
            func.coalesce(func.sum(TaskInstance.pool_slots), 0),
        )
        .where(TaskInstance.state.in_((S.RUNNING, S.QUEUED)))
        .group_by(TaskInstance.pool, TaskInstance.state)
    ):
        entry = use.setdefault(pool, {"running": 0, "queued": 0, "occupied_slots": 0})
        entry[str(state)] = count
        if state == S.RUNNING:
            entry["occupied_slots"] = int(slots)
    out = []
    pools = {p.name: p for p in session.scalars(select(Pool).order_by(Pool.name))}
    for name in sorted(set(pools) | set(use)):
        row = pools.get(name)
        entry = use.get(name, {"running": 0, "queued": 0, "occupied_slots": 0})
        out.append(
            {
                "name": name,
                "slots": row.slots if row else None,
                "description": row.description if row else None,
                "missing": row is None,
                **entry,
            }
        )
    return out


def set_pool(session: Session, name: str, slots: int, description: str | None) -> Pool:
    """Create a pool or change its slots (-1 for unlimited)."""
    if slots < UNLIMITED:
        raise PoolError("slots must be -1 (unlimited) or a number >= 0")
    pool = session.scalar(lock_row(select(Pool).where(Pool.name == name), session))
    if pool is None:
        pool = Pool(name=name, slots=slots, description=description)
        session.add(pool)
    else:
        pool.slots = slots
        if description is not None:
            pool.description = description
    return pool


def delete_pool(session: Session, name: str) -> bool:
    """Delete a pool; False if there was none. Its waiting tasks wait until it is back."""
    if name == DEFAULT_POOL:
        raise PoolError("default_pool cannot be deleted; set its slots instead")
    pool = session.get(Pool, name)
    if pool is None:
        return False
    session.delete(pool)
    return True
