"""The web console's actions on workers: maintenance on and off with a comment,
shutdown, revocation and removal, and enrolment tokens; each behind a
confirmation, as ``ui/actions.py`` describes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from tether import __version__
from tether.hub.core import control
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.hub.state import Hub, get_hub
from tether.hub.ui import forms
from tether.hub.ui.access import SignedIn
from tether.hub.ui.confirming import (
    Enrolling,
    Maintaining,
    Removing,
    Revoking,
    ShuttingDown,
    Updating,
    actor,
    common,
    confirm,
    done,
    field,
    in_store,
    posted_form,
    segment,
)
from tether.hub.ui.render import page

router = APIRouter(prefix="/ui", include_in_schema=False)
HubDep = Annotated[Hub, Depends(get_hub)]
WorkerName = Annotated[str, Path(pattern=f"^{WORKER_NAME_PATTERN}$")]


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
    "update": (
        "Update worker {name} to the hub's version?",
        [
            "The worker downloads the hub's wheel and checks it, then drains: it takes no "
            "new task and lets its running tasks finish and report.",
            "It then installs the wheel into its own environment and exits for its service "
            "manager to start the new version. A failed update leaves the old version "
            "running and taking work, and the workers page says why.",
        ],
        "Update",
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
    worker = await in_store(hub, signed, lambda s: control.worker_preview(s, name), write=False)
    heading, lines, button = _WORKER_ACTIONS[verb]
    return confirm(
        signed,
        "workers",
        heading=heading.format(name=name),
        lines=lines,
        worker=worker,
        action=f"/ui/workers/{segment(name)}/{verb}",
        button=button,
        back="/ui/workers",
        danger=verb not in ("shutdown", "update"),
    )


@router.get("/workers/{name}/maintenance", response_model=None)
async def maintenance_page(
    hub: HubDep, signed: Maintaining, name: WorkerName, on: Annotated[bool, Query()]
) -> Response:
    worker = await in_store(hub, signed, lambda s: control.worker_preview(s, name), write=False)
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
    return confirm(
        signed,
        "workers",
        heading=f"Maintenance {'on' if on else 'off'} for worker {name}?",
        lines=lines,
        worker=worker,
        hidden={"on": "1" if on else "0"},
        comment_field=on,
        action=f"/ui/workers/{segment(name)}/maintenance",
        button=f"Maintenance {'on' if on else 'off'}",
        back="/ui/workers",
    )


@router.post("/workers/{name}/maintenance", response_model=None)
async def maintenance(
    request: Request, hub: HubDep, signed: Maintaining, name: WorkerName
) -> Response:
    form = await posted_form(request, signed)
    on = field(lambda: forms.switch(form.get("on"), "on"), signed)
    note = field(lambda: forms.comment(form.get("comment", "")), signed)
    by = actor(request, signed)
    await in_store(
        hub, signed, lambda s: control.set_maintenance(s, name, on, note, by), write=True
    )
    return done("/ui/workers")


@router.get("/workers/{name}/shutdown", response_model=None)
async def shutdown_page(hub: HubDep, signed: ShuttingDown, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "shutdown")


@router.post("/workers/{name}/shutdown", response_model=None)
async def shutdown(
    request: Request, hub: HubDep, signed: ShuttingDown, name: WorkerName
) -> Response:
    await posted_form(request, signed)
    by = actor(request, signed)
    await in_store(hub, signed, lambda s: control.request_shutdown(s, name, by), write=True)
    return done("/ui/workers")


@router.get("/workers/{name}/update", response_model=None)
async def update_page(hub: HubDep, signed: Updating, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "update")


@router.post("/workers/{name}/update", response_model=None)
async def update(request: Request, hub: HubDep, signed: Updating, name: WorkerName) -> Response:
    await posted_form(request, signed)
    by = actor(request, signed)
    await in_store(
        hub, signed, lambda s: control.request_update(s, name, __version__, by), write=True
    )
    return done("/ui/workers")


@router.get("/workers/{name}/revoke", response_model=None)
async def revoke_page(hub: HubDep, signed: Revoking, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "revoke")


@router.post("/workers/{name}/revoke", response_model=None)
async def revoke(request: Request, hub: HubDep, signed: Revoking, name: WorkerName) -> Response:
    await posted_form(request, signed)
    by = actor(request, signed)
    await in_store(hub, signed, lambda s: control.revoke(s, name, by), write=True)
    hub.principals.forget(name)
    return done("/ui/workers")


@router.get("/workers/{name}/remove", response_model=None)
async def remove_page(hub: HubDep, signed: Removing, name: WorkerName) -> Response:
    return await _worker_page(hub, signed, name, "remove")


@router.post("/workers/{name}/remove", response_model=None)
async def remove(request: Request, hub: HubDep, signed: Removing, name: WorkerName) -> Response:
    await posted_form(request, signed)
    by = actor(request, signed)
    await in_store(hub, signed, lambda s: control.remove(s, name, by), write=True)
    hub.principals.forget(name)
    return done("/ui/workers")


def _token_form(
    signed: SignedIn, typed: dict[str, str], problems: dict[str, str], status: int = 200
) -> Response:
    shown = {
        "queues": typed.get("queues", ""),
        "name": typed.get("name", ""),
        "hours": typed.get("hours", "24"),
        "replace": typed.get("replace", "") in ("1", "on"),
    }
    return page("token.html", status, typed=shown, problems=problems, **common(signed, "workers"))


@router.get("/workers/enrolment-token", response_model=None)
async def token_page(signed: Enrolling) -> Response:
    return _token_form(signed, {}, {})


@router.post("/workers/enrolment-token", response_model=None)
async def token_check(request: Request, signed: Enrolling) -> Response:
    """The filled form: shown again with its problems, or the confirmation."""
    form = await posted_form(request, signed)
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
    return confirm(
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
    form = await posted_form(request, signed)
    asked, problems = forms.token_request(form)
    if asked is None:
        return _token_form(signed, form, problems, 400)
    by = actor(request, signed)

    def create(s: Session) -> dict[str, Any]:
        return control.create_enrolment_token(
            s, asked.queues, asked.name, timedelta(hours=asked.hours), asked.replace, by
        )

    made = await in_store(hub, signed, create, write=True)
    hub_url = str(request.base_url).rstrip("/")
    return page("token_made.html", made=made, hub_url=hub_url, **common(signed, "workers"))
