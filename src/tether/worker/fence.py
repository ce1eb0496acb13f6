"""Self-fencing: a worker cut off from its hub stops its tasks before the hub
can hand them to another worker.

The hub declares a worker lost, and retries its tasks elsewhere, once it has
heard nothing from it for its lost timeout, counted from when a heartbeat or
a poll *arrived*. The worker cannot see that clock, but it knows when it
*sent* each heartbeat the hub acknowledged, and that heartbeat arrived later.
So a deadline counted from that sending always falls before the hub's, by
whatever the request spent on the way. At ``protocol.FENCE_SHARE`` of the lost
timeout the worker kills its running tasks (SIGTERM, then SIGKILL after a
grace short enough to land before the hub's deadline too); their results stay
spooled and are delivered when the hub answers again, which refuses them if it
has given up on them meanwhile.

The worker cannot tell a partition from a hub outage (a refused connection
may come from a proxy or a firewall as well as from a stopped hub), so it
fences in both: the rule is "fence whenever the hub could have declared this
worker lost". A hub outage longer than the share therefore stops tasks that
the hub's start-up grace would have let finish; that is the price.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tether.protocol import FENCE_SHARE

log = logging.getLogger("tether.worker")

#: Share of the lost timeout that SIGTERM may take before SIGKILL, when fencing.
KILL_SHARE = 0.125


class Fence:
    """When this worker must stop its tasks for want of an acknowledged heartbeat.

    Times are the event loop's (monotonic). Without a lost timeout from the
    hub (an older hub), it never fences.
    """

    def __init__(self, kill_grace: float) -> None:
        self.lost_timeout: float | None = None
        self._kill_grace = kill_grace
        self._sent: float | None = None
        self._changed = asyncio.Event()

    def start(self, lost_timeout: float | None, sent: float) -> None:
        """The session is open: the hub's lost timeout, and when the session was asked for."""
        self.lost_timeout = lost_timeout
        self.acknowledged(sent)

    def acknowledged(self, sent: float) -> None:
        """The hub answered a heartbeat (or the session start) sent at ``sent``."""
        if self._sent is None or sent > self._sent:
            self._sent = sent
            self._changed.set()

    @property
    def after(self) -> float | None:
        """Seconds without an acknowledged heartbeat before the tasks are stopped."""
        return None if self.lost_timeout is None else self.lost_timeout * FENCE_SHARE

    @property
    def kill_grace(self) -> float:
        """SIGTERM to SIGKILL when fencing: the worker's own grace, if it fits."""
        if self.lost_timeout is None:
            return self._kill_grace
        return min(self._kill_grace, self.lost_timeout * KILL_SHARE)

    async def watch(self, stop_tasks: Callable[[str], int]) -> None:
        """Call ``stop_tasks(reason)`` whenever the deadline passes with tasks to stop.

        ``stop_tasks`` returns how many it stopped. One line is logged when a
        fence stops tasks, and one when the hub answers again.
        """
        loop = asyncio.get_running_loop()
        fenced = False
        while True:
            self._changed.clear()
            after = self.after
            if after is None or self._sent is None:
                await self._changed.wait()
                continue
            silent = loop.time() - self._sent
            if silent < after:
                if fenced:
                    log.info("the hub acknowledged a heartbeat again")
                    fenced = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(after - silent):
                        await self._changed.wait()
                continue
            reason = (
                f"no heartbeat acknowledged by the hub for {silent:.1f}s; the hub declares a "
                f"worker lost after {self.lost_timeout:g}s and would run this task elsewhere"
            )
            stopped = stop_tasks(reason)
            if stopped and not fenced:
                log.warning(
                    "%s: stopping %d running task(s) so that none runs twice; their "
                    "reports stay spooled for the hub",
                    reason,
                    stopped,
                )
            fenced = True
            await self._changed.wait()  # an acknowledgement, or a task started

    def poke(self) -> None:
        """Look again now (a task was started)."""
        self._changed.set()
