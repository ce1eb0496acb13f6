"""In-process wake-ups: long-polling claims wait here for work on their queues.

Store functions run in worker threads and return the queues they filled; the
caller hands those to :meth:`Wakeups.notify` after the commit. Waiters
register *before* they look in the store, so a notify that lands between
their look and their wait is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator


class Wakeups:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.scheduler = asyncio.Event()
        #: Set when the hub shuts down: held-open claims answer at once.
        self.closing = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def watching(self, queues: Iterable[str]) -> Iterator[asyncio.Event]:
        """An event set whenever one of ``queues`` gets work; call from the loop."""
        event = asyncio.Event()
        names = list(queues)
        for q in names:
            self._waiters.setdefault(q, set()).add(event)
        try:
            yield event
        finally:
            for q in names:
                waiters = self._waiters.get(q)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[q]

    def notify(self, queues: Iterable[str]) -> None:
        """Wake the claims waiting on ``queues``; safe from any thread."""
        names = set(queues)
        if names:
            self._call(self._wake_queues, names)

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

    def _wake_queues(self, names: set[str]) -> None:
        for q in names:
            for event in self._waiters.get(q, ()):
                event.set()
