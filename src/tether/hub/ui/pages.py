"""The web console's read-only pages: DAGs, a DAG's grid, a task instance, workers
(and each one's own log), queues and import errors.

Each route is thin: a read function of ``core/console_reads.py`` (or
``core/queries.py``) in a read-only transaction (``state.in_read``), then a
template (``ui/templates/``). A page asked for without a session goes to the
login page (``ui/access.py``); a missing DAG, run or task is a 404 page.
:func:`install` adds the console to the hub's app.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from tether.hub.core import console_reads, queries, worker_logs
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.hub.state import Hub, get_hub
from tether.hub.ui import access, actions, catalog, dag_pages, logs, view
from tether.hub.ui.access import HOME, PageSession
from tether.hub.ui.paths import DagId, RunId, TaskId
from tether.hub.ui.render import STATIC, ConsoleHeaders
from tether.protocol import MAX_WIRE_INT

__all__ = ["HOME", "install", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)
HubDep = Annotated[Hub, Depends(get_hub)]
WorkerName = Annotated[str, Path(pattern=f"^{WORKER_NAME_PATTERN}$")]
#: Lines of a worker's own log its page shows (the newest).
PAGE_LINES = 1000


@router.get("/dags", response_model=None)
async def dags(
    hub: HubDep,
    signed: PageSession,
    q: Annotated[str, Query(max_length=200)] = "",
    show: Annotated[str, Query(pattern=f"^({'|'.join(console_reads.SHOWS)})$")] = "all",
) -> Response:
    return await view.show(
        hub,
        signed,
        "dags.html",
        lambda s: console_reads.dag_list(s, q, show),
        section="dags",
        q=q,
        show=show,
        shows=console_reads.SHOWS,
    )


@router.get("/dags/{dag_id}/grid", response_model=None)
async def grid(hub: HubDep, signed: PageSession, dag_id: DagId) -> Response:
    return await view.show(
        hub, signed, "grid.html", lambda s: console_reads.grid(s, dag_id), section="dags"
    )


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}", response_model=None)
async def task_instance(
    hub: HubDep,
    signed: PageSession,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    map_index: Annotated[int | None, Query(ge=-1, le=MAX_WIRE_INT)] = None,
    try_number: Annotated[int | None, Query(ge=1, le=MAX_WIRE_INT)] = None,
) -> Response:
    return await view.show(
        hub,
        signed,
        "task.html",
        lambda s: console_reads.task_instance(s, dag_id, run_id, task_id, map_index, try_number),
        section="dags",
    )


@router.get("/workers", response_model=None)
async def workers(hub: HubDep, signed: PageSession) -> Response:
    return await view.show(hub, signed, "workers.html", console_reads.workers, section="workers")


@router.get("/workers/{name}/log", response_model=None)
async def worker_log(hub: HubDep, signed: PageSession, name: WorkerName) -> Response:
    """The worker's own log (``core/worker_logs.py``), its newest lines."""
    return await view.show(
        hub,
        signed,
        "worker_log.html",
        lambda s: worker_logs.read(s, name, PAGE_LINES, None),
        section="workers",
    )


@router.get("/queues", response_model=None)
async def queues(hub: HubDep, signed: PageSession) -> Response:
    return await view.show(hub, signed, "queues.html", console_reads.queues, section="queues")


@router.get("/import-errors", response_model=None)
async def import_errors(hub: HubDep, signed: PageSession) -> Response:
    return await view.show(
        hub, signed, "import_errors.html", queries.list_import_errors, section="import-errors"
    )


def install(app: FastAPI) -> None:
    """Add the console to ``app``: its routes, static files, the login redirect, and
    the security headers on everything under /ui."""
    app.include_router(access.router)
    app.include_router(router)
    app.include_router(dag_pages.router)
    app.include_router(catalog.router)
    app.include_router(logs.router)
    actions.install(app)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(access.SignInFirst, access.sign_in_first)
    app.add_middleware(ConsoleHeaders)
