"""The worker API (``/api/worker/v1``): what edge workers call. Routes stay thin.

Every call but ``/enrol`` carries the worker's own credential, checked by the
gate before the body is read (``auth/gate.py``) and again in the route's
transaction; ``/heartbeat`` and ``/poll`` also carry the session id of the
calling process. ``reports`` (log chunks and results) is its own router
because the hub includes it with its own body limit (``hub/app.py``).

Bodies are read by the pydantic models below, which add the hub's bounds
(lengths, ranges, queue names) and forbid unknown fields; answers are the
dataclasses of :mod:`tether.protocol`, the same the worker reads. The models
stay pydantic rather than being derived from the dataclasses because the
bounds are the hub's policy and the worker's install must not need pydantic;
``tests/unit/test_protocol.py`` checks both field by field. Domain errors
become statuses through the one table in ``hub/errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tether import __version__
from tether.hub.auth.deps import SESSION_BOUND, HubDep, WorkerAuth, WorkerIdentity
from tether.hub.auth.gate import PRINCIPAL, AttemptToken, actor_of, who
from tether.hub.core import attempts, audit, credentials, handout, sessions, worker_logs
from tether.hub.core import states as S
from tether.hub.core.runs import utcnow
from tether.hub.errors import ErrorAnswer
from tether.hub.errors import responses as E
from tether.hub.state import Hub
from tether.hub.store import effects
from tether.hub.store.models import Bundle, Worker
from tether.hub.wire import StrictJSONRoute, wire_value
from tether.protocol import (
    ID_PATTERN,
    MAX_CLAIM_WAIT,
    MAX_ERROR_CHARS,
    MAX_WIRE_INT,
    MAX_WORKER_LOG_BATCH,
    MAX_WORKER_LOG_BODY,
    MAX_WORKER_LOG_LINE,
    UPDATE_ID_PATTERN,
    WORKER_API_PREFIX,
    AttemptResult,
    Directives,
    EnrolReply,
    FinishReply,
    HeartbeatReply,
    InvalidQueueName,
    LogAck,
    PollReply,
    SessionReply,
    WorkerLogAck,
    validate_queue_name,
)

router = APIRouter(prefix=WORKER_API_PREFIX, tags=["worker"], route_class=StrictJSONRoute)
#: Log chunks and results: included with a body limit of their own.
reports = APIRouter(prefix=WORKER_API_PREFIX, tags=["worker"], route_class=StrictJSONRoute)

#: Largest body of an enrolment (anyone may call it): a token is ~70 bytes.
ENROL_MAX_BODY = 4096
#: Log bytes held in memory per upload; the rest of a chunk waits in a temporary file.
LOG_PIECE = 256 * 1024

#: The answers that are not protocol messages, as the worker API's document shows them.
BUNDLE_ANSWER: dict[str, Any] = {
    "description": "the bundle: a gzipped tar of the DAG's files, whose sha256 is its name",
    "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
}
SECRET_ANSWER: dict[str, Any] = {
    "description": "the connection's fields (as `tether.sdk.Connection.to_dict`, the "
    "password included) or the variable; never kept by a cache (`Cache-Control: no-store`)",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "title": "ConnectionSecret",
                        "type": "object",
                        "required": ["conn_id", "conn_type"],
                        "properties": {
                            name: {"type": kind}
                            for name, kind in (
                                ("conn_id", "string"),
                                ("conn_type", "string"),
                                ("host", ["string", "null"]),
                                ("login", ["string", "null"]),
                                ("password", ["string", "null"]),
                                ("schema", ["string", "null"]),
                                ("port", ["integer", "null"]),
                                ("extra", ["string", "null"]),
                            )
                        },
                    },
                    {
                        "title": "VariableSecret",
                        "type": "object",
                        "required": ["key", "value", "is_secret"],
                        "properties": {
                            "key": {"type": "string"},
                            "value": {"type": "string"},
                            "is_secret": {"type": "boolean"},
                        },
                    },
                ]
            }
        }
    },
}
#: A log chunk is the bytes themselves, streamed, not JSON.
LOG_CHUNK: dict[str, Any] = {
    "required": True,
    "description": "the log's bytes from `offset` on (at most the session's `max_log_chunk_bytes`)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
LOCAL_ANSWER: dict[str, Any] = {
    "description": "with `local=true`: the use of the worker's own copy is on the record"
}

AttemptId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="an attempt id")]
BundleSha = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="a bundle's sha256")]
#: An attempt id as a worker lists it (the hub makes them; the bound keeps lists small).
ListedAttempt = Annotated[str, Field(max_length=64)]


def _queues(value: list[str]) -> list[str]:
    try:
        return [validate_queue_name(q) for q in value]
    except InvalidQueueName as exc:
        raise ValueError(str(exc)) from None


class StrictBody(BaseModel):
    """A worker-API request body: a field the hub does not know is a 422 naming it.

    A field dropped without a word is how a heartbeat's queues went unrecorded;
    a worker newer than the hub hears at once what it sent in vain.
    """

    model_config = ConfigDict(extra="forbid")


class FactsIn(StrictBody):
    """:class:`tether.protocol.WorkerFacts`: a session's start, and every heartbeat."""

    concurrency: int = Field(ge=0, le=10_000)
    free_slots: int = Field(ge=0, le=10_000)
    running: list[ListedAttempt] = Field(default_factory=list, max_length=10_000)
    state: Literal["online", "offline"] = "online"
    maintenance: bool = False
    maintenance_comment: str | None = Field(default=None, max_length=1000)
    #: Stopping: it takes no new task and exits once the running ones end.
    draining: bool = False
    version: str = Field(max_length=50)
    protocol: int = Field(ge=0, le=1_000_000)
    hostname: str | None = Field(default=None, max_length=250)
    platform: str | None = Field(default=None, max_length=250)
    python: str | None = Field(default=None, max_length=50)
    #: Why the worker's spool cannot be written (a full disk); None when it can.
    spool_error: str | None = Field(default=None, max_length=1000)
    #: Queues to serve; empty means every queue the credential allows.
    queues: list[str] = Field(default_factory=list, max_length=100)
    #: The update request the process last acted on, and why it failed.
    update_id: str | None = Field(default=None, pattern=f"^{UPDATE_ID_PATTERN}$")
    update_error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)

    _check_queues = field_validator("queues")(_queues)


