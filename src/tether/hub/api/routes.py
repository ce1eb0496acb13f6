"""The public REST API (``/api/v1``). Each route: schema, store function, answer.

``trigger_run`` is the example to copy when adding an endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tether import __version__
from tether.hub.api import queries
from tether.hub.auth.deps import AdminAuth, HubDep
from tether.hub.scheduler.runs import RunExists
from tether.hub.state import Hub

router = APIRouter(prefix="/api/v1", tags=["api"])
T = TypeVar("T")


async def _in_session(hub: Hub, fn: Callable[[Session], T]) -> T:
    """Run ``fn`` in one transaction off the event loop; NotFound becomes 404."""

    def work() -> T:
        with hub.store.session() as s:
            return fn(s)

    try:
        return await run_in_threadpool(work)
    except queries.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


class TriggerIn(BaseModel):
    conf: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None, min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_.:+-]+$"
    )


@router.get("/health")
async def health(hub: HubDep) -> dict[str, Any]:
    return {"status": "ok", "version": __version__, "database": hub.store.dialect}


@router.get("/dags", dependencies=[AdminAuth])
async def list_dags(hub: HubDep) -> dict[str, Any]:
    return {"dags": await _in_session(hub, queries.list_dags)}


@router.get("/dags/{dag_id}", dependencies=[AdminAuth])
async def get_dag(dag_id: str, hub: HubDep) -> dict[str, Any]:
    def detail(s: Session) -> dict[str, Any]:
        dag = queries.get_dag(s, dag_id)
        return {**queries.dag_summary(dag), "tasks": dag.serialized["tasks"]}

    return await _in_session(hub, detail)


@router.post("/dags/{dag_id}/runs", dependencies=[AdminAuth])
async def trigger_run(dag_id: str, body: TriggerIn, hub: HubDep) -> dict[str, str]:
    try:
        run_id, woken = await _in_session(
            hub, lambda s: queries.trigger(s, dag_id, body.conf, body.run_id)
        )
    except RunExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    hub.wakeups.notify(woken)
    return {"run_id": run_id}


@router.get("/dags/{dag_id}/runs/{run_id}", dependencies=[AdminAuth])
async def get_run(dag_id: str, run_id: str, hub: HubDep) -> dict[str, Any]:
    return await _in_session(hub, lambda s: queries.run_detail(s, dag_id, run_id))


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs", dependencies=[AdminAuth])
async def task_log(
    dag_id: str,
    run_id: str,
    task_id: str,
    hub: HubDep,
    try_number: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    data = await _in_session(
        hub, lambda s: queries.task_log(s, dag_id, run_id, task_id, try_number)
    )
    return Response(data, media_type="text/plain; charset=utf-8")


@router.get("/workers", dependencies=[AdminAuth])
async def list_workers(hub: HubDep) -> dict[str, Any]:
    return {"workers": await _in_session(hub, queries.list_workers)}


@router.get("/queues", dependencies=[AdminAuth])
async def list_queues(hub: HubDep) -> dict[str, Any]:
    return {"queues": await _in_session(hub, queries.list_queues)}


@router.get("/import-errors", dependencies=[AdminAuth])
async def import_errors(hub: HubDep) -> dict[str, Any]:
    return {"import_errors": await _in_session(hub, queries.list_import_errors)}
