"""What every console action shares: the two-step confirm-then-do pattern's
pieces, the role each action needs, and the pages refusals get.

An action module (``ui/actions.py``, ``ui/worker_actions.py``) shows a
confirmation with :func:`confirm`, reads the POSTed form with
:func:`posted_form` (CSRF checked), runs the store function with
:func:`in_store` and answers with :func:`done`; :class:`Refused` becomes a
page that says why (:func:`install_refusals`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from tether.hub.auth import console
from tether.hub.auth.gate import actor_of
from tether.hub.core.audit import Who
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.hub.errors import describe
from tether.hub.state import Hub, get_hub, in_read, in_session
from tether.hub.ui import forms
from tether.hub.ui.access import SignedIn, read_form, require_page_session
from tether.hub.ui.render import page
from tether.hub.ui.roles import ACTIONS, can

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


def common(signed: SignedIn | None, section: str) -> dict[str, Any]:
    if signed is None:
        return {"user": None, "csrf": "", "section": section}
    return {"user": signed.principal, "csrf": signed.session.csrf, "section": section}


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    title = _TITLES.get(exc.status, "Refused")
    return page(
        "error.html", exc.status, title=title, message=exc.message, **common(exc.signed, "")
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
    return page("error.html", 422, title="Bad request", message=reasons, **common(None, ""))


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
Updating = Annotated[SignedIn, Depends(needs("worker.update"))]
Revoking = Annotated[SignedIn, Depends(needs("worker.revoke"))]
Removing = Annotated[SignedIn, Depends(needs("worker.remove"))]
Enrolling = Annotated[SignedIn, Depends(needs("enrolment_token.create"))]


async def posted_form(
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


async def in_store(hub: Hub, signed: SignedIn, fn: Callable[[Session], T], *, write: bool) -> T:
    """``fn`` in a write (``write``) or read-only transaction; a domain error
    becomes a page with the status and reason of ``hub/errors.py``."""
    try:
        return await (in_session(hub, fn) if write else in_read(hub, fn))
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        raise Refused(*described, signed) from None


def actor(request: Request, signed: SignedIn) -> Who:
    """The audit actor: the console user's token name, from the address the gate sees."""
    return Who(signed.principal.name, actor_of(request)[1])


def field(check: Callable[[], T], signed: SignedIn) -> T:
    try:
        return check()
    except forms.FormError as exc:
        raise Refused(400, str(exc), signed) from None


def confirm(signed: SignedIn, section: str, **context: Any) -> Response:
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
    return page("confirm.html", **values, **common(signed, section))


def done(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def grid_url(dag_id: str) -> str:
    return f"/ui/dags/{segment(dag_id)}/grid"


def segment(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")


def task_url(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/ui/dags/{segment(dag_id)}/runs/{segment(run_id)}/tasks/{segment(task_id)}"


def run_url(dag_id: str, run_id: str) -> str:
    return f"/ui/dags/{segment(dag_id)}/runs/{segment(run_id)}"


def install_refusals(app: FastAPI) -> None:
    """The pages that refusals and bad console requests get."""
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(RequestValidationError, invalid_request)