class EnrolIn(StrictBody):
    """:class:`tether.protocol.EnrolRequest`."""

    token: str = Field(min_length=1, max_length=200)


class PollIn(StrictBody):
    """:class:`tether.protocol.PollRequest`."""

    slots: int = Field(ge=0, le=1000)
    running: list[ListedAttempt] = Field(default_factory=list, max_length=10_000)
    #: The worker is in maintenance (for whatever reason): it takes no job.
    maintenance: bool = False
    #: Maintenance the worker last heard the centre ask for.
    central_maintenance: bool = False
    #: The worker is already stopping (a shutdown directive is old news).
    draining: bool = False
    wait: float = Field(default=30.0, ge=0, le=MAX_CLAIM_WAIT)


class FinishIn(StrictBody):
    """:class:`tether.protocol.AttemptResult`."""

    state: Literal["success", "failed", "skipped"]
    output: Any = None
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    no_retry: bool = False

    _check_output = field_validator("output")(wire_value("output"))


def _log_line(value: str) -> str:
    """One line of a worker's own log: printable text and tabs, nothing that would
    move a terminal's cursor or split it into two lines where it is read."""
    if not value.replace("\t", " ").isprintable():
        raise ValueError("a log line may hold no control character but a tab")
    return value


class WorkerLogIn(StrictBody):
    """:class:`tether.protocol.WorkerLogLines`."""

    lines: list[Annotated[str, Field(max_length=MAX_WORKER_LOG_LINE)]] = Field(
        max_length=MAX_WORKER_LOG_BATCH
    )
    dropped: int = Field(default=0, ge=0, le=MAX_WIRE_INT)

    @field_validator("lines")
    @classmethod
    def _printable(cls, value: list[str]) -> list[str]:
        return [_log_line(line) for line in value]


#: A worker over its budget of log lines (``core/worker_logs.Budget``).
OVER_BUDGET: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorAnswer,
        "description": "this worker sent more log lines than the hub takes a minute "
        "(`Retry-After`); nothing of the batch was kept",
    }
}


