"""The web console's actions: pause, trigger and backfill a DAG; clear and mark task
instances and runs; maintenance, shutdown, revocation and removal of workers;
enrolment tokens.

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

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from tether.hub.auth import console
from tether.hub.auth.gate import actor_of
from tether.hub.core import backfill as backfills
from tether.hub.core import control, params, queries
from tether.hub.core.audit import Who
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.hub.errors import describe
from tether.hub.state import Hub, get_hub, in_read, in_session
from tether.hub.ui import forms
from tether.hub.ui.access import SignedIn, read_form, require_page_session
from tether.hub.ui.paths import DagId, RunId, TaskId
from tether.hub.ui.render import page
from tether.hub.ui.roles import ACTIONS, can
from tether.protocol import MAX_WIRE_INT

router = APIRouter(prefix="/ui", include_in_schema=False)
HubDep = Annotated[Hub, Depends(get_hub)]
WorkerName = Annotated[str, Path(pattern=f"^{WORKER_NAME_PATTERN}$")]
MarkState = Literal["success", "failed"]
#: The params form may hold many fields and JSON values; other forms are small.
PARAMS_FORM_BYTES = 64 * 1024
PARAMS_FORM_FIELDS = 200
T = TypeVar("T")


class Refused(Exception):
    """An action the console will not do: answered with a page that says why."""

    def __init__(self, status: int, message: str, signed: SignedIn | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.signed = status, message, signed


_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


def _common(signed: SignedIn | None, section: str) -> dict[str, Any]:
    if signed is None:
        return {"user": None, "csrf": "", "section": section}
    return {"user": signed.principal, "csrf": signed.session.csrf, "section": section}


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    title = _TITLES.get(exc.status, "Refused")
    return page(
        "error.html", exc.status, title=title, message=exc.message, **_common(exc.signed, "")
    )


async def invalid_request(request: Request, exc: Exception) -> Response:
    """A console URL or query that cannot be right: a 422 page naming what is
    wrong. Elsewhere (the REST API) FastAPI's own JSON answer."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith("/ui/"):
        return await request_validation_exception_handler(request, exc)
    reasons = "; ".join(
        f"{' '.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}"
        for e in exc.errors()[:5]
    )
    return page("error.html", 422, title="Bad request", message=reasons, **_common(None, ""))


def needs(action: str) -> Callable[..., Awaitable[SignedIn]]:
    """A dependency: the page session, if its role may do ``action``; else 403."""
    role = ACTIONS[action]

    async def check(signed: Annotated[SignedIn, Depends(require_page_session)]) -> SignedIn:
        if not can(signed.principal, action):
            who = signed.principal
            raise Refused(
                403,
                f"this needs the {role} role; the token {who.name!r} has the {who.role} role",
                signed,
            )
        return signed

    return check


Pausing = Annotated[SignedIn, Depends(needs("dag.pause"))]
Triggering = Annotated[SignedIn, Depends(needs("dag.trigger"))]
Backfilling = Annotated[SignedIn, Depends(needs("dag.backfill"))]
ClearingTask = Annotated[SignedIn, Depends(needs("task.clear"))]
MarkingTask = Annotated[SignedIn, Depends(needs("task.mark"))]
ClearingRun = Annotated[SignedIn, Depends(needs("run.clear"))]
MarkingRun = Annotated[SignedIn, Depends(needs("run.mark"))]
Maintaining = Annotated[SignedIn, Depends(needs("worker.maintenance"))]
ShuttingDown = Annotated[SignedIn, Depends(needs("worker.shutdown"))]
Revoking = Annotated[SignedIn, Depends(needs("worker.revoke"))]
Removing = Annotated[SignedIn, Depends(needs("worker.remove"))]
Enrolling = Annotated[SignedIn, Depends(needs("enrolment_token.create"))]


async def _form(
    request: Request, signed: SignedIn, max_bytes: int = 16 * 1024, max_fields: int = 20
) -> dict[str, str]:
    """The POSTed form, once its CSRF field matches the session's."""
    try:
        form = await read_form(request, max_bytes, max_fields)
    except HTTPException as exc:
        raise Refused(exc.status_code, str(exc.detail), signed) from None
    if not console.csrf_ok(signed.session, form.get("csrf")):
        raise Refused(403, "The form's CSRF check failed. Reload the page and try again.", signed)
    return form


