"""The worker's own log (not its tasks'), kept in memory and shipped to the hub.

:class:`OwnLog` is a logging handler on the ``tether.worker`` loggers: each
record becomes the lines the worker writes to its stderr (same format),
with the worker's credential and any other value given to :meth:`mask`
replaced by ``***``, in a buffer of at most ``max_lines`` lines. When the
hub is out of reach for long the oldest lines go first, counted, and the
count travels with the next batch. Logging never waits on the hub and
never raises: a record that cannot be formatted is dropped and counted.

:func:`ship` sends what the buffer holds, one bounded batch at a time, with
no retry of its own (the worker's loop tries again later) and inside
:data:`SHIPPING`, so whatever a failed shipment logs is not itself shipped:
a hub that is down cannot make the buffer fill with its own complaints.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque

from tether.protocol import MAX_WORKER_LOG_BATCH, MAX_WORKER_LOG_LINE, WorkerLogLines
from tether.sdk.masking import SecretMasker
from tether.worker.client import HubClient, HubError

#: Set while a batch is shipped: records logged then stay out of the buffer.
SHIPPING: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_shipping", default=False)
#: The stderr format of ``tether worker`` (``cli/serve.py``'s ``setup_logging``).
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Lines kept while the hub is out of reach; older ones are dropped, counted.
MAX_LINES = 5000
#: Characters of a batch (the hub takes at most MAX_WORKER_LOG_BODY bytes).
BATCH_CHARS = 256 * 1024


def _clean(line: str) -> str:
    """A line the hub takes: no control characters but tabs, at most its length."""
    if not line.isprintable():
        line = "".join(c if c.isprintable() or c == "\t" else "?" for c in line)
    return line[:MAX_WORKER_LOG_LINE]


class OwnLog(logging.Handler):
    """The buffer of the worker's own log lines (see the module's docstring)."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        super().__init__(logging.INFO)
        self.max_lines = max_lines
        self.masker = SecretMasker()
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter(FORMAT))

    def mask(self, value: str | None) -> None:
        """Never ship ``value`` (a credential, a proxy's password)."""
        if value:
            self.masker.add(value)

    def emit(self, record: logging.LogRecord) -> None:
        if SHIPPING.get():
            return
        try:
            lines = [_clean(line) for line in self.masker.redact(self.format(record)).splitlines()]
        except Exception:  # a record that cannot be formatted: counted, never raised
            lines, lost = [], 1
        else:
            lost = 0
        with self._guard:
            self._dropped += lost
            self._lines.extend(lines)
            over = len(self._lines) - self.max_lines
            for _ in range(max(0, over)):
                self._lines.popleft()
            self._dropped += max(0, over)

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def dropped(self) -> int:
        return self._dropped

    def take(self) -> WorkerLogLines | None:
        """The oldest lines, as one batch, out of the buffer; None when it is empty."""
        with self._guard:
            if not self._lines and not self._dropped:
                return None
            batch: list[str] = []
            size = 0
            while self._lines and len(batch) < MAX_WORKER_LOG_BATCH:
                size += len(self._lines[0]) + 4
                if batch and size > BATCH_CHARS:
                    break
                batch.append(self._lines.popleft())
            dropped, self._dropped = self._dropped, 0
        return WorkerLogLines(batch, dropped)

    def put_back(self, batch: WorkerLogLines) -> None:
        """A batch the hub did not take goes back in front, within the bound."""
        with self._guard:
            room = max(0, self.max_lines - len(self._lines))
            keep = batch.lines[len(batch.lines) - room :] if room else []
            self._lines.extendleft(reversed(keep))
            self._dropped += batch.dropped + len(batch.lines) - len(keep)


async def ship(buffer: OwnLog, client: HubClient) -> bool:
    """Send what ``buffer`` holds, batch by batch; False if the hub did not take one.

    A batch the hub could not be reached with goes back in the buffer; one it
    refused (4xx: the worker is revoked or superseded) is dropped, counted.
    """
    token = SHIPPING.set(True)
    try:
        while (batch := buffer.take()) is not None:
            try:
                await client.ship_log(batch)
            except asyncio.CancelledError:
                buffer.put_back(batch)
                raise
            except HubError:
                buffer.put_back(WorkerLogLines([], batch.dropped + len(batch.lines)))
                return False
            except Exception:  # out of reach, or an answer it could not read
                buffer.put_back(batch)
                return False
        return True
    finally:
        SHIPPING.reset(token)
