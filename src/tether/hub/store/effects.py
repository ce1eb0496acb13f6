"""What a transaction tells the rest of the hub once it has committed.

A store function that queues work, ends running work or changes what a
worker must hear records it on its session: :func:`wake` (queues that got
work, or only "look again" when running work ended and limits may have room),
:func:`tell` (a worker whose held poll must answer now) and
:func:`poke_scheduler` (the scheduler loop must look again, for example at a
retry it now has to time). :meth:`Store.transaction
<tether.hub.store.db.Store.transaction>` fires them after the commit and
drops them on a rollback, so no caller has to remember them, and no waiter
is woken to look for work that was never committed.

The store knows its sink only as :class:`EffectSink` (the hub's
:class:`~tether.hub.wakeups.Wakeups`); a process without one (``tether db
clean``, ``tether secrets rotate-key``) drops them: the hub's sweep finds the
work anyway, only later. On PostgreSQL every transaction also announces
its effects to the other hub processes of the database
(``store/broadcast.py``), a process without a sink too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session

_KEY = "tether_effects"


class EffectSink(Protocol):
    """Where committed effects go; every method is safe from any thread."""

    def notify(self, queues: Iterable[str]) -> None: ...

    def notify_worker(self, name: str) -> None: ...

    def poke_scheduler(self) -> None: ...

    def wake_everything(self) -> None:
        """Every waiter looks again (effects may have been missed)."""
        ...


@dataclass
class Effects:
    """The effects one transaction has recorded so far."""

    #: Queues that got work; with ``look_again`` an empty set still wakes the
    #: claims that limits held back.
    queues: set[str] = field(default_factory=set)
    look_again: bool = False
    workers: set[str] = field(default_factory=set)
    scheduler: bool = False

    def any(self) -> bool:
        return bool(self.queues or self.look_again or self.workers or self.scheduler)

    def fire(self, sink: EffectSink) -> None:
        if self.queues or self.look_again:
            sink.notify(self.queues)
        for name in sorted(self.workers):
            sink.notify_worker(name)
        if self.scheduler:
            sink.poke_scheduler()


def pending(session: Session) -> Effects:
    """The effects ``session``'s transaction has recorded (made on first use)."""
    found = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = Effects()
    assert isinstance(found, Effects)
    return found


def peek(session: Session) -> Effects | None:
    """What ``session`` recorded so far, if anything, left in place."""
    found = session.info.get(_KEY)
    assert found is None or isinstance(found, Effects)
    return found


def take(session: Session) -> Effects | None:
    """Remove and return what ``session`` recorded, if anything."""
    found = session.info.pop(_KEY, None)
    assert found is None or isinstance(found, Effects)
    return found


def wake(session: Session, *queues: str | None) -> None:
    """After the commit, wake the held polls of ``queues`` and the claims limits held back.

    Called with no queue when running work ended: a pool slot or a
    concurrency limit may have room now.
    """
    fx = pending(session)
    fx.look_again = True
    fx.queues.update(q for q in queues if q)


def tell(session: Session, worker: str) -> None:
    """After the commit, answer ``worker``'s held poll at once (a directive changed)."""
    pending(session).workers.add(worker)


def poke_scheduler(session: Session) -> None:
    """After the commit, make the scheduler loop look again now."""
    pending(session).scheduler = True
