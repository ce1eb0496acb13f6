"""Effects that cross hub processes: PostgreSQL ``NOTIFY`` out, ``LISTEN`` in.

Several hubs can share one PostgreSQL. A held poll waits in the process
that holds it (``hub/wakeups.py``), so work queued, or a directive given,
through hub B must reach the polls held by hub A. Each transaction that
recorded effects (``store/effects.py``) also sends them with
``pg_notify`` just before its commit: PostgreSQL delivers a notification
when, and only if, its transaction commits, so a rollback tells no one
here either. Every hub keeps one connection listening (:class:`Listener`)
and fires what other hubs announce into its own wake-ups; its own
announcements it skips (it fired them already, after its commit).

A notification that is lost (the listening connection dropped and came
back) loses nothing either: on every (re)connect the listener wakes every
held poll and the scheduler, and each looks in the store again. SQLite is
one hub's own file: nothing is announced there.

What arrives on the channel is checked like any input: anyone who may
connect to the database can ``NOTIFY`` it, so a payload that is not what
:func:`encode` writes is logged and dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from tether.hub.store.effects import Effects, EffectSink

log = logging.getLogger("tether.hub.store")

#: The channel every hub of one database announces on and listens to.
CHANNEL = "tether_effects"

#: PostgreSQL refuses a payload of 8,000 bytes or more; a longer one is sent as
#: "wake everything" (each waiter looks again, nothing is lost).
MAX_PAYLOAD = 7900

#: Longest queue or worker name a payload may name (both are far shorter).
MAX_NAME = 1000

#: Seconds between the listener's attempts to reconnect, at most.
MAX_RECONNECT_WAIT = 5.0

#: Seconds the listening thread waits for a notification before it looks
#: whether it must stop.
LISTEN_TICK = 0.5


def new_sender() -> str:
    """An id for one process's announcements, so that it skips its own."""
    return uuid.uuid4().hex


def encode(sender: str, fx: Effects) -> str:
    """The payload that carries ``fx`` to the other hubs."""
    body: dict[str, Any] = {"from": sender}
    if fx.queues:
        body["queues"] = sorted(fx.queues)
    if fx.look_again:
        body["look_again"] = True
    if fx.workers:
        body["workers"] = sorted(fx.workers)
    if fx.scheduler:
        body["scheduler"] = True
    payload = json.dumps(body, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD:
        payload = json.dumps({"from": sender, "everything": True}, separators=(",", ":"))
    return payload


class BadPayload(ValueError):
    """A notification on the channel that no hub wrote."""


def decode(payload: str) -> tuple[str, Effects | None]:
    """``(sender, effects)`` of a payload; effects None means wake everything.

    Raises :class:`BadPayload` for anything :func:`encode` does not write.
    """
    try:
        body = json.loads(payload)
    except ValueError:
        raise BadPayload("not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("from"), str):
        raise BadPayload("no sender")
    known = {"from", "queues", "look_again", "workers", "scheduler", "everything"}
    if set(body) - known:
        raise BadPayload(f"unknown keys {sorted(set(body) - known)}")
    if body.get("everything") is True:
        return body["from"], None
    fx = Effects()
    for key, into in (("queues", fx.queues), ("workers", fx.workers)):
        names = body.get(key, [])
        if not isinstance(names, list) or not all(
            isinstance(n, str) and 0 < len(n) <= MAX_NAME for n in names
        ):
            raise BadPayload(f"{key} must be a list of names")
        into.update(names)
    for key in ("look_again", "scheduler"):
        if not isinstance(body.get(key, False), bool):
            raise BadPayload(f"{key} must be true or false")
    fx.look_again = body.get("look_again", False)
    fx.scheduler = body.get("scheduler", False)
    return body["from"], fx


def announce(session: Session, sender: str, fx: Effects) -> None:
    """Send ``fx`` to the other hubs when ``session``'s transaction commits."""
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": encode(sender, fx)},
    )


class Listener:
    """A thread that fires what other hubs announce into ``sink``.

    ``connect`` opens a new DB-API connection in autocommit mode (the store's
    :meth:`~tether.hub.store.db.Store.direct_connection`).
    """

    def __init__(self, connect: Callable[[], Any], sender: str, sink: EffectSink) -> None:
        self._connect = connect
        self._sender = sender
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="effects-listener", daemon=True)
        #: Notifications refused since the start (no hub wrote them).
        self.refused = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LISTEN_TICK * 4)

    def _run(self) -> None:
        wait = 0.1
        failing = False  # said once per outage, not at every retry
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                if not failing:
                    log.warning("cannot listen for other hubs' effects (%s); retrying", exc)
                failing = True
                self._stop.wait(wait)
                wait = min(wait * 2, MAX_RECONNECT_WAIT)
                continue
            failing = False
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                # Whatever was announced while no connection listened is lost:
                # every waiter looks in the store again.
                self._sink.wake_everything()
                wait = 0.1
                while not self._stop.is_set():
                    for notice in conn.notifies(timeout=LISTEN_TICK):
                        self.handle(notice.payload)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("lost the connection that hears other hubs (%s); reconnecting", exc)
                    time.sleep(0.1)
            finally:
                try:
                    conn.close()
                except Exception:  # already broken
                    pass

    def handle(self, payload: str) -> None:
        """Fire one notification's effects (unless this process sent it)."""
        try:
            sender, fx = decode(payload)
        except BadPayload as exc:
            self.refused += 1
            log.warning("ignored a notification on %s that no hub wrote: %s", CHANNEL, exc)
            return
        if sender == self._sender:
            return
        if fx is None:
            self._sink.wake_everything()
        else:
            fx.fire(self._sink)
