"""The web console's actions on DAGs: pause, trigger and backfill a DAG; clear and
mark task instances and runs. The workers' actions are in ``ui/worker_actions.py``,
the pieces both share in ``ui/confirming.py``.

Every action is two steps. A GET (or, for a form that is filled in first, a
POST that changes nothing) shows a confirmation page that says what would
change, computed by the code that makes the change (``core/control.py``'s
previews, ``backfill.plan_backfill``, ``params.problems``) in a read-only
transaction. Only the confirmation's POST changes anything: it checks the
role and the session's CSRF field, reads the form again as hostile input, and
calls the same store function as the REST route does, in one write
transaction (``state.in_session``), with the console user's token name as the
audit actor. Domain errors are answered by ``hub/errors.py``'s table, as a
page; a bad id or a wrong form gets a 4xx page with the reason.

Which role each action needs is ``ui/roles.py``'s table (the REST route's).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from tether.hub.core import backfill as backfills
from tether.hub.core import control, params, queries
from tether.hub.state import Hub, get_hub
from tether.hub.ui import forms, worker_actions
from tether.hub.ui.access import SignedIn
from tether.hub.ui.confirming import (
    PARAMS_FORM_BYTES,
    PARAMS_FORM_FIELDS,
    Backfilling,
    ClearingRun,
    ClearingTask,
    MarkingRun,
    MarkingTask,
    MarkState,
    Pausing,
    Refused,
    Triggering,
    actor,
    common,
    confirm,
    done,
    field,
    grid_url,
    in_store,
    install_refusals,
    posted_form,
    run_url,
    segment,
    task_url,
)
from tether.hub.ui.paths import DagId, RunId, TaskId
from tether.hub.ui.render import page
from tether.protocol import MAX_WIRE_INT

router = APIRouter(prefix="/ui", include_in_schema=False)
HubDep = Annotated[Hub, Depends(get_hub)]


# --- a DAG: pause, trigger, backfill ---------------------------------------------


def _pause_lines(dag: dict[str, Any], paused: bool) -> list[str]:
    if dag["is_paused"] == paused:
        return [
            f"DAG {dag['dag_id']} is {'paused' if paused else 'active'} already: nothing changes."
        ]
    if paused:
        return [
            f"DAG {dag['dag_id']} gets no more scheduled runs until it is unpaused.",
            "Runs that exist go on, and manual runs can still be triggered.",
        ]
    return [f"DAG {dag['dag_id']} is scheduled again at once, from where its schedule stands."]


async def _pause_page(hub: Hub, signed: SignedIn, dag_id: str, paused: bool) -> Response:
    dag = await in_store(
        hub, signed, lambda s: queries.dag_summary(queries.get_dag(s, dag_id)), write=False
    )
    verb = "pause" if paused else "unpause"
    return confirm(
        signed,
        "dags",
        heading=f"{verb.capitalize()} {dag_id}?",
        lines=_pause_lines(dag, paused),
        action=f"/ui/dags/{segment(dag_id)}/{verb}",
        button=verb.capitalize(),
        back=grid_url(dag_id),
    )


async def _pause(
    request: Request, hub: Hub, signed: SignedIn, dag_id: str, paused: bool
) -> Response:
    await posted_form(request, signed)
    by = actor(request, signed)
    await in_store(hub, signed, lambda s: control.set_paused(s, dag_id, paused, by), write=True)
    return done(grid_url(dag_id))


@router.get("/dags/{dag_id}/pause", response_model=None)
async def pause_page(hub: HubDep, signed: Pausing, dag_id: DagId) -> Response:
    return await _pause_page(hub, signed, dag_id, True)


@router.post("/dags/{dag_id}/pause", response_model=None)
async def pause(request: Request, hub: HubDep, signed: Pausing, dag_id: DagId) -> Response:
    return await _pause(request, hub, signed, dag_id, True)


@router.get("/dags/{dag_id}/unpause", response_model=None)
async def unpause_page(hub: HubDep, signed: Pausing, dag_id: DagId) -> Response:
    return await _pause_page(hub, signed, dag_id, False)


@router.post("/dags/{dag_id}/unpause", response_model=None)
async def unpause(request: Request, hub: HubDep, signed: Pausing, dag_id: DagId) -> Response:
    return await _pause(request, hub, signed, dag_id, False)


def _trigger_form(
    signed: SignedIn,
    dag: dict[str, Any],
    fields: list[forms.ParamField],
    typed: dict[str, str],
    problems: dict[str, str],
    status: int = 200,
) -> Response:
    return page(
        "trigger.html",
        status,
        dag=dag,
        fields=fields,
        typed={"run_id": typed.get("run_id", ""), "logical_date": typed.get("logical_date", "")},
        problems=problems,
        **common(signed, "dags"),
    )


def _dag_for_form(s: Session, dag_id: str) -> dict[str, Any]:
    dag = queries.get_dag(s, dag_id)
    return {**queries.dag_summary(dag), "serialized": dag.serialized}


@router.get("/dags/{dag_id}/trigger", response_model=None)
async def trigger_page(hub: HubDep, signed: Triggering, dag_id: DagId) -> Response:
    dag = await in_store(hub, signed, lambda s: _dag_for_form(s, dag_id), write=False)
    return _trigger_form(signed, dag, forms.param_fields(dag["serialized"]), {}, {})


def _read_trigger(
    s: Session, dag_id: str, form: dict[str, str]
) -> tuple[
    dict[str, Any],
    list[forms.ParamField],
    dict[str, Any],
    dict[str, str],
    str | None,
    datetime | None,
]:
    """The trigger form checked against the DAG: its fields with their problems,
    the conf, the other fields' problems, the run id and the logical date."""
    dag = _dag_for_form(s, dag_id)
    fields, conf = forms.read_params(dag["serialized"], form)
    problems: dict[str, str] = {}
    run_id = logical_date = None
    try:
        run_id = forms.run_id(form.get("run_id", ""))
    except forms.FormError as exc:
        problems["run_id"] = str(exc)
    if run_id is not None:
        try:
            queries.get_run(s, dag_id, run_id)
            problems["run_id"] = f"DAG {dag_id!r} has a run {run_id!r} already"
        except queries.NotFound:
            pass
    try:
        logical_date = forms.logical_date(form.get("logical_date", ""))
    except forms.FormError as exc:
        problems["logical_date"] = str(exc)
    return dag, fields, conf, problems, run_id, logical_date