async def _store(hub: Hub, signed: SignedIn, fn: Callable[[Session], T], *, write: bool) -> T:
    """``fn`` in a write (``write``) or read-only transaction; a domain error
    becomes a page with the status and reason of ``hub/errors.py``."""
    try:
        return await (in_session(hub, fn) if write else in_read(hub, fn))
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        raise Refused(*described, signed) from None


def _who(request: Request, signed: SignedIn) -> Who:
    """The audit actor: the console user's token name, from the address the gate sees."""
    return Who(signed.principal.name, actor_of(request)[1])


def _field(check: Callable[[], T], signed: SignedIn) -> T:
    try:
        return check()
    except forms.FormError as exc:
        raise Refused(400, str(exc), signed) from None


def _confirm(signed: SignedIn, section: str, **context: Any) -> Response:
    """The confirmation page: ``heading``, ``lines`` (what will happen), an optional
    ``preview`` / ``worker`` / ``plan`` / ``trigger``, and the form that does it."""
    values: dict[str, Any] = {
        "lines": [],
        "preview": None,
        "worker": None,
        "plan": None,
        "trigger": None,
        "hidden": {},
        "comment_field": False,
        "danger": False,
        **context,
    }
    return page("confirm.html", **values, **_common(signed, section))


def _done(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _grid(dag_id: str) -> str:
    return f"/ui/dags/{_seg(dag_id)}/grid"


def _seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")


def _task_url(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/ui/dags/{_seg(dag_id)}/runs/{_seg(run_id)}/tasks/{_seg(task_id)}"


def _run_url(dag_id: str, run_id: str) -> str:
    return f"/ui/dags/{_seg(dag_id)}/runs/{_seg(run_id)}"


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
    dag = await _store(
        hub, signed, lambda s: queries.dag_summary(queries.get_dag(s, dag_id)), write=False
    )
    verb = "pause" if paused else "unpause"
    return _confirm(
        signed,
        "dags",
        heading=f"{verb.capitalize()} {dag_id}?",
        lines=_pause_lines(dag, paused),
        action=f"/ui/dags/{_seg(dag_id)}/{verb}",
        button=verb.capitalize(),
        back=_grid(dag_id),
    )


async def _pause(
    request: Request, hub: Hub, signed: SignedIn, dag_id: str, paused: bool
) -> Response:
    await _form(request, signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.set_paused(s, dag_id, paused, by), write=True)
    return _done(_grid(dag_id))


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
        **_common(signed, "dags"),
    )


def _dag_for_form(s: Session, dag_id: str) -> dict[str, Any]:
    dag = queries.get_dag(s, dag_id)
    return {**queries.dag_summary(dag), "serialized": dag.serialized}


@router.get("/dags/{dag_id}/trigger", response_model=None)
async def trigger_page(hub: HubDep, signed: Triggering, dag_id: DagId) -> Response:
    dag = await _store(hub, signed, lambda s: _dag_for_form(s, dag_id), write=False)
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
    form = await _form(request, signed, PARAMS_FORM_BYTES, PARAMS_FORM_FIELDS)
    dag, fields, conf, problems, run_id, logical_date = await _store(
        hub, signed, lambda s: _read_trigger(s, dag_id, form), write=False
    )
    if problems or any(f.error for f in fields):
        return _trigger_form(signed, dag, fields, form, problems, 400)
    values = params.effective(dag["serialized"], conf)
    return _confirm(
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
        action=f"/ui/dags/{_seg(dag_id)}/trigger/confirm",
        button="Trigger",
        back=f"/ui/dags/{_seg(dag_id)}/trigger",
    )


@router.post("/dags/{dag_id}/trigger/confirm", response_model=None)
async def trigger(request: Request, hub: HubDep, signed: Triggering, dag_id: DagId) -> Response:
    form = await _form(request, signed, PARAMS_FORM_BYTES, PARAMS_FORM_FIELDS)
    by = _who(request, signed)

    def make(s: Session) -> tuple[bool, Any]:
        dag, fields, conf, problems, run_id, logical_date = _read_trigger(s, dag_id, form)
        if problems or any(f.error for f in fields):
            return False, (dag, fields, problems)
        return True, control.trigger(s, dag_id, conf, run_id, by, logical_date)

    made, what = await _store(hub, signed, make, write=True)
    if not made:  # something changed since the confirmation, or a forged form
        dag, fields, problems = what
        return _trigger_form(signed, dag, fields, form, problems, 400)
    return _done(_grid(dag_id))


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
        **_common(signed, "dags"),
    )


