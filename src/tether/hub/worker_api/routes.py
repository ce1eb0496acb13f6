"""The worker API (``/api/worker/v1``): what edge workers call. Routes stay thin."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from tether.hub.auth.deps import HubDep, WorkerName
from tether.hub.store.models import Bundle
from tether.hub.worker_api import attempts
from tether.protocol import (
    MAX_CLAIM_WAIT,
    WORKER_API_PREFIX,
    AttemptResult,
    InvalidQueueName,
    validate_queue_name,
)

router = APIRouter(prefix=WORKER_API_PREFIX, tags=["worker"])

#: Largest log chunk the hub accepts in one request.
MAX_LOG_CHUNK = 4 * 1024 * 1024


def _queues(value: list[str]) -> list[str]:
    try:
        return [validate_queue_name(q) for q in value]
    except InvalidQueueName as exc:
        raise ValueError(str(exc)) from None


class HeartbeatIn(BaseModel):
    queues: list[str] = Field(min_length=1, max_length=100)
    concurrency: int = Field(ge=0, le=10_000)
    free_slots: int = Field(ge=0, le=10_000)
    running: list[str] = Field(default_factory=list, max_length=10_000)
    state: Literal["online", "offline"] = "online"
    version: str = Field(max_length=50)
    protocol: int
    hostname: str | None = Field(default=None, max_length=250)
    platform: str | None = Field(default=None, max_length=250)
    python: str | None = Field(default=None, max_length=50)

    _check_queues = field_validator("queues")(_queues)


class ClaimIn(BaseModel):
    queues: list[str] = Field(min_length=1, max_length=100)
    slots: int = Field(ge=1, le=1000)
    wait: float = Field(default=30.0, ge=0, le=MAX_CLAIM_WAIT)

    _check_queues = field_validator("queues")(_queues)


class FinishIn(BaseModel):
    state: Literal["success", "failed", "skipped"]
    output: Any = None
    error: str | None = Field(default=None, max_length=100_000)
    no_retry: bool = False


def _attempt_errors(exc: Exception) -> HTTPException:
    if isinstance(exc, attempts.AttemptNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, attempts.NotYourAttempt):
        return HTTPException(status.HTTP_403_FORBIDDEN, str(exc))
    if isinstance(exc, attempts.AttemptFenced):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    raise exc


@router.post("/heartbeat")
async def heartbeat(body: HeartbeatIn, worker: WorkerName, hub: HubDep) -> dict[str, Any]:
    info = body.model_dump()

    def record() -> None:
        with hub.store.session() as s:
            attempts.heartbeat(s, worker, info)

    await run_in_threadpool(record)
    return {"commands": []}


@router.post("/claim")
async def claim(body: ClaimIn, worker: WorkerName, hub: HubDep, request: Request) -> dict[str, Any]:
    """Long-poll: answer as soon as a job is claimed, or with none after ``wait`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait

    def try_claim() -> list[dict[str, Any]]:
        with hub.store.session() as s:
            return [j.to_dict() for j in attempts.claim(s, worker, body.queues, body.slots)]

    async def client_gone() -> None:
        # The body has been read, so the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.create_task(client_gone())
    closing = asyncio.create_task(hub.wakeups.closing.wait())
    try:
        with hub.wakeups.watching(body.queues) as woken:
            while True:
                woken.clear()
                if gone.done() or closing.done():
                    return {"jobs": []}
                jobs = await run_in_threadpool(try_claim)
                remaining = deadline - loop.time()
                if jobs or remaining <= 0:
                    return {"jobs": jobs}
                wake = asyncio.create_task(woken.wait())
                await asyncio.wait(
                    {wake, gone, closing}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
    finally:
        gone.cancel()
        closing.cancel()


@router.get("/bundles/{sha}")
async def bundle(sha: str, worker: WorkerName, hub: HubDep) -> Response:
    def load() -> bytes | None:
        with hub.store.session() as s:
            row = s.get(Bundle, sha)
            return row.data if row else None

    data = await run_in_threadpool(load)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no bundle {sha}")
    return Response(data, media_type="application/gzip")


@router.post("/attempts/{attempt_id}/logs")
async def upload_log(
    attempt_id: str,
    worker: WorkerName,
    hub: HubDep,
    request: Request,
    offset: Annotated[int, Query(ge=0)],
) -> dict[str, int]:
    data = await request.body()
    if len(data) > MAX_LOG_CHUNK:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"log chunks are limited to {MAX_LOG_CHUNK} bytes",
        )

    def append() -> int:
        with hub.store.session() as s:
            return attempts.append_log(s, attempt_id, worker, offset, data)

    try:
        size = await run_in_threadpool(append)
    except (attempts.AttemptNotFound, attempts.NotYourAttempt) as exc:
        raise _attempt_errors(exc) from None
    return {"size": size}


@router.post("/attempts/{attempt_id}/finish")
async def finish(
    attempt_id: str, body: FinishIn, worker: WorkerName, hub: HubDep
) -> dict[str, Any]:
    result = AttemptResult(**body.model_dump())

    def record() -> tuple[str, set[str], Any]:
        with hub.store.session() as s:
            return attempts.finish(s, attempt_id, worker, result)

    try:
        state, woken, retry_at = await run_in_threadpool(record)
    except (attempts.AttemptNotFound, attempts.NotYourAttempt, attempts.AttemptFenced) as exc:
        raise _attempt_errors(exc) from None
    hub.wakeups.notify(woken)
    if retry_at is not None:
        hub.wakeups.poke_scheduler()
    return {"state": state}