def _typed(form: dict[str, str]) -> dict[str, str]:
    """The fields of the trigger form worth sending again (not its CSRF field)."""
    return {
        k: v
        for k, v in form.items()
        if k.startswith(forms.PARAM_PREFIX) or k in ("run_id", "logical_date")
    }


@router.post("/dags/{dag_id}/trigger", response_model=None)
async def trigger_check(
    request: Request, hub: HubDep, signed: Triggering, dag_id: DagId
) -> Response:
    """The filled form: shown again with its problems, or the confirmation. Changes nothing."""
    form = await posted_form(request, signed, PARAMS_FORM_BYTES, PARAMS_FORM_FIELDS)
    dag, fields, conf, problems, run_id, logical_date = await in_store(
        hub, signed, lambda s: _read_trigger(s, dag_id, form), write=False
    )
    if problems or any(f.error for f in fields):
        return _trigger_form(signed, dag, fields, form, problems, 400)
    values = params.effective(dag["serialized"], conf)
    return confirm(
        signed,
        "dags",
        heading=f"Trigger {dag_id}?",
        lines=[
            f"A manual run of {dag_id} is created"
            + (" (the DAG is paused; a manual run runs anyway)." if dag["is_paused"] else "."),
        ],
        trigger={
            "params": values,
            "run_id": run_id,
            "logical_date": logical_date,
        },
        hidden=_typed(form),
        action=f"/ui/dags/{segment(dag_id)}/trigger/confirm",
        button="Trigger",
        back=f"/ui/dags/{segment(dag_id)}/trigger",
    )


@router.post("/dags/{dag_id}/trigger/confirm", response_model=None)
async def trigger(request: Request, hub: HubDep, signed: Triggering, dag_id: DagId) -> Response:
    form = await posted_form(request, signed, PARAMS_FORM_BYTES, PARAMS_FORM_FIELDS)
    by = actor(request, signed)

    def make(s: Session) -> tuple[bool, Any]:
        dag, fields, conf, problems, run_id, logical_date = _read_trigger(s, dag_id, form)
        if problems or any(f.error for f in fields):
            return False, (dag, fields, problems)
        return True, control.trigger(s, dag_id, conf, run_id, by, logical_date)

    made, what = await in_store(hub, signed, make, write=True)
    if not made:  # something changed since the confirmation, or a forged form
        dag, fields, problems = what
        return _trigger_form(signed, dag, fields, form, problems, 400)
    return done(grid_url(dag_id))


def _backfill_form(
    signed: SignedIn,
    dag_id: str,
    typed: dict[str, str],
    problems: dict[str, str],
    status: int = 200,
) -> Response:
    return page(
        "backfill.html",
        status,
        dag_id=dag_id,
        typed={"start": typed.get("start", ""), "end": typed.get("end", "")},
        problems=problems,
        **common(signed, "dags"),
    )


@router.get("/dags/{dag_id}/backfill", response_model=None)
async def backfill_page(hub: HubDep, signed: Backfilling, dag_id: DagId) -> Response:
    await in_store(hub, signed, lambda s: queries.get_dag(s, dag_id).dag_id, write=False)
    return _backfill_form(signed, dag_id, {}, {})


