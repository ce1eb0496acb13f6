"""A try's log in the console: followed live while it runs, downloaded whole.

The stream is server-sent events (``text/event-stream``): the page opens it
at the offset its log ends, and each ``log`` event carries the text that
arrived since (as a JSON string), with the byte offset it ends at as the
event's id, so a reconnecting browser (``Last-Event-ID``) resumes where it
was. The hub looks for new bytes every ``FOLLOW_INTERVAL`` in a read-only
transaction; when the try has ended and every byte is sent, an ``end``
event closes the stream. So does a ``gone`` event when the session expires
or its token is revoked or expires (looked at every ``RECHECK`` seconds: a
stream lasts as long as its try). A browser that goes away ends it too,
quietly: a hang-up is normal, not an error in the hub's log.

Each open stream holds a database look every ``FOLLOW_INTERVAL``, so a hub
process keeps at most ``STREAMS_PER_PROCESS`` open, and one principal at most
``STREAMS_PER_PRINCIPAL`` (its tabs following logs); past either, a new
stream is refused with 429 and says which bound it met.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tether.hub.auth import console
from tether.hub.auth.console import ConsoleSession
from tether.hub.core import console_reads, queries
from tether.hub.state import Hub, get_hub, in_read
from tether.hub.store.outages import StoreUnavailable
from tether.hub.ui.access import PageSession, StreamSession
from tether.hub.ui.paths import DagId, MapIndex, Offset, RunId, TaskId, TryNumber

log = logging.getLogger("tether.hub.console")

router = APIRouter(prefix="/ui", include_in_schema=False)
HubDep = Annotated[Hub, Depends(get_hub)]
TRY = "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/tries/{try_number}"

#: Seconds between looks for new log bytes of a followed try.
FOLLOW_INTERVAL = 0.5
#: Most log bytes one event carries; more follow at once, without a pause.
EVENT_BYTES = 256 * 1024
#: Seconds of quiet after which a comment line keeps proxies from closing the stream.
KEEPALIVE = 15.0
#: Seconds between looks at whether the session's token is still good: a stream
#: lasts as long as its try, so a revoked or expired token must end it too.
RECHECK = 2.0
#: Why a stream ends when its session no longer holds.
ENDED = "the session was signed out or its token is no longer valid; sign in again"
#: Most log streams one principal may have open at once, in all its tabs.
STREAMS_PER_PRINCIPAL = 10
#: Most log streams one hub process keeps open at once.
STREAMS_PER_PROCESS = 200


class StreamSlots:
    """The log streams open now, by principal: a stream takes a slot before it
    starts and gives it back when it ends, however it ends."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, who: str) -> None:
        """A slot for ``who``, or 429 saying which bound is met."""
        if self._open.total() >= STREAMS_PER_PROCESS:
            raise HTTPException(
                429, f"this hub follows {STREAMS_PER_PROCESS} logs already; try again later"
            )
        if self._open[who] >= STREAMS_PER_PRINCIPAL:
            raise HTTPException(
                429,
                f"{who} follows {STREAMS_PER_PRINCIPAL} logs already; close a tab that follows one",
            )
        self._open[who] += 1

    def give_back(self, who: str) -> None:
        self._open[who] -= 1
        if self._open[who] <= 0:
            del self._open[who]

    def held(self, who: str) -> int:
        return self._open[who]


def stream_slots_of(app: Any) -> StreamSlots:
    """The app's :class:`StreamSlots` (one per app, made on first use)."""
    slots: StreamSlots | None = getattr(app.state, "log_streams", None)
    if slots is None:
        slots = app.state.log_streams = StreamSlots()
    return slots


class EventStream(StreamingResponse):
    """A streamed answer whose client may hang up at any time without a traceback;
    ``ended`` runs when it is over, whatever ended it."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        ended: Callable[[], None],
        *,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            log.debug("a console log stream's client went away")
        finally:
            self._ended()


def _event(kind: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _read_since(session: Session, *, attempt_id: str, offset: int) -> tuple[bytes, int, bool]:
    return console_reads.log_since(session, attempt_id, offset, EVENT_BYTES)


async def _follow(
    hub: Hub, request: Request, attempt_id: str, start: int, session: ConsoleSession
) -> AsyncIterator[bytes]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset, quiet, unchecked = start, 0.0, 0.0
    yield b"retry: 2000\n\n"  # reconnect after 2 s should the link drop
    while True:
        try:
            data, end, ended = await in_read(
                hub, functools.partial(_read_since, attempt_id=attempt_id, offset=offset)
            )
        except StoreUnavailable:
            yield _event("gone", "the hub's database is unavailable; reload to try again")
            return
        text = decoder.decode(data, final=ended)
        if text:
            # The id is where the bytes it decoded end: an incomplete character at the
            # end is held back, and sent again after a reconnect.
            yield _event("log", text, end - len(decoder.getstate()[0]))
            quiet = 0.0
        offset = end
        if ended:
            yield _event("end", "the try has ended")
            return
        if session.expires <= time.time():
            yield _event("gone", "the console session has expired; sign in again")
            return
        if unchecked >= RECHECK:
            unchecked = 0.0
            if await console.session_principal(hub, session) is None:
                yield _event("gone", ENDED)
                return
        if len(data) >= EVENT_BYTES:
            continue  # more is waiting
        if await request.is_disconnected():
            return
        await asyncio.sleep(FOLLOW_INTERVAL)
        quiet += FOLLOW_INTERVAL
        unchecked += FOLLOW_INTERVAL
        if quiet >= KEEPALIVE:
            yield b": keepalive\n\n"
            quiet = 0.0


def _resume_at(request: Request, offset: int) -> int:
    """Where to start: a reconnecting browser's ``Last-Event-ID``, else ``offset``."""
    last = request.headers.get("last-event-id", "")
    # ASCII digits only: "²" is a digit to str.isdigit, and no number to int().
    return int(last) if last.isascii() and last.isdigit() and len(last) < 19 else offset


@router.get(TRY + "/stream", response_model=None)
async def follow_log(
    request: Request,
    hub: HubDep,
    signed: StreamSession,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    try_number: TryNumber,
    map_index: MapIndex = -1,
    offset: Offset = 0,
) -> Response:
    """Server-sent events with the try's log from ``offset`` on, until the try ends."""
    attempt_id = await in_read(
        hub,
        lambda s: console_reads.find_try(s, dag_id, run_id, task_id, map_index, try_number).id,
    )
    slots, who = stream_slots_of(request.app), signed.principal.name
    slots.take(who)
    return EventStream(
        _follow(hub, request, attempt_id, _resume_at(request, offset), signed.session),
        functools.partial(slots.give_back, who),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(TRY + "/log", response_model=None)
async def download_log(
    hub: HubDep,
    signed: PageSession,
    dag_id: DagId,
    run_id: RunId,
    task_id: TaskId,
    try_number: TryNumber,
    map_index: MapIndex = -1,
) -> Response:
    """The try's whole log as the hub holds it, as a file to save."""

    def read(s: Session) -> bytes:
        attempt = console_reads.find_try(s, dag_id, run_id, task_id, map_index, try_number)
        return queries.read_log(s, attempt)

    data = await in_read(hub, read)
    name = f"{dag_id}.{run_id}.{task_id}.{map_index}.{try_number}.log"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}"',
            "Cache-Control": "no-store",
        },
    )