async def _as_worker(hub: Hub, me: WorkerIdentity, fn: Any, *, session_bound: bool) -> Any:
    """Run ``fn(session, worker_row)`` in one transaction, checking the session if asked.

    The credential is checked again here, in the transaction: the gate may
    have let a cached credential through that was revoked since.
    """

    def work() -> Any:
        with hub.store.transaction() as s:
            worker = s.get(Worker, me.name)
            if worker is None:
                raise credentials.InvalidCredential("this worker was removed")
            if worker.credential_hash != me.credential_hash:  # revoked while the call waited
                raise credentials.InvalidCredential("invalid or revoked worker credential")
            if session_bound:
                sessions.check_session(worker, me.presented_session)
            return fn(s, worker)

    try:
        result: Any = await run_in_threadpool(work)
        return result
    except credentials.InvalidCredential:
        hub.principals.forget(me.name)  # the gate must not let the revoked one in again
        raise


@router.post("/enrol", max_body_size=ENROL_MAX_BODY, responses=E(401, 409))
async def enrol(body: EnrolIn, request: Request, hub: HubDep) -> EnrolReply:
    """Exchange a one-time enrolment token for this worker's own credential.

    The audit entry is the new worker's (``worker:NAME``), from the address
    the token was spent from, and names the token by its id only.
    """
    address = who(request).address  # the caller is anonymous until this succeeds

    def work() -> EnrolReply:
        with hub.store.read() as s:  # a made-up token never takes the write lock
            credentials.find_token(s, body.token)
        try:
            with hub.store.transaction() as s:
                worker, credential = credentials.enrol(s, body.token)
                by = audit.Who(f"worker:{worker.name}", address)
                details = {
                    "token_id": credentials.token_id(body.token),
                    "queues": worker.allowed_queues,
                }
                audit.note(s, by, "worker.enrol", f"worker:{worker.name}", details)
                return EnrolReply(worker.name, credential, list(worker.allowed_queues))
        except IntegrityError:  # another token created the same worker in that instant
            raise credentials.EnrolmentRefused(
                "a worker of this name was enrolled at the same moment"
            ) from None

    answer = await run_in_threadpool(work)
    hub.principals.forget(answer.name)  # a credential it replaced is void
    return answer


@router.post("/sessions", responses=E(403, 426))
async def start_session(body: FactsIn, me: WorkerAuth, hub: HubDep) -> SessionReply:
    """A worker process starts: check its version, take over from older processes."""
    sessions.check_version(body.version, body.protocol, __version__, hub.config.min_worker_version)

    def start(s: Session, worker: Worker) -> tuple[str, list[str]]:
        return sessions.start_session(s, worker, body.model_dump())

    session_id, queues = await _as_worker(hub, me, start, session_bound=False)
    return SessionReply(
        name=me.name,
        session_id=session_id,
        queues=queues,
        heartbeat_interval=hub.config.worker_heartbeat_interval,
        # The worker stops its tasks well before this (protocol.FENCE_SHARE).
        lost_timeout=hub.config.worker_lost_timeout,
        hub_version=__version__,
        max_task_output_bytes=hub.config.max_task_output_bytes,
        max_log_chunk_bytes=hub.config.max_log_chunk_bytes,
    )


@router.post("/heartbeat", responses=E(403, 409), openapi_extra=SESSION_BOUND)
async def heartbeat(body: FactsIn, me: WorkerAuth, hub: HubDep) -> HeartbeatReply:
    """The worker's facts, its queues among them (recorded, or 403), for its directives."""
    grace = timedelta(seconds=3 * hub.config.worker_heartbeat_interval)

    def record(s: Session, worker: Worker) -> Directives:
        now = utcnow()
        accepted = sessions.accepting(worker)
        sessions.serve_queues(worker, body.queues)
        sessions.record_heartbeat(worker, body.model_dump(), now)
        sessions.reconcile(s, worker, body.running, now, grace)
        if sessions.accepting(worker) != accepted:
            # The held poll must re-read what the worker now accepts; else leave it be.
            effects.tell(s, worker.name)
        return sessions.directives(s, worker, body.running)

    directives = await _as_worker(hub, me, record, session_bound=True)
    return HeartbeatReply(directives)


@router.post(
    "/worker-log",
    max_body_size=MAX_WORKER_LOG_BODY,
    responses={**E(409, 413), **OVER_BUDGET},
    openapi_extra=SESSION_BOUND,
)
async def worker_log(body: WorkerLogIn, me: WorkerAuth, hub: HubDep) -> WorkerLogAck:
    """Lines of the worker's own log (not its tasks'); the hub keeps each worker's
    newest ``worker_log_keep_lines`` and takes ``worker_log_lines_per_minute``."""
    keep = hub.config.worker_log_keep_lines

    def store(s: Session, worker: Worker) -> int:
        # Spent once the session is known to be this worker's current one.
        wait = hub.worker_log_budget.spend(worker.name, len(body.lines) + bool(body.dropped))
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "over this worker's budget of log lines; send them again later",
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        return worker_logs.append(s, worker.name, body.lines, body.dropped, utcnow(), keep)

    return WorkerLogAck(await _as_worker(hub, me, store, session_bound=True))


