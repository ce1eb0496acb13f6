"""A DAG's graph and code pages.

``/ui/dags/DAG/graph`` draws the DAG as an SVG picture laid out on the hub
(``core/dag_graph.py``), each task coloured by its state in a chosen run
(``?run_id=``; the newest by default). ``/ui/dags/DAG/code`` shows the files
of the bundle a run pinned (``?run_id=``; the DAG's current bundle without
one), one at a time (``?file=``; the DAG's own file by default), escaped and
with line numbers (``core/dag_code.py``). Both are read-only and open to
every role, as the REST API's DAG reads are.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session
from starlette.responses import Response

from tether.hub.core import dag_code, dag_graph
from tether.hub.ui.access import PageSession
from tether.hub.ui.paths import DagId
from tether.hub.ui.view import HubDep, show
from tether.protocol import MAX_ID_LENGTH, RUN_ID_PATTERN

router = APIRouter(prefix="/ui/dags/{dag_id}", include_in_schema=False)

#: A run picked in a form: a run id, or empty for none.
PickedRun = Annotated[str, Query(max_length=MAX_ID_LENGTH, pattern=f"^({RUN_ID_PATTERN})?$")]
#: A file of a bundle, matched against its names (never used as a path).
BundleFile = Annotated[str, Query(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]


@router.get("/graph", response_model=None)
async def graph(
    hub: HubDep, signed: PageSession, dag_id: DagId, run_id: PickedRun = ""
) -> Response:
    return await show(
        hub,
        signed,
        "graph.html",
        lambda s: dag_graph.graph(s, dag_id, run_id or None),
        section="dags",
    )


@router.get("/code", response_model=None)
async def code(
    hub: HubDep,
    signed: PageSession,
    dag_id: DagId,
    run_id: PickedRun = "",
    file: BundleFile = "",
) -> Response:
    def read(s: Session) -> dict[str, Any]:
        return {
            **dag_code.code(s, dag_id, run_id or None, file or None),
            "runs": dag_graph.recent_runs(s, dag_id),
        }

    return await show(hub, signed, "code.html", read, section="dags")
