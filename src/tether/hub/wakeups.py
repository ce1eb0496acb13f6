"""In-process wake-ups: long-polling claims wait here for work on their queues.

On PostgreSQL, what other hub processes of the database commit arrives here
too (``store/broadcast.py``).

Store functions run in worker threads and return the queues they filled; the
caller hands those to :meth:`Wakeups.notify` after the commit. Waiters
register *before* they look in the store, so a notify that lands between
their look and their wait is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator


class HeldPoll:
    """A held poll's wake-up: ``event`` says look again, ``replaced`` says stop.

    ``replaced`` is set when a newer poll of the same worker registers: a
    worker has one poll open at a time, so an older one is either a request
    its client already gave up on or a client opening polls by the hundred.
    Either way it answers at once and stops costing the hub anything.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.replaced = False


class Wakeups:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._worker_waiters: dict[str, set[asyncio.Event]] = {}
        #: The one held poll of each worker that has one.
        self._polls: dict[str, HeldPoll] = {}
        #: Claims that left work behind because of a limit (pools, parallelism,
        #: max_active_tasks): any notify may have freed room for them.
        self._limit_waiters: set[asyncio.Event] = set()
        #: Counts notifies, so a claim can tell one happened while it looked.
        self.generation = 0
        self.scheduler = asyncio.Event()
        #: Set when the hub shuts down: held-open claims answer at once.
        self.closing = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def watching(self, queues: Iterable[str], worker: str) -> Iterator[HeldPoll]:
        """``worker``'s held poll: its event is set whenever one of ``queues``
        gets work or ``worker`` has news; entering replaces the worker's older
        held poll, if any.

        Call from the event loop.
        """
        poll = HeldPoll()
        older = self._polls.get(worker)
        if older is not None:
            older.replaced = True
            older.event.set()
        self._polls[worker] = poll
        keys = [(self._waiters, q) for q in queues]
        keys.append((self._worker_waiters, worker))
        for table, key in keys:
            table.setdefault(key, set()).add(poll.event)
        try:
            yield poll
        finally:
            if self._polls.get(worker) is poll:
                del self._polls[worker]
            for table, key in keys:
                waiters = table.get(key)
                if waiters is not None:
                    waiters.discard(poll.event)
                    if not waiters:
                        del table[key]

    def notify(self, queues: Iterable[str]) -> None:
        """Wake the claims waiting on ``queues``; safe from any thread.

        Every change that ends running work calls this after its commit (with
        the queues it filled, perhaps none), so it also wakes the claims that
        limits held back.
        """
        self._call(self._notify, set(queues))

    def _notify(self, names: set[str]) -> None:
        self.generation += 1
        self._wake(self._waiters, names)
        for event in self._limit_waiters:
            event.set()

    @contextlib.contextmanager
    def held_back(self, event: asyncio.Event, generation: int) -> Iterator[None]:
        """While inside, ``event`` is set by the next notify.

        ``generation`` is :attr:`generation` from before the claim looked; if a
        notify came since, ``event`` is set at once. Call from the event loop.
        """
        if generation != self.generation:
            event.set()
        self._limit_waiters.add(event)
        try:
            yield
        finally:
            self._limit_waiters.discard(event)

    def notify_worker(self, name: str) -> None:
        """Answer ``name``'s held poll now (a directive changed); safe from any thread."""
        self._call(self._wake, self._worker_waiters, {name})

    def wake_everything(self) -> None:
        """Every held poll, every claim limits held back and the scheduler look
        again; safe from any thread. For when effects may have been missed (the
        connection that hears other hubs came back, ``store/broadcast.py``)."""
        self._call(self._wake_everything)

    def _wake_everything(self) -> None:
        self.generation += 1
        for table in (self._waiters, self._worker_waiters):
            for events in table.values():
                for event in events:
                    event.set()
        for event in self._limit_waiters:
            event.set()
        self.scheduler.set()

    def close(self) -> None:
        """Release every held-open claim; safe from any thread."""
        self._call(self.closing.set)

    def poke_scheduler(self) -> None:
        """Make the scheduler loop look again now; safe from any thread."""
        self._call(self.scheduler.set)

    def _call(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)  # type: ignore[operator]
        else:
            loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    @staticmethod
    def _wake(table: dict[str, set[asyncio.Event]], keys: set[str]) -> None:
        for key in keys:
            for event in table.get(key, ()):
                event.set()
