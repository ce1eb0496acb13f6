"""The JSON form of a DAG that the hub stores and schedules from."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tether.sdk.assets import Asset
from tether.sdk.dag import DAG
from tether.sdk.mapping import serialize_expand


def _schedule(value: str | timedelta | list[Asset] | None) -> str | float | dict[str, Any] | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return {"assets": [a.uri for a in value]}
    return value


def _assets(dag: DAG) -> list[dict[str, Any]]:
    """Every asset the DAG names (schedule and outlets), once, for the hub's asset list."""
    found: dict[str, Asset] = {}
    if isinstance(dag.schedule, list):
        found.update((a.uri, a) for a in dag.schedule)
    for task in dag.task_dict.values():
        for asset in task.outlets:
            found.setdefault(asset.uri, asset)
    return [found[uri].to_dict() for uri in sorted(found)]


def serialize_dag(dag: DAG) -> dict[str, Any]:
    """Everything the hub needs to schedule ``dag`` without importing it."""
    order = dag.topological_order()
    return {
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "description": dag.description,
        "doc_md": dag.doc_md,
        "schedule": _schedule(dag.schedule),
        "schedule_is_timedelta": isinstance(dag.schedule, timedelta),
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "end_date": dag.end_date.isoformat() if dag.end_date else None,
        "catchup": dag.catchup,
        "timezone": dag.timezone,
        "dagrun_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "has_on_success_callback": dag.on_success_callback is not None,
        "has_on_failure_callback": dag.on_failure_callback is not None,
        "tags": dag.tags,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        # name -> {"schema", "description", "default" (absent: required)}; the hub
        # validates defaults at parse time and a run's values when it is triggered.
        "params": dag.params.serialize(),
        "assets": _assets(dag),
        "include": dag.include,
        "tasks": [
            {
                "task_id": t.task_id,
                "operator": type(t).__name__.lstrip("_"),
                "owner": t.owner,
                "queue": t.queue,
                "retries": t.retries,
                "retry_delay": t.retry_delay,
                "retry_exponential_backoff": t.retry_exponential_backoff,
                "max_retry_delay": t.max_retry_delay,
                "execution_timeout": t.execution_timeout,
                "trigger_rule": t.trigger_rule,
                "pool": t.pool,
                "pool_slots": t.pool_slots,
                "priority_weight": t.priority_weight,
                "branch": t.is_branch,
                "mapped": serialize_expand(t.expand_input) if t.expand_input else None,
                "upstream": sorted(t.upstream_task_ids),
                "downstream": sorted(t.downstream_task_ids),
                "outlets": [a.uri for a in t.outlets],
                "connections": t.connections,
                "variables": t.variables,
            }
            for t in (dag.task_dict[i] for i in order)
        ],
    }