def _range(form: dict[str, str]) -> tuple[datetime | None, datetime | None, dict[str, str]]:
    problems: dict[str, str] = {}
    ends: dict[str, datetime] = {}
    for name in ("start", "end"):
        try:
            ends[name] = forms.iso_datetime(form.get(name, ""), f"the {name}")
        except forms.FormError as exc:
            problems[name] = str(exc)
    return ends.get("start"), ends.get("end"), problems


@router.post("/dags/{dag_id}/backfill", response_model=None)
async def backfill_check(
    request: Request, hub: HubDep, signed: Backfilling, dag_id: DagId
) -> Response:
    """The filled form: shown again with its problems, or the runs it would create."""
    form = await posted_form(request, signed)
    start, end, problems = _range(form)
    if start is None or end is None:
        return _backfill_form(signed, dag_id, form, problems, 400)

    def plan_it(s: Session) -> tuple[backfills.Plan | None, str | None]:
        try:
            return control.preview_backfill(s, dag_id, start, end), None
        except backfills.BackfillError as exc:
            return None, str(exc)

    plan, problem = await in_store(hub, signed, plan_it, write=False)
    if plan is None:
        return _backfill_form(signed, dag_id, form, {"range": problem or ""}, 400)
    return confirm(
        signed,
        "dags",
        heading=f"Backfill {dag_id}?",
        lines=[
            f"{len(plan.create)} backfill run{'s' if len(plan.create) != 1 else ''} "
            f"{'are' if len(plan.create) != 1 else 'is'} created, oldest first; they start "
            "under the DAG's max_active_runs.",
        ],
        plan=plan,
        hidden={"start": form.get("start", ""), "end": form.get("end", "")},
        action=f"/ui/dags/{segment(dag_id)}/backfill/confirm",
        button="Backfill",
        back=f"/ui/dags/{segment(dag_id)}/backfill",
    )


@router.post("/dags/{dag_id}/backfill/confirm", response_model=None)
async def backfill(request: Request, hub: HubDep, signed: Backfilling, dag_id: DagId) -> Response:
    form = await posted_form(request, signed)
    start, end, problems = _range(form)
    if start is None or end is None:
        return _backfill_form(signed, dag_id, form, problems, 400)
    by = actor(request, signed)
    await in_store(
        hub, signed, lambda s: control.create_backfill(s, dag_id, start, end, by), write=True
    )
    return done(grid_url(dag_id))


# --- task instances and runs: clear, mark ---------------------------------------


def _map_index(text: str | None, signed: SignedIn) -> int | None:
    if text is None or text == "":
        return None
    if not text.lstrip("-").isdigit() or not text.isascii() or len(text) > 20:
        raise Refused(400, "map_index must be a whole number", signed)
    value = int(text)
    if not -1 <= value <= MAX_WIRE_INT:
        raise Refused(400, f"map_index must be from -1 to {MAX_WIRE_INT}", signed)
    return value


def _state(text: str | None, signed: SignedIn) -> str:
    if text not in ("success", "failed"):
        raise Refused(400, "state must be success or failed", signed)
    return text


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear", response_model=None)
async def clear_task_page(
    hub: HubDep,
    signed: ClearingTask,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    downstream: Annotated[bool, Query()] = False,
) -> Response:
    preview = await in_store(
        hub,
        signed,
        lambda s: control.preview_clear_task(s, dag_id, run_id, task_id, downstream),
        write=False,
    )
    what = f"{task_id} and everything downstream of it" if downstream else task_id
    return confirm(
        signed,
        "dags",
        heading=f"Clear {what} in run {run_id}?",
        lines=[
            "These task instances run again, with their retries afresh; a running try is "
            "ended on its worker."
        ],
        preview=preview,
        hidden={"downstream": "1" if downstream else "0"},
        action=f"{task_url(dag_id, run_id, task_id)}/clear",
        button="Clear",
        back=task_url(dag_id, run_id, task_id),
    )