@router.get("/dags/{dag_id}/backfill", response_model=None)
async def backfill_page(hub: HubDep, signed: Backfilling, dag_id: DagId) -> Response:
    await _store(hub, signed, lambda s: queries.get_dag(s, dag_id).dag_id, write=False)
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
    form = await _form(request, signed)
    start, end, problems = _range(form)
    if start is None or end is None:
        return _backfill_form(signed, dag_id, form, problems, 400)

    def plan_it(s: Session) -> tuple[backfills.Plan | None, str | None]:
        try:
            return control.preview_backfill(s, dag_id, start, end), None
        except backfills.BackfillError as exc:
            return None, str(exc)

    plan, problem = await _store(hub, signed, plan_it, write=False)
    if plan is None:
        return _backfill_form(signed, dag_id, form, {"range": problem or ""}, 400)
    return _confirm(
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
        action=f"/ui/dags/{_seg(dag_id)}/backfill/confirm",
        button="Backfill",
        back=f"/ui/dags/{_seg(dag_id)}/backfill",
    )


@router.post("/dags/{dag_id}/backfill/confirm", response_model=None)
async def backfill(request: Request, hub: HubDep, signed: Backfilling, dag_id: DagId) -> Response:
    form = await _form(request, signed)
    start, end, problems = _range(form)
    if start is None or end is None:
        return _backfill_form(signed, dag_id, form, problems, 400)
    by = _who(request, signed)
    await _store(
        hub, signed, lambda s: control.create_backfill(s, dag_id, start, end, by), write=True
    )
    return _done(_grid(dag_id))


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
    preview = await _store(
        hub,
        signed,
        lambda s: control.preview_clear_task(s, dag_id, run_id, task_id, downstream),
        write=False,
    )
    what = f"{task_id} and everything downstream of it" if downstream else task_id
    return _confirm(
        signed,
        "dags",
        heading=f"Clear {what} in run {run_id}?",
        lines=[
            "These task instances run again, with their retries afresh; a running try is "
            "ended on its worker."
        ],
        preview=preview,
        hidden={"downstream": "1" if downstream else "0"},
        action=f"{_task_url(dag_id, run_id, task_id)}/clear",
        button="Clear",
        back=_task_url(dag_id, run_id, task_id),
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
    form = await _form(request, signed)
    downstream = _field(lambda: forms.switch(form.get("downstream"), "downstream"), signed)
    by = _who(request, signed)
    await _store(
        hub,
        signed,
        lambda s: control.clear_task(s, dag_id, run_id, task_id, downstream, by),
        write=True,
    )
    return _done(_task_url(dag_id, run_id, task_id))


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
    preview = await _store(
        hub,
        signed,
        lambda s: control.preview_mark_task(s, dag_id, run_id, task_id, state, map_index),
        write=False,
    )
    lines = [f"These task instances become {state}; a running try is ended on its worker."]
    if not preview.moves:
        lines = [f"Every task instance named is {state} already: nothing changes."]
    return _confirm(
        signed,
        "dags",
        heading=f"Mark {task_id} {state} in run {run_id}?",
        lines=lines,
        preview=preview,
        hidden={"state": state, "map_index": "" if map_index is None else str(map_index)},
        action=f"{_task_url(dag_id, run_id, task_id)}/mark",
        button=f"Mark {state}",
        back=_task_url(dag_id, run_id, task_id),
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
    form = await _form(request, signed)
    state = _state(form.get("state"), signed)
    map_index = _map_index(form.get("map_index"), signed)
    by = _who(request, signed)
    await _store(
        hub,
        signed,
        lambda s: control.mark_task(s, dag_id, run_id, task_id, state, by, map_index),
        write=True,
    )
    return _done(_task_url(dag_id, run_id, task_id))


@router.get("/dags/{dag_id}/runs/{run_id}/clear", response_model=None)
async def clear_run_page(
    hub: HubDep,
    signed: ClearingRun,
    dag_id: DagId,
    run_id: RunId,
    only_failed: Annotated[bool, Query()] = False,
) -> Response:
    preview = await _store(
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
    return _confirm(
        signed,
        "dags",
        heading=f"Clear {'the failed tasks of ' if only_failed else ''}run {run_id}?",
        lines=lines,
        preview=preview,
        hidden={"only_failed": "1" if only_failed else "0"},
        action=f"{_run_url(dag_id, run_id)}/clear",
        button="Clear",
        back=_grid(dag_id),
    )


@router.post("/dags/{dag_id}/runs/{run_id}/clear", response_model=None)
async def clear_run(
    request: Request, hub: HubDep, signed: ClearingRun, dag_id: DagId, run_id: RunId
) -> Response:
    form = await _form(request, signed)
    only_failed = _field(lambda: forms.switch(form.get("only_failed"), "only_failed"), signed)
    by = _who(request, signed)
    await _store(
        hub, signed, lambda s: control.clear_run(s, dag_id, run_id, only_failed, by), write=True
    )
    return _done(_grid(dag_id))


@router.get("/dags/{dag_id}/runs/{run_id}/mark", response_model=None)
async def mark_run_page(
    hub: HubDep,
    signed: MarkingRun,
    dag_id: DagId,
    run_id: RunId,
    state: Annotated[MarkState, Query()],
) -> Response:
    preview = await _store(
        hub, signed, lambda s: control.preview_mark_run(s, dag_id, run_id, state), write=False
    )
    lines = [
        f"The run ends as {state}, with its unfinished task instances as listed; finished "
        "ones keep their state. A running try is ended on its worker; the DAG's callback "
        "is asked for."
    ]
    if preview.run_to is None:
        lines = [f"The run is {state} already: nothing changes."]
    return _confirm(
        signed,
        "dags",
        heading=f"Mark run {run_id} {state}?",
        lines=lines,
        preview=preview,
        hidden={"state": state},
        action=f"{_run_url(dag_id, run_id)}/mark",
        button=f"Mark {state}",
        back=_grid(dag_id),
        danger=state == "failed",
    )


@router.post("/dags/{dag_id}/runs/{run_id}/mark", response_model=None)
async def mark_run(
    request: Request, hub: HubDep, signed: MarkingRun, dag_id: DagId, run_id: RunId
) -> Response:
    form = await _form(request, signed)
    state = _state(form.get("state"), signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.mark_run(s, dag_id, run_id, state, by), write=True)
    return _done(_grid(dag_id))


# --- workers --------------------------------------------------------------------

#: What each worker action does, for its confirmation: (heading, lines, button).
_WORKER_ACTIONS = {
    "shutdown": (
        "Shut down worker {name}?",
        [
            "The worker takes no new task, lets its running tasks finish and report, then "
            "exits. A process started later runs normally.",
        ],
        "Shut down",
    ),
    "revoke": (
        "Revoke worker {name}?",
        [
            "Its credential stops working at once: its next request is refused and it exits.",
            "Its running tries are given up: each task retries elsewhere if it has tries "
            "left, else fails.",
            "Coming back takes a new enrolment token.",
        ],
        "Revoke",
    ),
    "remove": (
        "Remove worker {name}?",
        [
            "Its credential stops working and the hub forgets the worker.",
            "Its running tries are given up: each task retries elsewhere if it has tries "
            "left, else fails.",
            "Coming back takes a new enrolment token.",
        ],
        "Remove",
    ),
}


async def _worker_page(hub: Hub, signed: SignedIn, name: str, verb: str) -> Response:
    worker = await _store(hub, signed, lambda s: control.worker_preview(s, name), write=False)
    heading, lines, button = _WORKER_ACTIONS[verb]
    return _confirm(
        signed,
        "workers",
        heading=heading.format(name=name),
        lines=lines,
        worker=worker,
        action=f"/ui/workers/{_seg(name)}/{verb}",
        button=button,
        back="/ui/workers",
        danger=verb != "shutdown",
    )


@router.get("/workers/{name}/maintenance", response_model=None)
async def maintenance_page(
    hub: HubDep, signed: Maintaining, name: WorkerName, on: Annotated[bool, Query()]
) -> Response:
    worker = await _store(hub, signed, lambda s: control.worker_preview(s, name), write=False)
    if on:
        lines = [
            "The worker takes no new task and stays connected; its running tasks go on "
            "until they finish."
        ]
    else:
        lines = [
            "Maintenance asked for from the centre ends: the worker takes new tasks again "
            "(unless it is in maintenance on its own machine)."
        ]
    return _confirm(
        signed,
        "workers",
        heading=f"Maintenance {'on' if on else 'off'} for worker {name}?",
        lines=lines,
        worker=worker,
        hidden={"on": "1" if on else "0"},
        comment_field=on,
        action=f"/ui/workers/{_seg(name)}/maintenance",
        button=f"Maintenance {'on' if on else 'off'}",
        back="/ui/workers",
    )


@router.post("/workers/{name}/maintenance", response_model=None)
async def maintenance(
    request: Request, hub: HubDep, signed: Maintaining, name: WorkerName
) -> Response:
    form = await _form(request, signed)
    on = _field(lambda: forms.switch(form.get("on"), "on"), signed)
    note = _field(lambda: forms.comment(form.get("comment", "")), signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.set_maintenance(s, name, on, note, by), write=True)
    return _done("/ui/workers")


@router.get("/workers/{name}/shutdown", response_model=None)
async def shutdown_page(hub: HubDep, signed: ShuttingDown, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "shutdown")


@router.post("/workers/{name}/shutdown", response_model=None)
async def shutdown(
    request: Request, hub: HubDep, signed: ShuttingDown, name: WorkerName
) -> Response:
    await _form(request, signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.request_shutdown(s, name, by), write=True)
    return _done("/ui/workers")


@router.get("/workers/{name}/revoke", response_model=None)
async def revoke_page(hub: HubDep, signed: Revoking, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "revoke")


@router.post("/workers/{name}/revoke", response_model=None)
async def revoke(request: Request, hub: HubDep, signed: Revoking, name: WorkerName) -> Response:
    await _form(request, signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.revoke(s, name, by), write=True)
    hub.principals.forget(name)
    return _done("/ui/workers")


@router.get("/workers/{name}/remove", response_model=None)
async def remove_page(hub: HubDep, signed: Removing, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "remove")


@router.post("/workers/{name}/remove", response_model=None)
async def remove(request: Request, hub: HubDep, signed: Removing, name: WorkerName) -> Response:
    await _form(request, signed)
    by = _who(request, signed)
    await _store(hub, signed, lambda s: control.remove(s, name, by), write=True)
    hub.principals.forget(name)
    return _done("/ui/workers")


def _token_form(
    signed: SignedIn, typed: dict[str, str], problems: dict[str, str], status: int = 200
) -> Response:
    shown = {
        "queues": typed.get("queues", ""),
        "name": typed.get("name", ""),
        "hours": typed.get("hours", "24"),
        "replace": typed.get("replace", "") in ("1", "on"),
    }
    return page("token.html", status, typed=shown, problems=problems, **_common(signed, "workers"))


@router.get("/workers/enrolment-token", response_model=None)
async def token_page(signed: Enrolling) -> Response:
    return _token_form(signed, {}, {})


@router.post("/workers/enrolment-token", response_model=None)
async def token_check(request: Request, signed: Enrolling) -> Response:
    """The filled form: shown again with its problems, or the confirmation."""
    form = await _form(request, signed)
    asked, problems = forms.token_request(form)
    if asked is None:
        return _token_form(signed, form, problems, 400)
    who = f"worker {asked.name}" if asked.name else "a worker with a name the hub makes"
    lines = [
        f"A one-time enrolment token is made for {who}, serving {', '.join(asked.queues)}; "
        f"it expires in {asked.hours:g} h unless spent.",
        "The token is shown once, on the next page, and never again.",
    ]
    if asked.replace:
        lines.append(
            "Replace: spending it gives the existing worker of that name a new credential "
            "and voids its old one."
        )
    return _confirm(
        signed,
        "workers",
        heading="Create an enrolment token?",
        lines=lines,
        hidden={
            "queues": ",".join(asked.queues),
            "name": asked.name or "",
            "hours": f"{asked.hours:g}",
            "replace": "1" if asked.replace else "",
        },
        action="/ui/workers/enrolment-token/confirm",
        button="Create the token",
        back="/ui/workers/enrolment-token",
    )


@router.post("/workers/enrolment-token/confirm", response_model=None)
async def token_create(request: Request, hub: HubDep, signed: Enrolling) -> Response:
    form = await _form(request, signed)
    asked, problems = forms.token_request(form)
    if asked is None:
        return _token_form(signed, form, problems, 400)
    by = _who(request, signed)

    def create(s: Session) -> dict[str, Any]:
        return control.create_enrolment_token(
            s, asked.queues, asked.name, timedelta(hours=asked.hours), asked.replace, by
        )

    made = await _store(hub, signed, create, write=True)
    hub_url = str(request.base_url).rstrip("/")
    return page("token_made.html", made=made, hub_url=hub_url, **_common(signed, "workers"))


def install(app: FastAPI) -> None:
    """Add the actions to ``app``, with the pages that refusals and bad requests get."""
    app.include_router(router)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(RequestValidationError, invalid_request)
