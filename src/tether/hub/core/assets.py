"""Data-aware scheduling: asset events, and the runs they start.

A task's success records one event per asset in its ``outlets``; so does a
``POST /api/v1/assets/events``. For every active, unpaused DAG scheduled on
such an asset, the asset gets a row in ``asset_dag_run_queue``. Once every
asset of a DAG's schedule has a row, the DAG gets a run (``asset_triggered``)
and its rows are deleted, in the transaction that recorded the event, so
the run starts with no scheduler tick in between.

Concurrency: a DAG's queue rows are read and written only while its ``dag``
row is locked (``FOR UPDATE`` on PostgreSQL; SQLite serialises every write
transaction). So two tasks that emit the two assets of one DAG at the same
moment make exactly one run: the second to take the lock sees the first's
row. Callers take these locks after their own (``attempts.finish`` holds
its run, task instance and attempt), and the DAG rows are locked together,
in ``dag_id`` order, before any event is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import runs
from tether.hub.core.timetable import asset_uris
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import (
    Asset,
    AssetDagRunQueue,
    AssetEvent,
    Dag,
    DagRun,
    DagScheduleAsset,
    TaskInstance,
)

log = logging.getLogger("tether.hub.scheduler")

#: The run type of a run started by asset events.
ASSET_TRIGGERED = "asset_triggered"
#: Most events per asset a run's ``triggering_asset_events`` lists (the newest ones).
MAX_TRIGGERING_EVENTS = 100


@dataclass
class Recorded:
    """What recording asset events did: the events and the runs they started."""

    events: list[AssetEvent] = field(default_factory=list)
    runs: list[DagRun] = field(default_factory=list)


def event_dict(event: AssetEvent, uri: str) -> dict[str, Any]:
    """An event as the REST API and a run's ``triggering_asset_events`` show it."""
    return {
        "id": event.id,
        "uri": uri,
        "extra": event.extra,
        "source_dag_id": event.source_dag_id,
        "source_run_id": event.source_run_id,
        "source_task_id": event.source_task_id,
        "timestamp": event.created_at.isoformat(),
    }


def register(session: Session, specs: Sequence[dict[str, Any]], now: datetime) -> None:
    """Record the assets that parsed DAGs name, and which DAG is scheduled on which asset.

    Called by the dag processor in its transaction, after the DAG rows are
    written (and so locked). A DAG that dropped an asset from its schedule
    loses that asset's queue row. Asset rows are never deleted.
    """
    described: dict[str, dict[str, Any]] = {}
    # A DAG that only names the URI does not undo another's name and extra;
    # between two descriptions the first DAG by id wins.
    for spec in sorted(specs, key=lambda s: str(s["dag_id"])):
        items = [*spec.get("assets", []), *({"uri": u} for u in asset_uris(spec))]
        for item in items:
            item = {"name": item["uri"], "extra": {}, **item}
            known = described.get(item["uri"])
            if known is None or (_bare(known) and not _bare(item)):
                described[item["uri"]] = item
    rows = {a.uri: a for a in session.scalars(select(Asset).where(Asset.uri.in_(described)))}
    for uri in sorted(described):
        item = described[uri]
        row = rows.get(uri)
        if row is None:
            row = rows[uri] = Asset(uri=uri, created_at=now)
            session.add(row)
        elif _bare(item):
            continue  # files are stored one by one: a bare mention keeps another's description
        if row.name != item["name"]:
            row.name = item["name"]
        if row.extra != item["extra"]:
            row.extra = item["extra"]
    session.flush()
    refs: dict[str, set[int]] = {}
    for ref in session.scalars(select(DagScheduleAsset)):
        refs.setdefault(ref.dag_id, set()).add(ref.asset_id)
    for spec in specs:
        dag_id = spec["dag_id"]
        want = {rows[uri].id for uri in asset_uris(spec)}
        have = refs.get(dag_id, set())
        for asset_id in sorted(want - have):
            session.add(DagScheduleAsset(dag_id=dag_id, asset_id=asset_id))
        dropped = have - want
        if dropped:
            for ref in session.scalars(
                select(DagScheduleAsset).where(
                    DagScheduleAsset.dag_id == dag_id, DagScheduleAsset.asset_id.in_(dropped)
                )
            ):
                session.delete(ref)
            for queued in session.scalars(
                select(AssetDagRunQueue).where(
                    AssetDagRunQueue.target_dag_id == dag_id,
                    AssetDagRunQueue.asset_id.in_(dropped),
                )
            ):
                session.delete(queued)


def _bare(item: dict[str, Any]) -> bool:
    return bool(item["name"] == item["uri"] and not item["extra"])