async def _fail_undeliverable(hub: Hub, items: list[tuple[int, str]]) -> None:
    """End the task instances a claim could not hand out (see attempts.claim)."""

    def work() -> None:
        for ti_id, reason in items:
            with hub.store.transaction() as s:
                attempts.fail_undeliverable(s, ti_id, reason)

    await run_in_threadpool(work)


#: A look for a poll: the answer, whether work was held back, what could not be
#: handed out, whether the worker was declared lost while the poll was held,
#: and how long each job handed out had waited queued.
Looked = tuple[PollReply, bool, list[tuple[int, str]], bool, list[tuple[str, float]]]


@router.post("/poll", responses=E(409), openapi_extra=SESSION_BOUND)
async def poll(body: PollIn, me: WorkerAuth, hub: HubDep, request: Request) -> PollReply:
    """Long-poll for jobs and directives.

    Answers as soon as a job is claimed or a directive needs acting on, or
    with nothing after ``wait`` seconds. With ``slots`` 0 it only waits for
    directives, so a busy worker still hears a kill within a round trip.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait
    take = body.slots if not body.maintenance else 0

    def look(s: Session, worker: Worker, arrived: bool) -> Looked:
        if arrived:
            sessions.record_poll(worker, body.running, utcnow())
        found = sessions.directives(s, worker, body.running)
        # Declared lost while this poll was held: the worker has been silent for
        # the lost timeout, so this connection may lead nowhere; a job claimed on
        # it would be lost with it. It gets work again once it is heard from.
        dropped = worker.state == S.WorkerState.LOST
        quiet = dropped or found.shutdown or found.maintenance or not sessions.accepting(worker)
        claimed = (
            attempts.Claimed()
            if quiet
            else attempts.claim(
                s,
                worker.name,
                worker.queues,
                take,
                hub.config.parallelism,
                hub.config.max_job_bytes,
            )
        )
        jobs = claimed.jobs
        # Work left behind (a limit, or a task too big for the free slots):
        # wait for any change that ends running work, not only for new work.
        held_back = (
            not quiet
            and not claimed.nothing_queued
            and len(jobs) < take
            and attempts.has_queued_work(s, worker.queues)
        )
        reply = PollReply([j.to_dict() for j in jobs], found)
        return reply, held_back, claimed.undeliverable, dropped, claimed.waits

    async def client_gone() -> None:
        # The body has been read, so the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.create_task(client_gone())
    closing = asyncio.create_task(hub.wakeups.closing.wait())
    queues = list(me.allowed_queues) if take else []
    try:
        with hub.wakeups.watching(queues, worker=me.name) as held:
            woken = held.event
            arrived = True
            while True:
                woken.clear()
                # No one to hand a job to, or a newer poll of this worker took over:
                # one held poll per worker, however many a client opens.
                if gone.done() or held.replaced:
                    return PollReply()
                generation = hub.wakeups.generation
                looked: Looked = await _as_worker(
                    hub, me, functools.partial(look, arrived=arrived), session_bound=True
                )
                arrived = False
                answer, held_back, undeliverable, dropped, waits = looked
                hub.metrics.dispatched(waits)  # committed: these tasks run now
                if undeliverable:
                    await _fail_undeliverable(hub, undeliverable)
                d = answer.directives
                urgent = (
                    d.kill
                    or (d.shutdown and not body.draining)
                    or d.maintenance != body.central_maintenance
                )
                remaining = deadline - loop.time()
                if answer.jobs or urgent or dropped or remaining <= 0 or closing.done():
                    return answer
                with (
                    hub.wakeups.held_back(woken, generation)
                    if held_back
                    else contextlib.nullcontext()
                ):
                    wake = asyncio.create_task(woken.wait())
                    await asyncio.wait(
                        {wake, gone, closing},
                        timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    wake.cancel()
                if gone.done() or held.replaced:
                    return PollReply(directives=d)
    finally:
        gone.cancel()
        closing.cancel()


@router.get(
    "/bundles/{sha}", response_class=Response, responses={200: BUNDLE_ANSWER, **E(403, 404)}
)
async def bundle(sha: BundleSha, me: WorkerAuth, hub: HubDep, request: Request) -> Response:
    """A DAG's bundle, to a worker that holds or held an attempt of a run pinned to it.

    Any other worker gets 403, whether the bundle exists or not: a tenant's
    worker can neither read nor find out about another tenant's code. Each
    refusal is an audit entry (``bundle.refused``).
    """
    refusal = f"bundle {sha} is not the code of any task this worker was handed"

    def load(s: Session, worker: Worker) -> bytes | None:
        if not attempts.ran_bundle(s, worker.name, sha, worker.allowed_queues):
            return None
        row = s.get(Bundle, sha)
        return row.data if row else b""

    def refused(s: Session, worker: Worker) -> None:
        audit.note(s, who(request), "bundle.refused", f"bundle:{sha}")

    data = await _as_worker(hub, me, load, session_bound=False)
    if data is None:  # another tenant's code, or none: the same answer, on the record
        await _as_worker(hub, me, refused, session_bound=False)
        raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)
    if not data:  # its runs were cleaned away since
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"bundle {sha} is gone")
    return Response(data, media_type="application/gzip")


SecretName = Annotated[
    str, Path(pattern=f"^{ID_PATTERN}$", max_length=250, description="a connection or variable")
]


@router.get(
    "/secrets/{kind}/{name}",
    response_class=Response,
    responses={200: SECRET_ANSWER, 204: LOCAL_ANSWER, **E(403, 404)},
)
async def secret(
    kind: Literal["connections", "variables"],
    name: SecretName,
    request: Request,
    hub: HubDep,
    local: bool = False,
) -> Response:
    """A declared connection or variable, to the task process of a running attempt.

    Called with the attempt's token (from its job), not the worker's
    credential. ``local=true``: the task read it from its worker's own store;
    the hub only records the name. Every answer and refusal is in the audit log.
    """
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, AttemptToken):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid attempt token")
    address = actor_of(request)[1]

    def work() -> dict[str, Any] | None:
        with hub.store.transaction() as s:
            return handout.hand_out(
                s, hub.secret_keys, principal.token_hash, kind, name, local=local, address=address
            )

    def refused(exc: handout.Refused) -> None:
        if exc.actor is None:  # a token of no attempt: nothing to file it under
            return
        with hub.store.transaction() as s:
            audit.record(
                s,
                exc.actor,
                "secret.refused",
                f"{kind[:-1]}:{name}",
                {**exc.details, "reason": str(exc)},
                address,
            )

    try:
        answer = await run_in_threadpool(work)
    except handout.Refused as exc:  # on the record, then answered by the table
        await run_in_threadpool(refused, exc)
        raise
    if answer is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    # Never kept by a proxy or a client cache on the way.
    return Response(
        json.dumps(answer),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@reports.post(
    "/attempts/{attempt_id}/logs",
    responses=E(403, 404, 409, 413),
    openapi_extra={"requestBody": LOG_CHUNK},
)
async def upload_log(
    attempt_id: AttemptId,
    me: WorkerAuth,
    hub: HubDep,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=MAX_WIRE_INT)],
) -> LogAck:
    """Append log bytes at ``offset``; the answer is the size the hub holds.

    The chunk is streamed into a temporary file (in memory up to LOG_PIECE),
    never held whole, and stored in pieces. The body limit is the hub's
    ``max_log_chunk_bytes``; of each try the hub keeps ``max_task_log_bytes``.
    """
    with tempfile.SpooledTemporaryFile(max_size=LOG_PIECE) as buffer:
        async for received in request.stream():
            buffer.write(received)
        buffer.seek(0)

        def append(s: Session, worker: Worker) -> int:
            pieces = iter(functools.partial(buffer.read, LOG_PIECE), b"")
            return attempts.append_log(
                s, attempt_id, worker.name, offset, pieces, hub.config.max_task_log_bytes
            )

        size: int = await _as_worker(hub, me, append, session_bound=False)
    return LogAck(size)


@reports.post("/attempts/{attempt_id}/finish", responses=E(403, 404, 409))
async def finish(attempt_id: AttemptId, body: FinishIn, me: WorkerAuth, hub: HubDep) -> FinishReply:
    result = AttemptResult(**body.model_dump())

    def record(s: Session, worker: Worker) -> str:
        return attempts.finish(s, attempt_id, worker.name, result, hub.config.max_task_output_bytes)

    return FinishReply(await _as_worker(hub, me, record, session_bound=False))