@router.post("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear", response_model=None)
async def clear_task(
    request: Request,
    hub: HubDep,
    signed: ClearingTask,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
) -> Response:
    form = await posted_form(request, signed)
    downstream = field(lambda: forms.switch(form.get("downstream"), "downstream"), signed)
    by = actor(request, signed)
    await in_store(
        hub,
        signed,
        lambda s: control.clear_task(s, dag_id, run_id, task_id, downstream, by),
        write=True,
    )
    return done(task_url(dag_id, run_id, task_id))


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark", response_model=None)
async def mark_task_page(
    hub: HubDep,
    signed: MarkingTask,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    state: Annotated[MarkState, Query()],
    map_index: Annotated[int | None, Query(ge=-1, le=MAX_WIRE_INT)] = None,
) -> Response:
    preview = await in_store(
        hub,
        signed,
        lambda s: control.preview_mark_task(s, dag_id, run_id, task_id, state, map_index),
        write=False,
    )
    lines = [f"These task instances become {state}; a running try is ended on its worker."]
    if not preview.moves:
        lines = [f"Every task instance named is {state} already: nothing changes."]
    return confirm(
        signed,
        "dags",
        heading=f"Mark {task_id} {state} in run {run_id}?",
        lines=lines,
        preview=preview,
        hidden={"state": state, "map_index": "" if map_index is None else str(map_index)},
        action=f"{task_url(dag_id, run_id, task_id)}/mark",
        button=f"Mark {state}",
        back=task_url(dag_id, run_id, task_id),
        danger=state == "failed",
    )


@router.post("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark", response_model=None)
async def mark_task(
    request: Request,
    hub: HubDep,
    signed: MarkingTask,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
) -> Response:
    form = await posted_form(request, signed)
    state = _state(form.get("state"), signed)
    map_index = _map_index(form.get("map_index"), signed)
    by = actor(request, signed)
    await in_store(
        hub,
        signed,
        lambda s: control.mark_task(s, dag_id, run_id, task_id, state, by, map_index),
        write=True,
    )
    return done(task_url(dag_id, run_id, task_id))


@router.get("/dags/{dag_id}/runs/{run_id}/clear", response_model=None)
async def clear_run_page(
    hub: HubDep,
    signed: ClearingRun,
    dag_id: DagId,
    run_id: RunId,
    only_failed: Annotated[bool, Query()] = False,
) -> Response:
    preview = await in_store(
        hub,
        signed,
        lambda s: control.preview_clear_run(s, dag_id, run_id, only_failed),
        write=False,
    )
    lines = [
        "These task instances run again, with their retries afresh; a running try is "
        "ended on its worker."
    ]
    if not preview.moves:
        lines = ["No task instance of the run failed: nothing changes."]
    return confirm(
        signed,
        "dags",
        heading=f"Clear {'the failed tasks of ' if only_failed else ''}run {run_id}?",
        lines=lines,
        preview=preview,
        hidden={"only_failed": "1" if only_failed else "0"},
        action=f"{run_url(dag_id, run_id)}/clear",
        button="Clear",
        back=grid_url(dag_id),
    )


@router.post("/dags/{dag_id}/runs/{run_id}/clear", response_model=None)
async def clear_run(
    request: Request, hub: HubDep, signed: ClearingRun, dag_id: DagId, run_id: RunId
) -> Response:
    form = await posted_form(request, signed)
    only_failed = field(lambda: forms.switch(form.get("only_failed"), "only_failed"), signed)
    by = actor(request, signed)
    await in_store(
        hub, signed, lambda s: control.clear_run(s, dag_id, run_id, only_failed, by), write=True
    )
    return done(grid_url(dag_id))


@router.get("/dags/{dag_id}/runs/{run_id}/mark", response_model=None)
async def mark_run_page(
    hub: HubDep,
    signed: MarkingRun,
    dag_id: DagId,
    run_id: RunId,
    state: Annotated[MarkState, Query()],
) -> Response:
    preview = await in_store(
        hub, signed, lambda s: control.preview_mark_run(s, dag_id, run_id, state), write=False
    )
    lines = [
        f"The run ends as {state}, with its unfinished task instances as listed; finished "
        "ones keep their state. A running try is ended on its worker; the DAG's callback "
        "is asked for."
    ]
    if preview.run_to is None:
        lines = [f"The run is {state} already: nothing changes."]
    return confirm(
        signed,
        "dags",
        heading=f"Mark run {run_id} {state}?",
        lines=lines,
        preview=preview,
        hidden={"state": state},
        action=f"{run_url(dag_id, run_id)}/mark",
        button=f"Mark {state}",
        back=grid_url(dag_id),
        danger=state == "failed",
    )


@router.post("/dags/{dag_id}/runs/{run_id}/mark", response_model=None)
async def mark_run(
    request: Request, hub: HubDep, signed: MarkingRun, dag_id: DagId, run_id: RunId
) -> Response:
    form = await posted_form(request, signed)
    state = _state(form.get("state"), signed)
    by = actor(request, signed)
    await in_store(
        hub, signed, lambda s: control.mark_run(s, dag_id, run_id, state, by), write=True
    )
    return done(grid_url(dag_id))


def install(app: FastAPI) -> None:
    """Add the actions to ``app``, with the pages that refusals and bad requests get."""
    app.include_router(router)
    app.include_router(worker_actions.router)
    install_refusals(app)