def record_events(
    session: Session,
    asset_ids: Iterable[int],
    *,
    extra: dict[str, Any] | None = None,
    source: TaskInstance | None = None,
) -> Recorded:
    """Record one event for each asset, queue it for its consumers, start the runs now due.

    ``source`` is the task instance that produced the events (None for an
    event posted to the API); its own DAG's row is locked with the
    consumers', in one ``dag_id`` order, since finishing its run locks it too.
    """
    ids = sorted(set(asset_ids))
    recorded = Recorded()
    if not ids:
        return recorded
    consumer_ids = set(
        session.scalars(select(DagScheduleAsset.dag_id).where(DagScheduleAsset.asset_id.in_(ids)))
    )
    to_lock = consumer_ids | ({source.dag_id} if source else set())
    locked = session.scalars(
        lock_row(select(Dag).where(Dag.dag_id.in_(to_lock)).order_by(Dag.dag_id), session)
    ).all()
    consumers = [d for d in locked if d.dag_id in consumer_ids and d.is_active and not d.is_paused]
    # Taken after the locks: events of one DAG's assets get ids in lock order.
    now = runs.utcnow()
    for asset_id in ids:
        event = AssetEvent(
            asset_id=asset_id,
            extra=dict(extra or {}),
            source_dag_id=source.dag_id if source else None,
            source_run_id=source.run_id if source else None,
            source_task_id=source.task_id if source else None,
            created_at=now,
        )
        session.add(event)
        recorded.events.append(event)
    session.flush()
    for dag in consumers:
        scheduled = _scheduled(session, dag.dag_id)
        for event in recorded.events:
            key = (event.asset_id, dag.dag_id)
            if event.asset_id in scheduled and session.get(AssetDagRunQueue, key) is None:
                session.add(
                    AssetDagRunQueue(
                        asset_id=event.asset_id,
                        target_dag_id=dag.dag_id,
                        first_event_id=event.id,
                        created_at=now,
                    )
                )
        session.flush()
        _run_if_ready(session, dag, scheduled, now, recorded)
    return recorded


def record_task_events(session: Session, run: DagRun, ti: TaskInstance) -> Recorded:
    """Events for the outlets of a task instance that just succeeded (in ``finish``).

    The outlets are those of the DAG version the run is pinned to.
    """
    spec: dict[str, Any] = next(
        (t for t in run.serialized["tasks"] if t["task_id"] == ti.task_id), {}
    )
    uris: list[str] = spec.get("outlets") or []
    if not uris:
        return Recorded()
    known = dict(session.execute(select(Asset.uri, Asset.id).where(Asset.uri.in_(uris))).all())
    for uri in uris:
        if uri not in known:  # the dag processor registers every asset it parses
            log.warning("task %s.%s names unknown asset %s", ti.dag_id, ti.task_id, uri)
    return record_events(session, known.values(), source=ti)


def create_ready_runs(session: Session) -> Recorded:
    """Runs for the active, unpaused DAGs whose every scheduled asset is queued.

    ``record_events`` starts these runs itself; this is the scheduler's safety
    net for a DAG made ready otherwise, e.g. a schedule that lost the one
    asset it still waited for.
    """
    recorded = Recorded()
    waiting = set(session.scalars(select(AssetDagRunQueue.target_dag_id).distinct()))
    ready = [
        dag_id
        for dag_id in sorted(waiting)
        if _ready(_scheduled(session, dag_id), _queued(session, dag_id))
    ]
    if not ready:
        return recorded
    dags = session.scalars(
        lock_row(
            select(Dag)
            .where(Dag.dag_id.in_(ready), Dag.is_active.is_(True), Dag.is_paused.is_(False))
            .order_by(Dag.dag_id),
            session,
        )
    ).all()
    now = runs.utcnow()
    for dag in dags:
        _run_if_ready(session, dag, _scheduled(session, dag.dag_id), now, recorded)
    return recorded


def _scheduled(session: Session, dag_id: str) -> set[int]:
    return set(
        session.scalars(select(DagScheduleAsset.asset_id).where(DagScheduleAsset.dag_id == dag_id))
    )


def _queued(session: Session, dag_id: str) -> dict[int, AssetDagRunQueue]:
    return {
        q.asset_id: q
        for q in session.scalars(
            select(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)
        )
    }


def _ready(scheduled: set[int], queued: dict[int, AssetDagRunQueue]) -> bool:
    return bool(scheduled) and scheduled <= queued.keys()


def _run_if_ready(
    session: Session, dag: Dag, scheduled: set[int], now: datetime, recorded: Recorded
) -> None:
    """With ``dag`` locked: if every scheduled asset is queued, start a run and clear the queue."""
    queued = _queued(session, dag.dag_id)
    if not _ready(scheduled, queued):
        return
    events = _triggering_events(session, dag, queued)
    # As Airflow 2 did: the data interval spans the triggering events.
    stamps = [datetime.fromisoformat(e["timestamp"]) for es in events.values() for e in es]
    run = runs.create_run(
        session,
        dag,
        run_type=ASSET_TRIGGERED,
        conf={"triggering_asset_events": events},
        logical_date=now,
        data_interval=(min(stamps), max(stamps)),
    )
    for row in queued.values():
        session.delete(row)
    session.flush()
    recorded.runs.append(run)


def _triggering_events(
    session: Session, dag: Dag, queued: dict[int, AssetDagRunQueue]
) -> dict[str, list[dict[str, Any]]]:
    """Per asset URI (in schedule order), its events since the DAG's last run, oldest first."""
    uris = dict(session.execute(select(Asset.id, Asset.uri).where(Asset.id.in_(queued))).all())
    order = {uri: i for i, uri in enumerate(asset_uris(dag.serialized))}
    out: dict[str, list[dict[str, Any]]] = {}
    for asset_id in sorted(queued, key=lambda a: (order.get(uris[a], len(order)), uris[a])):
        newest = session.scalars(
            select(AssetEvent)
            .where(
                AssetEvent.asset_id == asset_id,
                AssetEvent.id >= queued[asset_id].first_event_id,
            )
            .order_by(AssetEvent.id.desc())
            .limit(MAX_TRIGGERING_EVENTS)
        ).all()
        out[uris[asset_id]] = [event_dict(e, uris[asset_id]) for e in reversed(newest)]
    return out
